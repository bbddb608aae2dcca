//! Load balancing: which endpoint of a cluster, and which weighted backend
//! of a route, takes a request.
use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use super::UpstreamEndpoint;

/// How a cluster spreads requests (`trafficPolicy.loadBalancer.simple`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
}

/// Picks by weight: round robin walks the weighted ring, random draws
/// from it, least request compares two random draws (Envoy's P2C).
pub(super) fn choose(
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

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
}
