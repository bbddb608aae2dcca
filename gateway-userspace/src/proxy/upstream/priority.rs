//! Envoy's priority levels and locality weights at request time: which
//! endpoints a request is balanced over when a cluster's endpoints are
//! placed by locality (`plan::LocalityPlan`). A level takes load while its
//! healthy share times the overprovisioning factor (1.4) covers it; the
//! rest spills to the next level. Below 100 % in all, a level whose
//! healthy share is under the panic threshold balances over all of its
//! endpoints (Envoy's `recalculatePerPriorityPanic`).
use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use super::UpstreamEndpoint;
use crate::plan::{Locality, Placement};

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// An endpoint's placement, kept where the balancer reads it; set again
/// when a Kubernetes Service's endpoints change.
#[derive(Debug, Default)]
pub(super) struct Place {
    priority: AtomicU32,
    locality_weight: AtomicU32,
    /// Its locality, hashed: endpoints with the same one share a weight.
    locality: AtomicU64,
}

impl Place {
    pub(super) fn set(&self, placement: Placement, locality: &Locality) {
        self.priority.store(placement.priority, Ordering::Relaxed);
        self.locality_weight
            .store(placement.locality_weight, Ordering::Relaxed);
        self.locality
            .store(locality_key(locality), Ordering::Relaxed);
    }

    pub(super) fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }
}

impl UpstreamEndpoint {
    /// Its priority level (0 is tried first).
    pub fn priority(&self) -> u32 {
        self.place.priority()
    }
}

fn locality_key(locality: &Locality) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    locality.hash(&mut hasher);
    hasher.finish()
}

/// A level's or a locality's availability in percent: the healthy share
/// times the overprovisioning factor, at most 100.
fn availability(healthy: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    (OVERPROVISIONING * healthy as u64 / total as u64).min(100)
}

/// The endpoints a request balances over: those of the level `draw`
/// lands on (its healthy ones, or all of them in panic), and under
/// locality weights those of one locality drawn with `locality_draw`.
/// Levels in `excluded` take no load unless every level is (a retry's
/// `previous_priorities`). Empty when nothing is healthy and the
/// threshold does not panic.
pub(super) fn candidates(
    endpoints: &[Arc<UpstreamEndpoint>],
    panic_percent: u32,
    weighted: bool,
    draw: u64,
    locality_draw: u64,
    excluded: &[u32],
) -> Vec<Arc<UpstreamEndpoint>> {
    let all_excluded = endpoints
        .iter()
        .all(|ep| excluded.contains(&ep.place.priority()));
    let considered =
        |ep: &&Arc<UpstreamEndpoint>| all_excluded || !excluded.contains(&ep.place.priority());
    // Per level: (total, healthy).
    let mut levels: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for ep in endpoints.iter().filter(considered) {
        let level = levels.entry(ep.place.priority()).or_default();
        level.0 += 1;
        level.1 += usize::from(!ep.health.is_ejected());
    }
    let Some((&first, _)) = levels.iter().next() else {
        return Vec::new();
    };
    let available: Vec<(u32, u64)> = levels
        .iter()
        .map(|(level, (total, healthy))| (*level, availability(*healthy, *total)))
        .collect();
    let sum: u64 = available.iter().map(|(_, a)| a).sum();
    let normalized = sum.min(100);
    let level = if sum == 0 {
        first
    } else {
        pick_level(&available, sum, draw % 100)
    };
    let (total, healthy) = levels.get(&level).copied().unwrap_or_default();
    let panic = normalized < 100 && healthy * 100 < total * panic_percent as usize;
    let in_level = endpoints.iter().filter(|ep| ep.place.priority() == level);
    if panic {
        return in_level.cloned().collect();
    }
    let healthy: Vec<Arc<UpstreamEndpoint>> = in_level
        .filter(|ep| !ep.health.is_ejected())
        .cloned()
        .collect();
    if weighted {
        one_locality(healthy, endpoints, level, locality_draw)
    } else {
        healthy
    }
}

/// The level `ticket` (0..100) lands on: each level's load is its
/// availability, capped by what the levels before it left (a ticket past
/// 100 never comes, so the running sum is the cap); below 100 in all, the
/// loads are scaled up to 100 (Envoy's normalized load).
fn pick_level(available: &[(u32, u64)], sum: u64, ticket: u64) -> u32 {
    let mut covered = 0;
    for (level, availability) in available {
        covered += if sum >= 100 {
            *availability
        } else {
            availability * 100 / sum
        };
        if ticket < covered {
            return *level;
        }
    }
    // Rounding left a few tickets over: the last level that takes load.
    available
        .iter()
        .rev()
        .find(|(_, a)| *a > 0)
        .map_or(0, |(level, _)| *level)
}

