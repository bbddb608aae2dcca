//! The proxy's request and connection metrics under Istio's standard
//! names, for `/stats/prometheus`: what a dashboard built for Istio's
//! gateways reads. Recorded from the same finished request or connection
//! the access log writes ([`record`]), kept for the life of the process
//! (a reload does not reset them), rendered in Prometheus' text format.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{LazyLock, Mutex},
};

use super::access_log::Entry;

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's default buckets for `istio_request_bytes` and `istio_response_bytes`.
const SIZE_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1e6, 1e7, 1e8];

/// A histogram: per-bucket counts (not cumulative), the sum and count.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        if let Some(index) = bounds.iter().position(|bound| value <= *bound) {
            self.buckets[index] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// The labels of an HTTP request's series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RequestLabels {
    request_protocol: &'static str,
    response_code: u16,
    response_flags: String,
    destination_service: String,
}

impl RequestLabels {
    /// Whether these are the labels of a request with these parts,
    /// compared without building them.
    fn describe(&self, protocol: &str, code: u16, flags: &[&str], service: &str) -> bool {
        self.request_protocol == protocol
            && self.response_code == code
            && self.destination_service == service
            && flags_text_is(&self.response_flags, flags)
    }
}

/// Whether `text` is `flags` as [`flags`] writes them.
fn flags_text_is(text: &str, flags: &[&str]) -> bool {
    if flags.is_empty() {
        return text == "-";
    }
    let mut rest = text;
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            let Some(after) = rest.strip_prefix(',') else {
                return false;
            };
            rest = after;
        }
        let Some(after) = rest.strip_prefix(flag) else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
}

#[derive(Debug, Default)]
struct RequestSeries {
    total: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug, Default)]
struct TcpSeries {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

/// The labels of an egress decision's series: who, where, what host, verdict.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EgressLabels {
    workload: String,
    interface: String,
    host: String,
    verdict: &'static str,
}

/// Envoy's fault filter counters (`http.<prefix>.fault.delays_injected`,
/// `aborts_injected`), counted from the flags of finished requests.
#[derive(Debug, Default)]
struct FaultCounts {
    delays_injected: u64,
    aborts_injected: u64,
}

#[derive(Debug, Default)]
struct Series {
    /// Request series in the order they first appeared, found through
    /// `request_index`; the last one used is tried first, so a run of
    /// requests alike records without building its labels.
    requests: Vec<(RequestLabels, RequestSeries)>,
    request_index: HashMap<RequestLabels, usize>,
    last_request: Option<usize>,
    /// By (destination service, response flags).
    tcp: BTreeMap<(String, String), TcpSeries>,
    /// Egress decisions (connections and HTTP requests) by workload and host.
    egress: BTreeMap<EgressLabels, u64>,
    /// Requests a route's `fault` delayed (`DI`) and aborted (`FI`).
    faults: FaultCounts,
}

/// Everything recorded since start.
static METRICS: LazyLock<Mutex<Series>> = LazyLock::new(|| Mutex::new(Series::default()));

/// The service of a cluster name (`outbound|80|v1|shop.backend` ->
/// `shop.backend`), as Istio's `destination_service` label.
fn destination_service(entry: &Entry) -> String {
    service_of(entry).to_string()
}

fn service_of(entry: &Entry) -> &str {
    entry
        .upstream_cluster
        .as_deref()
        .and_then(|cluster| cluster.rsplit('|').next())
        .filter(|service| !service.is_empty())
        .unwrap_or("unknown")
}

/// The external host an egress entry went for: the SNI, the `Host`,
/// else the original destination address.
fn external_host(entry: &Entry) -> String {
    let named = entry.sni.as_deref().or(entry.authority.as_deref());
    match (named, entry.downstream_local) {
        (Some(name), _) => name.to_string(),
        (None, Some(local)) => local.ip().to_canonical().to_string(),
        (None, None) => "-".to_string(),
    }
}

