//! The AuthorizationPolicy check by table: one table per distinct port
//! policy that answers "drop, counted where, or pass" for a source with a
//! bounded binary search, where the LPM tries walk a node per prefix bit
//! (10,000 blocks cost them up to 200 ns; docs/benchmarks.md).
//!
//! IPv4 is DIR-16 with sorted intervals below it: `roots` holds one entry
//! per /16 of the address space, either the code of the whole /16 (a
//! leaf) or the offset in `pool` of that /16's intervals, each the low 16
//! bits where it starts and its code. A /16 of more than
//! [`V4_SPLIT_OVER`] intervals is split by /24 first (256 entries, each
//! the /24's first interval and count), so a search is at most
//! [`V4_SEARCH_STEPS`] steps however the blocks are packed.
//! IPv6 is sorted intervals (`v6_starts`, `v6_codes`) behind an index on
//! the 12 bits that follow the prefix every interval edge shares
//! (`v6_region`): the blocks of a policy rarely share a short prefix, but
//! they share a long one (2001:db8::/32), and the bits after it spread
//! them.
//!
//! The tries stay, for a port whose table did not fit (or a family whose
//! intervals did not). The table is built by the daemon's
//! `plan/policy_table.rs`; a table being read is never written (the
//! daemon writes a free slot, then points the listeners at it).

/// Slots of `POLICY_TABLES`: half of them may serve while the other half is
/// written, so a plan uses at most [`MAX_POLICY_TABLES_IN_USE`]; ports
/// beyond keep the tries.
pub const MAX_POLICY_TABLES: u32 = 8;

/// Distinct tables one plan may use (the rest of the slots are free for
/// the next plan's new tables).
pub const MAX_POLICY_TABLES_IN_USE: usize = MAX_POLICY_TABLES as usize / 2;

/// Entries of `PolicyTable::roots`: one per /16.
pub const V4_ROOTS: usize = 1 << 16;

/// Entries of `PolicyTable::pool`, a power of two so an index masked
/// with `V4_POOL_LEN - 1` is in bounds. A block adds at most two interval
/// starts; a /16 of `n` intervals (`n - 1` of those starts) takes its
/// header and `n` entries, plus 256 if `n` is over `V4_SPLIT_OVER`: at
/// most three entries per start, so 10,000 blocks need at most 60,000.
pub const V4_POOL_LEN: usize = 1 << 16;

/// A `roots` entry with this bit is a leaf: its low 16 bits are the code
/// of every address in the /16. Without it, the entry is the offset in
/// `pool` of the /16's interval count, followed by its intervals.
pub const V4_LEAF: u32 = 1 << 31;

/// The low 16 bits of a leaf or an interval: the code (0: pass; `n`:
/// drop, counted in `POLICY_STATS[n - 1]`).
pub const TABLE_CODE_MASK: u32 = 0xffff;

/// A /16 with more intervals than this has a /24 index in front of them.
pub const V4_SPLIT_OVER: usize = 256;

/// A /16's header in `pool`: the interval count, and [`V4_SPLIT`] if the
/// /24 index follows it.
pub const V4_COUNT_MASK: u32 = 0x1_ffff;

/// Header flag: 256 /24 entries (first interval << 16 | count) come
/// between the header and the intervals.
pub const V4_SPLIT: u32 = 1 << 31;

/// Halvings that take the intervals one search sees (at most 257: a /24's,
/// or an unsplit /16's) to one.
pub const V4_SEARCH_STEPS: usize = 9;

/// IPv6 intervals a table holds, a power of two: 10,000 IPv6 blocks make
/// at most 20,001.
pub const V6_INTERVALS: usize = 1 << 15;

/// Halvings that take `V6_INTERVALS` intervals to one (all in one
/// bucket: the search is bounded whatever the index does).
pub const V6_SEARCH_STEPS: usize = 16;

/// Bits of the IPv6 index after the shared prefix: 4,096 buckets.
pub const V6_INDEX_BITS: u32 = 12;

/// Buckets of `PolicyTable::v6_index`.
pub const V6_BUCKETS: usize = 1 << V6_INDEX_BITS;

/// `ListenerValue::flags`: sources are looked up in the `POLICY_TABLES`
/// table whose slot is in bits [`POLICY_TABLE_SHIFT`].. of the flags.
pub const LISTENER_POLICY_TABLE: u32 = 8;

/// Where a listener's `POLICY_TABLES` slot sits in its flags.
pub const POLICY_TABLE_SHIFT: u32 = 16;

