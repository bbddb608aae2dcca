//! Clusters as the proxy builds them from the plan.
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::model::{ConnectionPool, TrafficPolicy};

fn cluster(protocol: Option<Protocol>, pool: ConnectionPool, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: "outbound|80||backend.test".to_string(),
        host: "backend.test".to_string(),
        port: 80,
        subset: None,
        protocol,
        endpoints,
        discovered: None,
        locality: Default::default(),
        original_destination: None,
        policy: TrafficPolicy {
            connection_pool: Some(pool),
            ..TrafficPolicy::default()
        },
    }
}

fn upgrade(policy: H2UpgradePolicy) -> ConnectionPool {
    ConnectionPool {
        h2_upgrade_policy: Some(policy),
        ..ConnectionPool::default()
    }
}

#[test]
fn http2_ports_and_upgraded_clusters_speak_http2_and_the_others_http1() {
    let speaks = |protocol, pool| upstream_protocol(&cluster(protocol, pool, Vec::new()));
    for protocol in [Protocol::Http2, Protocol::Grpc, Protocol::GrpcWeb] {
        assert_eq!(
            speaks(Some(protocol), ConnectionPool::default()),
            UpstreamProtocol::Http2,
            "{protocol:?}"
        );
    }
    for protocol in [None, Some(Protocol::Http), Some(Protocol::Tcp)] {
        assert_eq!(
            speaks(protocol, ConnectionPool::default()),
            UpstreamProtocol::Http1,
            "{protocol:?}"
        );
        assert_eq!(
            speaks(protocol, upgrade(H2UpgradePolicy::Upgrade)),
            UpstreamProtocol::Http2,
            "{protocol:?} upgraded"
        );
        for policy in [H2UpgradePolicy::Default, H2UpgradePolicy::DoNotUpgrade] {
            assert_eq!(
                speaks(protocol, upgrade(policy)),
                UpstreamProtocol::Http1,
                "{protocol:?} {policy:?}"
            );
        }
    }
    let follow = ConnectionPool {
        use_client_protocol: true,
        ..ConnectionPool::default()
    };
    assert_eq!(
        speaks(Some(Protocol::Grpc), follow),
        UpstreamProtocol::SameAsClient
    );
}

#[test]
fn a_cluster_is_found_by_its_id() {
    let fixed = Endpoint::new(
        EndpointAddress::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        8080,
        1,
    );
    let clusters = [cluster(None, ConnectionPool::default(), vec![fixed])];
    let upstreams = Upstreams::new(&clusters, &Default::default(), &crate::files::Disk)
        .expect("plain clusters build");
    let found = upstreams.get(ClusterId(0)).expect("the first cluster");
    assert_eq!(found.name, clusters[0].name);
    assert!(upstreams.get(ClusterId(1)).is_none());
}

#[tokio::test]
async fn a_cluster_picks_among_its_fixed_or_resolved_endpoints() {
    let fixed = Endpoint::new(
        EndpointAddress::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        8080,
        1,
    );
    let built = UpstreamCluster::new(
        &cluster(None, ConnectionPool::default(), vec![fixed]),
        &Default::default(),
        &crate::files::Disk,
    )
    .expect("a plain cluster builds");
    let picked = built.pick(Origin::Unknown).await.expect("an endpoint");
    assert_eq!(picked.addr, SocketAddr::from(([192, 0, 2, 1], 8080)));
    // `localhost` resolves from the hosts file, with no network.
    let named = Endpoint::new(EndpointAddress::Dns("localhost".to_string()), 8080, 1);
    let built = UpstreamCluster::new(
        &cluster(None, ConnectionPool::default(), vec![named]),
        &Default::default(),
        &crate::files::Disk,
    )
    .expect("a plain cluster builds");
    let picked = tokio::time::timeout(Duration::from_secs(5), built.pick(Origin::Unknown))
        .await
        .expect("resolved in time")
        .expect("an endpoint");
    assert!(picked.addr.ip().is_loopback(), "{picked:?}");
    assert_eq!(picked.addr.port(), 8080);
    let empty = UpstreamCluster::new(
        &cluster(None, ConnectionPool::default(), Vec::new()),
        &Default::default(),
        &crate::files::Disk,
    )
    .expect("a plain cluster builds");
    assert!(matches!(
        empty.pick(Origin::Unknown).await,
        Err(UpstreamError::NoEndpoint)
    ));
}

