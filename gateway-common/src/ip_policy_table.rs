//! The AuthorizationPolicy check by table: one table per distinct port
//! policy that answers "drop, counted where, or pass" for a source with a
//! bounded binary search, where the LPM tries walk a node per prefix bit
//! (10,000 blocks cost them up to 200 ns; docs/benchmarks.md).
//!
//! IPv4 is DIR-16 with sorted intervals below it: `roots` holds one entry
//! per /16 of the address space, either the code of the whole /16 (a
//! leaf) or the offset in `pool` of that /16's intervals, each the low 16
//! bits where it starts and its code; at most [`V4_SEARCH_STEPS`] steps.
//! IPv6 is the sorted intervals alone (`v6_starts`, `v6_codes`): the
//! blocks of a policy share no short prefix an array could index.
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
/// with `V4_POOL_LEN - 1` is in bounds. Each /16 with blocks inside it
/// takes one count and one entry per interval: a block adds at most two
/// interval starts, each at most opening a /16 (its count and its first
/// interval), so 10,000 blocks need at most 60,000.
pub const V4_POOL_LEN: usize = 1 << 16;

/// A `roots` entry with this bit is a leaf: its low 16 bits are the code
/// of every address in the /16. Without it, the entry is the offset in
/// `pool` of the /16's interval count, followed by its intervals.
pub const V4_LEAF: u32 = 1 << 31;

/// The low 16 bits of a leaf or an interval: the code (0: pass; `n`:
/// drop, counted in `POLICY_STATS[n - 1]`).
pub const TABLE_CODE_MASK: u32 = 0xffff;

/// Halvings that take any /16's intervals (at most 65,536) to one.
pub const V4_SEARCH_STEPS: usize = 17;

/// IPv6 intervals a table holds, a power of two: 10,000 IPv6 blocks make
/// at most 20,001.
pub const V6_INTERVALS: usize = 1 << 15;

/// Halvings that take `V6_INTERVALS` intervals to one.
pub const V6_SEARCH_STEPS: usize = 16;

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
    pub pad: u32,
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
        let table = alloc::boxed::Box::<Self>::new_zeroed();
        // SAFETY: integers and arrays of integers, for which all zeroes
        // is a value.
        unsafe { table.assume_init() }
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
    let root = table.roots[(src >> 16) as usize & (V4_ROOTS - 1)];
    if root & V4_LEAF != 0 {
        return root & TABLE_CODE_MASK;
    }
    let base = root as usize;
    let count = table.pool[base & (V4_POOL_LEN - 1)] as usize;
    let low = src & 0xffff;
    // The last interval starting at or below `low`: `first` is always
    // one whose start is, as the first interval of a /16 starts at 0.
    let mut first = 0usize;
    let mut len = count;
    let mut step = 0;
    while step < V4_SEARCH_STEPS && len > 1 {
        let half = len / 2;
        let entry = table.pool[(base + 1 + first + half) & (V4_POOL_LEN - 1)];
        if entry >> 16 <= low {
            first += half;
        }
        len -= half;
        step += 1;
    }
    table.pool[(base + 1 + first) & (V4_POOL_LEN - 1)] & TABLE_CODE_MASK
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
    let mut first = 0usize;
    let mut len = count;
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

const _: () =
    assert!(size_of::<PolicyTable>() == 4 * (V4_ROOTS + V4_POOL_LEN) + 8 + 20 * V6_INTERVALS);
const _: () = assert!(V6_INTERVALS.is_power_of_two() && 1 << V6_SEARCH_STEPS >= V6_INTERVALS);
const _: () = assert!(V4_POOL_LEN.is_power_of_two() && V4_POOL_LEN <= V4_LEAF as usize);
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
    fn code_zero_passes_and_the_others_drop_one_slot_below() {
        assert_eq!(code_slot(0), None);
        assert_eq!(code_slot(slot_code(0)), Some(0));
        assert_eq!(code_slot(slot_code(7)), Some(7));
    }
}