/// One `POLICY_TABLES` value (1.1 MiB): too big for any stack, so
/// userspace builds it on the heap and the kernel reads it in place.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PolicyTable {
    pub roots: [u32; V4_ROOTS],
    pub pool: [u32; V4_POOL_LEN],
    /// IPv6 intervals in `v6_starts`/`v6_codes`; 0: IPv6 sources on this
    /// port are looked up in the tries.
    pub v6_count: u32,
    /// How many bits of the address pick a bucket of `v6_index` (at most
    /// `V6_INDEX_BITS`), from bit `v6_region_bits`.
    pub v6_index_bits: u32,
    /// The prefix every interval edge shares (high, low 64 bits), its
    /// host bits zero, and its mask; `v6_region_bits` long.
    pub v6_region: [u64; 2],
    pub v6_region_mask: [u64; 2],
    pub v6_region_bits: u32,
    pub pad: u32,
    /// Per bucket of the region, the first interval holding one of its
    /// addresses (<< 16) and how many do.
    pub v6_index: [u32; V6_BUCKETS],
    /// Where each IPv6 interval starts, as the address's high and low
    /// 64 bits; the first starts at `::`.
    pub v6_starts: [[u64; 2]; V6_INTERVALS],
    /// Each IPv6 interval's code.
    pub v6_codes: [u32; V6_INTERVALS],
}

#[cfg(feature = "user")]
impl PolicyTable {
    /// An all-zero table made on the heap: at 1.1 MiB it would not fit a
    /// thread's stack.
    pub fn zeroed() -> alloc::boxed::Box<Self> {
        let layout = core::alloc::Layout::new::<Self>();
        // SAFETY: the layout is this type's, which is not zero-sized; all
        // zeroes is a value of it (integers and arrays of integers), and
        // memory from the global allocator with this layout is what
        // `Box::from_raw` takes back. (`Box::new_zeroed` would do this
        // without `unsafe`, from Rust 1.92, past the MSRV.)
        unsafe {
            let memory = alloc::alloc::alloc_zeroed(layout).cast::<Self>();
            if memory.is_null() {
                alloc::alloc::handle_alloc_error(layout);
            }
            alloc::boxed::Box::from_raw(memory)
        }
    }
}

/// The `POLICY_TABLES` slot a listener's flags name.
#[inline(always)]
pub fn policy_table_slot(flags: u32) -> u32 {
    (flags >> POLICY_TABLE_SHIFT) & (MAX_POLICY_TABLES - 1)
}

/// The flags that point a listener at `POLICY_TABLES` slot `slot`.
#[inline(always)]
pub fn policy_table_flags(slot: u32) -> u32 {
    LISTENER_POLICY_TABLE | ((slot & (MAX_POLICY_TABLES - 1)) << POLICY_TABLE_SHIFT)
}

/// The code `table` gives the IPv4 source `src` (host order). Every index
/// is masked into its array, so a table written wrong yields a wrong
/// code, never an out-of-bounds read (and the verifier sees the bounds).
#[inline(always)]
pub fn v4_code(table: &PolicyTable, src: u32) -> u32 {
    const MASK: usize = V4_POOL_LEN - 1;
    let root = table.roots[(src >> 16) as usize & (V4_ROOTS - 1)];
    if root & V4_LEAF != 0 {
        return root & TABLE_CODE_MASK;
    }
    let base = root as usize;
    let header = table.pool[base & MASK];
    let low = src & 0xffff;
    // The intervals searched: all of the /16's, or its /24's.
    let (intervals, mut first, mut len) = if header & V4_SPLIT != 0 {
        let index = table.pool[(base + 1 + (low >> 8) as usize) & MASK];
        (
            base + 1 + 256,
            (index >> 16) as usize,
            (index & 0xffff) as usize,
        )
    } else {
        (base + 1, 0, (header & V4_COUNT_MASK) as usize)
    };
    // The last interval starting at or below `low`: `first` is always
    // one whose start is (a /16's first interval starts at 0, a /24's
    // first is the one holding its first address).
    let mut step = 0;
    while step < V4_SEARCH_STEPS && len > 1 {
        let half = len / 2;
        let entry = table.pool[(intervals + first + half) & MASK];
        if entry >> 16 <= low {
            first += half;
        }
        len -= half;
        step += 1;
    }
    table.pool[(intervals + first) & MASK] & TABLE_CODE_MASK
}

