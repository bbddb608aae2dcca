//! An original-destination cluster (`loadBalancer.simple: PASSTHROUGH`,
//! Envoy's ORIGINAL_DST with its CLUSTER_PROVIDED balancer,
//! source/extensions/clusters/original_dst/original_dst_cluster.cc): one
//! host per original destination, made when first asked for and removed
//! by a cleanup every five seconds (Envoy's `cleanup_interval` default)
//! once unused since the previous one and holding no connection. Each host
//! has its own pool and outlier record, as an Envoy host does.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::UpstreamEndpoint;

/// Envoy's `cleanup_interval` default (Istio sets none).
const CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// Where the downstream connection was going: what an original-destination
/// cluster connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Captured from a workload (the egress capture): the local address is
    /// the workload's original destination.
    Captured(SocketAddr),
    /// Made to one of the gateway's own addresses (a listener): there is
    /// no original destination, and connecting to it would loop.
    Listener(SocketAddr),
    /// No downstream connection to read it from.
    Unknown,
}

/// The hosts of an original-destination cluster, by address.
#[derive(Debug)]
pub(in crate::proxy) struct OriginalHosts {
    port_override: Option<u16>,
    hosts: Mutex<Hosts>,
}

#[derive(Debug)]
struct Hosts {
    /// Each host with whether it was chosen since the last cleanup
    /// (Envoy's `used_`).
    by_addr: HashMap<SocketAddr, (Arc<UpstreamEndpoint>, bool)>,
    cleaned: Instant,
    /// The hosts as a list, for outlier detection's passes; rebuilt when
    /// a host comes or goes.
    list: Vec<Arc<UpstreamEndpoint>>,
}

impl OriginalHosts {
    pub(super) fn new(port_override: Option<u16>) -> Self {
        Self {
            port_override,
            hosts: Mutex::new(Hosts {
                by_addr: HashMap::new(),
                cleaned: Instant::now(),
                list: Vec::new(),
            }),
        }
    }

    /// The address connected to for a captured connection to `original`:
    /// its own, or its address at the override port.
    pub(super) fn target(&self, original: SocketAddr) -> SocketAddr {
        match self.port_override {
            Some(port) => SocketAddr::new(original.ip(), port),
            None => original,
        }
    }

    /// The host for `original` (Envoy's `chooseHost`: the existing one,
    /// else a new one; its health is not consulted, as in Envoy).
    pub(super) fn host(&self, original: SocketAddr, now: Instant) -> Arc<UpstreamEndpoint> {
        let addr = self.target(original);
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.clean(now);
        if let Some((host, used)) = hosts.by_addr.get_mut(&addr) {
            *used = true;
            return Arc::clone(host);
        }
        let host = UpstreamEndpoint::new(addr, 1);
        hosts.by_addr.insert(addr, (Arc::clone(&host), true));
        hosts.list.push(Arc::clone(&host));
        host
    }

    /// Calls `f` with the hosts known now.
    pub(super) fn with_current<R>(&self, f: impl FnOnce(&[Arc<UpstreamEndpoint>]) -> R) -> R {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.clean(Instant::now());
        f(&hosts.list)
    }
}

impl Hosts {
    /// Envoy's `cleanup`, due every interval: a host chosen since the last
    /// one stays (and is marked unchosen); one that was not goes, unless a
    /// connection or request still holds it (Envoy's
    /// `original_dst_rely_on_idle_timeout`: the pool's idle timeout ends
    /// those connections, then the host goes).
    fn clean(&mut self, now: Instant) {
        if now.saturating_duration_since(self.cleaned) < CLEANUP_INTERVAL {
            return;
        }
        self.cleaned = now;
        let before = self.by_addr.len();
        // Chosen since the last cleanup, or held elsewhere than here and
        // in `list` (in use): kept.
        self.by_addr
            .retain(|_, (host, used)| std::mem::take(used) || Arc::strong_count(host) > 2);
        if self.by_addr.len() != before {
            self.list = self.by_addr.values().map(|(h, _)| Arc::clone(h)).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn each_original_destination_is_its_own_host_at_the_override_port() {
        let hosts = OriginalHosts::new(Some(8080));
        let now = Instant::now();
        let a = hosts.host(addr("198.51.100.3:80"), now);
        assert_eq!(a.addr, addr("198.51.100.3:8080"));
        let again = hosts.host(addr("198.51.100.3:80"), now);
        assert!(Arc::ptr_eq(&a, &again), "the same host, and its pool");
        let b = hosts.host(addr("198.51.100.4:80"), now);
        assert_eq!(b.addr, addr("198.51.100.4:8080"));
        assert_eq!(hosts.with_current(<[_]>::len), 2);
        let kept = OriginalHosts::new(None);
        assert_eq!(
            kept.host(addr("[2001:db8::3]:443"), now).addr,
            addr("[2001:db8::3]:443")
        );
    }

    #[test]
    fn a_host_unused_for_a_whole_cleanup_interval_and_unheld_is_removed() {
        let hosts = OriginalHosts::new(None);
        let start = Instant::now();
        let held = hosts.host(addr("198.51.100.3:80"), start);
        drop(hosts.host(addr("198.51.100.4:80"), start));
        // First cleanup: both were chosen since creation; marked unused.
        let first = start + CLEANUP_INTERVAL;
        let mut state = hosts.hosts.lock().expect("lock");
        state.clean(first);
        assert_eq!(state.by_addr.len(), 2);
        // Second: the unheld, unused one goes; the held one stays.
        state.clean(first + CLEANUP_INTERVAL);
        let left: Vec<SocketAddr> = state.list.iter().map(|h| h.addr).collect();
        assert_eq!(left, vec![addr("198.51.100.3:80")]);
        drop(state);
        drop(held);
        let mut state = hosts.hosts.lock().expect("lock");
        state.clean(first + CLEANUP_INTERVAL * 2);
        assert!(state.by_addr.is_empty() && state.list.is_empty());
    }

    #[test]
    fn cleanup_waits_for_its_interval() {
        let hosts = OriginalHosts::new(None);
        let start = Instant::now();
        drop(hosts.host(addr("198.51.100.3:80"), start));
        let mut state = hosts.hosts.lock().expect("lock");
        state.clean(start + CLEANUP_INTERVAL);
        state.clean(start + CLEANUP_INTERVAL + CLEANUP_INTERVAL / 2);
        assert_eq!(state.by_addr.len(), 1, "not due yet");
    }
}
