//! Backends: a cluster's endpoints (static, or resolved by DNS and
//! refreshed), load balancing across them, and a keep-alive connection
//! pool per endpoint for HTTP/1.1 and HTTP/2.
//!
//! The pool is ours rather than hyper-util's because a request is sent to
//! the endpoint the balancer picked while its `Host`/`:authority` stays the
//! one the client asked for; hyper-util keys its pool by the URI authority.
use std::{
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hyper::{
    Request, Response, Version,
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{
    body::ProxyBody,
    error::ProxyError,
    origination::{Origination, UpstreamIo, origination},
};
use crate::plan::{
    Cluster, ClusterId, Endpoint, EndpointAddress, H2UpgradePolicy, LoadBalancer, Protocol,
    SimpleLb,
};

/// Istio's default upstream connect timeout (`connectTimeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a resolved DNS answer is used. The system resolver gives no
/// TTL, so this is Envoy's `dns_refresh_rate` default.
pub const DNS_REFRESH: Duration = Duration::from_secs(5);
/// Idle keep-alive connections kept per endpoint, and for how long.
const MAX_IDLE_PER_ENDPOINT: usize = 128;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not reach a backend; each maps to Envoy's flag.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The cluster has no endpoint to try (UH).
    #[error("no healthy upstream")]
    NoEndpoint,
    /// DNS gave no address (UH).
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// TCP connect failed or timed out (UF).
    #[error("upstream connect error to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The TLS handshake of origination failed (UF): a 503, never plaintext.
    #[error("upstream TLS to {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    /// The exchange failed after the connection was made: the backend
    /// broke the protocol (UPE, a 502) or the connection (UC, a 503).
    #[error("upstream {addr}: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// The error of a failed exchange with `addr`, for `map_err`.
fn exchange(addr: SocketAddr) -> impl FnOnce(hyper::Error) -> UpstreamError {
    move |source| UpstreamError::Exchange { addr, source }
}

impl UpstreamError {
    /// Envoy's response flag for this failure.
    pub fn flag(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoint | UpstreamError::Resolve { .. } => "UH",
            UpstreamError::Connect { .. } | UpstreamError::Tls { .. } => "UF",
            UpstreamError::Exchange { source, .. } if protocol_error(source) => "UPE",
            UpstreamError::Exchange { .. } => "UC",
        }
    }
}

/// Whether a failed exchange was the backend breaking HTTP (a head that
/// does not parse or is too large, both `Content-Length` and chunked, an
/// HTTP/2 protocol, flow-control, frame-size or compression error), which
/// Envoy answers 502 and flags `UPE`, rather than a connection that ended
/// (`UC`).
pub fn protocol_error(err: &hyper::Error) -> bool {
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        return true;
    }
    http2_protocol_error(std::error::Error::source(err))
}

/// Whether an HTTP/2 error in the chain from `source` names a protocol
/// violation (as opposed to a cancel or a refused stream).
fn http2_protocol_error(mut source: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return matches!(
                h2.reason(),
                Some(
                    h2::Reason::PROTOCOL_ERROR
                        | h2::Reason::FLOW_CONTROL_ERROR
                        | h2::Reason::FRAME_SIZE_ERROR
                        | h2::Reason::COMPRESSION_ERROR
                )
            );
        }
        source = cause.source();
    }
    false
}

/// The protocol spoken to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// HTTP/2 when the client spoke HTTP/2 (`useClientProtocol`).
    SameAsClient,
}

