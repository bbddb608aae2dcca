//! Consistent hashing (DestinationRule `consistentHash`): Envoy's ring
//! hash (ketama) and Maglev tables over a cluster's healthy endpoints,
//! rebuilt when they change, so a key keeps its endpoint while that
//! endpoint lives and about 1/N of the keys move when one of N goes.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use super::{UpstreamEndpoint, balance::splitmix64};
use crate::plan::HashTable;

/// A stable 64-bit hash (FNV-1a, then splitmix64 to spread its bits):
/// the same in every process, so a key's endpoint survives a restart.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    seeded_hash(0, bytes)
}

fn seeded_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(hash)
}

/// Where keys land, for one set of endpoints.
#[derive(Debug)]
enum Lookup {
    /// (point, endpoint index), sorted by point.
    Ring(Vec<(u64, usize)>),
    /// Endpoint index per slot.
    Maglev(Vec<usize>),
}

impl Lookup {
    fn build(table: HashTable, endpoints: &[(SocketAddr, u32)]) -> Self {
        match table {
            HashTable::Ring { minimum_size } => Self::Ring(ring(endpoints, minimum_size)),
            HashTable::Maglev { table_size } => Self::Maglev(maglev(endpoints, table_size)),
        }
    }

    fn find(&self, hash: u64) -> Option<usize> {
        match self {
            Self::Ring(points) => {
                let at = points.partition_point(|(point, _)| *point < hash);
                points.get(at).or_else(|| points.first()).map(|(_, i)| *i)
            }
            Self::Maglev(slots) => {
                let len = u64::try_from(slots.len()).ok().filter(|n| *n > 0)?;
                let slot = usize::try_from(hash % len).ok()?;
                slots.get(slot).copied()
            }
        }
    }
}

/// Most points a ring holds; above it, each unit of weight gets fewer.
const RING_POINT_BUDGET: u64 = 1 << 20;