fn flags(entry: &Entry) -> String {
    if entry.flags.is_empty() {
        "-".to_string()
    } else {
        entry.flags.join(",")
    }
}

/// Records a finished request (an entry with a protocol) or TCP
/// connection (without one).
pub fn record(entry: &Entry) {
    let Ok(mut series) = METRICS.lock() else {
        return;
    };
    if let (Some(interface), Some(verdict)) = (&entry.workload_interface, entry.verdict) {
        let labels = EgressLabels {
            workload: entry
                .downstream_remote
                .map_or_else(|| "-".to_string(), |a| a.ip().to_canonical().to_string()),
            interface: interface.to_string(),
            host: external_host(entry),
            verdict,
        };
        *series.egress.entry(labels).or_default() += 1;
    }
    match entry.protocol {
        Some(protocol) => {
            for flag in &entry.flags {
                match *flag {
                    "DI" => series.faults.delays_injected += 1,
                    "FI" => series.faults.aborts_injected += 1,
                    _ => {}
                }
            }
            let request = request_series(&mut series, entry, protocol);
            request.total += 1;
            let millis = entry.duration.as_secs_f64() * 1000.0;
            request.duration.observe(&DURATION_BUCKETS_MS, millis);
            request
                .request_bytes
                .observe(&SIZE_BUCKETS, entry.bytes_received as f64);
            request
                .response_bytes
                .observe(&SIZE_BUCKETS, entry.bytes_sent as f64);
        }
        None => {
            let service = destination_service(entry);
            let tcp = series.tcp.entry((service, flags(entry))).or_default();
            // Forwarded connections were counted open when they reached
            // their backend ([`tcp_opened`]); the others open and close here.
            if entry.upstream_host.is_none() {
                tcp.opened += 1;
            }
            tcp.closed += 1;
            tcp.sent += entry.bytes_sent;
            tcp.received += entry.bytes_received;
        }
    }
}

/// The series of a request like `entry`: the last one used when it has
/// the same labels, else the one for them, made on first use.
fn request_series<'s>(
    series: &'s mut Series,
    entry: &Entry,
    protocol: &'static str,
) -> &'s mut RequestSeries {
    let protocol = if protocol.starts_with("HTTP") {
        "http"
    } else {
        protocol
    };
    let service = service_of(entry);
    let Series {
        requests,
        request_index,
        last_request,
        ..
    } = series;
    let same = last_request.filter(|&i| {
        requests.get(i).is_some_and(|(labels, _)| {
            labels.describe(protocol, entry.status, &entry.flags, service)
        })
    });
    let index = match same {
        Some(i) => i,
        None => {
            let labels = RequestLabels {
                request_protocol: protocol,
                response_code: entry.status,
                response_flags: flags(entry),
                destination_service: service.to_string(),
            };
            *request_index.entry(labels.clone()).or_insert_with(|| {
                requests.push((labels, RequestSeries::default()));
                requests.len() - 1
            })
        }
    };
    *last_request = Some(index);
    &mut requests[index].1
}

/// Counts a TCP connection open once it reached its backend (`entry`
/// has the cluster, no flags yet).
pub fn tcp_opened(entry: &Entry) {
    if let Ok(mut series) = METRICS.lock() {
        let key = (destination_service(entry), flags(entry));
        series.tcp.entry(key).or_default().opened += 1;
    }
}

/// A histogram family: name, help, which histogram of a series, bounds.
type HistogramFamily = (
    &'static str,
    &'static str,
    fn(&RequestSeries) -> &Histogram,
    &'static [f64],
);
/// A TCP counter family: name, help, which counter of a series.
type TcpFamily = (&'static str, &'static str, fn(&TcpSeries) -> u64);

/// The metrics in Prometheus' text exposition format.
pub fn render(out: &mut String) {
    let Ok(series) = METRICS.lock() else {
        return;
    };
    render_requests(out, &series);
    render_tcp(out, &series);
    render_egress(out, &series);
    render_faults(out, &series.faults);
    render_jwt(out);
    super::authz::metrics::render(out);
}