/// One address of a cluster, with its share and its in-flight requests.
#[derive(Debug)]
pub struct UpstreamEndpoint {
    pub addr: SocketAddr,
    weight: u32,
    active: AtomicUsize,
    pool: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    http1: Vec<(Instant, http1::SendRequest<ProxyBody>)>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

impl UpstreamEndpoint {
    fn new(addr: SocketAddr, weight: u32) -> Arc<Self> {
        Arc::new(UpstreamEndpoint {
            addr,
            weight: weight.max(1),
            active: AtomicUsize::new(0),
            pool: Mutex::new(Pool::default()),
        })
    }
}

#[derive(Debug)]
enum Endpoints {
    Static(Vec<Arc<UpstreamEndpoint>>),
    /// Names resolved with the system resolver, each at its port.
    Dns {
        names: Vec<(String, u16, u32)>,
        cache: DnsCache,
    },
}

/// The last DNS answer and when it was taken.
type DnsCache = Mutex<Option<(Instant, Vec<Arc<UpstreamEndpoint>>)>>;

/// How a cluster spreads requests (`trafficPolicy.loadBalancer.simple`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
}

/// A cluster ready to take requests.
#[derive(Debug)]
pub struct UpstreamCluster {
    pub name: String,
    balance: Balance,
    endpoints: Endpoints,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints (DestinationRule `tls` SIMPLE or MUTUAL).
    pub tls: Option<Origination>,
}

impl UpstreamCluster {
    /// Builds the runtime form of a compiled cluster; fails when its TLS
    /// origination cannot be set up (a start or a reload fails, never a request).
    pub fn new(cluster: &Cluster) -> Result<Self, ProxyError> {
        let balance = match &cluster.policy.load_balancer {
            Some(LoadBalancer::Simple(SimpleLb::LeastRequest | SimpleLb::LeastConn)) => {
                Balance::LeastRequest
            }
            Some(LoadBalancer::Simple(SimpleLb::Random)) => Balance::Random,
            _ => Balance::RoundRobin,
        };
        let mut fixed = Vec::new();
        let mut names = Vec::new();
        for Endpoint {
            address,
            port,
            weight,
        } in &cluster.endpoints
        {
            match address {
                EndpointAddress::Ip(ip) => {
                    fixed.push(UpstreamEndpoint::new(SocketAddr::new(*ip, *port), *weight))
                }
                EndpointAddress::Dns(name) => names.push((name.clone(), *port, *weight)),
            }
        }
        let endpoints = if names.is_empty() {
            Endpoints::Static(fixed)
        } else {
            Endpoints::Dns {
                names,
                cache: Mutex::new(None),
            }
        };
        let connect_timeout = cluster
            .policy
            .connection_pool
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let protocol = upstream_protocol(cluster);
        // TLS to an HTTP/2 cluster negotiates h2; the others speak HTTP/1.1
        // (a cluster that follows the client speaks HTTP/1.1 over TLS).
        let alpn: &[u8] = if protocol == UpstreamProtocol::Http2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        let tls = origination(cluster, alpn).map_err(|source| ProxyError::Origination {
            cluster: cluster.name.clone(),
            source,
        })?;
        let protocol = match (&tls, protocol) {
            (Some(_), UpstreamProtocol::SameAsClient) => UpstreamProtocol::Http1,
            (_, protocol) => protocol,
        };
        Ok(UpstreamCluster {
            name: cluster.name.clone(),
            balance,
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout,
            protocol,
            tls,
        })
    }

    /// The endpoint the next request goes to.
    pub async fn pick(&self) -> Result<Arc<UpstreamEndpoint>, UpstreamError> {
        let chosen = match &self.endpoints {
            // Chosen in place: no copy of the list per request.
            Endpoints::Static(endpoints) => choose(endpoints, self.balance, &self.next),
            Endpoints::Dns { names, cache } => {
                choose(&resolved(names, cache).await?, self.balance, &self.next)
            }
        };
        chosen.ok_or(UpstreamError::NoEndpoint)
    }
}

/// HTTP/2 to backends whose port says so (HTTP2, GRPC, GRPC-WEB) or whose
/// DestinationRule upgrades; otherwise HTTP/1.1, Istio's default.
fn upstream_protocol(cluster: &Cluster) -> UpstreamProtocol {
    let pool = &cluster.policy.connection_pool;
    if pool.use_client_protocol {
        return UpstreamProtocol::SameAsClient;
    }
    let h2_port = matches!(
        cluster.protocol,
        Some(Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    );
    if h2_port || pool.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    }
}

