//! Backends: a cluster's endpoints (static, or resolved by DNS and
//! refreshed: `dns.rs`), load balancing across them (`balance.rs`), and a
//! keep-alive connection pool per endpoint for HTTP/1.1 and HTTP/2
//! (`pool.rs`); why a request failed (`error.rs`).
//!
//! The pool is ours rather than hyper-util's because a request is sent to
//! the endpoint the balancer picked while its `Host`/`:authority` stays the
//! one the client asked for; hyper-util keys its pool by the URI authority.
mod balance;
mod budget;
mod counters;
mod discovered;
mod dns;
mod error;
mod hashing;
mod limits;
mod original;
mod outlier;
mod pool;
mod priority;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

pub use self::{
    balance::{Balance, random, weighted},
    counters::{ClusterCounter, ClusterCounters, cluster_counts},
    dns::DNS_REFRESH,
    error::{FailureKind, UpstreamError, protocol_error},
    hashing::{HashBalancer, stable_hash},
    limits::{ClusterLoad, ConnectionSlot, DEFAULT_IDLE_TIMEOUT, PoolLimits, RequestSlot},
    original::Origin,
    outlier::{Detector, HostHealth, OutlierPolicy, TryResult},
    pool::{ActiveRequest, UpstreamEndpoint, connect, send, send_for},
};
use self::{
    balance::{choose, choose_weighted},
    discovered::Discovered,
    dns::{DnsCache, DnsName, resolved},
    original::OriginalHosts,
};
use super::{
    error::ProxyError,
    origination::{Origination, origination},
};
use crate::{
    discovery::Discovery,
    files::FileSource,
    plan::{
        Cluster, ClusterId, Endpoint, EndpointAddress, H2UpgradePolicy, HashKey, LoadBalancer,
        LocalityPlan, Protocol, ProxyProtocolVersion, SimpleLb, Warmup,
    },
};

/// Mirror copies in flight to one cluster at most: a slow mirror cannot
/// pile up more.
pub const MAX_MIRRORS_IN_FLIGHT: u32 = 1024;

/// Istio's default upstream connect timeout (`connectTimeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol spoken to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// HTTP/2 when the client spoke HTTP/2 (`useClientProtocol`).
    SameAsClient,
}

