//! Mirrors through the proxy in-process: the copy's authority, its body,
//! its share, and a dead or slow mirror costing the client nothing.
use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;

use super::{
    retry_phase::{GET, counted, yaml},
    upstream_phase::ask,
};
use crate::proxy::{
    testing::{Backend, LOOPBACK, Proxy},
    upstream::ClusterCounter,
};

/// A ServiceEntry for `mirror.test` at `addr`.
fn mirror_entry(addr: SocketAddr) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mirror, namespace: istio-system}}
spec:
  hosts: [mirror.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: \"{}\", ports: {{http: {}}}}}]
",
        addr.ip(),
        addr.port()
    )
}

const MIRROR_ALL: &str = "    mirror: {host: mirror.test, port: {number: 80}}\n";

#[tokio::test]
async fn a_mirror_gets_a_copy_with_the_shadow_authority_and_the_body() {
    let mut backend = Backend::ok().await;
    let mut mirror = Backend::ok().await;
    let proxy = Proxy::start(|port| {
        yaml(port, "mirrored.test", &[backend.addr], MIRROR_ALL) + &mirror_entry(mirror.addr)
    })
    .await;
    let answer = ask(
        &proxy,
        "POST /x HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let original = backend.request().await;
    assert!(original.ends_with("\r\n\r\nhello"), "{original}");
    let copy = mirror.request().await.to_ascii_lowercase();
    assert!(copy.starts_with("post /x http/1.1\r\n"), "{copy}");
    assert!(copy.contains("\r\nhost: app.test-shadow\r\n"), "{copy}");
    assert!(copy.ends_with("\r\n\r\nhello"), "{copy}");
    assert_eq!(counted("mirror.test", ClusterCounter::Mirrored), 1);
}

#[tokio::test]
async fn a_dead_or_slow_mirror_costs_the_client_nothing() {
    let backend = Backend::ok().await;
    let dead = TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let proxy = Proxy::start(|port| {
        yaml(port, "dead-mirror.test", &[backend.addr], MIRROR_ALL) + &mirror_entry(dead)
    })
    .await;
    for _ in 0..5 {
        let answer = ask(&proxy, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let slow = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        String::new()
    })
    .await;
    let proxy = Proxy::start(|port| {
        yaml(port, "slow-mirror.test", &[backend.addr], MIRROR_ALL) + &mirror_entry(slow.addr)
    })
    .await;
    let started = std::time::Instant::now();
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_mirror_gets_its_share_of_requests() {
    let backend = Backend::ok().await;
    let mut mirror = Backend::ok().await;
    let more =
        "    mirror: {host: mirror.test, port: {number: 80}}\n    mirrorPercentage: {value: 25}\n";
    let proxy = Proxy::start(|port| {
        yaml(port, "quarter.test", &[backend.addr], more) + &mirror_entry(mirror.addr)
    })
    .await;
    for _ in 0..400 {
        ask(&proxy, GET).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut copies = 0;
    while mirror.requests.try_recv().is_ok() {
        copies += 1;
    }
    // 25% of 400 is 100; a binomial's 4 sigma is about 35.
    assert!((65..=135).contains(&copies), "{copies}");
}
