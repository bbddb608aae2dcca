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
        proxy_protocol: None,
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
        owner: None,
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
        take_idle_http1(&endpoint, &cluster.load, None).expect("idle for just under the timeout");
    pool(now - DEFAULT_IDLE_TIMEOUT, connection.sender);
    assert!(take_idle_http1(&endpoint, &cluster.load, None).is_none());
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

/// A loopback HTTP/1.1 and HTTP/2 backend whose connections start with a
/// PROXY v1 line: it answers each request with the line its connection
/// began with.
async fn proxy_protocol_backend() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut line = Vec::new();
                while !line.ends_with(b"\r\n") && line.len() < 108 {
                    let Ok(byte) = stream.read_u8().await else {
                        return;
                    };
                    line.push(byte);
                }
                let line = Bytes::from(line);
                let answer = service_fn(move |_| {
                    let line = line.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(line))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn with_proxy_protocol_a_connection_carries_one_downstream_connections_requests() {
    for version in [Version::HTTP_11, Version::HTTP_2] {
        one_connection_per_downstream_connection(version).await;
    }
}

async fn one_connection_per_downstream_connection(version: Version) {
    let (addr, accepted, task) = proxy_protocol_backend().await;
    let endpoint = UpstreamEndpoint::new(addr, 1);
    let mut cluster = cluster();
    cluster.proxy_protocol = Some(ProxyProtocolVersion::V1);
    let downstream = |port: u16| Ends {
        source: SocketAddr::from(([192, 0, 2, 2], port)),
        destination: SocketAddr::from(([192, 0, 2, 1], 80)),
    };
    let mut seen = Vec::new();
    for port in [50000, 50000, 50001, 50000] {
        let request = get("http://web.example/", version);
        let (response, active) = within(send_for(
            &endpoint,
            &cluster,
            version,
            request,
            Some(downstream(port)),
        ))
        .await
        .expect("a response");
        let body = within(response.into_body().collect())
            .await
            .expect("a body");
        drop(active);
        seen.push(String::from_utf8_lossy(&body.to_bytes()).into_owned());
    }
    assert_eq!(
        seen,
        [
            "PROXY TCP4 192.0.2.2 192.0.2.1 50000 80\r\n",
            "PROXY TCP4 192.0.2.2 192.0.2.1 50000 80\r\n",
            "PROXY TCP4 192.0.2.2 192.0.2.1 50001 80\r\n",
            "PROXY TCP4 192.0.2.2 192.0.2.1 50000 80\r\n",
        ]
    );
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        2,
        "{version:?}: one connection per downstream connection, each reused"
    );
    task.abort();
}

#[tokio::test]
async fn the_proxy_header_comes_before_tls_originations_client_hello() {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    // SIMPLE origination verified against the system's roots: the
    // handshake never completes here, only its first bytes matter.
    let cluster = crate::plan::Cluster {
        name: "outbound|443||web.example".into(),
        host: "web.example".into(),
        port: 443,
        subset: None,
        protocol: None,
        endpoints: Vec::new(),
        discovered: None,
        locality: Default::default(),
        original_destination: None,
        policy: crate::plan::TrafficPolicy {
            tls: Some(crate::plan::ClientTls {
                mode: crate::plan::ClientTlsMode::Simple,
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let tls = crate::proxy::origination::origination(&cluster, b"http/1.1", &crate::files::Disk)
        .expect("an origination")
        .expect("TLS");
    let ends = Ends {
        source: SocketAddr::from(([192, 0, 2, 2], 50000)),
        destination: SocketAddr::from(([192, 0, 2, 1], 443)),
    };
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut first = vec![0u8; 42];
        stream.read_exact(&mut first).await.expect("header");
        let record = stream.read_u8().await.expect("a record");
        (first, record)
    });
    let connecting = connect(
        addr,
        Duration::from_millis(500),
        Some(&tls),
        None,
        Some((ProxyProtocolVersion::V1, Some(ends))),
    );
    let (_, seen) = tokio::join!(connecting, within(server));
    let (first, record) = seen.expect("the server's side");
    assert_eq!(first, b"PROXY TCP4 192.0.2.2 192.0.2.1 50000 443\r\n");
    assert_eq!(record, 0x16, "then a TLS handshake record");
}