/// The ring: each unit of an endpoint's weight at `minimum_size` points
/// (so the ring has at least that many), fewer when the ring would pass
/// [`RING_POINT_BUDGET`]. Unlike Envoy's, which spreads `minimum_size`
/// over the total weight, an endpoint's points do not depend on the
/// others: when one of N goes, only its keys move (1/N), where Envoy's
/// rescaled ring moves others' too.
fn ring(endpoints: &[(SocketAddr, u32)], minimum_size: u64) -> Vec<(u64, usize)> {
    let total: u64 = endpoints.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
    if total == 0 {
        return Vec::new();
    }
    let per_weight = minimum_size.min(RING_POINT_BUDGET / total).max(1);
    let mut points = Vec::new();
    for (index, (addr, weight)) in endpoints.iter().enumerate() {
        for n in 0..per_weight * u64::from((*weight).max(1)) {
            points.push((stable_hash(format!("{addr}_{n}").as_bytes()), index));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev's table: each endpoint fills slots along its own permutation
/// (offset and skip from its address), in turns weighted as Envoy weighs
/// them, until every slot is taken.
fn maglev(endpoints: &[(SocketAddr, u32)], table_size: u64) -> Vec<usize> {
    let Ok(size) = usize::try_from(table_size) else {
        return Vec::new();
    };
    if endpoints.is_empty() || size == 0 {
        return Vec::new();
    }
    struct Build {
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        target: u64,
    }
    let mut builds: Vec<Build> = endpoints
        .iter()
        .map(|(addr, weight)| {
            let key = addr.to_string();
            Build {
                offset: seeded_hash(0, key.as_bytes()) % table_size,
                skip: seeded_hash(1, key.as_bytes()) % (table_size.max(2) - 1) + 1,
                next: 0,
                weight: u64::from((*weight).max(1)),
                target: 0,
            }
        })
        .collect();
    let max_weight = builds.iter().map(|b| b.weight).max().unwrap_or(1);
    let mut slots: Vec<Option<usize>> = vec![None; size];
    let mut filled = 0;
    let mut iteration: u64 = 1;
    while filled < size {
        for (index, build) in builds.iter_mut().enumerate() {
            if filled == size {
                break;
            }
            // A lighter endpoint takes a turn only every max/weight rounds.
            if iteration * build.weight < build.target {
                continue;
            }
            build.target += max_weight;
            loop {
                let slot = ((build.offset + build.skip * build.next) % table_size) as usize;
                build.next += 1;
                if slots[slot].is_none() {
                    slots[slot] = Some(index);
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    slots.into_iter().map(|s| s.unwrap_or(0)).collect()
}

/// A cluster's consistent-hash balancer: its table kind, and the lookup
/// built for the endpoints it last saw.
#[derive(Debug)]
pub struct HashBalancer {
    table: HashTable,
    built: Mutex<Option<(Vec<SocketAddr>, Arc<Lookup>)>>,
}

impl HashBalancer {
    pub fn new(table: HashTable) -> Self {
        Self {
            table,
            built: Mutex::new(None),
        }
    }

    /// The endpoint `hash` lands on among `endpoints`.
    pub fn choose(
        &self,
        endpoints: &[Arc<UpstreamEndpoint>],
        hash: u64,
    ) -> Option<Arc<UpstreamEndpoint>> {
        let lookup = self.lookup(endpoints)?;
        endpoints.get(lookup.find(hash)?).cloned()
    }

    /// The lookup for `endpoints`, built again when they changed.
    fn lookup(&self, endpoints: &[Arc<UpstreamEndpoint>]) -> Option<Arc<Lookup>> {
        let mut built = self.built.lock().ok()?;
        let same = built.as_ref().is_some_and(|(addrs, _)| {
            addrs.len() == endpoints.len() && addrs.iter().zip(endpoints).all(|(a, e)| *a == e.addr)
        });
        if !same {
            let weighted: Vec<(SocketAddr, u32)> =
                endpoints.iter().map(|e| (e.addr, e.weight)).collect();
            let lookup = Arc::new(Lookup::build(self.table, &weighted));
            *built = Some((weighted.iter().map(|(a, _)| *a).collect(), lookup));
        }
        built.as_ref().map(|(_, lookup)| Arc::clone(lookup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(count: u8) -> Vec<(SocketAddr, u32)> {
        (1..=count)
            .map(|i| (SocketAddr::from(([192, 0, 2, i], 80)), 1))
            .collect()
    }

    /// The endpoint (by address) each of `keys` keys lands on.
    fn placement(table: HashTable, eps: &[(SocketAddr, u32)], keys: u64) -> Vec<SocketAddr> {
        let lookup = Lookup::build(table, eps);
        (0..keys)
            .map(|k| {
                let at = lookup
                    .find(stable_hash(format!("key-{k}").as_bytes()))
                    .expect("an endpoint");
                eps[at].0
            })
            .collect()
    }

    fn tables() -> [HashTable; 2] {
        [
            HashTable::Ring { minimum_size: 1024 },
            HashTable::Maglev { table_size: 65537 },
        ]
    }

    #[test]
    fn the_hash_is_stable_across_processes() {
        // FNV-1a of "" is its offset basis; splitmix64 of that is fixed.
        assert_eq!(stable_hash(b""), splitmix64(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }

    #[test]
    fn keys_spread_evenly_over_equal_endpoints() {
        for table in tables() {
            let eps = endpoints(4);
            let placed = placement(table, &eps, 20_000);
            for (addr, _) in &eps {
                let share = placed.iter().filter(|a| *a == addr).count();
                assert!((3_500..6_500).contains(&share), "{table:?} {addr}: {share}");
            }
        }
    }

    #[test]
    fn removing_one_of_n_endpoints_moves_about_one_nth_of_the_keys() {
        for table in tables() {
            let before_eps = endpoints(4);
            let before = placement(table, &before_eps, 20_000);
            let gone = before_eps[2].0;
            let after_eps: Vec<_> = before_eps
                .iter()
                .copied()
                .filter(|(a, _)| *a != gone)
                .collect();
            let after = placement(table, &after_eps, 20_000);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let stayed_on_others_moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| **b != gone && b != a)
                .count();
            // A quarter of the keys were on the one that went.
            assert!((4_000..6_200).contains(&moved), "{table:?}: {moved}");
            // Keys on the others stay put (Maglev may move a few).
            assert!(
                stayed_on_others_moved < 400,
                "{table:?}: {stayed_on_others_moved}"
            );
        }
    }

    #[test]
    fn weights_set_the_share_of_keys() {
        for table in tables() {
            let mut eps = endpoints(2);
            eps[0].1 = 3;
            let placed = placement(table, &eps, 20_000);
            let heavy = placed.iter().filter(|a| **a == eps[0].0).count();
            assert!((13_500..16_500).contains(&heavy), "{table:?}: {heavy}");
        }
    }

    #[test]
    fn a_ring_has_at_least_its_minimum_size_and_a_maglev_table_its_size() {
        assert!(ring(&endpoints(3), 1024).len() >= 1024);
        assert_eq!(maglev(&endpoints(3), 65537).len(), 65537);
        assert_eq!(Lookup::Ring(Vec::new()).find(5), None);
    }

    #[test]
    fn a_balancer_rebuilds_its_table_when_the_endpoints_change() {
        let balancer = HashBalancer::new(HashTable::Ring { minimum_size: 64 });
        let mut eps: Vec<Arc<UpstreamEndpoint>> = endpoints(3)
            .into_iter()
            .map(|(a, w)| UpstreamEndpoint::new(a, w))
            .collect();
        let key = (0..1000)
            .map(|k| stable_hash(format!("k{k}").as_bytes()))
            .find(|h| balancer.choose(&eps, *h).map(|e| e.addr) == Some(eps[1].addr))
            .expect("a key on the second endpoint");
        eps.remove(1);
        let now = balancer.choose(&eps, key).expect("an endpoint");
        assert!(eps.iter().any(|e| e.addr == now.addr));
    }
}
