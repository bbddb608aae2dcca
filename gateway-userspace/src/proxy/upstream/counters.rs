//! Per-cluster counters under Envoy's stat names (`cluster.<name>.<stat>`,
//! Prometheus `envoy_cluster_<stat>{cluster_name=...}`), for `/stats`.
//! A cluster that a reload keeps keeps its counters: they are found by
//! name while the old cluster still holds them.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

/// One per-cluster counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterCounter {
    /// Retries sent.
    Retry,
    /// Requests that succeeded after a retry.
    RetrySuccess,
    /// Retries not sent: the cluster's `maxRetries` were in flight.
    RetryOverflow,
    /// Requests that failed retriably with no retries left (`URX`).
    RetryLimitExceeded,
    /// Tries that ran out of their `perTryTimeout`.
    PerTryTimeout,
    /// Requests that ran out of the route's `timeout`.
    Timeout,
    /// Requests refused: `http1MaxPendingRequests` waiting, or
    /// `http2MaxRequests` in flight.
    PendingOverflow,
    /// Connections not opened: `maxConnections` open.
    ConnectionOverflow,
    /// Connections closed after `maxRequestsPerConnection`.
    ConnectionMaxRequests,
    /// Connections closed at `maxConnectionDuration`.
    ConnectionMaxDuration,
    /// Connections closed idle.
    ConnectionIdleTimeout,
    /// Endpoints ejected now (a gauge).
    EjectionsActive,
    /// Ejections, for any reason.
    EjectionsEnforced,
    EjectionsConsecutive5xx,
    EjectionsConsecutiveGateway,
    EjectionsConsecutiveLocalOrigin,
    /// Ejections not made: `maxEjectionPercent` were out.
    EjectionsOverflow,
    /// Copies of requests sent here as a mirror.
    Mirrored,
    /// Copies not sent: this mirror had its most in flight.
    MirrorOverflow,
}

impl ClusterCounter {
    pub const ALL: [Self; 19] = [
        Self::Retry,
        Self::RetrySuccess,
        Self::RetryOverflow,
        Self::RetryLimitExceeded,
        Self::PerTryTimeout,
        Self::Timeout,
        Self::PendingOverflow,
        Self::ConnectionOverflow,
        Self::ConnectionMaxRequests,
        Self::ConnectionMaxDuration,
        Self::ConnectionIdleTimeout,
        Self::EjectionsActive,
        Self::EjectionsEnforced,
        Self::EjectionsConsecutive5xx,
        Self::EjectionsConsecutiveGateway,
        Self::EjectionsConsecutiveLocalOrigin,
        Self::EjectionsOverflow,
        Self::Mirrored,
        Self::MirrorOverflow,
    ];

    /// Envoy's stat name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Retry => "upstream_rq_retry",
            Self::RetrySuccess => "upstream_rq_retry_success",
            Self::RetryOverflow => "upstream_rq_retry_overflow",
            Self::RetryLimitExceeded => "upstream_rq_retry_limit_exceeded",
            Self::PerTryTimeout => "upstream_rq_per_try_timeout",
            Self::Timeout => "upstream_rq_timeout",
            Self::PendingOverflow => "upstream_rq_pending_overflow",
            Self::ConnectionOverflow => "upstream_cx_overflow",
            Self::ConnectionMaxRequests => "upstream_cx_max_requests",
            Self::ConnectionMaxDuration => "upstream_cx_max_duration_reached",
            Self::ConnectionIdleTimeout => "upstream_cx_idle_timeout",
            Self::EjectionsActive => "outlier_detection.ejections_active",
            Self::EjectionsEnforced => "outlier_detection.ejections_enforced_total",
            Self::EjectionsConsecutive5xx => "outlier_detection.ejections_enforced_consecutive_5xx",
            Self::EjectionsConsecutiveGateway => {
                "outlier_detection.ejections_enforced_consecutive_gateway_failure"
            }
            Self::EjectionsConsecutiveLocalOrigin => {
                "outlier_detection.ejections_enforced_consecutive_local_origin_failure"
            }
            Self::EjectionsOverflow => "outlier_detection.ejections_overflow",
            Self::Mirrored => "upstream_rq_mirrored",
            Self::MirrorOverflow => "upstream_rq_mirror_overflow",
        }
    }
}

/// A cluster's counters.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    values: [AtomicU64; ClusterCounter::ALL.len()],
}

impl ClusterCounters {
    pub fn add(&self, counter: ClusterCounter) {
        self.values[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// For a gauge: one less.
    pub fn sub(&self, counter: ClusterCounter) {
        self.values[counter as usize].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, counter: ClusterCounter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }
}

/// Every live cluster's counters, by cluster name.
static REGISTRY: Mutex<BTreeMap<String, Weak<ClusterCounters>>> = Mutex::new(BTreeMap::new());

/// The counters of the cluster `name`: the ones a live cluster of that
/// name holds, or new ones.
pub(super) fn counters_for(name: &str) -> Arc<ClusterCounters> {
    let Ok(mut registry) = REGISTRY.lock() else {
        return Arc::default();
    };
    if let Some(live) = registry.get(name).and_then(Weak::upgrade) {
        return live;
    }
    let counters = Arc::new(ClusterCounters::default());
    registry.insert(name.to_string(), Arc::downgrade(&counters));
    counters
}

/// Each live cluster's name and counter values, sorted by name; clusters
/// no plan holds any more are forgotten.
pub fn cluster_counts() -> Vec<(String, Vec<(ClusterCounter, u64)>)> {
    let Ok(mut registry) = REGISTRY.lock() else {
        return Vec::new();
    };
    registry.retain(|_, counters| counters.strong_count() > 0);
    registry
        .iter()
        .filter_map(|(name, counters)| {
            let counters = counters.upgrade()?;
            let values = ClusterCounter::ALL
                .iter()
                .map(|c| (*c, counters.get(*c)))
                .collect();
            Some((name.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_kept_by_a_reload_keeps_its_counts_and_a_dropped_one_is_forgotten() {
        let name = "outbound|80||counters-kept.test";
        let old = counters_for(name);
        old.add(ClusterCounter::Retry);
        let new = counters_for(name);
        drop(old);
        new.add(ClusterCounter::Retry);
        let listed = |name: &str| {
            cluster_counts()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, values)| values)
        };
        let values = listed(name).expect("listed");
        assert!(values.contains(&(ClusterCounter::Retry, 2)), "{values:?}");
        drop(new);
        assert_eq!(listed(name), None);
    }
}
