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
    choose_weighted(endpoints, balance, next, &|ep| u64::from(ep.weight))
}

/// [`choose`] with each endpoint's weight from `weight` (slow start).
pub(super) fn choose_weighted(
    endpoints: &[Arc<UpstreamEndpoint>],
    balance: Balance,
    next: &AtomicUsize,
    weight: &dyn Fn(&UpstreamEndpoint) -> u64,
) -> Option<Arc<UpstreamEndpoint>> {
    choose_drawing(endpoints, balance, next, random, weight)
}

/// [`choose_weighted`] with its random numbers taken from `draw`.
fn choose_drawing(
    endpoints: &[Arc<UpstreamEndpoint>],
    balance: Balance,
    next: &AtomicUsize,
    mut draw: impl FnMut() -> u64,
    weight: &dyn Fn(&UpstreamEndpoint) -> u64,
) -> Option<Arc<UpstreamEndpoint>> {
    let at = |ticket: u64| weighted(endpoints, |ep| weight(ep), ticket).cloned();
    match balance {
        Balance::RoundRobin => at(next.fetch_add(1, Ordering::Relaxed) as u64),
        Balance::Random => at(draw()),
        Balance::LeastRequest => {
            let a = at(draw())?;
            let b = at(draw())?;
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
        let z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        splitmix64(z)
    })
}

/// splitmix64's output for the state `z`.
pub(super) fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    fn plain(ep: &UpstreamEndpoint) -> u64 {
        u64::from(ep.weight)
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
    fn least_request_takes_the_less_loaded_draw_and_the_first_on_a_tie() {
        let eps = endpoints(&[1, 1]);
        let pick = |draws: [u64; 2]| {
            let mut draws = draws.into_iter();
            let draw = || draws.next().expect("two draws");
            let ep = choose_drawing(
                &eps,
                Balance::LeastRequest,
                &AtomicUsize::new(0),
                draw,
                &plain,
            )
            .expect("an endpoint");
            eps.iter().position(|e| Arc::ptr_eq(e, &ep)).expect("known")
        };
        assert_eq!(pick([0, 1]), 0, "a tie keeps the first draw");
        assert_eq!(pick([1, 0]), 1, "a tie keeps the first draw");
        eps[0].active.store(3, Ordering::Relaxed);
        assert_eq!(pick([0, 1]), 1);
        assert_eq!(pick([1, 0]), 1);
    }

    #[test]
    fn random_lands_where_its_draw_does() {
        let eps = endpoints(&[1, 2]);
        let pick = |draw: u64| {
            let ep = choose_drawing(&eps, Balance::Random, &AtomicUsize::new(0), || draw, &plain)
                .expect("an endpoint");
            eps.iter().position(|e| Arc::ptr_eq(e, &ep)).expect("known")
        };
        assert_eq!([0, 1, 2, 3].map(pick), [0, 1, 1, 0]);
    }

    #[test]
    fn each_ticket_lands_on_the_item_owning_it() {
        let items = [("a", 2), ("b", 0), ("c", 1), ("d", 3)];
        let landed: Vec<&str> = (0..8)
            .map(|ticket| weighted(&items, |(_, w)| *w, ticket).expect("an item").0)
            .collect();
        assert_eq!(landed, ["a", "a", "c", "d", "d", "d", "a", "a"]);
        assert_eq!(weighted(&[0_u64, 0], |w| *w, 0), None);
    }

    #[test]
    fn random_numbers_are_splitmix64s() {
        // The reference outputs of splitmix64 seeded with 0.
        let gamma: u64 = 0x9e37_79b9_7f4a_7c15;
        let outputs: Vec<u64> = (1..=3).map(|n| splitmix64(gamma.wrapping_mul(n))).collect();
        assert_eq!(
            outputs,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    #[test]
    fn no_endpoints_gives_none() {
        assert!(choose(&[], Balance::RoundRobin, &AtomicUsize::new(0)).is_none());
    }
}
