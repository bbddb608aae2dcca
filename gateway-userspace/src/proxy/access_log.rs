//! One access-log line per HTTP request or TCP connection on stdout, in
//! Istio's default Envoy text format or as one JSON object per line, so
//! existing log pipelines keep parsing them.
use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::log_pipe::{self, LogPipe};

/// `--access-log` and `--access-log-format` together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Istio's default text line (`meshConfig.accessLogEncoding: TEXT`).
    Text,
    /// One JSON object per line with Istio's JSON field names.
    Json,
    /// No access log.
    Off,
}

/// What one request or connection did.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// 0 for TCP, as Envoy logs it.
    pub status: u16,
    /// Envoy response flags (`NR`, `UF`, `UH`, `UT`, `DC`, ...); empty is `-`.
    pub flags: Vec<&'static str>,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` (`via_upstream`, `route_not_found`, ...).
    pub details: Option<&'static str>,
    /// The RBAC rule id (or `none`) that denied: the details become
    /// `rbac_access_denied_matched_policy[<id>]` (HTTP) or the connection
    /// termination details (TCP), as Envoy logs them.
    pub rbac_denied: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_service_time: Option<Duration>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    /// SNI the client sent.
    pub sni: Option<String>,
    /// `VirtualService ns/name spec.http[i]` of the matched route.
    pub route: Option<String>,
    /// Egress: the captured interface the workload sent from; entries
    /// with it carry the verdict too.
    pub workload_interface: Option<std::sync::Arc<str>>,
    /// What the plug-in that claimed the connection decided (egress:
    /// `allowed`, `refused`, `passthrough`), filled in at the log phase.
    pub verdict: Option<&'static str>,
}

/// The log sink: lines are buffered and handed on at most every second or
/// every 32 KiB, like Envoy's access-log flush, so logging costs no
/// syscall per request; the hand-over never waits for the reader
/// ([`LogPipe`]: a stalled one costs dropped, counted lines, not service).
pub struct AccessLog {
    format: Format,
    buffer: Mutex<Vec<u8>>,
    out: Option<LogPipe>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

const FLUSH_BYTES: usize = 32 * 1024;
/// How often buffered lines reach stdout at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl AccessLog {
    /// A sink writing `format` to stdout.
    pub fn new(format: Format) -> Self {
        let out = match format {
            Format::Off => None,
            Format::Text | Format::Json => log_pipe::stdout().cloned(),
        };
        Self::to(format, out)
    }

    /// A sink writing `format` to `out` (stdout's pipe but in tests).
    pub(super) fn to(format: Format, out: Option<LogPipe>) -> Self {
        Self {
            format,
            buffer: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
            out,
        }
    }

    /// Whether entries are wanted at all (skip building them when not).
    pub fn enabled(&self) -> bool {
        self.format != Format::Off
    }

    /// Appends one entry.
    pub fn log(&self, entry: &Entry) {
        let line = match self.format {
            Format::Off => return,
            Format::Text => text(entry),
            Format::Json => json(entry),
        };
        let full = match self.buffer.lock() {
            Ok(mut buffer) => {
                buffer.extend_from_slice(line.as_bytes());
                buffer.push(b'\n');
                buffer.len() >= FLUSH_BYTES
            }
            Err(_) => false,
        };
        if full {
            self.flush();
        }
    }

