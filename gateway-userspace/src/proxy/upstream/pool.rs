//! Connections to an endpoint: connect (with TLS origination and TCP
//! keepalive), and keep them for the next request (HTTP/1.1 one request
//! at a time, HTTP/2 shared up to `maxConcurrentStreams`), under the
//! cluster's pool limits (`limits.rs`): a request that finds no idle
//! connection and may not open one waits, as Envoy's pending requests do,
//! for one to come free. Connections are closed after
//! `maxRequestsPerConnection` requests, at `maxConnectionDuration`, and
//! idle at the idle timeout (a reaper per endpoint while it has idle
//! connections). A cluster with `proxyProtocol` starts each connection
//! with a PROXY header naming one downstream connection, and reuses it
//! for that downstream connection's requests only (Envoy's pool hash
//! includes the header's addresses).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper::{
    Request, Response, Version,
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{io::AsyncWriteExt, net::TcpStream, time::Instant};

use super::{
    ClusterCounter, UpstreamCluster, UpstreamError,
    error::exchange,
    limits::{ClusterLoad, ConnectionSlot, PendingSlot, PoolLimits, RequestSlot},
    outlier::HostHealth,
};
use crate::{
    plan::{ProxyProtocolVersion, TcpKeepalive},
    proxy::{
        body::ProxyBody,
        origination::{Origination, UpstreamIo},
        proxy_protocol::{self, Ends},
    },
};

#[cfg(test)]
mod tests;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// One address of a cluster, with its share, its in-flight requests and
/// its connections.
#[derive(Debug)]
pub struct UpstreamEndpoint {
    pub addr: SocketAddr,
    pub(super) weight: u32,
    pub(super) active: AtomicUsize,
    /// Connections open (idle or busy).
    pub(super) connections: AtomicUsize,
    pub(super) pool: Mutex<Pool>,
    /// A reaper task watches the idle connections.
    reaping: AtomicBool,
    /// Its outlier-detection record.
    pub(super) health: HostHealth,
    /// When it joined its cluster, for slow start.
    pub(super) joined: Instant,
    /// Its priority and locality weight.
    pub(super) place: super::priority::Place,
}

#[derive(Debug, Default)]
pub(super) struct Pool {
    http1: Vec<Http1Connection>,
    http2: Vec<Http2Connection>,
}

/// An HTTP/1.1 connection, idle in the pool or carrying one request.
#[derive(Debug)]
pub(super) struct Http1Connection {
    sender: http1::SendRequest<ProxyBody>,
    /// The downstream connection its PROXY header named (`proxyProtocol`;
    /// boxed, so a request in flight stays small).
    owner: Option<Arc<Ends>>,
    opened: Instant,
    /// When it last went idle.
    idle_since: Instant,
    /// Requests it has carried.
    served: u32,
}

/// An HTTP/2 connection shared by its streams.
#[derive(Debug)]
struct Http2Connection {
    sender: http2::SendRequest<ProxyBody>,
    /// The downstream connection its PROXY header named (`proxyProtocol`).
    owner: Option<Arc<Ends>>,
    opened: Instant,
    served: u32,
    use_: Arc<StreamUse>,
}

/// The streams of an HTTP/2 connection in flight, and when the last ended.
#[derive(Debug)]
pub(super) struct StreamUse {
    active: AtomicU32,
    idle_since: Mutex<Instant>,
}

impl UpstreamEndpoint {
    pub(super) fn new(addr: SocketAddr, weight: u32) -> Arc<Self> {
        Arc::new(Self {
            addr,
            weight: weight.max(1),
            active: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            pool: Mutex::new(Pool::default()),
            reaping: AtomicBool::new(false),
            health: HostHealth::default(),
            joined: Instant::now(),
            place: super::priority::Place::default(),
        })
    }