/// Where a cluster's endpoints come from.
#[derive(Debug)]
pub(super) enum Endpoints {
    Static(Vec<Arc<UpstreamEndpoint>>),
    /// Names resolved with the system resolver, each at its port.
    Dns {
        names: Vec<DnsName>,
        cache: DnsCache,
    },
    /// A Kubernetes Service's, as its EndpointSlices change.
    Discovered(Discovered),
    /// One per original destination (`loadBalancer.simple: PASSTHROUGH`).
    Original(OriginalHosts),
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
    pub counters: Arc<ClusterCounters>,
    /// The pool limits, and what is open, waiting and in flight.
    pub load: Arc<ClusterLoad>,
    /// `connectionPool.http.maxRetries`: retries in flight at once
    /// (Envoy's `max_retries` circuit breaker; unbounded by default, as
    /// Istio sets it).
    max_retries: u32,
    /// `retryBudget` (percent, minimum), which replaces `maxRetries`.
    retry_budget: Option<(f64, u32)>,
    retries_in_flight: AtomicU32,
    /// Outlier detection, when the DestinationRule asks for it.
    pub outlier: Option<Detector>,
    /// Consistent hashing: what a request's key is, and the table.
    hashing: Option<(HashKey, HashBalancer)>,
    /// Mirror copies in flight to this cluster.
    mirrors_in_flight: AtomicU32,
    /// Slow start (`warmup`), for round robin and least request only.
    slow_start: Option<Warmup>,
    /// Endpoints are placed at priorities by locality (failover or
    /// `distribute`): picks go through `priority.rs`.
    by_locality: bool,
    /// `distribute`: a locality is drawn by weight before an endpoint.
    weights_localities: bool,
    /// Whether the first request with no original destination was logged.
    warned_loop: AtomicBool,
    /// `proxyProtocol`: each new connection starts with a PROXY header.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// A mirror copy counted against its cluster until dropped.
#[derive(Debug)]
pub struct MirrorInFlight {
    cluster: Arc<UpstreamCluster>,
}

impl Drop for MirrorInFlight {
    fn drop(&mut self) {
        self.cluster
            .mirrors_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry counted against its cluster's `maxRetries` until dropped.
#[derive(Debug)]
pub struct RetryInFlight {
    cluster: Arc<UpstreamCluster>,
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        self.cluster
            .retries_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl UpstreamCluster {
    /// Builds the runtime form of a compiled cluster; fails when its TLS
    /// origination cannot be set up (a start or a reload fails, never a
    /// request). A Kubernetes Service's endpoints are followed in
    /// `discovery`; certificates are read from `files`.
    pub fn new(
        cluster: &Cluster,
        discovery: &Discovery,
        files: &dyn FileSource,
    ) -> Result<Self, ProxyError> {
        // Istio's default is LEAST_REQUEST (`defaultLBAlgorithm`); a
        // consistent hash draws at random when a request has no key.
        let balance = match &cluster.policy.load_balancer {
            Some(LoadBalancer::Simple(SimpleLb::RoundRobin)) => Balance::RoundRobin,
            Some(LoadBalancer::Simple(SimpleLb::Random) | LoadBalancer::ConsistentHash(_)) => {
                Balance::Random
            }
            _ => Balance::LeastRequest,
        };
        let hashing = match &cluster.policy.load_balancer {
            Some(LoadBalancer::ConsistentHash(hash)) => {
                Some((hash.key.clone(), HashBalancer::new(hash.table)))
            }
            _ => None,
        };
        let mut fixed = Vec::new();
        let mut names = Vec::new();
        for Endpoint {
            address,
            port,
            weight,
            locality,
            placement,
        } in &cluster.endpoints
        {
            match address {
                EndpointAddress::Ip(ip) => {
                    let endpoint = UpstreamEndpoint::new(SocketAddr::new(*ip, *port), *weight);
                    endpoint.place.set(*placement, locality);
                    fixed.push(endpoint);
                }
                EndpointAddress::Dns(name) => names.push(DnsName {
                    name: name.clone(),
                    port: *port,
                    weight: *weight,
                    locality: locality.clone(),
                    placement: *placement,
                }),
            }
        }
        let endpoints = if let Some(original) = &cluster.original_destination {
            Endpoints::Original(OriginalHosts::new(original.port_override))
        } else if let Some(selection) = &cluster.discovered {
            Endpoints::Discovered(Discovered::new(selection, discovery, &cluster.locality))
        } else if names.is_empty() {
            Endpoints::Static(fixed)
        } else {
            Endpoints::Dns {
                names,
                cache: Mutex::new(None),
            }
        };
        let pool = cluster.policy.pool();
        let connect_timeout = pool.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let protocol = upstream_protocol(cluster);
        // TLS to an HTTP/2 cluster negotiates h2; the others speak HTTP/1.1
        // (a cluster that follows the client speaks HTTP/1.1 over TLS).
        let alpn: &[u8] = if protocol == UpstreamProtocol::Http2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        let tls = origination(cluster, alpn, files).map_err(|source| ProxyError::Origination {
            cluster: cluster.name.clone(),
            source,
        })?;
        let protocol = match (&tls, protocol) {
            (Some(_), UpstreamProtocol::SameAsClient) => UpstreamProtocol::Http1,
            (_, protocol) => protocol,
        };
        let counters = counters::counters_for(&cluster.name);
        Ok(Self {
            name: cluster.name.clone(),
            balance,
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout,
            protocol,
            tls,
            counters: Arc::clone(&counters),
            load: Arc::new(
                ClusterLoad::new(PoolLimits::of(&pool), counters).with_budget_interval(
                    cluster
                        .policy
                        .retry_budget
                        .as_ref()
                        .map_or(Duration::ZERO, |budget| budget.budget_interval),
                ),
            ),
            max_retries: pool.max_retries.filter(|n| *n > 0).unwrap_or(u32::MAX),
            retry_budget: cluster
                .policy
                .retry_budget
                .as_ref()
                .map(|budget| (budget.percent, budget.min_retry_concurrency)),
            retries_in_flight: AtomicU32::new(0),
            outlier: cluster
                .policy
                .outlier_detection
                .as_ref()
                .map(|outlier| Detector::new(OutlierPolicy::of(outlier))),
            hashing,
            mirrors_in_flight: AtomicU32::new(0),
            proxy_protocol: cluster.policy.proxy_protocol,
            // Envoy's slow start applies to round robin and least request.
            slow_start: cluster
                .policy
                .warmup
                // (A hashing cluster balances at random: no slow start.)
                .filter(|_| matches!(balance, Balance::RoundRobin | Balance::LeastRequest)),
            by_locality: placed_by_locality(cluster),
            weights_localities: cluster.locality.weights_localities(),
            warned_loop: AtomicBool::new(false),
        })
    }

    /// A mirror copy, unless this cluster has its most in flight.
    pub fn start_mirror(self: &Arc<Self>) -> Option<MirrorInFlight> {
        let most = MAX_MIRRORS_IN_FLIGHT;
        self.mirrors_in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()
            .map(|_| MirrorInFlight {
                cluster: Arc::clone(self),
            })
    }

    /// What a request's hash is made of, when the cluster hashes.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hashing.as_ref().map(|(key, _)| key)
    }

    /// Counts a try's result against its endpoint (outlier detection).
    pub fn observe(&self, endpoint: &UpstreamEndpoint, result: TryResult) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let hosts = self.with_endpoints(<[_]>::len).unwrap_or(1);
        detector.observe(
            &endpoint.health,
            endpoint.addr,
            hosts,
            result,
            &self.name,
            &self.counters,
        );
    }

    /// The endpoints known now, without resolving (a DNS cluster's last
    /// answer); `None` before a DNS cluster's first answer.
    fn with_endpoints<R>(&self, f: impl FnOnce(&[Arc<UpstreamEndpoint>]) -> R) -> Option<R> {
        match &self.endpoints {
            Endpoints::Static(endpoints) => Some(f(endpoints)),
            Endpoints::Dns { cache, .. } => {
                // Read in place: no copy of the list per observed try.
                let cached = cache.lock().ok()?;
                cached.as_ref().map(|(_, endpoints)| f(endpoints))
            }
            Endpoints::Discovered(discovered) => Some(discovered.with_current(f)),
            Endpoints::Original(hosts) => Some(hosts.with_current(f)),
        }
    }

    /// Outlier detection's interval: ejections that are over end.
    fn outlier_tick(&self) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let now = tokio::time::Instant::now();
        self.with_endpoints(|endpoints| {
            for endpoint in endpoints {
                detector.tick(
                    &endpoint.health,
                    endpoint.addr,
                    now,
                    &self.name,
                    &self.counters,
                );
            }
        });
    }

