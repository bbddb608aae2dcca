//! Outlier detection through the proxy in-process: an endpoint answering
//! 5xx is ejected (no requests reach it) and comes back when its time is up.
use std::time::Duration;

use super::{
    retry_phase::{GET, counted, failing_first, yaml},
    upstream_phase::ask,
};
use crate::proxy::{
    testing::{Backend, Proxy},
    upstream::ClusterCounter,
};

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_and_comes_back_when_its_time_is_up() {
    let mut bad = failing_first(usize::MAX).await;
    let mut good = Backend::ok().await;
    let service = "outlier.test";
    let rule = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: outlier, namespace: istio-system}
spec:
  host: outlier.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 600ms, maxEjectionPercent: 100}
";
    // No retries: each 503 reaches the client, so the count is exact.
    let more = "    retries: {attempts: 0}\n";
    let proxy = Proxy::start(|port| yaml(port, service, &[bad.addr, good.addr], more) + rule).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let answer = ask(&proxy, GET).await;
        statuses.push(answer.get(9..12).unwrap_or_default().to_string());
    }
    let failed = statuses.iter().filter(|s| *s == "503").count();
    assert_eq!(failed, 2, "{statuses:?}");
    assert_eq!(counted(service, ClusterCounter::EjectionsConsecutive5xx), 1);
    assert_eq!(counted(service, ClusterCounter::EjectionsActive), 1);
    let mut reached_bad = 0;
    while bad.requests.try_recv().is_ok() {
        reached_bad += 1;
    }
    assert_eq!(reached_bad, 2, "nothing reaches an ejected endpoint");
    while good.requests.try_recv().is_ok() {}
    // Ejected for 600 ms, returned at the next 100 ms interval.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(counted(service, ClusterCounter::EjectionsActive), 0);
    // Least request draws between two idle endpoints at random: 20 asks
    // miss the returned one with a chance of 2^-20 (4 missed it 1 in 16).
    let mut back = Vec::new();
    for _ in 0..20 {
        back.push(
            ask(&proxy, GET)
                .await
                .get(9..12)
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(back.iter().any(|s| s == "503"), "returned: {back:?}");
}

#[tokio::test]
async fn with_every_endpoint_ejected_requests_get_no_healthy_upstream() {
    let bad = failing_first(usize::MAX).await;
    let service = "all-out.test";
    let rule = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: outlier, namespace: istio-system}
spec:
  host: all-out.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s}
";
    let more = "    retries: {attempts: 0}\n";
    let proxy = Proxy::start(|port| yaml(port, service, &[bad.addr], more) + rule).await;
    let first = ask(&proxy, GET).await;
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    let second = ask(&proxy, GET).await;
    assert!(second.ends_with("no healthy upstream"), "{second}");
}