    /// Hands what is buffered to the output, without waiting for it.
    pub fn flush(&self) {
        let Some(out) = &self.out else { return };
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        if !buffer.is_empty() {
            out.push(&buffer);
            buffer.clear();
        }
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn start_time(entry: &Entry) -> String {
    entry.start.map_or_else(|| "-".to_string(), rfc3339_millis)
}

/// `2026-11-27T12:00:00.123Z`, Envoy's `%START_TIME%` default.
fn rfc3339_millis(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn flags(entry: &Entry) -> String {
    if entry.flags.is_empty() {
        "-".to_string()
    } else {
        entry.flags.join(",")
    }
}

/// Istio's default `accessLogFormat`:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%`
/// Egress entries append the workload's interface and the verdict
/// (`allowed`, `refused`, `passthrough`).
pub fn text(entry: &Entry) -> String {
    let mut line = istio_text(entry);
    if let Some(interface) = &entry.workload_interface {
        line.push_str(&format!(" {interface} {}", or_dash(entry.verdict)));
    }
    line
}

fn istio_text(entry: &Entry) -> String {
    format!(
        "[{}] \"{} {} {}\" {} {} {} {} \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}",
        start_time(entry),
        or_dash(entry.method.as_deref()),
        or_dash(entry.path.as_deref()),
        or_dash(entry.protocol),
        entry.status,
        flags(entry),
        or_dash(response_code_details(entry)),
        or_dash(termination_details(entry)),
        entry.bytes_received,
        entry.bytes_sent,
        entry.duration.as_millis(),
        or_dash(entry.upstream_service_time.map(|d| d.as_millis())),
        or_dash(entry.x_forwarded_for.as_deref()),
        or_dash(entry.user_agent.as_deref()),
        or_dash(entry.request_id.as_deref()),
        or_dash(entry.authority.as_deref()),
        or_dash(entry.upstream_host),
        or_dash(entry.upstream_cluster.as_deref()),
        or_dash(entry.downstream_local),
        or_dash(entry.downstream_remote),
        or_dash(entry.sni.as_deref()),
        or_dash(entry.route.as_deref().map(|r| r.replace(' ', "_"))),
    )
}

/// `%RESPONSE_CODE_DETAILS%`: an HTTP RBAC denial names its rule.
fn response_code_details(entry: &Entry) -> Option<String> {
    match (&entry.rbac_denied, entry.protocol) {
        (Some(id), Some(_)) => Some(rbac_denial(id)),
        _ => entry.details.map(str::to_string),
    }
}

/// `%CONNECTION_TERMINATION_DETAILS%`: a TCP connection's RBAC denial.
fn termination_details(entry: &Entry) -> Option<String> {
    match (&entry.rbac_denied, entry.protocol) {
        (Some(id), None) => Some(rbac_denial(id)),
        _ => None,
    }
}

/// Envoy's `responseDetail`: whitespace in the id becomes `_`.
fn rbac_denial(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("rbac_access_denied_matched_policy[{id}]")
}

/// Istio's JSON access-log field names, absent values as `null`.
pub fn json(entry: &Entry) -> String {
    let text = |v: Option<String>| v.map_or(serde_json::Value::Null, serde_json::Value::from);
    let mut value = serde_json::json!({
        "start_time": text(entry.start.map(|_| start_time(entry))),
        "method": text(entry.method.clone()),
        "path": text(entry.path.clone()),
        "protocol": text(entry.protocol.map(str::to_string)),
        "response_code": entry.status,
        "response_flags": flags(entry),
        "response_code_details": text(response_code_details(entry)),
        "connection_termination_details": text(termination_details(entry)),
        "bytes_received": entry.bytes_received,
        "bytes_sent": entry.bytes_sent,
        "duration": u64::try_from(entry.duration.as_millis()).unwrap_or(u64::MAX),
        "upstream_service_time": entry.upstream_service_time.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "x_forwarded_for": text(entry.x_forwarded_for.clone()),
        "user_agent": text(entry.user_agent.clone()),
        "request_id": text(entry.request_id.clone()),
        "authority": text(entry.authority.clone()),
        "upstream_host": text(entry.upstream_host.map(|a| a.to_string())),
        "upstream_cluster": text(entry.upstream_cluster.clone()),
        "downstream_local_address": text(entry.downstream_local.map(|a| a.to_string())),
        "downstream_remote_address": text(entry.downstream_remote.map(|a| a.to_string())),
        "requested_server_name": text(entry.sni.clone()),
        "route_name": text(entry.route.clone()),
    });
    if let Some(interface) = &entry.workload_interface {
        value["workload_interface"] = serde_json::Value::from(interface.as_ref());
        value["egress_verdict"] = text(entry.verdict.map(str::to_string));
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            start: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_245_000_123)),
            method: Some("GET".into()),
            path: Some("/x?y=1".into()),
            protocol: Some("HTTP/1.1"),
            status: 404,
            flags: vec!["NR"],
            details: Some("route_not_found"),
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::from_millis(3),
            authority: Some("dataengine.com".into()),
            downstream_remote: Some(SocketAddr::from(([192, 0, 2, 9], 40000))),
            ..Entry::default()
        }
    }

    #[test]
    fn text_line_follows_istio_default_format() {
        assert_eq!(
            text(&entry()),
            "[2025-11-27T12:03:20.123Z] \"GET /x?y=1 HTTP/1.1\" 404 NR route_not_found - \"-\" 0 0 3 - \"-\" \"-\" \"-\" \"dataengine.com\" \"-\" - - - 192.0.2.9:40000 - -"
        );
    }

    #[test]
    fn json_line_is_one_object_with_istio_field_names() {
        let value: serde_json::Value = serde_json::from_str(&json(&entry())).expect("valid JSON");
        assert_eq!(value["response_code"], 404);
        assert_eq!(value["response_flags"], "NR");
        assert_eq!(value["authority"], "dataengine.com");
        assert_eq!(value["upstream_host"], serde_json::Value::Null);
        assert!(!json(&entry()).contains('\n'));
    }