    /// A retry, unless the cluster's `maxRetries` (or, with a retry
    /// budget, its share of the requests in flight and waiting, or of
    /// those started within its `budgetInterval`, at least its minimum)
    /// are in flight already.
    pub fn start_retry(self: &Arc<Self>) -> Option<RetryInFlight> {
        let most = match self.retry_budget {
            Some((percent, minimum)) => {
                let share = self.load.budget_base() as f64 * percent / 100.0;
                // Whole retries only: the share's floor.
                (share.floor().min(f64::from(u32::MAX)) as u32).max(minimum)
            }
            None => self.max_retries,
        };
        let started =
            self.retries_in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < most).then_some(n + 1)
                });
        started.ok().map(|_| RetryInFlight {
            cluster: Arc::clone(self),
        })
    }

    /// The endpoint for a try: one not among `hosts` (the endpoints tried
    /// before, when the policy asks for another) whenever there is one,
    /// and outside the priority levels in `levels` (`retryRemoteLocalities`)
    /// unless those are all there is. Envoy's `previous_hosts` predicate
    /// draws again up to five times and may land on a tried endpoint;
    /// leaving the tried ones out keeps a retry off them for certain.
    pub async fn pick_avoiding(
        &self,
        hosts: &[SocketAddr],
        levels: &[u32],
        hash: Option<u64>,
        origin: Origin,
    ) -> Result<Arc<UpstreamEndpoint>, UpstreamError> {
        if hosts.is_empty() && levels.is_empty() {
            return self.pick_hashed(hash, origin).await;
        }
        match &self.endpoints {
            // One host per destination: nothing else to go to.
            Endpoints::Original(original) => return self.original_host(original, origin),
            Endpoints::Dns { names, cache } => {
                resolved(names, cache).await?;
            }
            Endpoints::Static(_) | Endpoints::Discovered(_) => {}
        }
        let chosen = self.with_endpoints(|endpoints| {
            let untried: Vec<Arc<UpstreamEndpoint>> = endpoints
                .iter()
                .filter(|ep| !hosts.contains(&ep.addr))
                .cloned()
                .collect();
            self.choose_healthy(&untried, hash, levels)
                .or_else(|| self.choose_healthy(endpoints, hash, levels))
        });
        chosen.flatten().ok_or(UpstreamError::NoEndpoint)
    }

    /// The endpoint the next request (or connection) without a hash key
    /// goes to.
    pub async fn pick(&self, origin: Origin) -> Result<Arc<UpstreamEndpoint>, UpstreamError> {
        self.pick_hashed(None, origin).await
    }

    /// The endpoint a request with hash `hash` goes to (under consistent
    /// hashing; otherwise by the balancing policy); for an
    /// original-destination cluster, the host of `origin`'s destination.
    pub async fn pick_hashed(
        &self,
        hash: Option<u64>,
        origin: Origin,
    ) -> Result<Arc<UpstreamEndpoint>, UpstreamError> {
        match &self.endpoints {
            Endpoints::Original(hosts) => return self.original_host(hosts, origin),
            Endpoints::Dns { names, cache } => {
                resolved(names, cache).await?;
            }
            Endpoints::Static(_) | Endpoints::Discovered(_) => {}
        }
        // Chosen in place: no copy of the list per request.
        let chosen = self.with_endpoints(|endpoints| self.choose_healthy(endpoints, hash, &[]));
        chosen.flatten().ok_or(UpstreamError::NoEndpoint)
    }

    /// The host of a captured connection's original destination. A
    /// connection to the gateway's own address has none (Envoy's
    /// ORIGINAL_DST answers `no healthy upstream` when the listener
    /// restored no original destination): connecting there would loop.
    fn original_host(
        &self,
        hosts: &OriginalHosts,
        origin: Origin,
    ) -> Result<Arc<UpstreamEndpoint>, UpstreamError> {
        match origin {
            Origin::Captured(original) => Ok(hosts.host(original, tokio::time::Instant::now())),
            Origin::Listener(local) => {
                if !self.warned_loop.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "cluster {}: PASSTHROUGH has no original destination for a connection to the gateway's own address {local} (forwarding there would loop): answered 503 UH, closed for TCP; only connections captured from workloads have one",
                        self.name
                    );
                }
                Err(UpstreamError::NoOriginalDestination { local: Some(local) })
            }
            Origin::Unknown => Err(UpstreamError::NoOriginalDestination { local: None }),
        }
    }

    /// Balances over the endpoints outlier detection has not ejected (all
    /// of them below the panic threshold); none when every one is out.
    /// Endpoints placed by locality go through their priority levels.
    fn choose_healthy(
        &self,
        endpoints: &[Arc<UpstreamEndpoint>],
        hash: Option<u64>,
        excluded_levels: &[u32],
    ) -> Option<Arc<UpstreamEndpoint>> {
        if self.by_locality {
            let panic_percent = self.outlier.as_ref().map_or(0, |d| d.policy.panic_percent);
            // Envoy picks a hashed request's level by its hash, and
            // scales a hash table by locality weight instead of drawing a
            // locality (not done here: a hashed request skips the draw).
            let weighted = self.weights_localities && hash.is_none();
            let candidates = priority::candidates(
                endpoints,
                panic_percent,
                weighted,
                hash.unwrap_or_else(random),
                random(),
                excluded_levels,
            );
            return self.choose_among(&candidates, hash);
        }
        let Some(detector) = self.outlier.as_ref().filter(|d| d.ejected() > 0) else {
            return self.choose_among(endpoints, hash);
        };
        let healthy: Vec<Arc<UpstreamEndpoint>> = endpoints
            .iter()
            .filter(|endpoint| !endpoint.health.is_ejected())
            .cloned()
            .collect();
        if outlier::panics(&detector.policy, healthy.len(), endpoints.len()) {
            return self.choose_among(endpoints, hash);
        }
        self.choose_among(&healthy, hash)
    }

    fn choose_among(
        &self,
        endpoints: &[Arc<UpstreamEndpoint>],
        hash: Option<u64>,
    ) -> Option<Arc<UpstreamEndpoint>> {
        match (&self.hashing, hash, &self.slow_start) {
            (Some((_, table)), Some(hash), _) => table.choose(endpoints, hash),
            (_, _, Some(warmup)) => {
                let now = tokio::time::Instant::now();
                let weight = |ep: &UpstreamEndpoint| {
                    slow_start_weight(ep.weight, now.saturating_duration_since(ep.joined), warmup)
                };
                choose_weighted(endpoints, self.balance, &self.next, &weight)
            }
            _ => choose(endpoints, self.balance, &self.next),
        }
    }
}