    /// An endpoint that joined its cluster at `joined`.
    #[cfg(test)]
    pub(super) fn joined_at(addr: SocketAddr, weight: u32, joined: Instant) -> Arc<Self> {
        let mut endpoint = Self::new(addr, weight);
        if let Some(fresh) = Arc::get_mut(&mut endpoint) {
            fresh.joined = joined;
        }
        endpoint
    }
}

/// Counts a request against its endpoint and cluster while it is in
/// flight, and gives its HTTP/1.1 connection back to the pool when the
/// response is done (held by the response body, so nothing is spawned per
/// request).
#[derive(Debug)]
pub struct ActiveRequest {
    endpoint: Arc<UpstreamEndpoint>,
    load: Arc<ClusterLoad>,
    http1: Option<Http1Connection>,
    stream: Option<Arc<StreamUse>>,
    _request: Option<RequestSlot>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(stream) = self.stream.take() {
            if stream.active.fetch_sub(1, Ordering::Relaxed) == 1 {
                if let Ok(mut since) = stream.idle_since.lock() {
                    *since = Instant::now();
                }
            }
            self.load.freed.notify_waiters();
        }
        let Some(mut connection) = self.http1.take() else {
            return;
        };
        // A body dropped before its end closes the connection; hyper says so.
        if connection.sender.is_closed() {
            return;
        }
        let limits = &self.load.limits;
        if limits
            .max_requests_per_connection
            .is_some_and(|max| connection.served >= max)
        {
            self.load
                .counters
                .add(ClusterCounter::ConnectionMaxRequests);
            return;
        }
        if outlived(connection.opened, limits) {
            self.load
                .counters
                .add(ClusterCounter::ConnectionMaxDuration);
            return;
        }
        connection.idle_since = Instant::now();
        if let Ok(mut pool) = self.endpoint.pool.lock() {
            if pool.http1.len() < MAX_IDLE_PER_ENDPOINT {
                pool.http1.push(connection);
            }
        }
        self.load.freed.notify_waiters();
        reap_while_idle(&self.endpoint, &self.load);
    }
}

/// Whether a connection opened at `opened` is past `maxConnectionDuration`.
fn outlived(opened: Instant, limits: &PoolLimits) -> bool {
    limits
        .max_connection_duration
        .is_some_and(|most| opened.elapsed() >= most)
}

/// Sends `req` (origin-form URI, headers ready) to `endpoint` of
/// `cluster` over `version`, reusing a pooled connection when one is
/// free, opening one when the limits allow, else waiting for one. With no
/// downstream connection (a mirror's copy).
pub async fn send(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    version: Version,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, ActiveRequest), UpstreamError> {
    send_for(endpoint, cluster, version, req, None).await
}

/// [`send`] for a request of the `downstream` connection, which a
/// cluster's PROXY header names.
pub async fn send_for(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    version: Version,
    req: Request<ProxyBody>,
    downstream: Option<Ends>,
) -> Result<(Response<Incoming>, ActiveRequest), UpstreamError> {
    let opening = Opening {
        header: cluster.proxy_protocol.map(|version| (version, downstream)),
        owner: cluster.proxy_protocol.and(downstream),
    };
    let load = &cluster.load;
    let request = load.admit_request()?;
    endpoint.active.fetch_add(1, Ordering::Relaxed);
    let mut active = ActiveRequest {
        endpoint: Arc::clone(endpoint),
        load: Arc::clone(load),
        http1: None,
        stream: None,
        _request: Some(request),
    };
    let response = if version == Version::HTTP_2 {
        let (response, stream) = send_http2(endpoint, cluster, req, opening).await?;
        active.stream = Some(stream);
        response
    } else {
        let (response, connection) = send_http1(endpoint, cluster, req, opening).await?;
        active.http1 = Some(connection);
        response
    };
    Ok((response, active))
}

/// How a new connection starts, and whose requests it may carry.
#[derive(Clone, Copy, Debug, Default)]
struct Opening {
    /// The PROXY header's version and the downstream connection it names.
    header: Option<(ProxyProtocolVersion, Option<Ends>)>,
    /// The pool key: the named downstream connection (`proxyProtocol` only).
    owner: Option<Ends>,
}