async fn resolved(
    names: &[(String, u16, u32)],
    cache: &DnsCache,
) -> Result<Vec<Arc<UpstreamEndpoint>>, UpstreamError> {
    if let Ok(guard) = cache.lock() {
        if let Some((at, endpoints)) = guard.as_ref() {
            if at.elapsed() < DNS_REFRESH {
                return Ok(endpoints.clone());
            }
        }
    }
    let mut fresh: Vec<Arc<UpstreamEndpoint>> = Vec::new();
    let mut last_error = None;
    for (name, port, weight) in names {
        match tokio::net::lookup_host((name.as_str(), *port)).await {
            Ok(addrs) => {
                for addr in addrs {
                    fresh.push(reuse(cache, addr, *weight));
                }
            }
            Err(err) => last_error = Some((name.clone(), err.to_string())),
        }
    }
    if fresh.is_empty() {
        // Keep serving the last answer if the resolver is down for a moment.
        if let Ok(guard) = cache.lock() {
            if let Some((_, endpoints)) = guard.as_ref() {
                return Ok(endpoints.clone());
            }
        }
        let (host, reason) = last_error.unwrap_or_else(|| (names_text(names), "no address".into()));
        return Err(UpstreamError::Resolve { host, reason });
    }
    if let Ok(mut guard) = cache.lock() {
        *guard = Some((Instant::now(), fresh.clone()));
    }
    Ok(fresh)
}

