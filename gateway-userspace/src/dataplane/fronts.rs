//! The writes that keep the array fronts in step with the hash maps
//! behind them: `HOST_BUCKETS` with `HOSTS`, `LOCAL_ADDR_LIST` with
//! `LOCAL_ADDRS` (see gateway-common's `host_buckets.rs` and
//! `local_addrs.rs`); pure, so the order is tested without a kernel.
use std::collections::BTreeMap;

use gateway_common::{HostBucket, HostKey, HostValue, LocalAddrList, LocalAddrValue, host_bucket};

use super::Changes;

/// The bucket writes for `changes` to `HOSTS`, in order, reading each
/// touched bucket's current value with `current`. With `rebuild`, every
/// bucket of a `wanted` or removed key is built afresh from the wanted
/// keys (the bucket array is new, or of another build, while `HOSTS` was
/// adopted from a previous daemon).
///
/// A bucket that loses keys and gains others is written twice, first
/// without the lost keys: a slot is never rewritten from one key to
/// another in a single write, which a kernel reading it meanwhile could
/// see half done.
pub(super) fn bucket_writes<E>(
    changes: &Changes<'_, HostKey, HostValue>,
    wanted: &BTreeMap<HostKey, HostValue>,
    rebuild: bool,
    mut current: impl FnMut(u32) -> Result<HostBucket, E>,
) -> Result<Vec<(u32, HostBucket)>, E> {
    type Touched<'a> = (Vec<&'a HostKey>, Vec<(&'a HostKey, &'a HostValue)>);
    let mut touched: BTreeMap<u32, Touched<'_>> = BTreeMap::new();
    for key in &changes.removals {
        touched.entry(host_bucket(key)).or_default().0.push(key);
    }
    let upserts: Vec<(&HostKey, &HostValue)> = if rebuild {
        wanted.iter().collect()
    } else {
        changes.upserts.clone()
    };
    for (key, value) in upserts {
        touched
            .entry(host_bucket(key))
            .or_default()
            .1
            .push((key, value));
    }
    let mut writes = Vec::new();
    for (index, (removed, upserted)) in touched {
        let old = current(index)?;
        if rebuild {
            // Built afresh; keys may move, which only an upgrade does.
            let new = HostBucket::default().with_changes([], upserted);
            if new != old {
                writes.push((index, new));
            }
            continue;
        }
        let without = old.with_changes(removed, []);
        let new = without.with_changes([], upserted);
        writes.extend(staged(old, without, new).map(|bucket| (index, bucket)));
    }
    Ok(writes)
}

/// The writes of `LOCAL_ADDR_LIST`, from `old`, for `changes` to
/// `LOCAL_ADDRS`; with `rebuild`, the list of every `wanted` address.
pub(super) fn list_writes(
    old: LocalAddrList,
    changes: &Changes<'_, [u8; 16], LocalAddrValue>,
    wanted: &BTreeMap<[u8; 16], LocalAddrValue>,
    rebuild: bool,
) -> Vec<LocalAddrList> {
    if rebuild {
        return vec![LocalAddrList::default().with_changes([], wanted.keys())];
    }
    let without = old.with_changes(changes.removals.iter().copied(), []);
    let new = without.with_changes([], changes.upserts.iter().map(|(key, _)| *key));
    staged(old, without, new).collect()
}