/// Connects to `addr`, with TCP keepalive when asked, then writes the
/// PROXY header when `header` asks for one (for the downstream
/// connection it names, or for none), then TLS when the cluster
/// originates it (all within the same connect timeout).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Origination>,
    keepalive: Option<&TcpKeepalive>,
    header: Option<(ProxyProtocolVersion, Option<Ends>)>,
) -> Result<UpstreamIo, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect { addr, reason };
    let connecting = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let _ = stream.set_nodelay(true);
        if let Some(keepalive) = keepalive {
            if let Err(err) = set_keepalive(&stream, keepalive) {
                log::debug!("upstream {addr}: TCP keepalive not set: {err}");
            }
        }
        if let Some((version, downstream)) = header {
            let own = Ends {
                source: stream.local_addr().map_err(|err| failed(err.to_string()))?,
                destination: addr,
            };
            let bytes = proxy_protocol::header(version, downstream, own);
            stream
                .write_all(&bytes)
                .await
                .map_err(|err| failed(format!("PROXY header not sent: {err}")))?;
        }
        match tls {
            None => Ok(UpstreamIo::Plain(stream)),
            Some(tls) => tls.connect(stream).await.map_err(|err| {
                log::warn!("upstream TLS to {addr} failed: {err}; not falling back to plaintext");
                UpstreamError::Tls {
                    addr,
                    reason: err.to_string(),
                }
            }),
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| failed(format!("timed out after {timeout:?}")))?
}

/// SO_KEEPALIVE with the settings given; Istio passes whole seconds to
/// Envoy (`setKeepAliveSettings`), and the kernel takes no less than one.
fn set_keepalive(stream: &TcpStream, keepalive: &TcpKeepalive) -> std::io::Result<()> {
    let seconds = |d: Duration| Duration::from_secs(d.as_secs().max(1));
    let mut params = socket2::TcpKeepalive::new();
    if let Some(time) = keepalive.time {
        params = params.with_time(seconds(time));
    }
    if let Some(interval) = keepalive.interval {
        params = params.with_interval(seconds(interval));
    }
    if let Some(probes) = keepalive.probes {
        params = params.with_retries(probes);
    }
    socket2::SockRef::from(stream).set_tcp_keepalive(&params)
}

/// What a request got: a pooled connection to reuse, or leave to open one.
enum Ready<T> {
    Reuse(T),
    Open(ConnectionSlot),
}

/// Reuses what `reuse` finds, or opens a connection when the cluster's
/// limits allow; else waits, as one of the cluster's pending requests,
/// until a connection closes, goes idle or has a stream free.
async fn reuse_or_open<T>(
    endpoint: &Arc<UpstreamEndpoint>,
    load: &Arc<ClusterLoad>,
    mut reuse: impl FnMut() -> Option<T>,
) -> Result<Ready<T>, UpstreamError> {
    let mut pending: Option<PendingSlot> = None;
    loop {
        // Registered before looking, so nothing freed in between is missed.
        let freed = load.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(found) = reuse() {
            return Ok(Ready::Reuse(found));
        }
        if let Some(slot) = load.open(endpoint) {
            return Ok(Ready::Open(slot));
        }
        if pending.is_none() {
            pending = Some(load.pend()?);
        }
        freed.await;
    }
}