fn names_text(names: &[(String, u16, u32)]) -> String {
    names
        .iter()
        .map(|(n, _, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The endpoint for `addr` from the last answer (keeping its pool), or a new one.
fn reuse(cache: &DnsCache, addr: SocketAddr, weight: u32) -> Arc<UpstreamEndpoint> {
    let known = cache.lock().ok().and_then(|guard| {
        guard
            .as_ref()
            .and_then(|(_, eps)| eps.iter().find(|ep| ep.addr == addr).cloned())
    });
    known.unwrap_or_else(|| UpstreamEndpoint::new(addr, weight))
}

/// Picks by weight: round robin walks the weighted ring, random draws
/// from it, least request compares two random draws (Envoy's P2C).
fn choose(
    endpoints: &[Arc<UpstreamEndpoint>],
    balance: Balance,
    next: &AtomicUsize,
) -> Option<Arc<UpstreamEndpoint>> {
    let at = |ticket: u64| weighted(endpoints, |ep| u64::from(ep.weight), ticket).cloned();
    match balance {
        Balance::RoundRobin => at(next.fetch_add(1, Ordering::Relaxed) as u64),
        Balance::Random => at(random()),
        Balance::LeastRequest => {
            let a = at(random())?;
            let b = at(random())?;
            let load = |ep: &UpstreamEndpoint| ep.active.load(Ordering::Relaxed);
            Some(if load(&b) < load(&a) { b } else { a })
        }
    }
}

/// The item `ticket` lands on when each item owns a share of `weight(item)`
/// tickets, in order (the ticket taken modulo the total); `None` when the
/// total is zero. Load balancing and weighted route destinations share it.
pub fn weighted<T>(items: &[T], weight: impl Fn(&T) -> u64, ticket: u64) -> Option<&T> {
    let total: u64 = items.iter().map(&weight).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = ticket % total;
    for item in items {
        let share = weight(item);
        if ticket < share {
            return Some(item);
        }
        ticket -= share;
    }
    None
}

/// A fast, non-cryptographic random number (balancing and request ids'
/// uniqueness do not need a CSPRNG; `RandomState` seeds per process).
pub fn random() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|state| {
        // splitmix64
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Counts a request against its endpoint while it is in flight, and gives
/// its HTTP/1.1 connection back to the pool when the response is done
/// (held by the response body, so nothing is spawned per request).
#[derive(Debug)]
pub struct ActiveRequest {
    endpoint: Arc<UpstreamEndpoint>,
    http1: Option<http1::SendRequest<ProxyBody>>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        let Some(sender) = self.http1.take() else {
            return;
        };
        // A body dropped before its end closes the connection; hyper says so.
        if sender.is_closed() {
            return;
        }
        if let Ok(mut pool) = self.endpoint.pool.lock() {
            if pool.http1.len() < MAX_IDLE_PER_ENDPOINT {
                pool.http1.push((Instant::now(), sender));
            }
        }
    }
}

/// Sends `req` (origin-form URI, headers ready) to `endpoint` of
/// `cluster` over `version`, reusing a pooled connection when one is idle.
pub async fn send(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    version: Version,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, ActiveRequest), UpstreamError> {
    let connect_timeout = cluster.connect_timeout;
    let tls = cluster.tls.as_ref();
    endpoint.active.fetch_add(1, Ordering::Relaxed);
    let mut active = ActiveRequest {
        endpoint: Arc::clone(endpoint),
        http1: None,
    };
    let response = if version == Version::HTTP_2 {
        send_http2(endpoint, connect_timeout, tls, req).await?
    } else {
        let (response, sender) = send_http1(endpoint, connect_timeout, tls, req).await?;
        active.http1 = Some(sender);
        response
    };
    Ok((response, active))
}

/// Connects to `addr`, wrapped in TLS when the cluster originates it (the
/// handshake within the same connect timeout).
pub(super) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Origination>,
) -> Result<UpstreamIo, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect { addr, reason };
    let connecting = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let _ = stream.set_nodelay(true);
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

/// The response, and the connection it came on (for the pool, once the
/// response body is done).
async fn send_http1(
    endpoint: &Arc<UpstreamEndpoint>,
    connect_timeout: Duration,
    tls: Option<&Origination>,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, http1::SendRequest<ProxyBody>), UpstreamError> {
    let pooled = take_idle_http1(endpoint);
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let stream = connect(endpoint.addr, connect_timeout, tls).await?;
            let (sender, connection) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(exchange(endpoint.addr))?;
            tokio::spawn(async move {
                if let Err(err) = connection.with_upgrades().await {
                    log::debug!("upstream connection ended: {err}");
                }
            });
            sender
        }
    };
    let response = sender
        .send_request(req)
        .await
        .map_err(exchange(endpoint.addr))?;
    Ok((response, sender))
}

/// The most recently returned connection that is ready for a request.
/// Closed and expired ones are dropped; one whose last response is still
/// being finished stays pooled for a later request.
fn take_idle_http1(endpoint: &UpstreamEndpoint) -> Option<http1::SendRequest<ProxyBody>> {
    let mut pool = endpoint.pool.lock().ok()?;
    let now = Instant::now();
    pool.http1.retain(|(since, sender)| {
        !sender.is_closed() && now.duration_since(*since) < POOL_IDLE_TIMEOUT
    });
    let at = pool
        .http1
        .iter()
        .rposition(|(_, sender)| sender.is_ready())?;
    Some(pool.http1.swap_remove(at).1)
}

async fn send_http2(
    endpoint: &Arc<UpstreamEndpoint>,
    connect_timeout: Duration,
    tls: Option<&Origination>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let shared = endpoint
        .pool
        .lock()
        .ok()
        .and_then(|pool| pool.http2.clone())
        .filter(|sender| !sender.is_closed());
    let mut sender = match shared {
        Some(sender) => sender,
        None => {
            let stream = connect(endpoint.addr, connect_timeout, tls).await?;
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(exchange(endpoint.addr))?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    log::debug!("upstream h2 connection ended: {err}");
                }
            });
            if let Ok(mut pool) = endpoint.pool.lock() {
                pool.http2 = Some(sender.clone());
            }
            sender
        }
    };
    sender
        .send_request(req)
        .await
        .map_err(exchange(endpoint.addr))
}