/// The healthy endpoints of one locality of `level`, drawn by locality
/// weight times the locality's availability (Envoy's locality-weighted
/// balancing).
fn one_locality(
    healthy: Vec<Arc<UpstreamEndpoint>>,
    endpoints: &[Arc<UpstreamEndpoint>],
    level: u32,
    draw: u64,
) -> Vec<Arc<UpstreamEndpoint>> {
    // Per locality: (weight, total, healthy).
    let mut localities: BTreeMap<u64, (u64, usize, usize)> = BTreeMap::new();
    for ep in endpoints.iter().filter(|ep| ep.place.priority() == level) {
        let entry = localities
            .entry(ep.place.locality.load(Ordering::Relaxed))
            .or_default();
        entry.0 = u64::from(ep.place.locality_weight.load(Ordering::Relaxed));
        entry.1 += 1;
        entry.2 += usize::from(!ep.health.is_ejected());
    }
    let effective: Vec<(u64, u64)> = localities
        .iter()
        .map(|(key, (weight, total, healthy))| (*key, weight * availability(*healthy, *total)))
        .filter(|(_, w)| *w > 0)
        .collect();
    let Some(chosen) = super::weighted(&effective, |(_, w)| *w, draw).map(|(key, _)| *key) else {
        return healthy;
    };
    healthy
        .into_iter()
        .filter(|ep| ep.place.locality.load(Ordering::Relaxed) == chosen)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::plan::Placement;

    /// Endpoints at `(priority, locality, locality weight)`.
    fn endpoints(places: &[(u32, &str, u32)]) -> Vec<Arc<UpstreamEndpoint>> {
        places
            .iter()
            .enumerate()
            .map(|(i, (priority, locality, weight))| {
                let ep = UpstreamEndpoint::new(SocketAddr::from(([192, 0, 2, i as u8 + 1], 80)), 1);
                ep.place.set(
                    Placement {
                        priority: *priority,
                        locality_weight: *weight,
                    },
                    &Locality::parse(locality),
                );
                ep
            })
            .collect()
    }

    /// `counts[i]` endpoints at priority `i`, unweighted, one locality per level.
    fn per_level(counts: &[usize]) -> Vec<Arc<UpstreamEndpoint>> {
        let places: Vec<(u32, &str, u32)> = counts
            .iter()
            .enumerate()
            .flat_map(|(level, n)| std::iter::repeat_n((level as u32, "l", 0), *n))
            .collect();
        endpoints(&places)
    }

    fn eject(ep: &UpstreamEndpoint) {
        ep.health.eject_for_test();
    }

    fn last_octets(eps: &[Arc<UpstreamEndpoint>]) -> Vec<u8> {
        eps.iter()
            .map(|ep| match ep.addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            })
            .collect()
    }

    /// How many of 100 tickets land on each priority.
    fn shares(eps: &[Arc<UpstreamEndpoint>], panic: u32) -> BTreeMap<u32, u32> {
        let mut out = BTreeMap::new();
        for ticket in 0..100 {
            let got = candidates(eps, panic, false, ticket, 0, &[]);
            if let Some(ep) = got.first() {
                *out.entry(ep.place.priority()).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn a_healthy_first_level_takes_every_request() {
        let eps = endpoints(&[(0, "a", 0), (0, "a", 0), (1, "b", 0)]);
        assert_eq!(shares(&eps, 0), BTreeMap::from([(0, 100)]));
        assert_eq!(last_octets(&candidates(&eps, 0, false, 7, 0, &[])), [1, 2]);
    }

    #[test]
    fn a_level_keeps_all_load_until_its_healthy_share_times_1_4_drops_below_100() {
        // 4 of 5 healthy: 80 % x 1.4 = 112 %: still all of the load.
        let eps = endpoints(
            &[(0, "a", 0); 5]
                .iter()
                .copied()
                .chain([(1, "b", 0)])
                .collect::<Vec<_>>(),
        );
        eject(&eps[0]);
        assert_eq!(shares(&eps, 0), BTreeMap::from([(0, 100)]));
        // 2 of 4 healthy: 70 % to level 0, 30 % spills to level 1.
        let eps = per_level(&[4, 1]);
        eject(&eps[0]);
        eject(&eps[1]);
        assert_eq!(shares(&eps, 0), BTreeMap::from([(0, 70), (1, 30)]));
    }

    #[test]
    fn an_ejected_level_sends_everything_to_the_next() {
        let eps = endpoints(&[(0, "a", 0), (1, "b", 0), (2, "c", 0)]);
        eject(&eps[0]);
        assert_eq!(shares(&eps, 0), BTreeMap::from([(1, 100)]));
        assert_eq!(last_octets(&candidates(&eps, 0, false, 0, 0, &[])), [2]);
    }

    #[test]
    fn below_100_in_all_loads_are_normalized_and_a_level_under_the_threshold_panics() {
        // Level 0: 1 of 4 healthy (35 %); level 1: 0 of 1 (0 %): sum 35,
        // all of it to level 0, which at 25 % healthy is under 50: panic.
        let eps = per_level(&[4, 1]);
        for ep in &eps[1..] {
            eject(ep);
        }
        assert_eq!(shares(&eps, 50), BTreeMap::from([(0, 100)]));
        assert_eq!(
            candidates(&eps, 50, false, 3, 0, &[]).len(),
            4,
            "panic: all of level 0"
        );
        assert_eq!(
            last_octets(&candidates(&eps, 0, false, 3, 0, &[])),
            [1],
            "no threshold: healthy only"
        );
    }

    #[test]
    fn a_level_panics_only_below_the_threshold_and_only_when_the_levels_cover_under_100() {
        let eps = endpoints(&[(0, "a", 0); 4]);
        // 3 of 4 healthy (75 %) under a threshold of 80: 75 x 1.4 covers
        // 100 %, so no panic (Envoy's rule).
        eject(&eps[0]);
        assert_eq!(candidates(&eps, 80, false, 1, 0, &[]).len(), 3);
        // 2 of 4 (50 %): at a threshold of 50 not below it, at 51 below.
        eject(&eps[1]);
        assert_eq!(candidates(&eps, 50, false, 1, 0, &[]).len(), 2);
        assert_eq!(candidates(&eps, 51, false, 1, 0, &[]).len(), 4);
    }

    #[test]
    fn under_100_in_all_each_levels_share_is_scaled_up() {
        // Levels 0 and 1 each 1 of 4 healthy (35 %): 70 in all, so each
        // takes 35 / 70 of the load.
        let eps = per_level(&[4, 4]);
        for ep in eps[1..4].iter().chain(&eps[5..]) {
            eject(ep);
        }
        assert_eq!(shares(&eps, 0), BTreeMap::from([(0, 50), (1, 50)]));
    }

    #[test]
    fn a_ticket_rounding_leaves_over_goes_to_the_last_level_with_load() {
        // 35 % and 46 % (1 of 3 x 1.4): 81 in all, scaled to 43 and 56;
        // ticket 99 is past both, and lands on level 1.
        let eps = per_level(&[4, 3, 1]);
        for ep in eps[1..4].iter().chain(&eps[5..7]).chain(&eps[7..]) {
            eject(ep);
        }
        assert_eq!(last_octets(&candidates(&eps, 0, false, 99, 0, &[])), [5]);
        assert_eq!(last_octets(&candidates(&eps, 0, false, 42, 0, &[])), [1]);
        assert_eq!(last_octets(&candidates(&eps, 0, false, 43, 0, &[])), [5]);
    }

    #[test]
    fn nothing_healthy_and_no_threshold_leaves_no_candidate() {
        let eps = endpoints(&[(0, "a", 0), (1, "b", 0)]);
        eject(&eps[0]);
        eject(&eps[1]);
        assert!(candidates(&eps, 0, false, 5, 0, &[]).is_empty());
        assert_eq!(
            candidates(&eps, 10, false, 5, 0, &[]).len(),
            1,
            "panic in level 0"
        );
    }

    #[test]
    fn excluded_levels_take_no_load_unless_every_level_is_excluded() {
        let eps = endpoints(&[(0, "a", 0), (1, "b", 0), (2, "c", 0)]);
        assert_eq!(last_octets(&candidates(&eps, 0, false, 5, 0, &[0])), [2]);
        assert_eq!(last_octets(&candidates(&eps, 0, false, 5, 0, &[0, 1])), [3]);
        assert_eq!(
            last_octets(&candidates(&eps, 0, false, 5, 0, &[0, 1, 2])),
            [1]
        );
    }

    #[test]
    fn localities_are_drawn_by_weight_times_availability() {
        let eps = endpoints(&[(0, "us", 80), (0, "us", 80), (0, "eu", 20)]);
        let mut us = 0;
        // Tickets spread over the total weight, 80 x 100 + 20 x 100.
        for draw in (0..100).map(|d| d * 100) {
            let got = candidates(&eps, 0, true, 0, draw, &[]);
            let octets = last_octets(&got);
            if octets == [1, 2] {
                us += 1;
            } else {
                assert_eq!(octets, [3]);
            }
        }
        assert_eq!(us, 80);
        // Half of us ejected: 50 % x 1.4 = 70 % of its weight: 56 to 20.
        eject(&eps[0]);
        let us = (0..76)
            .map(|d| d * 100)
            .filter(|draw| last_octets(&candidates(&eps, 0, true, 0, *draw, &[])) == [2])
            .count();
        assert_eq!(us, 56);
    }
}