/// The response, and the connection it came on (for the pool, once the
/// response body is done).
async fn send_http1(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    mut req: Request<ProxyBody>,
    opening: Opening,
) -> Result<(Response<Incoming>, Http1Connection), UpstreamError> {
    let load = &cluster.load;
    loop {
        let ready = reuse_or_open(endpoint, load, || {
            take_idle_http1(endpoint, load, opening.owner)
        })
        .await?;
        let slot = match ready {
            Ready::Reuse(mut connection) => match connection.sender.try_send_request(req).await {
                Ok(response) => {
                    connection.served += 1;
                    return Ok((response, connection));
                }
                // The pooled connection closed before the request was
                // written (the backend's idle close racing the request):
                // another connection takes it, as Envoy's pool never hands
                // out a connection it saw close.
                Err(mut unsent) => match unsent.take_message() {
                    Some(unsent_req) => {
                        req = unsent_req;
                        continue;
                    }
                    None => return Err(exchange(endpoint.addr)(unsent.into_error())),
                },
            },
            Ready::Open(slot) => slot,
        };
        let stream = connect(
            endpoint.addr,
            cluster.connect_timeout,
            cluster.tls.as_ref(),
            load.limits.keepalive.as_ref(),
            opening.header,
        )
        .await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(exchange(endpoint.addr))?;
        tokio::spawn(async move {
            let _counted = slot;
            if let Err(err) = connection.with_upgrades().await {
                log::debug!("upstream connection ended: {err}");
            }
        });
        let response = sender
            .send_request(req)
            .await
            .map_err(exchange(endpoint.addr))?;
        let opened = Instant::now();
        let connection = Http1Connection {
            sender,
            owner: opening.owner.map(Arc::new),
            opened,
            idle_since: opened,
            served: 1,
        };
        return Ok((response, connection));
    }
}

/// The most recently returned connection of `owner` that is ready for a
/// request. Closed, idle-expired and outlived ones are dropped; one whose
/// last response is still being finished stays pooled for a later request.
fn take_idle_http1(
    endpoint: &UpstreamEndpoint,
    load: &ClusterLoad,
    owner: Option<Ends>,
) -> Option<Http1Connection> {
    let mut pool = endpoint.pool.lock().ok()?;
    prune_http1(&mut pool, load);
    let at = pool.http1.iter().rposition(|connection| {
        connection.owner.as_deref() == owner.as_ref() && connection.sender.is_ready()
    })?;
    Some(pool.http1.swap_remove(at))
}

/// Drops the pool's closed, idle-expired and outlived HTTP/1.1 connections.
fn prune_http1(pool: &mut Pool, load: &ClusterLoad) {
    let limits = &load.limits;
    pool.http1.retain(|connection| {
        if connection.sender.is_closed() {
            return false;
        }
        if connection.idle_since.elapsed() >= limits.idle_timeout {
            load.counters.add(ClusterCounter::ConnectionIdleTimeout);
            return false;
        }
        if outlived(connection.opened, limits) {
            load.counters.add(ClusterCounter::ConnectionMaxDuration);
            return false;
        }
        true
    });
}

/// An HTTP/2 connection of `owner` with a stream free (counted as
/// taken), or none.
fn take_http2(
    endpoint: &UpstreamEndpoint,
    load: &ClusterLoad,
    owner: Option<Ends>,
) -> Option<(http2::SendRequest<ProxyBody>, Arc<StreamUse>)> {
    let mut pool = endpoint.pool.lock().ok()?;
    prune_http2(&mut pool, load);
    let most = load.limits.max_concurrent_streams.unwrap_or(u32::MAX);
    let connection = pool.http2.iter_mut().find(|c| {
        c.owner.as_deref() == owner.as_ref() && c.use_.active.load(Ordering::Relaxed) < most
    })?;
    connection.use_.active.fetch_add(1, Ordering::Relaxed);
    connection.served += 1;
    let taken = (connection.sender.clone(), Arc::clone(&connection.use_));
    // The connection's last request: it leaves the pool, and closes when
    // its streams are done.
    if load
        .limits
        .max_requests_per_connection
        .is_some_and(|max| connection.served >= max)
    {
        load.counters.add(ClusterCounter::ConnectionMaxRequests);
        pool.http2.retain(|c| !Arc::ptr_eq(&c.use_, &taken.1));
    }
    Some(taken)
}

