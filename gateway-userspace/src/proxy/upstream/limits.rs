//! A cluster's connection-pool limits (DestinationRule `connectionPool`)
//! as Envoy's circuit breakers enforce them, per cluster: connections open
//! (`maxConnections`), requests waiting for a connection
//! (`http1MaxPendingRequests`) and requests in flight (`http2MaxRequests`).
//! What overflows is answered at once (503, `UO`) and counted.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::{
    ClusterCounter, ClusterCounters, UpstreamEndpoint, UpstreamError, budget::RequestWindow,
};
use crate::plan::{ConnectionPool, TcpKeepalive};

/// How long an idle upstream connection is kept when the DestinationRule
/// sets no `idleTimeout`. Envoy's default is an hour; a gateway fanning
/// out to many endpoints keeps fewer descriptors with a minute.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits and connection settings of a cluster's pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    /// `maxRequestsPerConnection`: a connection is closed after this many.
    pub max_requests_per_connection: Option<u32>,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// `maxConnectionDuration`: a connection takes no new request after
    /// this, and is closed when its last one is done.
    pub max_connection_duration: Option<Duration>,
    /// `maxConcurrentStreams`: HTTP/2 streams per connection before another
    /// connection is opened.
    pub max_concurrent_streams: Option<u32>,
    pub keepalive: Option<TcpKeepalive>,
    /// `http2KeepAlive`: (interval, timeout) of PINGs on HTTP/2 connections.
    pub http2_keepalive: Option<(Duration, Duration)>,
    /// `tcp.idleTimeout` for TCP forwards; `None` keeps the daemon's.
    pub tcp_idle_timeout: Option<Duration>,
}

impl PoolLimits {
    /// The limits of `pool`, Istio's defaults where it sets none: every
    /// threshold 2^32-1 (`getDefaultCircuitBreakerThresholds`), `0` read as
    /// unset as Istio reads it ("FIXME: zero is a valid value").
    pub fn of(pool: &ConnectionPool) -> Self {
        let threshold = |value: Option<u32>| value.filter(|n| *n > 0).unwrap_or(u32::MAX);
        // `http.idleTimeout`, else `tcp.idleTimeout` (Istio's fallback);
        // `0s` disables it.
        let idle = pool.idle_timeout.or(pool.tcp_idle_timeout);
        Self {
            max_connections: threshold(pool.max_connections),
            max_pending: threshold(pool.http1_max_pending_requests),
            max_requests: threshold(pool.http2_max_requests),
            max_requests_per_connection: pool.max_requests_per_connection.filter(|n| *n > 0),
            idle_timeout: match idle {
                Some(idle) if idle.is_zero() => Duration::MAX,
                Some(idle) => idle,
                None => DEFAULT_IDLE_TIMEOUT,
            },
            max_connection_duration: pool.max_connection_duration.filter(|d| !d.is_zero()),
            max_concurrent_streams: pool.max_concurrent_streams.filter(|n| *n > 0),
            keepalive: pool.tcp_keepalive.clone(),
            http2_keepalive: pool.http2_keepalive,
            tcp_idle_timeout: pool
                .tcp_idle_timeout
                .map(|idle| if idle.is_zero() { Duration::MAX } else { idle }),
        }
    }
}

/// What a cluster has open, waiting and in flight, against its limits.
#[derive(Debug)]
pub struct ClusterLoad {
    pub limits: PoolLimits,
    pub counters: Arc<ClusterCounters>,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    /// Woken when a connection closes, goes idle, or a stream ends: a
    /// pending request looks again.
    pub(super) freed: Notify,
    /// With a retry budget's `budgetInterval`: the requests admitted
    /// within it (Envoy counts each as its `requests` resource is taken).
    pub(super) window: Option<RequestWindow>,
}

impl ClusterLoad {
    pub fn new(limits: PoolLimits, counters: Arc<ClusterCounters>) -> Self {
        Self {
            limits,
            counters,
            connections: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            freed: Notify::new(),
            window: None,
        }
    }

    /// The same load, also counting requests over `interval` (a retry
    /// budget's `budgetInterval`; zero counts nothing, as in Envoy).
    pub fn with_budget_interval(mut self, interval: Duration) -> Self {
        self.window = (!interval.is_zero())
            .then(|| RequestWindow::new(interval, tokio::time::Instant::now()));
        self
    }

    /// A request in flight, unless `http2MaxRequests` are (Envoy's
    /// `max_requests`, which counts HTTP/1.1 requests too).
    pub fn admit_request(self: &Arc<Self>) -> Result<RequestSlot, UpstreamError> {
        if !take(&self.requests, self.limits.max_requests) {
            self.counters.add(ClusterCounter::PendingOverflow);
            return Err(UpstreamError::Overflow);
        }
        if let Some(window) = &self.window {
            window.record(tokio::time::Instant::now());
        }
        Ok(RequestSlot {
            load: Arc::clone(self),
        })
    }

    /// A new connection to `endpoint`, unless the cluster has its
    /// `maxConnections` open; an endpoint with no connection at all always
    /// gets one (Envoy's pool does the same, so no request waits for a
    /// connection that can never be opened).
    pub fn open(self: &Arc<Self>, endpoint: &Arc<UpstreamEndpoint>) -> Option<ConnectionSlot> {
        let first = endpoint.connections.load(Ordering::Relaxed) == 0;
        if !take(&self.connections, self.limits.max_connections) {
            if !first {
                self.counters.add(ClusterCounter::ConnectionOverflow);
                return None;
            }
            self.connections.fetch_add(1, Ordering::Relaxed);
        }
        endpoint.connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            load: Arc::clone(self),
            endpoint: Arc::clone(endpoint),
        })
    }

    /// A place among the requests waiting for a connection, unless
    /// `http1MaxPendingRequests` wait already.
    pub(super) fn pend(self: &Arc<Self>) -> Result<PendingSlot, UpstreamError> {
        if !take(&self.pending, self.limits.max_pending) {
            self.counters.add(ClusterCounter::PendingOverflow);
            return Err(UpstreamError::Overflow);
        }
        Ok(PendingSlot {
            load: Arc::clone(self),
        })
    }

    /// What a retry budget is a share of: the requests admitted within its
    /// `budgetInterval` when it has one, else those in flight and waiting
    /// for a connection (Envoy's `RetryBudgetImpl::max`).
    pub fn budget_base(&self) -> u64 {
        match &self.window {
            Some(window) => window.requests(tokio::time::Instant::now()),
            None => {
                u64::from(self.requests.load(Ordering::Relaxed))
                    + u64::from(self.pending.load(Ordering::Relaxed))
            }
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Takes one of `limit` from `count`, if there is one left.
fn take(count: &AtomicU32, limit: u32) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct RequestSlot {
    load: Arc<ClusterLoad>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.load.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for a connection, counted until dropped.
#[derive(Debug)]
pub(super) struct PendingSlot {
    load: Arc<ClusterLoad>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.load.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open connection, counted (for its cluster and its endpoint) until
/// dropped with the connection.
#[derive(Debug)]
pub struct ConnectionSlot {
    load: Arc<ClusterLoad>,
    endpoint: Arc<UpstreamEndpoint>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.load.connections.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.connections.fetch_sub(1, Ordering::Relaxed);
        self.load.freed.notify_waiters();
    }
}
