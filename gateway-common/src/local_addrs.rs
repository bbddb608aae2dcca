//! `LOCAL_ADDR_LIST`: the gateway's own addresses as a short array in
//! front of the `LOCAL_ADDRS` hash map, read by every packet's
//! classification (XDP) and every connection's steering (sk_lookup).
//!
//! A node has a handful of addresses, and comparing a destination with a
//! few of them costs less than one hash-map lookup (jhash over 16 bytes and
//! a bucket walk, about 28 ns per packet on the benchmark machine). Past
//! [`LOCAL_ADDR_SLOTS`] addresses the list says so (`overflow`) and the
//! hash map, which always holds every address, is consulted. As with the
//! host buckets, addresses never move between slots, so a kernel reading
//! the list while userspace rewrites it can only miss an address being
//! added or removed at that moment.

/// Addresses the list holds before the hash map is needed.
pub const LOCAL_ADDR_SLOTS: usize = 8;

/// One slot: an address (IPv4 mapped) as two native-endian words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LocalAddrSlot {
    pub words: [u64; 2],
    /// Non-zero when the slot holds an address.
    pub used: u32,
    /// Always zero.
    pub pad: u32,
}

/// Value of `LOCAL_ADDR_LIST` (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LocalAddrList {
    pub slots: [LocalAddrSlot; LOCAL_ADDR_SLOTS],
    /// Slots at and past this index are free: the search stops there.
    pub len: u32,
    /// Non-zero when an address may be in `LOCAL_ADDRS` only.
    pub overflow: u32,
}

const _: () = assert!(size_of::<LocalAddrSlot>() == 24);
const _: () = assert!(size_of::<LocalAddrList>() == 200);

/// What the list says about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalLookup {
    /// One of the gateway's addresses.
    Local,
    /// Not one of them.
    NotLocal,
    /// Not in the list; `LOCAL_ADDRS` may have it.
    Overflow,
}

/// `addr` as the two words a slot compares.
#[inline(always)]
pub fn addr_words(addr: &[u8; 16]) -> [u64; 2] {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = *addr;
    [
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    ]
}

impl LocalAddrList {
    /// Looks `words` (from [`addr_words`]) up in the slots.
    #[inline(always)]
    pub fn find(&self, words: [u64; 2]) -> LocalLookup {
        for (index, slot) in self.slots.iter().enumerate() {
            if index as u32 >= self.len {
                break;
            }
            if slot.used != 0 && slot.words == words {
                return LocalLookup::Local;
            }
        }
        if self.overflow != 0 {
            LocalLookup::Overflow
        } else {
            LocalLookup::NotLocal
        }
    }

    /// This list after `removed` addresses left `LOCAL_ADDRS` and `added`
    /// ones were inserted there. Removed addresses free their slots, new
    /// ones take the first free slot or mark the list as overflowing;
    /// addresses never move and `overflow` is never cleared (a rebuild
    /// from an empty list compacts).
    pub fn with_changes<'a>(
        &self,
        removed: impl IntoIterator<Item = &'a [u8; 16]>,
        added: impl IntoIterator<Item = &'a [u8; 16]>,
    ) -> Self {
        let mut list = *self;
        for addr in removed {
            let words = addr_words(addr);
            for slot in list.slots.iter_mut() {
                if slot.used != 0 && slot.words == words {
                    *slot = LocalAddrSlot::default();
                }
            }
        }
        for addr in added {
            let words = addr_words(addr);
            if list.slots.iter().any(|s| s.used != 0 && s.words == words) {
                continue;
            }
            match list.slots.iter_mut().find(|slot| slot.used == 0) {
                Some(slot) => {
                    *slot = LocalAddrSlot {
                        words,
                        used: 1,
                        pad: 0,
                    }
                }
                None => list.overflow = 1,
            }
        }
        list.len = list
            .slots
            .iter()
            .rposition(|slot| slot.used != 0)
            .map_or(0, |last| last as u32 + 1);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> [u8; 16] {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = 192;
        addr[15] = last;
        addr
    }

    #[test]
    fn addresses_added_are_local_and_others_are_not() {
        let list = LocalAddrList::default().with_changes([], &[addr(1), addr(2)]);
        assert_eq!(list.find(addr_words(&addr(1))), LocalLookup::Local);
        assert_eq!(list.find(addr_words(&addr(2))), LocalLookup::Local);
        assert_eq!(list.find(addr_words(&addr(3))), LocalLookup::NotLocal);
        // The all-zero address is never taken for a free slot's.
        assert_eq!(list.find(addr_words(&[0; 16])), LocalLookup::NotLocal);
        assert_eq!(list.len, 2);
    }

    #[test]
    fn addresses_that_stay_never_move() {
        let before = LocalAddrList::default().with_changes([], &[addr(1), addr(2), addr(3)]);
        let after = before.with_changes(&[addr(1)], &[addr(4)]);
        assert_eq!(after.slots[1], before.slots[1]);
        assert_eq!(after.slots[2], before.slots[2]);
        assert_eq!(after.slots[0].words, addr_words(&addr(4)));
        assert_eq!(after.find(addr_words(&addr(1))), LocalLookup::NotLocal);
        // The last address gone: the search stops sooner.
        let shorter = after.with_changes(&[addr(3)], []);
        assert_eq!(shorter.len, 2);
    }

    #[test]
    fn past_the_slots_the_hash_map_is_asked() {
        let many: [[u8; 16]; LOCAL_ADDR_SLOTS + 1] = core::array::from_fn(|i| addr(i as u8 + 1));
        let list = LocalAddrList::default().with_changes([], &many);
        assert_eq!(list.overflow, 1);
        assert_eq!(list.find(addr_words(&many[0])), LocalLookup::Local);
        assert_eq!(
            list.find(addr_words(&many[LOCAL_ADDR_SLOTS])),
            LocalLookup::Overflow
        );
    }
}
