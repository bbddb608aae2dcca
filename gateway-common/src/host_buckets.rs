//! `HOST_BUCKETS`: an array in front of the `HOSTS` hash map, so that the
//! kernel's host match costs array lookups, not hash-map lookups.
//!
//! A hash-map lookup hashes the key again (jhash) and walks a bucket list:
//! about 33 ns per lookup on the benchmark machine, and a wildcard match
//! makes two or more (the exact name, then each suffix). The key already
//! carries a 64-bit hash of the name, so it picks a bucket of this array
//! directly; the array lookup is inlined by the verifier. A bucket holds up
//! to [`HOST_BUCKET_SLOTS`] keys; a key that finds no free slot stays in
//! `HOSTS` only and the bucket says so (`overflow`), and only then is the
//! hash map consulted. `HOSTS` stays the whole table: what `bpftool map
//! dump` shows and what the reference classifier reads.
//!
//! Buckets change in place, one slot at a time, and a key never moves
//! between slots (see [`HostBucket::with_changes`]): userspace writes a
//! bucket while the kernel may be reading it, and a torn read can then
//! only blur the slots of keys being added or removed at that moment,
//! never those of a key that stays.
use crate::{HostKey, HostValue};

/// Buckets in `HOST_BUCKETS` (a power of two): half a slot per host at
/// `MAX_HOSTS`, so buckets rarely overflow.
pub const HOST_BUCKETS: u32 = 8 * 1024;
/// Keys a bucket holds.
pub const HOST_BUCKET_SLOTS: usize = 4;

/// One slot of a bucket: a key of `HOSTS` and its value. Free when
/// `key.kind` is 0 (no host kind is).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostSlot {
    pub key: HostKey,
    pub value: HostValue,
}

/// Value of `HOST_BUCKETS`: the keys whose [`host_bucket`] is this one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostBucket {
    pub slots: [HostSlot; HOST_BUCKET_SLOTS],
    /// Non-zero when a key of this bucket may be in `HOSTS` only.
    pub overflow: u32,
    /// Always zero.
    pub pad: u32,
}

const _: () = assert!(size_of::<HostSlot>() == 24);
const _: () = assert!(size_of::<HostBucket>() == 104);

/// What a bucket says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketLookup {
    /// The key is in a slot.
    Found(HostValue),
    /// The key is in no slot and nowhere else.
    Absent,
    /// The key is in no slot; it may be in `HOSTS`.
    Overflow,
}

/// The bucket of `key`: its name hash mixed with its listener and kind
/// (Fibonacci hashing), top bits. A daemon adopts the pinned buckets of
/// the one before it, so a change here must change the map's shape too
/// (its size or value), which makes the loader replace them.
#[inline(always)]
pub fn host_bucket(key: &HostKey) -> u32 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let salt = (u64::from(key.listener) << 2 | u64::from(key.kind)).wrapping_mul(GOLDEN);
    let mixed = (key.hash ^ salt).wrapping_mul(GOLDEN);
    (mixed >> (64 - HOST_BUCKETS.trailing_zeros())) as u32
}

impl HostBucket {
    /// Looks `key` up in the slots.
    #[inline(always)]
    pub fn find(&self, key: &HostKey) -> BucketLookup {
        for slot in &self.slots {
            if slot.key.hash == key.hash
                && slot.key.listener == key.listener
                && slot.key.kind == key.kind
            {
                return BucketLookup::Found(slot.value);
            }
        }
        if self.overflow != 0 {
            BucketLookup::Overflow
        } else {
            BucketLookup::Absent
        }
    }

    /// This bucket after `removed` keys left `HOSTS` and `upserted` ones
    /// were inserted or updated there (all of this bucket). Removed keys
    /// free their slots; an updated key keeps its slot; a new key takes
    /// the first free slot, or marks the bucket as overflowing. Keys never
    /// move, and `overflow` is never cleared (keys in `HOSTS` only are not
    /// known here): a rebuild from an empty bucket compacts.
    pub fn with_changes<'a>(
        &self,
        removed: impl IntoIterator<Item = &'a HostKey>,
        upserted: impl IntoIterator<Item = (&'a HostKey, &'a HostValue)>,
    ) -> Self {
        let mut bucket = *self;
        for key in removed {
            for slot in bucket.slots.iter_mut().filter(|slot| slot.key == *key) {
                *slot = HostSlot::default();
            }
        }
        for (key, value) in upserted {
            if let Some(slot) = bucket.slots.iter_mut().find(|slot| slot.key == *key) {
                slot.value = *value;
            } else if let Some(slot) = bucket.slots.iter_mut().find(|slot| slot.key.kind == 0) {
                *slot = HostSlot {
                    key: *key,
                    value: *value,
                };
            } else {
                bucket.overflow = 1;
            }
        }
        bucket
    }
}

#[cfg(test)]
mod tests;