    #[test]
    fn egress_lines_add_the_workloads_interface_and_the_verdict() {
        let plain = text(&entry());
        // The verdict the egress plug-in gives an unrouted entry (`NR`).
        let egress = Entry {
            workload_interface: Some("veth-w".into()),
            verdict: Some("refused"),
            ..entry()
        };
        assert_eq!(text(&egress), format!("{plain} veth-w refused"));
        let value: serde_json::Value = serde_json::from_str(&json(&egress)).expect("valid JSON");
        assert_eq!(value["workload_interface"], "veth-w");
        assert_eq!(value["egress_verdict"], "refused");
        let ingress: serde_json::Value = serde_json::from_str(&json(&entry())).expect("valid JSON");
        assert!(ingress.get("egress_verdict").is_none());
    }

    #[test]
    fn start_time_is_utc_rfc3339_with_millis() {
        let at = |ms: u64| rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn start_time_follows_the_gregorian_leap_rules() {
        let at = |secs: u64| rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        // Days since 1970 of dates around century and 400-year boundaries.
        let day = |days: u64| at(days * 86_400);
        assert_eq!(day(10_956), "1999-12-31T00:00:00.000Z");
        assert_eq!(day(11_016), "2000-02-29T00:00:00.000Z");
        assert_eq!(day(11_017), "2000-03-01T00:00:00.000Z");
        assert_eq!(day(19_782), "2024-02-29T00:00:00.000Z");
        assert_eq!(day(47_540), "2100-02-28T00:00:00.000Z");
        assert_eq!(day(47_541), "2100-03-01T00:00:00.000Z");
        assert_eq!(day(157_113), "2400-02-29T00:00:00.000Z");
        assert_eq!(day(157_114), "2400-03-01T00:00:00.000Z");
        assert_eq!(day(157_419), "2400-12-31T00:00:00.000Z");
        assert_eq!(at(86_399 + 3_600), "1970-01-02T00:59:59.000Z");
    }

    /// A writer the test can read back, counting flushes.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<(Vec<u8>, usize)>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    impl Shared {
        /// A log of `format` into this writer, and its pipe.
        fn log(&self, format: Format) -> (AccessLog, LogPipe) {
            let pipe = LogPipe::spawn("test-access-log", Box::new(self.clone()), 1 << 20).unwrap();
            (AccessLog::to(format, Some(pipe.clone())), pipe)
        }

        /// What reached the writer once the pipe has caught up.
        fn written(&self, pipe: &LogPipe) -> (String, usize) {
            assert!(pipe.flush(Duration::from_secs(5)));
            let inner = self.0.lock().unwrap();
            (String::from_utf8(inner.0.clone()).unwrap(), inner.1)
        }
    }

    #[test]
    fn lines_wait_in_the_buffer_until_a_flush_or_32_kib() {
        let out = Shared::default();
        let (log, pipe) = out.log(Format::Text);
        assert!(log.enabled());
        let line = text(&entry());
        assert!(format!("{log:?}").contains("Text"));
        // Just under 32 KiB of lines: nothing reaches the writer.
        let fit = (32 * 1024 - 1) / (line.len() + 1);
        for _ in 0..fit {
            log.log(&entry());
        }
        assert_eq!(out.written(&pipe), (String::new(), 0));
        log.flush();
        let (written, flushes) = out.written(&pipe);
        assert_eq!(written, format!("{line}\n").repeat(fit));
        assert_eq!(flushes, 1);
        // An empty buffer writes nothing, not even a flush.
        log.flush();
        assert_eq!(out.written(&pipe).1, 1);
        // The line that reaches 32 KiB takes the whole buffer out.
        for _ in 0..=fit {
            log.log(&entry());
        }
        let (written, flushes) = out.written(&pipe);
        assert_eq!(written.len(), (2 * fit + 1) * (line.len() + 1));
        assert_eq!(flushes, 2);
    }

    #[test]
    fn json_sink_writes_json_and_off_writes_nothing() {
        let out = Shared::default();
        let (log, pipe) = out.log(Format::Json);
        log.log(&entry());
        log.flush();
        let (written, _) = out.written(&pipe);
        assert_eq!(written, format!("{}\n", json(&entry())));

        let out = Shared::default();
        let (log, pipe) = out.log(Format::Off);
        assert!(!log.enabled());
        log.log(&entry());
        log.flush();
        assert_eq!(out.written(&pipe), (String::new(), 0));
    }

    #[test]
    fn several_flags_are_comma_separated() {
        let mut e = entry();
        e.flags = vec!["UF", "URX"];
        assert!(text(&e).contains(" 404 UF,URX "));
    }
}
