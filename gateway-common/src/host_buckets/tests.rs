extern crate std;
use std::vec::Vec;

use super::*;
use crate::{HOST_EXACT, HOST_SUFFIX, host_hash};

fn key(listener: u32, hash: u64) -> HostKey {
    HostKey {
        listener,
        kind: HOST_EXACT,
        hash,
    }
}

fn value(id: u32) -> HostValue {
    HostValue { id, pad: 0 }
}

/// `count` keys of listener 1 that share one bucket.
fn colliding(count: usize) -> Vec<HostKey> {
    let first = key(1, 0);
    (0..u64::MAX)
        .map(|hash| key(1, hash))
        .filter(|k| host_bucket(k) == host_bucket(&first))
        .take(count)
        .collect()
}

fn slot_of(bucket: &HostBucket, key: &HostKey) -> Option<usize> {
    bucket.slots.iter().position(|slot| slot.key == *key)
}

#[test]
fn keys_put_in_a_bucket_are_found_and_others_are_absent() {
    let keys = colliding(3);
    let values: Vec<HostValue> = (0..3).map(value).collect();
    let bucket = HostBucket::default().with_changes([], keys.iter().zip(&values));
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(bucket.find(k), BucketLookup::Found(*v));
    }
    let other = colliding(4)[3];
    assert_eq!(bucket.find(&other), BucketLookup::Absent);
    // Same hash, another listener or kind: not the same host.
    let mut other_listener = keys[0];
    other_listener.listener = 2;
    assert_eq!(bucket.find(&other_listener), BucketLookup::Absent);
    let mut other_kind = keys[0];
    other_kind.kind = HOST_SUFFIX;
    assert_eq!(bucket.find(&other_kind), BucketLookup::Absent);
}

#[test]
fn a_key_past_the_slots_overflows_to_the_hash_map() {
    let keys = colliding(HOST_BUCKET_SLOTS + 1);
    let values: Vec<HostValue> = (0..keys.len() as u32).map(value).collect();
    let bucket = HostBucket::default().with_changes([], keys.iter().zip(&values));
    assert_eq!(bucket.overflow, 1);
    for (k, v) in keys.iter().zip(&values).take(HOST_BUCKET_SLOTS) {
        assert_eq!(bucket.find(k), BucketLookup::Found(*v));
    }
    assert_eq!(
        bucket.find(&keys[HOST_BUCKET_SLOTS]),
        BucketLookup::Overflow
    );
}

#[test]
fn keys_that_stay_never_move_and_updates_keep_their_slot() {
    let keys = colliding(4);
    let values: Vec<HostValue> = (0..4).map(value).collect();
    let before = HostBucket::default().with_changes([], keys[..3].iter().zip(&values));
    // Remove the first, update the third, add the fourth.
    let updated = value(30);
    let after = before.with_changes([&keys[0]], [(&keys[2], &updated), (&keys[3], &values[3])]);
    assert_eq!(slot_of(&after, &keys[1]), slot_of(&before, &keys[1]));
    assert_eq!(slot_of(&after, &keys[2]), slot_of(&before, &keys[2]));
    assert_eq!(after.find(&keys[2]), BucketLookup::Found(updated));
    assert_eq!(after.find(&keys[0]), BucketLookup::Absent);
    assert_eq!(after.find(&keys[3]), BucketLookup::Found(values[3]));
    // The new key took the freed slot: no overflow.
    assert_eq!(slot_of(&after, &keys[3]), slot_of(&before, &keys[0]));
    assert_eq!(after.overflow, 0);
}

#[test]
fn an_overflowing_bucket_stays_marked_until_rebuilt() {
    let keys = colliding(HOST_BUCKET_SLOTS + 1);
    let values: Vec<HostValue> = (0..keys.len() as u32).map(value).collect();
    let full = HostBucket::default().with_changes([], keys.iter().zip(&values));
    let fewer = full.with_changes([&keys[0]], []);
    // The fifth key is still in HOSTS only, which the bucket cannot know.
    assert_eq!(fewer.find(&keys[HOST_BUCKET_SLOTS]), BucketLookup::Overflow);
    let rebuilt = HostBucket::default().with_changes([], keys[1..].iter().zip(&values[1..]));
    assert_eq!(rebuilt.overflow, 0);
    assert_eq!(
        rebuilt.find(&keys[HOST_BUCKET_SLOTS]),
        BucketLookup::Found(values[HOST_BUCKET_SLOTS])
    );
}

#[test]
fn names_spread_over_the_buckets() {
    // MAX_HOSTS wildcard and exact names of a few listeners: every bucket
    // index is in range, and few buckets overflow.
    let mut load = std::vec![0u32; HOST_BUCKETS as usize];
    for n in 0..crate::MAX_HOSTS {
        let name = std::format!("host-{n}.example.com");
        let key = HostKey {
            listener: n % 7,
            kind: if n % 2 == 0 { HOST_EXACT } else { HOST_SUFFIX },
            hash: host_hash(name.as_bytes()),
        };
        let bucket = host_bucket(&key);
        assert!(bucket < HOST_BUCKETS);
        load[bucket as usize] += 1;
    }
    let overflowing = load
        .iter()
        .filter(|n| **n as usize > HOST_BUCKET_SLOTS)
        .count();
    // Two keys per bucket on average: a Poisson tail of about 5%.
    assert!(
        overflowing < HOST_BUCKETS as usize / 10,
        "{overflowing} buckets overflow"
    );
}