/// Whether picks must go through priority levels: a cluster whose
/// endpoints all sit at priority 0 unweighted balances as before (the
/// common case of outlier detection with no localities costs nothing).
fn placed_by_locality(cluster: &Cluster) -> bool {
    match &cluster.locality {
        LocalityPlan::Flat => false,
        LocalityPlan::Distribute { .. } => true,
        LocalityPlan::Failover(_) => {
            cluster.discovered.is_some()
                || cluster.endpoints.iter().any(|ep| ep.placement.priority > 0)
        }
    }
}

/// HTTP/2 to backends whose port says so (HTTP2, GRPC, GRPC-WEB) or whose
/// DestinationRule upgrades; otherwise HTTP/1.1, Istio's default.
fn upstream_protocol(cluster: &Cluster) -> UpstreamProtocol {
    let pool = cluster.policy.pool();
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

/// Every cluster of a plan, indexed by [`ClusterId`].
#[derive(Debug, Default)]
pub struct Upstreams {
    clusters: Vec<Arc<UpstreamCluster>>,
}

impl Upstreams {
    /// Builds the runtime clusters of a plan; Kubernetes Services'
    /// endpoints are followed in `discovery`, certificates read from `files`.
    pub fn new(
        clusters: &[Cluster],
        discovery: &Discovery,
        files: &dyn FileSource,
    ) -> Result<Self, ProxyError> {
        let built: Vec<Arc<UpstreamCluster>> = clusters
            .iter()
            .map(|cluster| UpstreamCluster::new(cluster, discovery, files).map(Arc::new))
            .collect::<Result<_, _>>()?;
        for cluster in built.iter().filter(|c| c.outlier.is_some()) {
            watch_outliers(cluster);
        }
        Ok(Self { clusters: built })
    }

    /// The cluster a route's backend names.
    pub fn get(&self, id: ClusterId) -> Option<&Arc<UpstreamCluster>> {
        self.clusters.get(id.index())
    }
}

/// An endpoint's weight in thousandths during slow start (Envoy's
/// `weight * max(min_weight_percent, time_factor ^ (1 / aggression))`,
/// the time factor `max(age, 1 s) / window`), its whole weight after.
fn slow_start_weight(weight: u32, age: Duration, warmup: &Warmup) -> u64 {
    let whole = u64::from(weight) * 1000;
    if age >= warmup.window || warmup.window.is_zero() {
        return whole;
    }
    let factor = age.max(Duration::from_secs(1)).as_secs_f64() / warmup.window.as_secs_f64();
    let scale = factor
        .powf(1.0 / warmup.aggression)
        .max(warmup.minimum_percent / 100.0)
        .min(1.0);
    ((whole as f64) * scale).max(1.0) as u64
}

/// Runs outlier detection's interval for `cluster` while it is served.
fn watch_outliers(cluster: &Arc<UpstreamCluster>) {
    let Some(interval) = cluster.outlier.as_ref().map(|d| d.policy.interval) else {
        return;
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let cluster = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            cluster.outlier_tick();
        }
    });
}
