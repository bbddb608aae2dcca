//! A request through [`handle`] on an in-memory HTTP/1.1 connection, with
//! the access log written where the test reads it: what the log entry
//! takes from the request and connection, host selection and the HTTPS
//! redirect, direct responses.
use std::{
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{
    super::{VirtualHosts, handle},
    upstream_phase::{metric, route_to, yaml},
};
use crate::{
    log_pipe::LogPipe,
    proxy::{
        access_log::{AccessLog, Format},
        context::{Downstream, Hook, Shared},
        egress::{Egress, OutboundPolicy},
        testing::{self, Backend},
        upstream::Upstreams,
    },
};

/// The Gateway port of every plan here (the connection's local port).
pub(super) const PORT: u16 = 8080;
/// The client of every request here.
const CLIENT: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
    40_000,
);

/// What the access log wrote, for the test to read.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the sink").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One plan served by [`handle`] on a connection from [`CLIENT`] (to
/// loopback, [`PORT`]), its access log in a [`Sink`].
pub(super) struct Harness {
    shared: Arc<Shared>,
    hosts: Arc<VirtualHosts>,
    downstream: Arc<Downstream>,
    sink: Sink,
    pipe: LogPipe,
}

impl Harness {
    /// `claimed` labels the connection as a plug-in's (its log lines
    /// carry the interface `veth-test`); the SNI is `sni.test`.
    pub(super) fn new(yaml: &str, format: Format, claimed: bool) -> Self {
        Self::with_hook(yaml, format, claimed, None, Some("sni.test"))
    }

    /// [`Harness::new`] with the plug-in `hook` (the egress capture) and
    /// the connection's SNI.
    fn with_hook(
        yaml: &str,
        format: Format,
        claimed: bool,
        hook: Option<Arc<dyn Hook>>,
        sni: Option<&str>,
    ) -> Self {
        let plan = testing::plan(yaml);
        let sink = Sink::default();
        let pipe = LogPipe::spawn("handle-tests", Box::new(sink.clone()), 1 << 20).expect("a pipe");
        let shared = Arc::new(Shared {
            upstreams: Upstreams::new(&plan.clusters, &Default::default(), &crate::files::Disk)
                .expect("the clusters"),
            hook,
            access_log: AccessLog::to(format, Some(pipe.clone())),
            trusted_proxies: 0,
            tcp_idle_timeout: Duration::from_secs(60),
            jwt: None,
            jwks_fetch: None,
            authorizer: crate::proxy::authz::Authorizer::new(&plan.authorization)
                .expect("the policies"),
        });
        let listener = plan.http.first().expect("an HTTP listener");
        let hosts = Arc::new(VirtualHosts::new(listener.hosts.clone()).expect("the hosts"));
        let downstream = Arc::new(Downstream {
            tls: false,
            local: SocketAddr::new(testing::LOOPBACK, PORT),
            remote: CLIENT,
            sni: sni.map(str::to_string),
            workload_interface: claimed.then(|| Arc::from("veth-test")),
            remote_ip: OnceLock::new(),
        });
        Self {
            shared,
            hosts,
            downstream,
            sink,
            pipe,
        }
    }

