//! The pool against loopback backends (hyper's server, counting the
//! connections it accepts) and in-memory connections.
use std::{convert::Infallible, future::Future};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    StatusCode,
    server::conn::{http1 as server1, http2 as server2},
    service::service_fn,
};
use tokio::{io::DuplexStream, net::TcpListener, task::JoinHandle};

use super::*;
use crate::proxy::{
    body::empty,
    testing::LOOPBACK,
    upstream::{Balance, DEFAULT_IDLE_TIMEOUT, Endpoints, UpstreamProtocol},
};

/// Awaits `future`, failing the test after five seconds.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("done in time")
}

/// A loopback backend answering `200 ok` over HTTP/1.1 (or HTTP/2),
/// counting the connections it accepts.
struct Counted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Counted {
    async fn start(h2: bool) -> Self {
        let listener = TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let io = TokioIo::new(stream);
                let ok = service_fn(|_| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                if h2 {
                    let served =
                        server2::Builder::new(TokioExecutor::new()).serve_connection(io, ok);
                    tokio::spawn(served);
                } else {
                    tokio::spawn(server1::Builder::new().serve_connection(io, ok));
                }
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cluster() -> UpstreamCluster {
    limited(PoolLimits::of(&Default::default()))
}

/// A cluster with these pool limits and no endpoints of its own (the
/// tests hand it theirs).
fn limited(limits: PoolLimits) -> UpstreamCluster {
    let counters: Arc<super::super::ClusterCounters> = Arc::default();
    UpstreamCluster {
        name: "test".to_string(),
        balance: Balance::RoundRobin,
        endpoints: Endpoints::Static(Vec::new()),
        next: AtomicUsize::new(0),
        connect_timeout: Duration::from_secs(5),
        protocol: UpstreamProtocol::Http1,
        tls: None,
        counters: Arc::clone(&counters),
        load: Arc::new(ClusterLoad::new(limits, counters)),
        max_retries: u32::MAX,
        retry_budget: None,
        retries_in_flight: Default::default(),
        outlier: None,
        hashing: None,
        mirrors_in_flight: Default::default(),
        slow_start: None,
        by_locality: false,
        weights_localities: false,
        warned_loop: Default::default(),
    }
}

fn get(uri: &str, version: Version) -> Request<ProxyBody> {
    let mut request = Request::new(empty());
    *request.uri_mut() = uri.parse().expect("a URI");
    *request.version_mut() = version;
    request
}

/// An HTTP/1.1 connection to an in-memory peer that never answers (kept
/// open while the peer is).
async fn in_memory_connection() -> (http1::SendRequest<ProxyBody>, DuplexStream) {
    let (ours, peer) = tokio::io::duplex(1024);
    let (sender, connection) = http1::handshake(TokioIo::new(ours))
        .await
        .expect("an in-memory handshake");
    tokio::spawn(connection);
    (sender, peer)
}

fn idle(endpoint: &UpstreamEndpoint) -> usize {
    endpoint.pool.lock().expect("the pool").http1.len()
}

#[tokio::test]
async fn an_http1_connection_is_reused_once_its_response_is_done() {
    let backend = Counted::start(false).await;
    let endpoint = UpstreamEndpoint::new(backend.addr, 1);
    let cluster = cluster();
    for _ in 0..2 {
        let request = get("/", Version::HTTP_11);
        let (response, mut active) = within(send(&endpoint, &cluster, Version::HTTP_11, request))
            .await
            .expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(endpoint.active.load(Ordering::Relaxed), 1, "in flight");
        let body = within(response.into_body().collect())
            .await
            .expect("the body");
        assert_eq!(body.to_bytes(), "ok");
        let connection = active.http1.as_mut().expect("an HTTP/1.1 connection");
        within(connection.sender.ready())
            .await
            .expect("ready for the next request");
        drop(active);
        assert_eq!(endpoint.active.load(Ordering::Relaxed), 0, "done");
        assert_eq!(idle(&endpoint), 1, "pooled");
    }
    assert_eq!(backend.accepted(), 1, "one connection for both requests");
}

#[tokio::test]
async fn http2_requests_share_one_connection() {
    let backend = Counted::start(true).await;
    let endpoint = UpstreamEndpoint::new(backend.addr, 1);
    let cluster = cluster();
    for _ in 0..2 {
        let request = get("http://backend.test/", Version::HTTP_2);
        let (response, active) = within(send(&endpoint, &cluster, Version::HTTP_2, request))
            .await
            .expect("a response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(active.http1.is_none(), "nothing to give back to the pool");
        let body = within(response.into_body().collect())
            .await
            .expect("the body");
        assert_eq!(body.to_bytes(), "ok");
    }
    assert_eq!(backend.accepted(), 1, "one connection for both requests");
}

/// An idle pooled HTTP/1.1 connection for `endpoint`.
fn pooled(sender: http1::SendRequest<ProxyBody>, idle_since: Instant) -> Http1Connection {
    Http1Connection {
        sender,
        opened: idle_since,
        idle_since,
        served: 1,
    }
}

#[tokio::test]
async fn the_pool_keeps_at_most_its_idle_limit_of_connections() {
    let endpoint = UpstreamEndpoint::new(SocketAddr::from((LOOPBACK, 9)), 1);
    let cluster = cluster();
    let mut peers = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..=MAX_IDLE_PER_ENDPOINT {
        let (sender, peer) = in_memory_connection().await;
        peers.push(peer);
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        requests.push(ActiveRequest {
            endpoint: Arc::clone(&endpoint),
            load: Arc::clone(&cluster.load),
            http1: Some(pooled(sender, Instant::now())),
            stream: None,
            _request: None,
        });
    }
    drop(requests);
    assert_eq!(endpoint.active.load(Ordering::Relaxed), 0);
    assert_eq!(idle(&endpoint), MAX_IDLE_PER_ENDPOINT);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_expires_at_the_idle_timeout() {
    let endpoint = UpstreamEndpoint::new(SocketAddr::from((LOOPBACK, 9)), 1);
    let cluster = cluster();
    let (mut sender, _peer) = in_memory_connection().await;
    within(sender.ready()).await.expect("ready");
    let pool = |since: Instant, sender| {
        let mut pool = endpoint.pool.lock().expect("the pool");
        pool.http1.push(pooled(sender, since));
    };
    // The clock stands still: the ages below are exact.
    let now = Instant::now();
    pool(now - DEFAULT_IDLE_TIMEOUT + Duration::from_nanos(1), sender);
    let connection =
        take_idle_http1(&endpoint, &cluster.load).expect("idle for just under the timeout");
    pool(now - DEFAULT_IDLE_TIMEOUT, connection.sender);
    assert!(take_idle_http1(&endpoint, &cluster.load).is_none());
    assert_eq!(idle(&endpoint), 0, "the expired connection is dropped");
    assert_eq!(
        cluster.counters.get(ClusterCounter::ConnectionIdleTimeout),
        1
    );
}

fn limits(edit: impl FnOnce(&mut crate::plan::ConnectionPool)) -> PoolLimits {
    let mut pool = crate::plan::ConnectionPool::default();
    edit(&mut pool);
    PoolLimits::of(&pool)
}

/// A backend that answers each request only when told, counting the
/// connections it accepts.
async fn held_backend() -> (SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let (counter, gate) = (Arc::clone(&accepted), Arc::clone(&go));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let gate = Arc::clone(&gate);
            let held = service_fn(move |_| {
                let gate = Arc::clone(&gate);
                async move {
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(server1::Builder::new().serve_connection(TokioIo::new(stream), held));
        }
    });
    (addr, accepted, go)
}

#[tokio::test]
async fn over_max_connections_a_request_waits_and_over_max_pending_it_overflows() {
    let (addr, accepted, go) = held_backend().await;
    let endpoint = UpstreamEndpoint::new(addr, 1);
    let cluster = Arc::new(limited(limits(|pool| {
        pool.max_connections = Some(1);
        pool.http1_max_pending_requests = Some(1);
    })));
    let ask = |cluster: Arc<UpstreamCluster>, endpoint: Arc<UpstreamEndpoint>| async move {
        let (response, active) = send(
            &endpoint,
            &cluster,
            Version::HTTP_11,
            get("/", Version::HTTP_11),
        )
        .await?;
        let body = response.into_body().collect().await;
        drop(active);
        Ok::<_, UpstreamError>(body.is_ok())
    };
    let first = tokio::spawn(ask(Arc::clone(&cluster), Arc::clone(&endpoint)));
    while cluster.load.connections() < 1 {
        tokio::task::yield_now().await;
    }
    // The second waits for the one connection; the third finds the
    // pending queue full.
    let second = tokio::spawn(ask(Arc::clone(&cluster), Arc::clone(&endpoint)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = within(ask(Arc::clone(&cluster), Arc::clone(&endpoint))).await;
    assert!(matches!(third, Err(UpstreamError::Overflow)), "{third:?}");
    go.add_permits(2);
    assert!(within(first).await.expect("joined").expect("answered"));
    assert!(within(second).await.expect("joined").expect("answered"));
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one connection for both"
    );
    let counted = |c| cluster.counters.get(c);
    assert_eq!(counted(ClusterCounter::PendingOverflow), 1);
    assert!(counted(ClusterCounter::ConnectionOverflow) >= 1);
}

#[tokio::test]
async fn over_max_requests_a_request_overflows_at_once() {
    let (addr, _accepted, go) = held_backend().await;
    let endpoint = UpstreamEndpoint::new(addr, 1);
    let cluster = limited(limits(|pool| pool.http2_max_requests = Some(1)));
    go.add_permits(1);
    let ask = || {
        send(
            &endpoint,
            &cluster,
            Version::HTTP_11,
            get("/", Version::HTTP_11),
        )
    };
    // Answered, its body not read yet: still in flight.
    let (_response, held) = within(ask()).await.expect("a response");
    assert!(matches!(within(ask()).await, Err(UpstreamError::Overflow)));
    drop(held);
    go.add_permits(1);
    assert!(within(ask()).await.is_ok(), "room again");
}

#[tokio::test]
async fn a_connection_closes_after_its_max_requests() {
    let backend = Counted::start(false).await;
    let endpoint = UpstreamEndpoint::new(backend.addr, 1);
    let cluster = limited(limits(|pool| pool.max_requests_per_connection = Some(2)));
    for _ in 0..4 {
        let (response, active) = within(send(
            &endpoint,
            &cluster,
            Version::HTTP_11,
            get("/", Version::HTTP_11),
        ))
        .await
        .expect("a response");
        within(response.into_body().collect())
            .await
            .expect("the body");
        drop(active);
    }
    assert_eq!(backend.accepted(), 2, "two requests per connection");
    assert_eq!(
        cluster.counters.get(ClusterCounter::ConnectionMaxRequests),
        2
    );
}

#[tokio::test]
async fn http2_opens_another_connection_past_max_concurrent_streams() {
    let backend = Counted::start(true).await;
    let endpoint = UpstreamEndpoint::new(backend.addr, 1);
    let cluster = limited(limits(|pool| pool.max_concurrent_streams = Some(1)));
    let mut held = Vec::new();
    for _ in 0..2 {
        let request = get("http://backend.test/", Version::HTTP_2);
        let (response, active) = within(send(&endpoint, &cluster, Version::HTTP_2, request))
            .await
            .expect("a response");
        held.push((response, active));
    }
    assert_eq!(backend.accepted(), 2, "one stream per connection");
    drop(held);
    let request = get("http://backend.test/", Version::HTTP_2);
    let (response, _active) = within(send(&endpoint, &cluster, Version::HTTP_2, request))
        .await
        .expect("a response");
    within(response.into_body().collect())
        .await
        .expect("the body");
    assert_eq!(backend.accepted(), 2, "a free stream is reused");
}
