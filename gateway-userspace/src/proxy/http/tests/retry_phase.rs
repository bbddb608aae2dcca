//! A route's retry policy through the proxy in-process: Istio's default
//! policy, `retries` as written, per-try and route timeouts, bodies sent
//! again, and what the client and the counters see when retries run out.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::net::TcpListener;

use super::upstream_phase::{ask, metric};
use crate::proxy::{
    testing::{Backend, LOOPBACK, Proxy},
    upstream::{ClusterCounter, cluster_counts},
};

pub(super) const GET: &str = "GET /x HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";

/// A Gateway on `port`, a VirtualService for `app.test` routing to
/// `service` with `more` (YAML lines of the rule, four spaces in), and a
/// ServiceEntry declaring `service` on port 80 with one loopback endpoint
/// per address of `endpoints`.
pub(super) fn yaml(port: u16, service: &str, endpoints: &[SocketAddr], more: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{{address: \"{}\", ports: {{http: {}}}}}", e.ip(), e.port()))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: {service}, port: {{number: 80}}}}
{more}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backends, namespace: istio-system}}
spec:
  hosts: [{service}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{endpoints}]
",
        endpoints = endpoints.join(", ")
    )
}

async fn proxy(service: &str, endpoints: &[SocketAddr], more: &str) -> Proxy {
    Proxy::start(|port| yaml(port, service, endpoints, more)).await
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    listener.local_addr().expect("address")
}

/// A cluster counter's value (clusters are named `outbound|80||<service>`).
pub(super) fn counted(service: &str, counter: ClusterCounter) -> u64 {
    let name = format!("outbound|80||{service}");
    cluster_counts()
        .into_iter()
        .find(|(cluster, _)| *cluster == name)
        .and_then(|(_, values)| values.into_iter().find(|(c, _)| *c == counter))
        .map_or(0, |(_, value)| value)
}

/// A backend answering 503 to its first `failing` requests, 200 after.
pub(super) async fn failing_first(failing: usize) -> Backend {
    let seen = Arc::new(AtomicUsize::new(0));
    Backend::start(move |_| {
        let nth = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if nth < failing {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno".to_string()
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
            }
        }
    })
    .await
}

/// The value of header `name` in a request's text.
fn header<'r>(request: &'r str, name: &str) -> Option<&'r str> {
    request.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn istios_default_policy_retries_a_refused_connection_on_another_endpoint() {
    let dead = closed_port().await;
    let mut live = Backend::ok().await;
    let service = "default-retry.test";
    let proxy = proxy(service, &[dead, live.addr], "").await;
    for _ in 0..20 {
        let answer = ask(&proxy, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let request = live.request().await;
        attempts.push(header(&request, "x-envoy-attempt-count").map(String::from));
    }
    // Least request (Istio's default) draws the dead endpoint first for
    // about half the requests; a retry draws again up to five times to
    // find another, so a third try is rare but possible, as in Envoy.
    let tries: Vec<u64> = attempts
        .iter()
        .map(|a| a.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0))
        .collect();
    assert!(tries.iter().all(|n| (1..=3).contains(n)), "{tries:?}");
    let retries: u64 = tries.iter().map(|n| n - 1).sum();
    assert!(retries >= 1, "{tries:?}");
    assert_eq!(counted(service, ClusterCounter::Retry), retries);
}

#[tokio::test]
async fn istios_default_policy_does_not_retry_a_503() {
    let mut backend = failing_first(1).await;
    let proxy = proxy("default-no-503.test", &[backend.addr], "").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let request = backend.request().await;
    assert_eq!(header(&request, "x-envoy-attempt-count"), Some("1"));
    assert!(backend.requests.try_recv().is_err());
}

#[tokio::test]
async fn retries_on_5xx_run_out_and_the_client_gets_the_last_answer_flagged_urx() {
    let mut backend = failing_first(usize::MAX).await;
    let service = "retries-run-out.test";
    let more = "    retries: {attempts: 2, retryOn: 5xx}\n";
    let proxy = proxy(service, &[backend.addr], more).await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("no"), "the backend's own answer: {answer}");
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let request = backend.request().await;
        attempts.push(header(&request, "x-envoy-attempt-count").map(String::from));
    }
    assert_eq!(
        attempts,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );
    let urx = metric("istio_requests_total", service, "response_flags=\"URX\"").await;
    assert_eq!(urx, 1.0);
    assert_eq!(counted(service, ClusterCounter::RetryLimitExceeded), 1);
    assert_eq!(counted(service, ClusterCounter::Retry), 2);
}