    /// A connection served by `handle`; the test holds its client end.
    pub(super) fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (shared, hosts, downstream) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.hosts),
            Arc::clone(&self.downstream),
        );
        let service = hyper::service::service_fn(move |req| {
            let (shared, hosts, downstream) = (
                Arc::clone(&shared),
                Arc::clone(&hosts),
                Arc::clone(&downstream),
            );
            async move { Ok::<_, Infallible>(handle(shared, hosts, downstream, req).await) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service)
                .with_upgrades(),
        );
        client
    }

    /// The answer to `request` (which should close the connection).
    pub(super) async fn ask(&self, request: &str) -> String {
        let mut client = self.connect();
        client.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the answer in time")
            .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The first log entry, once written (the log phase runs as the
    /// response body ends, or the client goes away).
    pub(super) async fn entry(&self) -> Value {
        for _ in 0..500 {
            self.shared.access_log.flush();
            assert!(
                self.pipe.flush(Duration::from_secs(5)),
                "the log pipe flushes"
            );
            let text = String::from_utf8(self.sink.0.lock().expect("the sink").clone())
                .expect("text lines");
            if let Some(line) = text.lines().next() {
                return serde_json::from_str(line).expect("a JSON line");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no log entry");
    }
}

const GET: &str = "GET /old/x?q=1 HTTP/1.1\r\nhost: app.test\r\nuser-agent: test-agent\r\nconnection: close\r\n\r\n";

/// A plan routing `app.test` to `service` at `backend`.
pub(super) fn to_backend(service: &str, backend: SocketAddr) -> String {
    yaml(
        PORT,
        &route_to(service, backend, ""),
        &[(service, backend, "HTTP")],
        "",
    )
}

#[tokio::test]
async fn a_logged_request_carries_what_the_request_and_its_connection_say() {
    let backend = Backend::ok().await;
    let harness = Harness::new(&to_backend("logged.test", backend.addr), Format::Json, true);
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let entry = harness.entry().await;
    assert!(entry["start_time"].is_string(), "{entry}");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/old/x?q=1");
    assert_eq!(entry["protocol"], "HTTP/1.1");
    assert_eq!(entry["user_agent"], "test-agent");
    assert_eq!(entry["downstream_local_address"], "127.0.0.1:8080");
    assert_eq!(entry["downstream_remote_address"], "203.0.113.9:40000");
    assert_eq!(entry["requested_server_name"], "sni.test");
    assert_eq!(entry["workload_interface"], "veth-test");
    assert_eq!(entry["authority"], "app.test");
    assert_eq!(entry["x_forwarded_for"], "203.0.113.9");
    assert_eq!(entry["response_code"], 200);
}

#[tokio::test]
async fn an_unclaimed_connections_log_line_has_the_authority_too() {
    let backend = Backend::ok().await;
    let harness = Harness::new(
        &to_backend("unclaimed.test", backend.addr),
        Format::Json,
        false,
    );
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let entry = harness.entry().await;
    assert_eq!(entry["authority"], "app.test", "{entry}");
    assert!(entry.get("workload_interface").is_none(), "{entry}");
}

#[tokio::test]
async fn without_the_access_log_a_request_is_still_counted_as_http() {
    let backend = Backend::ok().await;
    let harness = Harness::new(
        &to_backend("unlogged.test", backend.addr),
        Format::Off,
        false,
    );
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let total = metric(
        "istio_requests_total",
        "unlogged.test",
        "request_protocol=\"http\",response_code=\"200\"",
    )
    .await;
    assert_eq!(total, 1.0);
}

#[tokio::test]
async fn an_unknown_host_is_a_404_logged_with_its_authority() {
    let backend = Backend::ok().await;
    let harness = Harness::new(&to_backend("known.test", backend.addr), Format::Json, false);
    let answer = harness
        .ask("GET / HTTP/1.1\r\nhost: other.test\r\nconnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let entry = harness.entry().await;
    assert_eq!(entry["authority"], "other.test", "{entry}");
    assert_eq!(entry["response_flags"], "NR", "{entry}");
}

#[tokio::test]
async fn an_http10_request_is_asked_to_upgrade() {
    let backend = Backend::ok().await;
    let harness = Harness::new(&to_backend("old.test", backend.addr), Format::Off, false);
    let answer = harness
        .ask("GET / HTTP/1.0\r\nhost: app.test\r\n\r\n")
        .await;
    assert!(
        answer.starts_with("HTTP/1.0 426") || answer.starts_with("HTTP/1.1 426"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_host_with_https_redirect_sends_plain_requests_to_https() {
    let backend = Backend::ok().await;
    let plan = to_backend("redirected.test", backend.addr).replacen(
        "    hosts: [\"*\"]\n",
        "    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n",
        1,
    );
    let harness = Harness::new(&plan, Format::Json, false);
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nlocation: https://app.test/old/x?q=1\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_direct_response_is_answered_with_its_length_and_header_operations() {
    let routes = "  - directResponse: {status: 418, body: {string: teapot}}
    headers:
      response: {set: {x-answered: here}}
";
    let harness = Harness::new(&yaml(PORT, routes, &[], ""), Format::Json, false);
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "teapot");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-length: 6"), "{head}");
    assert!(head.contains("\r\nx-answered: here"), "{head}");
    assert!(head.contains("\r\nserver: xdp-gateway"), "{head}");
    let entry = harness.entry().await;
    assert_eq!(entry["response_code"], 418);
    assert_eq!(entry["bytes_sent"], 6);
}

/// `gateway_egress_decisions_total` for the harness's claimed connection
/// to `host` with `verdict`, 0 before the first.
fn egress_decisions(host: &str, verdict: &str) -> f64 {
    let series = format!(
        "gateway_egress_decisions_total{{workload=\"{}\",interface=\"veth-test\",host=\"{host}\",verdict=\"{verdict}\"}} ",
        CLIENT.ip()
    );
    let mut out = String::new();
    crate::proxy::metrics::render(&mut out);
    out.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// Asks `request` on a claimed connection with `sni`, the access log off,
/// and waits until the egress decision for `host` is counted.
async fn counted_as_egress(sni: Option<&str>, request: &str, host: &str, verdict: &str) {
    let backend = Backend::ok().await;
    let egress = Egress {
        policy: OutboundPolicy::AllowAny,
        gateway_addresses: Vec::new(),
        interfaces: std::collections::BTreeMap::from([(7, Arc::from("veth-test"))]),
        workloads: None,
    };
    let harness = Harness::with_hook(
        &to_backend("egress-decisions.test", backend.addr),
        Format::Off,
        true,
        Some(Arc::new(egress)),
        sni,
    );
    let before = egress_decisions(host, verdict);
    let answer = harness.ask(request).await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    for _ in 0..500 {
        if egress_decisions(host, verdict) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no egress decision for {host} counted");
}

#[tokio::test]
async fn a_claimed_connections_requests_are_counted_as_egress_decisions_with_the_log_off() {
    counted_as_egress(
        Some("sni.test"),
        "GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        "sni.test",
        "allowed",
    )
    .await;
    // No SNI and no Host: the decision is labelled by the address connected to.
    counted_as_egress(
        None,
        "GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
        &testing::LOOPBACK.to_string(),
        "allowed",
    )
    .await;
}