/// The code `table` gives the IPv6 source `src`, or `None` if the table
/// holds no IPv6 intervals (the tries decide). Indexes are masked as in
/// [`v4_code`].
#[inline(always)]
pub fn v6_code(table: &PolicyTable, src: &[u8; 16]) -> Option<u32> {
    let count = table.v6_count as usize;
    if count == 0 {
        return None;
    }
    let high = u64::from_be_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let low = u64::from_be_bytes([
        src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
    ]);
    let [region_high, region_low] = table.v6_region;
    let [mask_high, mask_low] = table.v6_region_mask;
    let (mut first, mut len) = if high & mask_high != region_high || low & mask_low != region_low {
        // Outside the region no edge lies: before it, the first interval
        // holds the source; after it, the last.
        let before = high < region_high || (high == region_high && low < region_low);
        (if before { 0 } else { count - 1 }, 1)
    } else {
        let bucket = bits_at(high, low, table.v6_region_bits, table.v6_index_bits) as usize;
        let index = table.v6_index[bucket & (V6_BUCKETS - 1)];
        ((index >> 16) as usize, (index & 0xffff) as usize)
    };
    let mut step = 0;
    while step < V6_SEARCH_STEPS && len > 1 {
        let half = len / 2;
        let [start_high, start_low] = table.v6_starts[(first + half) & (V6_INTERVALS - 1)];
        if start_high < high || (start_high == high && start_low <= low) {
            first += half;
        }
        len -= half;
        step += 1;
    }
    Some(table.v6_codes[first & (V6_INTERVALS - 1)] & TABLE_CODE_MASK)
}

/// `bits` bits (at most 32) of the address (`high`, `low`) from bit `at`
/// (0 is the most significant), `at + bits` at most 128; 0 bits read 0.
/// Every shift is below 64, as the branches are chosen by where the bits
/// lie.
#[inline(always)]
pub fn bits_at(high: u64, low: u64, at: u32, bits: u32) -> u32 {
    if bits == 0 || bits > 32 || at + bits > 128 {
        return 0;
    }
    let end = at + bits;
    let value = if end <= 64 {
        high >> (64 - end)
    } else if at >= 64 {
        low >> (128 - end)
    } else {
        (high << (end - 64)) | (low >> (128 - end))
    };
    (value & (u64::MAX >> (64 - bits))) as u32
}

/// The `POLICY_STATS` slot a code drops into, or `None` to pass.
#[inline(always)]
pub fn code_slot(code: u32) -> Option<u32> {
    code.checked_sub(1)
}

/// The code of a drop counted in `POLICY_STATS[slot]`.
#[inline(always)]
pub fn slot_code(slot: u32) -> u32 {
    slot + 1
}

const _: () = assert!(
    size_of::<PolicyTable>()
        == 4 * (V4_ROOTS + V4_POOL_LEN) + 48 + 20 * V6_INTERVALS + 4 * V6_BUCKETS
);
const _: () = assert!(V6_INTERVALS.is_power_of_two() && 1 << V6_SEARCH_STEPS >= V6_INTERVALS);
const _: () = assert!(V4_POOL_LEN.is_power_of_two() && V4_POOL_LEN <= V4_LEAF as usize);
const _: () = assert!(1 << V4_SEARCH_STEPS > V4_SPLIT_OVER + 1);
const _: () = assert!(MAX_POLICY_TABLES.is_power_of_two());
const _: () = assert!(crate::MAX_POLICIES < TABLE_CODE_MASK);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_names_its_slot_in_bits_the_other_flags_do_not_use() {
        for slot in 0..MAX_POLICY_TABLES {
            let flags = policy_table_flags(slot) | crate::LISTENER_POLICY;
            assert_eq!(policy_table_slot(flags), slot);
            assert_ne!(flags & LISTENER_POLICY_TABLE, 0);
        }
        assert_eq!(
            policy_table_flags(0) & (crate::LISTENER_POLICY | crate::LISTENER_RESET_UNKNOWN_HOSTS),
            0
        );
    }

    #[test]
    fn bits_are_read_from_either_half_and_across_the_middle() {
        let high = 0x0123_4567_89ab_cdef;
        let low = 0xfedc_ba98_7654_3210;
        assert_eq!(bits_at(high, low, 0, 12), 0x012);
        assert_eq!(bits_at(high, low, 52, 12), 0xdef);
        assert_eq!(bits_at(high, low, 60, 12), 0xffe);
        assert_eq!(bits_at(high, low, 64, 12), 0xfed);
        assert_eq!(bits_at(high, low, 116, 12), 0x210);
        assert_eq!(bits_at(high, low, 127, 1), 0);
        assert_eq!(bits_at(high, low, 0, 32), 0x0123_4567);
        assert_eq!(bits_at(high, low, 40, 0), 0);
        assert_eq!(bits_at(high, low, 120, 12), 0, "past the address");
    }

    #[test]
    fn code_zero_passes_and_the_others_drop_one_slot_below() {
        assert_eq!(code_slot(0), None);
        assert_eq!(code_slot(slot_code(0)), Some(0));
        assert_eq!(code_slot(slot_code(7)), Some(7));
    }
}