#[tokio::test]
async fn a_posted_body_is_sent_again_on_the_retry() {
    let mut backend = failing_first(1).await;
    let service = "body-again.test";
    let more = "    retries: {attempts: 1, retryOn: 5xx}\n";
    let proxy = proxy(service, &[backend.addr], more).await;
    let answer = ask(
        &proxy,
        "POST /x HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for attempt in ["1", "2"] {
        let request = backend.request().await;
        assert_eq!(header(&request, "x-envoy-attempt-count"), Some(attempt));
        assert!(request.ends_with("\r\n\r\nhello"), "{request}");
    }
    assert_eq!(counted(service, ClusterCounter::RetrySuccess), 1);
}

#[tokio::test]
async fn per_try_timeouts_are_retried_and_the_route_timeout_bounds_all_tries() {
    let backend = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        String::new()
    })
    .await;
    let service = "per-try.test";
    let more =
        "    timeout: 700ms\n    retries: {attempts: 10, perTryTimeout: 200ms, retryOn: reset}\n";
    let proxy = proxy(service, &[backend.addr], more).await;
    let started = Instant::now();
    let answer = ask(&proxy, GET).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let per_try = counted(service, ClusterCounter::PerTryTimeout);
    assert!((2..=3).contains(&per_try), "{per_try}");
    assert_eq!(counted(service, ClusterCounter::Timeout), 1);
}

#[tokio::test]
async fn a_per_try_timeout_on_the_last_try_is_a_504_flagged_ut_and_urx() {
    let backend = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        String::new()
    })
    .await;
    let service = "last-per-try.test";
    let more = "    retries: {attempts: 1, perTryTimeout: 100ms, retryOn: gateway-error}\n";
    let proxy = proxy(service, &[backend.addr], more).await;
    let started = Instant::now();
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let flagged = metric("istio_requests_total", service, "response_flags=\"UT,URX\"").await;
    assert_eq!(flagged, 1.0);
}

#[tokio::test]
async fn zero_attempts_send_one_try() {
    let dead = closed_port().await;
    let service = "no-retries.test";
    let proxy = proxy(service, &[dead], "    retries: {attempts: 0}\n").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let flagged = metric("istio_requests_total", service, "response_flags=\"UF\"").await;
    assert_eq!(flagged, 1.0);
    assert_eq!(counted(service, ClusterCounter::Retry), 0);
}

#[tokio::test]
async fn max_retries_bound_the_retries_in_flight_at_once() {
    let backend = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_string()
    })
    .await;
    let service = "max-retries.test";
    let more = "    retries: {attempts: 1, retryOn: 5xx}\n";
    let rule = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: istio-system}
spec:
  host: max-retries.test
  trafficPolicy:
    connectionPool: {http: {maxRetries: 1}}
";
    let proxy = Proxy::start(|port| yaml(port, service, &[backend.addr], more) + rule).await;
    let asks: Vec<_> = (0..3).map(|_| ask(&proxy, GET)).collect();
    let answers = futures_util::future::join_all(asks).await;
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
    // All three fail together: one retry starts, the other two overflow.
    assert_eq!(counted(service, ClusterCounter::Retry), 1);
    assert_eq!(counted(service, ClusterCounter::RetryOverflow), 2);
}

#[tokio::test]
async fn retry_remote_localities_sends_the_third_try_to_the_next_priority_level() {
    // Three failing endpoints at priority 0 (no locality, as the gateway),
    // one good one in another region (priority 1); outlier detection so
    // locality priorities apply, set never to eject here.
    let failing = [
        failing_first(usize::MAX).await,
        failing_first(usize::MAX).await,
        failing_first(usize::MAX).await,
    ];
    let good = Backend::ok().await;
    let mut addrs: Vec<SocketAddr> = failing.iter().map(|b| b.addr).collect();
    addrs.push(good.addr);
    let rule = |service: &str| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {service}, namespace: istio-system}}
spec:
  host: {service}
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1000}}
"
        )
    };
    let remote = |port: u16, service: &str, remote_localities: bool| {
        let more = format!(
            "    retries: {{attempts: 2, retryOn: 5xx, retryRemoteLocalities: {remote_localities}}}\n"
        );
        let good_at = format!("ports: {{http: {}}}}}", good.addr.port());
        yaml(port, service, &addrs, &more).replace(
            &good_at,
            &format!("ports: {{http: {}}}, locality: eu/1}}", good.addr.port()),
        ) + &rule(service)
    };
    // Tries 1 and 2 on two of level 0; after two tries, level 0 is left out.
    let with = Proxy::start(|port| remote(port, "remote.test", true)).await;
    for _ in 0..5 {
        let answer = ask(&with, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Without it the third try takes level 0's untried endpoint.
    let without = Proxy::start(|port| remote(port, "local.test", false)).await;
    for _ in 0..5 {
        let answer = ask(&without, GET).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
}