/// JWT phase outcomes (Envoy's `jwt_authn.allowed` / `jwt_authn.denied`):
/// counted apart from the series, per request the phase checked.
static JWT_OUTCOMES: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Counts one request through the JWT phase.
pub fn jwt_outcome(allowed: bool) {
    JWT_OUTCOMES[usize::from(!allowed)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn render_jwt(out: &mut String) {
    for (name, help, index) in [
        (
            "envoy_http_jwt_authn_allowed",
            "Requests the JWT phase let through (no token, or a valid one).",
            0,
        ),
        (
            "envoy_http_jwt_authn_denied",
            "Requests the JWT phase refused.",
            1,
        ),
    ] {
        let value = JWT_OUTCOMES[index].load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The fault filter's counters, under the names Envoy's Prometheus
/// output gives them.
fn render_faults(out: &mut String, faults: &FaultCounts) {
    for (name, help, value) in [
        (
            "envoy_http_fault_delays_injected",
            "Requests a route's fault delayed.",
            faults.delays_injected,
        ),
        (
            "envoy_http_fault_aborts_injected",
            "Requests a route's fault aborted.",
            faults.aborts_injected,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The request counter and histogram families.
fn render_requests(out: &mut String, series: &Series) {
    let request_labels = |labels: &RequestLabels| {
        format!(
            "reporter=\"source\",request_protocol=\"{}\",response_code=\"{}\",response_flags=\"{}\",destination_service=\"{}\"",
            labels.request_protocol,
            labels.response_code,
            escape(&labels.response_flags),
            escape(&labels.destination_service)
        )
    };
    let _ = writeln!(
        out,
        "# HELP istio_requests_total Requests served by the gateway."
    );
    let _ = writeln!(out, "# TYPE istio_requests_total counter");
    let mut requests: Vec<&(RequestLabels, RequestSeries)> = series.requests.iter().collect();
    requests.sort_by(|a, b| a.0.cmp(&b.0));
    for (labels, request) in requests.iter().map(|pair| (&pair.0, &pair.1)) {
        let _ = writeln!(
            out,
            "istio_requests_total{{{}}} {}",
            request_labels(labels),
            request.total
        );
    }
    let histograms: [HistogramFamily; 3] = [
        (
            "istio_request_duration_milliseconds",
            "Time from the first byte of a request to the last byte of its response.",
            |r| &r.duration,
            &DURATION_BUCKETS_MS,
        ),
        (
            "istio_request_bytes",
            "Request body sizes.",
            |r| &r.request_bytes,
            &SIZE_BUCKETS,
        ),
        (
            "istio_response_bytes",
            "Response body sizes.",
            |r| &r.response_bytes,
            &SIZE_BUCKETS,
        ),
    ];
    for (name, help, pick, bounds) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (labels, request) in requests.iter().map(|pair| (&pair.0, &pair.1)) {
            let histogram = pick(request);
            let labels = request_labels(labels);
            let mut cumulative = 0;
            for (index, bound) in bounds.iter().enumerate() {
                cumulative += histogram.buckets.get(index).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
        }
    }
}

/// The TCP connection families.
fn render_tcp(out: &mut String, series: &Series) {
    let tcp: [TcpFamily; 4] = [
        (
            "istio_tcp_connections_opened_total",
            "TCP connections opened.",
            |t| t.opened,
        ),
        (
            "istio_tcp_connections_closed_total",
            "TCP connections closed.",
            |t| t.closed,
        ),
        (
            "istio_tcp_sent_bytes_total",
            "Bytes sent to clients on TCP connections.",
            |t| t.sent,
        ),
        (
            "istio_tcp_received_bytes_total",
            "Bytes received from clients on TCP connections.",
            |t| t.received,
        ),
    ];
    for (name, help, pick) in tcp {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((service, flags), series) in &series.tcp {
            let _ = writeln!(
                out,
                "{name}{{reporter=\"source\",destination_service=\"{}\",response_flags=\"{}\"}} {}",
                escape(service),
                escape(flags),
                pick(series)
            );
        }
    }
}

/// The egress family, only on an egress instance that has decided something.
fn render_egress(out: &mut String, series: &Series) {
    if series.egress.is_empty() {
        return;
    }
    let name = "gateway_egress_decisions_total";
    let _ = writeln!(
        out,
        "# HELP {name} Captured workload connections (TCP, TLS) and requests (HTTP) by workload, external host and verdict."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, count) in &series.egress {
        let _ = writeln!(
            out,
            "{name}{{workload=\"{}\",interface=\"{}\",host=\"{}\",verdict=\"{}\"}} {count}",
            escape(&labels.workload),
            escape(&labels.interface),
            escape(&labels.host),
            labels.verdict
        );
    }
}

/// A label value with `\`, `"` and line feeds escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Duration};

    use super::*;

    #[test]
    fn histograms_are_cumulative_and_label_values_escaped() {
        let mut histogram = Histogram::default();
        for value in [0.2, 3.0, 3.0, 7e6] {
            histogram.observe(&DURATION_BUCKETS_MS, value);
        }
        assert_eq!(histogram.count, 4);
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[2], 2, "3 ms falls in le=5");
        assert_eq!(
            histogram.buckets.iter().sum::<u64>(),
            3,
            "7e6 ms is past the last bound"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let entry = Entry {
            upstream_cluster: Some("outbound|80|v1|shop.backend".into()),
            protocol: Some("HTTP/1.1"),
            status: 200,
            duration: Duration::from_millis(3),
            ..Entry::default()
        };
        assert_eq!(destination_service(&entry), "shop.backend");
    }

    #[test]
    fn flags_compare_as_written_without_being_joined() {
        assert!(flags_text_is("-", &[]));
        assert!(flags_text_is("NR", &["NR"]));
        assert!(flags_text_is("UF,URX", &["UF", "URX"]));
        assert!(!flags_text_is("UF,URX", &["UF"]));
        assert!(!flags_text_is("UF", &["UF", "URX"]));
        assert!(!flags_text_is("-", &["NR"]));
        assert!(!flags_text_is("UFURX", &["UF", "URX"]));
    }

    #[test]
    fn requests_alike_and_unlike_each_count_in_their_own_series() {
        let mut series = Series::default();
        let request = |status: u16, flags: Vec<&'static str>| Entry {
            protocol: Some("HTTP/1.1"),
            status,
            flags,
            upstream_cluster: Some("outbound|80||web".into()),
            ..Entry::default()
        };
        let plan = [
            request(200, vec![]),
            request(200, vec![]),
            request(503, vec!["UF"]),
            request(200, vec![]),
            request(503, vec!["UH"]),
            request(503, vec!["UF"]),
        ];
        for entry in &plan {
            request_series(&mut series, entry, "HTTP/1.1").total += 1;
        }
        let totals: BTreeMap<(u16, String), u64> = series
            .requests
            .iter()
            .map(|(labels, s)| {
                (
                    (labels.response_code, labels.response_flags.clone()),
                    s.total,
                )
            })
            .collect();
        assert_eq!(
            totals,
            BTreeMap::from([
                ((200, "-".to_string()), 3),
                ((503, "UF".to_string()), 2),
                ((503, "UH".to_string()), 1),
            ])
        );
        assert!(
            series
                .requests
                .iter()
                .all(|(l, _)| l.destination_service == "web")
        );
    }

    /// The value of the sample `series` (a name and its labels, as
    /// rendered) in the metrics now; `None` when it is not rendered.
    fn sample(series: &str) -> Option<String> {
        let mut out = String::new();
        render(&mut out);
        out.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    /// Asserts each series has its value (`None`: not rendered).
    fn assert_samples(expected: &[(String, Option<&str>)]) {
        let found: Vec<_> = expected
            .iter()
            .map(|(series, _)| (series.as_str(), sample(series)))
            .collect();
        let wanted: Vec<_> = expected
            .iter()
            .map(|(series, value)| (series.as_str(), value.map(str::to_string)))
            .collect();
        assert_eq!(found, wanted);
    }

    // The registry is the process's: each test below records under a
    // service or interface of its own, which no other test uses.

    #[test]
    fn a_request_is_counted_timed_and_sized_in_the_series_of_its_labels() {
        let cluster = "outbound|80||metrics-request-series.test";
        record(&Entry {
            protocol: Some("HTTP/1.1"),
            status: 200,
            upstream_cluster: Some(cluster.into()),
            duration: Duration::from_millis(250),
            bytes_received: 50,
            bytes_sent: 5000,
            ..Entry::default()
        });
        // HTTP/2 is `http` too: the same series.
        record(&Entry {
            protocol: Some("HTTP/2"),
            status: 200,
            upstream_cluster: Some(cluster.into()),
            duration: Duration::from_millis(1500),
            bytes_received: 0,
            bytes_sent: 7,
            ..Entry::default()
        });
        let labels = "reporter=\"source\",request_protocol=\"http\",response_code=\"200\",response_flags=\"-\",destination_service=\"metrics-request-series.test\"";
        let expected = [
            (format!("istio_requests_total{{{labels}}}"), Some("2")),
            // Buckets are cumulative; 250 ms is in `le="250"`.
            (
                format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"100\"}}"),
                Some("0"),
            ),
            (
                format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"250\"}}"),
                Some("1"),
            ),
            (
                format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"1000\"}}"),
                Some("1"),
            ),
            (
                format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"2500\"}}"),
                Some("2"),
            ),
            (
                format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}}"),
                Some("2"),
            ),
            (
                format!("istio_request_duration_milliseconds_sum{{{labels}}}"),
                Some("1750"),
            ),
            (
                format!("istio_request_duration_milliseconds_count{{{labels}}}"),
                Some("2"),
            ),
            (
                format!("istio_request_bytes_bucket{{{labels},le=\"1\"}}"),
                Some("1"),
            ),
            (
                format!("istio_request_bytes_bucket{{{labels},le=\"10\"}}"),
                Some("1"),
            ),
            (
                format!("istio_request_bytes_bucket{{{labels},le=\"100\"}}"),
                Some("2"),
            ),
            (format!("istio_request_bytes_sum{{{labels}}}"), Some("50")),
            (format!("istio_request_bytes_count{{{labels}}}"), Some("2")),
            (
                format!("istio_response_bytes_bucket{{{labels},le=\"1\"}}"),
                Some("0"),
            ),
            (
                format!("istio_response_bytes_bucket{{{labels},le=\"10\"}}"),
                Some("1"),
            ),
            (
                format!("istio_response_bytes_bucket{{{labels},le=\"1000\"}}"),
                Some("1"),
            ),
            (
                format!("istio_response_bytes_bucket{{{labels},le=\"10000\"}}"),
                Some("2"),
            ),
            (
                format!("istio_response_bytes_sum{{{labels}}}"),
                Some("5007"),
            ),
            (format!("istio_response_bytes_count{{{labels}}}"), Some("2")),
        ];
        assert_samples(&expected);
    }

    #[test]
    fn a_tcp_connection_is_counted_open_and_closed_with_its_bytes() {
        let forwarded = Entry {
            upstream_cluster: Some("outbound|9000||metrics-tcp-series.test".into()),
            ..Entry::default()
        };
        // Counted open when it reaches its backend, closed when it ends.
        tcp_opened(&forwarded);
        record(&Entry {
            upstream_host: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
            bytes_sent: 1000,
            bytes_received: 3,
            ..forwarded.clone()
        });
        // One that reached no backend opens and closes at its end.
        record(&Entry {
            bytes_sent: 100,
            bytes_received: 20,
            ..forwarded
        });
        let labels = "reporter=\"source\",destination_service=\"metrics-tcp-series.test\",response_flags=\"-\"";
        let expected = [
            (
                format!("istio_tcp_connections_opened_total{{{labels}}}"),
                Some("2"),
            ),
            (
                format!("istio_tcp_connections_closed_total{{{labels}}}"),
                Some("2"),
            ),
            (
                format!("istio_tcp_sent_bytes_total{{{labels}}}"),
                Some("1100"),
            ),
            (
                format!("istio_tcp_received_bytes_total{{{labels}}}"),
                Some("23"),
            ),
        ];
        assert_samples(&expected);
    }

    #[test]
    fn egress_decisions_count_by_workload_interface_host_and_verdict() {
        let interface: Arc<str> = Arc::from("metrics-egress0");
        let decision = |verdict: &'static str| Entry {
            workload_interface: Some(Arc::clone(&interface)),
            verdict: Some(verdict),
            downstream_remote: Some("[::ffff:10.0.0.7]:5555".parse().expect("an address")),
            upstream_cluster: Some("outbound|443||metrics-egress.test".into()),
            ..Entry::default()
        };
        // The SNI names the host before the authority does.
        let by_sni = Entry {
            sni: Some("api.example".into()),
            authority: Some("ignored.example".into()),
            ..decision("allowed")
        };
        record(&by_sni);
        record(&by_sni);
        record(&Entry {
            authority: Some("web.example".into()),
            ..decision("allowed")
        });
        // Neither: the address the workload connected to.
        record(&Entry {
            downstream_local: Some("[::ffff:203.0.113.9]:443".parse().expect("an address")),
            ..decision("refused")
        });
        record(&Entry {
            downstream_remote: None,
            ..decision("refused")
        });
        // No verdict: not a decision.
        record(&Entry {
            verdict: None,
            authority: Some("undecided.example".into()),
            ..decision("allowed")
        });
        let series = |workload: &str, host: &str, verdict: &str| {
            format!(
                "gateway_egress_decisions_total{{workload=\"{workload}\",interface=\"metrics-egress0\",host=\"{host}\",verdict=\"{verdict}\"}}"
            )
        };
        let expected = [
            (series("10.0.0.7", "api.example", "allowed"), Some("2")),
            (series("10.0.0.7", "ignored.example", "allowed"), None),
            (series("10.0.0.7", "web.example", "allowed"), Some("1")),
            (series("10.0.0.7", "203.0.113.9", "refused"), Some("1")),
            (series("-", "-", "refused"), Some("1")),
            (series("10.0.0.7", "undecided.example", "allowed"), None),
        ];
        assert_samples(&expected);
    }

    #[test]
    fn a_request_unlike_the_last_in_one_label_gets_a_series_of_its_own() {
        let mut series = Series::default();
        let request = |status: u16, flags: Vec<&'static str>, service: &str| Entry {
            status,
            flags,
            upstream_cluster: Some(format!("outbound|80||{service}")),
            ..Entry::default()
        };
        // Each request differs from the one before in one label only.
        let plan = [
            ("HTTP/1.1", request(200, vec![], "web")),
            ("HTTP/1.1", request(200, vec![], "web")),
            ("HTTP/1.1", request(404, vec![], "web")),
            ("HTTP/1.1", request(404, vec!["NR"], "web")),
            ("HTTP/1.1", request(404, vec!["NR"], "api")),
            ("grpc", request(404, vec!["NR"], "api")),
        ];
        for (protocol, entry) in &plan {
            request_series(&mut series, entry, protocol).total += 1;
        }
        let totals: Vec<_> = series
            .requests
            .iter()
            .map(|(labels, s)| {
                (
                    labels.request_protocol,
                    labels.response_code,
                    labels.response_flags.as_str(),
                    labels.destination_service.as_str(),
                    s.total,
                )
            })
            .collect();
        assert_eq!(
            totals,
            [
                ("http", 200, "-", "web", 2),
                ("http", 404, "-", "web", 1),
                ("http", 404, "NR", "web", 1),
                ("http", 404, "NR", "api", 1),
                ("grpc", 404, "NR", "api", 1),
            ]
        );
    }
}
