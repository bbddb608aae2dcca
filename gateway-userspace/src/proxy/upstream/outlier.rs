//! Outlier detection (DestinationRule `outlierDetection`) as Envoy's
//! consecutive-errors detectors run it under Istio's translation
//! (`cluster_traffic_policy.go::applyOutlierDetection`): each try's result
//! counts against its endpoint; an endpoint that reaches a threshold is
//! ejected (no requests) for the base ejection time times the number of
//! times it was ejected, within `maxEjectionPercent`; an interval task
//! returns it when its time is up. Below `minHealthPercent` healthy, the
//! cluster balances over every endpoint (Envoy's panic threshold).
use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{ClusterCounter, ClusterCounters};
use crate::plan::OutlierDetection;

/// Envoy's defaults for what Istio leaves unset.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's `max_ejection_time`: the longest an ejection lasts.
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// The detector's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive errors (5xx, or the listed codes) that eject; `None`
    /// when `consecutive5xxErrors: 0` turns the detector off.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504; enforced only when set above 0.
    pub consecutive_gateway: Option<u32>,
    /// Consecutive connect failures, timeouts and resets, counted apart
    /// only with `splitExternalLocalOriginErrors`.
    pub consecutive_local_origin: Option<u32>,
    pub split: bool,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, all are used.
    pub panic_percent: u32,
    /// The responses that count as errors instead of 5xx.
    pub error_codes: Vec<u16>,
}

impl OutlierPolicy {
    /// Istio's translation of `outlier`, Envoy's defaults where it leaves
    /// a field unset.
    pub fn of(outlier: &OutlierDetection) -> Self {
        let split = outlier.split_external_local_origin_errors;
        Self {
            consecutive_5xx: match outlier.consecutive_5xx_errors {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_CONSECUTIVE_5XX),
            },
            consecutive_gateway: outlier.consecutive_gateway_errors.filter(|n| *n > 0),
            consecutive_local_origin: split.then(|| {
                outlier
                    .consecutive_local_origin_failures
                    .filter(|n| *n > 0)
                    .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN)
            }),
            split,
            interval: outlier.interval.unwrap_or(DEFAULT_INTERVAL),
            base_ejection: outlier.base_ejection_time.unwrap_or(DEFAULT_BASE_EJECTION),
            max_ejection_percent: outlier
                .max_ejection_percent
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
            panic_percent: outlier.min_health_percent.unwrap_or(0),
            error_codes: outlier.error_codes.clone(),
        }
    }

    /// How long the `nth` ejection of an endpoint lasts.
    pub fn ejection_time(&self, nth: u32) -> Duration {
        self.base_ejection
            .saturating_mul(nth.max(1))
            .min(MAX_EJECTION_TIME.max(self.base_ejection))
    }
}