fn two_endpoints(pool: ConnectionPool) -> Arc<UpstreamCluster> {
    let endpoints = [1, 2]
        .map(|last| {
            Endpoint::new(
                EndpointAddress::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))),
                80,
                1,
            )
        })
        .to_vec();
    let mut round_robin = cluster(None, pool, endpoints);
    round_robin.policy.load_balancer = Some(LoadBalancer::Simple(SimpleLb::RoundRobin));
    let built = UpstreamCluster::new(&round_robin, &Discovery::default(), &crate::files::Disk)
        .expect("a cluster");
    Arc::new(built)
}

#[tokio::test]
async fn a_retry_takes_an_untried_endpoint_whenever_there_is_one() {
    let cluster = two_endpoints(ConnectionPool::default());
    let first = cluster
        .pick(Origin::Unknown)
        .await
        .expect("an endpoint")
        .addr;
    let other = cluster
        .pick(Origin::Unknown)
        .await
        .expect("an endpoint")
        .addr;
    assert_ne!(first, other);
    // Round robin would give `first` next: avoiding it gives `other`,
    // every time.
    for _ in 0..10 {
        let untried = cluster
            .pick_avoiding(&[first], &[], None, Origin::Unknown)
            .await
            .expect("an endpoint");
        assert_eq!(untried.addr, other, "never the tried one");
    }
    // Nothing to avoid: the draw as it falls, both endpoints in turn.
    let a = cluster
        .pick_avoiding(&[], &[], None, Origin::Unknown)
        .await
        .expect("an endpoint");
    let b = cluster
        .pick_avoiding(&[], &[], None, Origin::Unknown)
        .await
        .expect("an endpoint");
    assert_ne!(a.addr, b.addr);
    // Every endpoint tried: one of them all the same.
    let every = cluster
        .pick_avoiding(&[first, other], &[], None, Origin::Unknown)
        .await
        .expect("an endpoint");
    assert!([first, other].contains(&every.addr));
}

#[test]
fn max_retries_in_flight_are_a_limit_and_unset_means_none() {
    let limited = two_endpoints(ConnectionPool {
        max_retries: Some(1),
        ..ConnectionPool::default()
    });
    let first = limited.start_retry().expect("the first retry");
    assert!(limited.start_retry().is_none(), "over the limit");
    drop(first);
    assert!(limited.start_retry().is_some(), "room again");
    let unlimited = two_endpoints(ConnectionPool::default());
    let many: Vec<_> = (0..100).filter_map(|_| unlimited.start_retry()).collect();
    assert_eq!(many.len(), 100);
}