/// Drops the pool's closed, idle-expired and outlived HTTP/2 connections
/// (their streams in flight finish: each holds its own handle).
fn prune_http2(pool: &mut Pool, load: &ClusterLoad) {
    let limits = &load.limits;
    pool.http2.retain(|connection| {
        if connection.sender.is_closed() {
            return false;
        }
        let idle = connection.use_.active.load(Ordering::Relaxed) == 0
            && connection
                .use_
                .idle_since
                .lock()
                .is_ok_and(|since| since.elapsed() >= limits.idle_timeout);
        if idle {
            load.counters.add(ClusterCounter::ConnectionIdleTimeout);
            return false;
        }
        if outlived(connection.opened, limits) {
            load.counters.add(ClusterCounter::ConnectionMaxDuration);
            return false;
        }
        true
    });
}

async fn send_http2(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    req: Request<ProxyBody>,
    opening: Opening,
) -> Result<(Response<Incoming>, Arc<StreamUse>), UpstreamError> {
    let load = &cluster.load;
    let ready = reuse_or_open(endpoint, load, || take_http2(endpoint, load, opening.owner)).await?;
    let (mut sender, use_) = match ready {
        Ready::Reuse(found) => found,
        Ready::Open(slot) => {
            let stream = connect(
                endpoint.addr,
                cluster.connect_timeout,
                cluster.tls.as_ref(),
                load.limits.keepalive.as_ref(),
                opening.header,
            )
            .await?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some((interval, timeout)) = load.limits.http2_keepalive {
                builder
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(timeout)
                    .keep_alive_while_idle(true);
            }
            let (sender, connection) = builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(exchange(endpoint.addr))?;
            tokio::spawn(async move {
                let _counted = slot;
                if let Err(err) = connection.await {
                    log::debug!("upstream h2 connection ended: {err}");
                }
            });
            let use_ = Arc::new(StreamUse {
                active: AtomicU32::new(1),
                idle_since: Mutex::new(Instant::now()),
            });
            let last = load.limits.max_requests_per_connection == Some(1);
            if let Ok(mut pool) = endpoint.pool.lock() {
                if !last {
                    pool.http2.push(Http2Connection {
                        sender: sender.clone(),
                        owner: opening.owner.map(Arc::new),
                        opened: Instant::now(),
                        served: 1,
                        use_: Arc::clone(&use_),
                    });
                }
            }
            reap_while_idle(endpoint, load);
            (sender, use_)
        }
    };
    match sender.send_request(req).await {
        Ok(response) => Ok((response, use_)),
        Err(err) => {
            use_.active.fetch_sub(1, Ordering::Relaxed);
            load.freed.notify_waiters();
            Err(exchange(endpoint.addr)(err))
        }
    }
}

/// Starts the endpoint's reaper unless it runs: it closes connections as
/// they expire, and stops when the pool is empty.
fn reap_while_idle(endpoint: &Arc<UpstreamEndpoint>, load: &Arc<ClusterLoad>) {
    if endpoint.reaping.swap(true, Ordering::Relaxed) {
        return;
    }
    let limits = &load.limits;
    let period = limits
        .idle_timeout
        .min(limits.max_connection_duration.unwrap_or(Duration::MAX))
        .checked_div(4)
        .unwrap_or(Duration::ZERO)
        .clamp(Duration::from_millis(50), Duration::from_secs(15));
    let endpoint = Arc::downgrade(endpoint);
    let load = Arc::downgrade(load);
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(reap(endpoint, load, period));
}

async fn reap(endpoint: Weak<UpstreamEndpoint>, load: Weak<ClusterLoad>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let (Some(endpoint), Some(load)) = (endpoint.upgrade(), load.upgrade()) else {
            return;
        };
        let Ok(mut pool) = endpoint.pool.lock() else {
            return;
        };
        prune_http1(&mut pool, &load);
        prune_http2(&mut pool, &load);
        if pool.http1.is_empty() && pool.http2.is_empty() {
            endpoint.reaping.store(false, Ordering::Relaxed);
            return;
        }
    }
}