/// What one try told about its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryResult {
    /// The backend answered with this status.
    Response(u16),
    /// The connection could not be made.
    ConnectFailed,
    /// The connection was made (a local-origin success).
    Connected,
    /// The try timed out.
    TimedOut,
    /// The connection was reset or closed without an answer.
    Reset,
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ejection {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

impl Ejection {
    fn counter(self) -> ClusterCounter {
        match self {
            Self::Consecutive5xx => ClusterCounter::EjectionsConsecutive5xx,
            Self::ConsecutiveGateway => ClusterCounter::EjectionsConsecutiveGateway,
            Self::ConsecutiveLocalOrigin => ClusterCounter::EjectionsConsecutiveLocalOrigin,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "consecutive 5xx",
            Self::ConsecutiveGateway => "consecutive gateway failures",
            Self::ConsecutiveLocalOrigin => "consecutive local origin failures",
        }
    }
}

/// One endpoint's record: its consecutive errors and its ejection.
#[derive(Debug, Default)]
pub struct HostHealth {
    /// Read on every pick: set while ejected.
    ejected: AtomicBool,
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    until: Option<Instant>,
    /// Ejections counted for the next ejection's length; one less for each
    /// interval spent healthy, as Envoy does.
    times: u32,
}

impl HostHealth {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Marks the host ejected, as a test's setup.
    #[cfg(test)]
    pub(super) fn eject_for_test(&self) {
        self.ejected.store(true, Ordering::Relaxed);
    }

    /// Counts `result`; the threshold it reaches, if any.
    fn count(&self, policy: &OutlierPolicy, result: TryResult) -> Option<Ejection> {
        let mut record = self.record.lock().ok()?;
        if record.until.is_some() {
            return None;
        }
        // Without the split, a local-origin failure counts as the gateway
        // error Envoy maps it to: 503 (connect, reset), 504 (timeout).
        let result = match (policy.split, result) {
            (false, TryResult::ConnectFailed | TryResult::Reset) => TryResult::Response(503),
            (false, TryResult::TimedOut) => TryResult::Response(504),
            (_, result) => result,
        };
        let reached = |count: u32, threshold: Option<u32>| threshold.is_some_and(|t| count >= t);
        match result {
            TryResult::Response(code) => {
                let error = if policy.error_codes.is_empty() {
                    code >= 500
                } else {
                    policy.error_codes.contains(&code)
                };
                if !error {
                    record.consecutive_5xx = 0;
                    record.consecutive_gateway = 0;
                    return None;
                }
                record.consecutive_5xx += 1;
                if matches!(code, 502..=504) {
                    record.consecutive_gateway += 1;
                } else {
                    record.consecutive_gateway = 0;
                }
                if reached(record.consecutive_gateway, policy.consecutive_gateway) {
                    return Some(Ejection::ConsecutiveGateway);
                }
                reached(record.consecutive_5xx, policy.consecutive_5xx)
                    .then_some(Ejection::Consecutive5xx)
            }
            TryResult::Connected => {
                record.consecutive_local = 0;
                None
            }
            TryResult::ConnectFailed | TryResult::TimedOut | TryResult::Reset => {
                record.consecutive_local += 1;
                reached(record.consecutive_local, policy.consecutive_local_origin)
                    .then_some(Ejection::ConsecutiveLocalOrigin)
            }
        }
    }
}

/// A cluster's detector: its policy and how many endpoints are ejected.
#[derive(Debug)]
pub struct Detector {
    pub policy: OutlierPolicy,
    ejected: AtomicUsize,
}

impl Detector {
    pub fn new(policy: OutlierPolicy) -> Self {
        Self {
            policy,
            ejected: AtomicUsize::new(0),
        }
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Counts a try's `result` against `host`, and ejects it when a
    /// threshold is reached, unless that would put more than
    /// `maxEjectionPercent` of the `hosts` endpoints out (one is always
    /// allowed, as in Envoy).
    pub fn observe(
        &self,
        host: &HostHealth,
        addr: SocketAddr,
        hosts: usize,
        result: TryResult,
        cluster: &str,
        counters: &ClusterCounters,
    ) {
        let Some(reason) = host.count(&self.policy, result) else {
            return;
        };
        let active = self.ejected.load(Ordering::Relaxed);
        let share = 100 * (active + 1) / hosts.max(1);
        if active > 0 && share > self.policy.max_ejection_percent as usize {
            counters.add(ClusterCounter::EjectionsOverflow);
            return;
        }
        let Ok(mut record) = host.record.lock() else {
            return;
        };
        if record.until.is_some() {
            return;
        }
        record.times += 1;
        let lasts = self.policy.ejection_time(record.times);
        record.until = Some(Instant::now() + lasts);
        record.consecutive_5xx = 0;
        record.consecutive_gateway = 0;
        record.consecutive_local = 0;
        host.ejected.store(true, Ordering::Relaxed);
        self.ejected.fetch_add(1, Ordering::Relaxed);
        counters.add(ClusterCounter::EjectionsActive);
        counters.add(ClusterCounter::EjectionsEnforced);
        counters.add(reason.counter());
        log::warn!(
            "outlier detection: {addr} of {cluster} ejected for {lasts:?} ({}; ejection {})",
            reason.text(),
            record.times
        );
    }

    /// The interval's work for one endpoint: returns it when its ejection
    /// is over, or counts one healthy interval against its ejections.
    pub fn tick(
        &self,
        host: &HostHealth,
        addr: SocketAddr,
        now: Instant,
        cluster: &str,
        counters: &ClusterCounters,
    ) {
        let Ok(mut record) = host.record.lock() else {
            return;
        };
        match record.until {
            Some(until) if until <= now => {
                record.until = None;
                host.ejected.store(false, Ordering::Relaxed);
                self.ejected.fetch_sub(1, Ordering::Relaxed);
                counters.sub(ClusterCounter::EjectionsActive);
                log::info!("outlier detection: {addr} of {cluster} returned");
            }
            Some(_) => {}
            None => record.times = record.times.saturating_sub(1),
        }
    }

    /// Forgets an endpoint that left the cluster while ejected.
    pub fn forget(&self, host: &HostHealth, counters: &ClusterCounters) {
        if host.ejected.swap(false, Ordering::Relaxed) {
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            counters.sub(ClusterCounter::EjectionsActive);
        }
    }
}

/// Whether a cluster with `healthy` of `total` endpoints balances over all
/// of them (Envoy's panic mode; a threshold of 0 never panics). Envoy
/// looks at the threshold only when the healthy share times the
/// overprovisioning factor (1.4) is under 100 %.
pub(super) fn panics(policy: &OutlierPolicy, healthy: usize, total: usize) -> bool {
    let covered = healthy * 140 >= total * 100;
    !covered && healthy * 100 < total * policy.panic_percent as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(edit: impl FnOnce(&mut OutlierDetection)) -> OutlierPolicy {
        let mut outlier = OutlierDetection::default();
        edit(&mut outlier);
        OutlierPolicy::of(&outlier)
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 80))
    }

    /// Feeds `results` to one host of a cluster of `hosts`; whether it ended ejected.
    fn feed(detector: &Detector, host: &HostHealth, hosts: usize, results: &[TryResult]) -> bool {
        let counters = ClusterCounters::default();
        for result in results {
            detector.observe(host, addr(), hosts, *result, "c", &counters);
        }
        host.is_ejected()
    }

    #[test]
    fn an_empty_policy_is_envoys_defaults_as_istio_leaves_them() {
        let p = policy(|_| {});
        assert_eq!(p.consecutive_5xx, Some(5));
        assert_eq!(p.consecutive_gateway, None, "Envoy enforces it at 0%");
        assert_eq!(p.consecutive_local_origin, None);
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.base_ejection, Duration::from_secs(30));
        assert_eq!(p.max_ejection_percent, 10);
        assert_eq!(p.panic_percent, 0, "Istio disables the panic threshold");
        assert_eq!(
            policy(|o| o.consecutive_5xx_errors = Some(0)).consecutive_5xx,
            None
        );
        let split = policy(|o| o.split_external_local_origin_errors = true);
        assert_eq!(split.consecutive_local_origin, Some(5));
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_between_starts_the_count_again() {
        let detector = Detector::new(policy(|o| o.consecutive_5xx_errors = Some(3)));
        let host = HostHealth::default();
        let r = TryResult::Response;
        assert!(!feed(
            &detector,
            &host,
            2,
            &[r(500), r(503), r(200), r(500), r(502)]
        ));
        assert!(feed(&detector, &host, 2, &[r(500)]));
        assert_eq!(detector.ejected(), 1);
    }

    #[test]
    fn gateway_errors_count_only_502_503_504_in_a_row() {
        let detector = Detector::new(policy(|o| {
            o.consecutive_5xx_errors = Some(0);
            o.consecutive_gateway_errors = Some(2);
        }));
        let host = HostHealth::default();
        let r = TryResult::Response;
        assert!(!feed(&detector, &host, 2, &[r(502), r(500), r(503)]));
        assert!(feed(&detector, &host, 2, &[r(504)]));
    }

    #[test]
    fn without_the_split_a_refused_connection_counts_as_a_503() {
        let detector = Detector::new(policy(|o| o.consecutive_gateway_errors = Some(2)));
        let host = HostHealth::default();
        assert!(feed(
            &detector,
            &host,
            2,
            &[TryResult::ConnectFailed, TryResult::TimedOut]
        ));
    }

    #[test]
    fn with_the_split_local_origin_failures_count_apart_from_responses() {
        let detector = Detector::new(policy(|o| {
            o.split_external_local_origin_errors = true;
            o.consecutive_local_origin_failures = Some(2);
            o.consecutive_5xx_errors = Some(2);
        }));
        let host = HostHealth::default();
        let r = TryResult::Response;
        assert!(!feed(
            &detector,
            &host,
            2,
            &[
                TryResult::ConnectFailed,
                r(500),
                TryResult::Connected,
                TryResult::Reset
            ]
        ));
        assert!(feed(&detector, &host, 2, &[TryResult::TimedOut]));
    }

    #[test]
    fn listed_error_codes_replace_5xx_as_errors() {
        let detector = Detector::new(policy(|o| {
            o.consecutive_5xx_errors = Some(2);
            o.error_codes = vec![429];
        }));
        let host = HostHealth::default();
        let r = TryResult::Response;
        assert!(!feed(
            &detector,
            &host,
            2,
            &[r(500), r(500), r(429), r(500)]
        ));
        assert!(feed(&detector, &host, 2, &[r(429), r(429)]));
    }

    #[test]
    fn max_ejection_percent_holds_but_one_endpoint_may_always_go() {
        let detector = Detector::new(policy(|o| {
            o.consecutive_5xx_errors = Some(1);
            o.max_ejection_percent = Some(50);
        }));
        let hosts: Vec<HostHealth> = (0..3).map(|_| HostHealth::default()).collect();
        let ejected: Vec<bool> = hosts
            .iter()
            .map(|h| feed(&detector, h, 3, &[TryResult::Response(500)]))
            .collect();
        // 1 of 3 is 33%; 2 of 3 would be 66%, over 50%.
        assert_eq!(ejected, [true, false, false]);
        let lone = Detector::new(policy(|o| o.consecutive_5xx_errors = Some(1)));
        let host = HostHealth::default();
        assert!(
            feed(&lone, &host, 1, &[TryResult::Response(500)]),
            "10% of 1 is still one"
        );
    }

    #[test]
    fn each_ejection_lasts_the_base_time_times_the_ejections_up_to_300s() {
        let p = policy(|o| o.base_ejection_time = Some(Duration::from_secs(30)));
        assert_eq!(p.ejection_time(1), Duration::from_secs(30));
        assert_eq!(p.ejection_time(3), Duration::from_secs(90));
        assert_eq!(p.ejection_time(50), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_endpoint_returns_when_its_time_is_up_and_healthy_intervals_shorten_the_next()
     {
        let detector = Detector::new(policy(|o| {
            o.consecutive_5xx_errors = Some(1);
            o.base_ejection_time = Some(Duration::from_secs(10));
        }));
        let host = HostHealth::default();
        let counters = ClusterCounters::default();
        assert!(feed(&detector, &host, 1, &[TryResult::Response(500)]));
        let start = Instant::now();
        detector.tick(
            &host,
            addr(),
            start + Duration::from_secs(9),
            "c",
            &counters,
        );
        assert!(host.is_ejected(), "not yet");
        detector.tick(
            &host,
            addr(),
            start + Duration::from_secs(10),
            "c",
            &counters,
        );
        assert!(!host.is_ejected(), "returned");
        assert_eq!(detector.ejected(), 0);
        // Ejected again at once: the second ejection lasts twice as long.
        assert!(feed(&detector, &host, 1, &[TryResult::Response(500)]));
        let again = Instant::now();
        detector.tick(
            &host,
            addr(),
            again + Duration::from_secs(19),
            "c",
            &counters,
        );
        assert!(host.is_ejected());
        detector.tick(
            &host,
            addr(),
            again + Duration::from_secs(20),
            "c",
            &counters,
        );
        assert!(!host.is_ejected());
        // Two healthy intervals bring the count back to none: the next is 10 s.
        let later = again + Duration::from_secs(30);
        detector.tick(&host, addr(), later, "c", &counters);
        detector.tick(&host, addr(), later, "c", &counters);
        assert!(feed(&detector, &host, 1, &[TryResult::Response(500)]));
        let third = Instant::now();
        detector.tick(
            &host,
            addr(),
            third + Duration::from_secs(10),
            "c",
            &counters,
        );
        assert!(!host.is_ejected());
    }

    #[test]
    fn the_panic_threshold_uses_every_endpoint_below_it_and_zero_never_panics() {
        let p = policy(|o| o.min_health_percent = Some(50));
        assert!(panics(&p, 1, 3));
        assert!(!panics(&p, 2, 4));
        assert!(!panics(&policy(|_| {}), 0, 3));
        // 3 of 4 healthy is 75 % under a threshold of 80, but 75 x 1.4
        // covers 100 %: no panic, as in Envoy.
        let high = policy(|o| o.min_health_percent = Some(80));
        assert!(!panics(&high, 3, 4));
        assert!(panics(&high, 2, 4));
    }
}