#[test]
fn a_retry_budget_allows_its_share_of_requests_in_flight_and_at_least_its_minimum() {
    let mut rule = cluster(None, ConnectionPool::default(), Vec::new());
    rule.policy.retry_budget = Some(crate::model::RetryBudget {
        percent: 20.0,
        min_retry_concurrency: 2,
        budget_interval: Duration::ZERO,
    });
    let built = Arc::new(
        UpstreamCluster::new(&rule, &Discovery::default(), &crate::files::Disk).expect("a cluster"),
    );
    // No request in flight: the minimum.
    let held: Vec<_> = (0..5).filter_map(|_| built.start_retry()).collect();
    assert_eq!(held.len(), 2);
    drop(held);
    // 25 in flight: 20% is 5.
    let requests: Vec<_> = (0..25)
        .map(|_| built.load.admit_request().expect("admitted"))
        .collect();
    let held: Vec<_> = (0..10).filter_map(|_| built.start_retry()).collect();
    assert_eq!(held.len(), 5);
    drop(requests);
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_with_an_interval_is_a_share_of_the_requests_started_within_it() {
    let mut rule = cluster(None, ConnectionPool::default(), Vec::new());
    rule.policy.retry_budget = Some(crate::model::RetryBudget {
        percent: 20.0,
        min_retry_concurrency: 2,
        budget_interval: Duration::from_secs(10),
    });
    let built = Arc::new(
        UpstreamCluster::new(&rule, &Discovery::default(), &crate::files::Disk).expect("a cluster"),
    );
    // 25 requests started and done: none in flight, yet 20% of 25 is 5.
    for _ in 0..25 {
        drop(built.load.admit_request().expect("admitted"));
    }
    let held: Vec<_> = (0..10).filter_map(|_| built.start_retry()).collect();
    assert_eq!(held.len(), 5);
    drop(held);
    // Ten seconds on, they have left the window: the minimum again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let held: Vec<_> = (0..10).filter_map(|_| built.start_retry()).collect();
    assert_eq!(held.len(), 2);
}

fn warmup(window: u64, minimum_percent: f64, aggression: f64) -> Warmup {
    Warmup {
        window: Duration::from_secs(window),
        minimum_percent,
        aggression,
    }
}

#[test]
fn slow_start_scales_a_young_endpoints_weight_by_its_age_over_the_window() {
    let secs = Duration::from_secs;
    let linear = warmup(100, 10.0, 1.0);
    // 50 s into 100 s: half the weight (in thousandths).
    assert_eq!(slow_start_weight(2, secs(50), &linear), 1000);
    // The first second counts as one, and never below the minimum share.
    assert_eq!(slow_start_weight(1, Duration::ZERO, &linear), 100);
    assert_eq!(slow_start_weight(1, secs(5), &linear), 100);
    assert_eq!(slow_start_weight(1, secs(20), &linear), 200);
    // Past the window: the whole weight.
    assert_eq!(slow_start_weight(3, secs(100), &linear), 3000);
    // Aggression 2: the square root of the time factor.
    assert_eq!(slow_start_weight(1, secs(25), &warmup(100, 10.0, 2.0)), 500);
}

#[test]
fn during_slow_start_a_new_endpoint_gets_its_share_of_requests_ramped() {
    let mut rule = cluster(
        None,
        ConnectionPool::default(),
        [1, 2]
            .map(|last| {
                Endpoint::new(
                    EndpointAddress::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))),
                    80,
                    1,
                )
            })
            .to_vec(),
    );
    rule.policy.load_balancer = Some(LoadBalancer::Simple(SimpleLb::RoundRobin));
    rule.policy.warmup = Some(warmup(3600, 10.0, 1.0));
    let built =
        UpstreamCluster::new(&rule, &Discovery::default(), &crate::files::Disk).expect("a cluster");
    let Endpoints::Static(endpoints) = &built.endpoints else {
        panic!("static endpoints");
    };
    // Both joined just now: equal weights (10% each), an even split.
    let now = tokio::time::Instant::now();
    let weight = |ep: &UpstreamEndpoint| {
        slow_start_weight(
            ep.weight,
            now.saturating_duration_since(ep.joined),
            &warmup(3600, 10.0, 1.0),
        )
    };
    assert_eq!(weight(&endpoints[0]), weight(&endpoints[1]));
    // An old endpoint beside a new one: the new one gets about a tenth.
    let old = UpstreamEndpoint::joined_at(endpoints[0].addr, 1, now - Duration::from_secs(7200));
    let young = Arc::clone(&endpoints[1]);
    let pair = [old, young];
    let mut young_picks = 0;
    for _ in 0..1100 {
        let picked = built.choose_among(&pair, None).expect("an endpoint");
        if Arc::ptr_eq(&picked, &pair[1]) {
            young_picks += 1;
        }
    }
    // Weights 1000 and 100: 100 of every 1100 round-robin tickets.
    assert_eq!(young_picks, 100);
}

#[tokio::test]
async fn an_original_destination_cluster_sends_a_captured_connection_to_its_destination_and_a_listeners_nowhere()
 {
    let mut rule = cluster(None, ConnectionPool::default(), Vec::new());
    rule.original_destination = Some(crate::plan::OriginalDestination {
        port_override: None,
    });
    let built =
        UpstreamCluster::new(&rule, &Discovery::default(), &crate::files::Disk).expect("a cluster");
    let original: SocketAddr = "198.51.100.3:80".parse().expect("addr");
    let host = built
        .pick(Origin::Captured(original))
        .await
        .expect("the original destination");
    assert_eq!(host.addr, original);
    // Retries take the same host: there is no other.
    let again = built
        .pick_avoiding(&[original], &[], None, Origin::Captured(original))
        .await
        .expect("the original destination");
    assert!(Arc::ptr_eq(&host, &again));
    // The gateway's own address: no host, never a connection to itself.
    let own: SocketAddr = "192.0.2.1:80".parse().expect("addr");
    let refused = built.pick(Origin::Listener(own)).await;
    let Err(err) = refused else {
        panic!("a host for the gateway's own address: {refused:?}");
    };
    assert_eq!(err.flag(), "UH");
    assert_eq!(err.kind(), FailureKind::NoHost);
    assert_eq!(
        err.to_string(),
        "no original destination: the connection was made to the gateway's own address 192.0.2.1:80"
    );
    // Outlier detection sees the hosts made so far.
    assert_eq!(built.with_endpoints(<[_]>::len), Some(1));
}