/// The writes that take a front entry from `old` to `new` through
/// `without` (`old` less what leaves): `without` first when it differs
/// from both, so no slot goes from one entry to another in one write.
fn staged<T: PartialEq + Copy>(old: T, without: T, new: T) -> impl Iterator<Item = T> {
    let first = (without != old && new != without).then_some(without);
    let second = (new != old).then_some(new);
    first.into_iter().chain(second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::diff;
    use gateway_common::HOST_EXACT;

    fn key(hash: u64) -> HostKey {
        HostKey {
            listener: 1,
            kind: HOST_EXACT,
            hash,
        }
    }

    /// Two keys of one bucket.
    fn pair() -> (HostKey, HostKey) {
        let first = key(0);
        let second = (1..)
            .map(key)
            .find(|k| host_bucket(k) == host_bucket(&first))
            .expect("a second key of the bucket");
        (first, second)
    }

    /// The writes taking `buckets` (absent ones empty) from the hosts
    /// `old` to `new`, with or without a `rebuild`.
    fn writes_for(
        buckets: &BTreeMap<u32, HostBucket>,
        old: &BTreeMap<HostKey, HostValue>,
        new: &BTreeMap<HostKey, HostValue>,
        rebuild: bool,
    ) -> Vec<(u32, HostBucket)> {
        bucket_writes(&diff(old, new), new, rebuild, |i| {
            Ok::<_, ()>(buckets.get(&i).copied().unwrap_or_default())
        })
        .expect("reads")
    }

    /// Applies `writes` to `buckets`.
    fn apply(buckets: &mut BTreeMap<u32, HostBucket>, writes: &[(u32, HostBucket)]) {
        for (index, bucket) in writes {
            buckets.insert(*index, *bucket);
        }
    }

    #[test]
    fn buckets_follow_the_hosts_and_unchanged_ones_are_not_written() {
        let (a, b) = pair();
        let old = BTreeMap::from([(a, HostValue { id: 1, pad: 0 })]);
        let new = BTreeMap::from([(b, HostValue { id: 2, pad: 0 })]);
        let mut buckets = BTreeMap::new();
        let first = writes_for(&buckets, &BTreeMap::new(), &old, false);
        apply(&mut buckets, &first);
        let index = host_bucket(&a);
        assert!(matches!(
            buckets[&index].find(&a),
            gateway_common::BucketLookup::Found(HostValue { id: 1, .. })
        ));
        // a leaves and b arrives in the same bucket: two writes, the first
        // holding neither, so the slot is never rewritten from a to b.
        let writes = writes_for(&buckets, &old, &new, false);
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[0].1.find(&a), gateway_common::BucketLookup::Absent);
        assert_eq!(writes[0].1.find(&b), gateway_common::BucketLookup::Absent);
        apply(&mut buckets, &writes);
        assert!(matches!(
            buckets[&index].find(&b),
            gateway_common::BucketLookup::Found(HostValue { id: 2, .. })
        ));
        // Nothing changes: nothing is written.
        let none = writes_for(&buckets, &new, &new, false);
        assert!(none.is_empty());
    }

    #[test]
    fn a_rebuild_fills_every_bucket_of_the_wanted_hosts() {
        let (a, b) = pair();
        let hosts = BTreeMap::from([
            (a, HostValue { id: 1, pad: 0 }),
            (b, HostValue { id: 2, pad: 0 }),
            (key(7), HostValue { id: 3, pad: 0 }),
        ]);
        // HOSTS was adopted holding them and a host since removed; the
        // buckets are of another build: one still names the removed host.
        let gone = key(9);
        let adopted = {
            let mut adopted = hosts.clone();
            adopted.insert(gone, HostValue { id: 4, pad: 0 });
            adopted
        };
        let stale = HostBucket::default().with_changes([], [(&gone, &adopted[&gone])]);
        let mut buckets = BTreeMap::from([(host_bucket(&gone), stale)]);
        let writes = writes_for(&buckets, &adopted, &hosts, true);
        apply(&mut buckets, &writes);
        assert_ne!(
            buckets[&host_bucket(&gone)].find(&gone),
            gateway_common::BucketLookup::Found(adopted[&gone])
        );
        for (k, v) in &hosts {
            assert_eq!(
                buckets[&host_bucket(k)].find(k),
                gateway_common::BucketLookup::Found(*v)
            );
        }
    }

    fn addr(last: u8) -> [u8; 16] {
        let mut addr = [0u8; 16];
        addr[15] = last;
        addr
    }

    #[test]
    fn the_address_list_swaps_in_two_writes_and_rebuilds_whole() {
        let value = LocalAddrValue { flags: 0 };
        let old_set = BTreeMap::from([(addr(1), value), (addr(2), value)]);
        let new_set = BTreeMap::from([(addr(2), value), (addr(3), value)]);
        let old = LocalAddrList::default().with_changes([], old_set.keys());
        // 1 leaves and 3 takes its slot: first a list with neither.
        let writes = list_writes(old, &diff(&old_set, &new_set), &new_set, false);
        assert_eq!(writes.len(), 2, "{writes:?}");
        let words = |a| gateway_common::addr_words(&a);
        assert_eq!(
            writes[0].find(words(addr(1))),
            gateway_common::LocalLookup::NotLocal
        );
        assert_eq!(
            writes[0].find(words(addr(3))),
            gateway_common::LocalLookup::NotLocal
        );
        assert_eq!(
            writes[1].find(words(addr(3))),
            gateway_common::LocalLookup::Local
        );
        assert_eq!(
            writes[1].find(words(addr(2))),
            gateway_common::LocalLookup::Local
        );
        // Nothing changes: nothing written; a rebuild writes the whole set.
        assert!(list_writes(writes[1], &diff(&new_set, &new_set), &new_set, false).is_empty());
        let rebuilt = list_writes(
            LocalAddrList::default(),
            &diff(&new_set, &new_set),
            &new_set,
            true,
        );
        assert_eq!(rebuilt.len(), 1);
        assert_eq!(
            rebuilt[0].find(words(addr(3))),
            gateway_common::LocalLookup::Local
        );
    }
}