/// Every cluster of a plan, indexed by [`ClusterId`].
#[derive(Debug, Default)]
pub struct Upstreams {
    clusters: Vec<Arc<UpstreamCluster>>,
}

impl Upstreams {
    /// Builds the runtime clusters of a plan.
    pub fn new(clusters: &[Cluster]) -> Result<Self, ProxyError> {
        let built = clusters
            .iter()
            .map(|cluster| UpstreamCluster::new(cluster).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Upstreams { clusters: built })
    }

    /// The cluster a route's backend names.
    pub fn get(&self, id: ClusterId) -> Option<&Arc<UpstreamCluster>> {
        self.clusters.get(id.index())
    }
}

#[cfg(test)]
mod protocol_error_tests {
    use super::http2_protocol_error;

    /// An error whose cause is the HTTP/2 error, as hyper's is.
    #[derive(Debug)]
    struct Caused(h2::Error);

    impl std::fmt::Display for Caused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("http2 error")
        }
    }

    impl std::error::Error for Caused {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn http2_protocol_violations_are_protocol_errors_and_resets_are_not() {
        for reason in [
            h2::Reason::PROTOCOL_ERROR,
            h2::Reason::FLOW_CONTROL_ERROR,
            h2::Reason::FRAME_SIZE_ERROR,
            h2::Reason::COMPRESSION_ERROR,
        ] {
            let err = h2::Error::from(reason);
            assert!(http2_protocol_error(Some(&err)), "{reason:?}");
            // Found as the cause of another error too (hyper's).
            let wrapped = Caused(err);
            assert!(http2_protocol_error(Some(&wrapped)), "{reason:?} wrapped");
        }
        for reason in [
            h2::Reason::CANCEL,
            h2::Reason::REFUSED_STREAM,
            h2::Reason::NO_ERROR,
        ] {
            assert!(
                !http2_protocol_error(Some(&h2::Error::from(reason))),
                "{reason:?}"
            );
        }
        assert!(!http2_protocol_error(Some(&std::io::Error::other("reset"))));
        assert!(!http2_protocol_error(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Arc<UpstreamEndpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                UpstreamEndpoint::new(SocketAddr::from(([192, 0, 2, i as u8 + 1], 80)), *w)
            })
            .collect()
    }

    fn counts(eps: &[Arc<UpstreamEndpoint>], balance: Balance, n: usize) -> Vec<usize> {
        let next = AtomicUsize::new(0);
        let mut counts = vec![0; eps.len()];
        for _ in 0..n {
            let ep = choose(eps, balance, &next).expect("an endpoint");
            let i = eps.iter().position(|e| Arc::ptr_eq(e, &ep)).expect("known");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let eps = endpoints(&[1, 3]);
        assert_eq!(counts(&eps, Balance::RoundRobin, 400), [100, 300]);
    }

    #[test]
    fn random_follows_weights_roughly() {
        let eps = endpoints(&[1, 1]);
        let c = counts(&eps, Balance::Random, 10_000);
        assert!(c.iter().all(|&n| (4_000..6_000).contains(&n)), "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let eps = endpoints(&[1, 1]);
        eps[0].active.store(10, Ordering::Relaxed);
        let c = counts(&eps, Balance::LeastRequest, 1_000);
        // P2C picks the busy one only when both draws land on it (~1/4).
        assert!(c[1] > 650, "{c:?}");
    }

    #[test]
    fn no_endpoints_gives_none() {
        assert!(choose(&[], Balance::RoundRobin, &AtomicUsize::new(0)).is_none());
    }

    #[test]
    fn flags_name_the_failure() {
        assert_eq!(UpstreamError::NoEndpoint.flag(), "UH");
        let addr = SocketAddr::from(([192, 0, 2, 1], 80));
        assert_eq!(
            UpstreamError::Connect {
                addr,
                reason: String::new()
            }
            .flag(),
            "UF"
        );
    }
}
