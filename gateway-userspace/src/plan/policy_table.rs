//! The policy tables (`gateway_common::PolicyTable`): each port's kernel
//! policy ([`PortPolicy`]) answered in advance for every source, so the
//! kernel decides with a short binary search (behind one root load for
//! IPv4) instead of walking two LPM tries.
//!
//! A port's answer for a source is what the tries give
//! (`gateway_common::policy_decision`): the slot of the longest DENY block
//! holding it; else, on an allow-listed port, the allow-list slot if no
//! ALLOW block holds it; else pass. CIDR blocks nest or are disjoint, so
//! one sweep over their edges with a stack of the open blocks finds the
//! longest one at every edge.
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gateway_common::{
    MAX_POLICY_TABLES_IN_USE, POLICY_ALLOW_LIST, PolicyTable, V4_LEAF, V4_POOL_LEN, V4_ROOTS,
    V4_SPLIT, V4_SPLIT_OVER, V6_INDEX_BITS, V6_INTERVALS, slot_code,
};

use super::{IpPolicy, PortPolicy, Subnet};

/// One port policy's table as the kernel reads it, without the unused
/// tails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortTable {
    /// One entry per /16 (`V4_ROOTS`).
    roots: Vec<u32>,
    /// The intervals of the /16s that are not one code, each run led by
    /// its count; at most `V4_POOL_LEN`.
    pool: Vec<u32>,
    /// IPv6's (start, code) intervals, at most `V6_INTERVALS`; `None`:
    /// too many, IPv6 sources keep the tries.
    v6: Option<Vec<(u128, u32)>>,
}

/// The tables of a plan and which ports use which.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTables {
    /// Distinct tables, at most `MAX_POLICY_TABLES_IN_USE`.
    pub tables: Vec<PortTable>,
    /// Index into `tables` by TCP port; a port with policy that is not
    /// here keeps the tries.
    pub ports: BTreeMap<u16, usize>,
}

impl IpPolicy {
    /// Each port's table, shared by ports whose tables are equal; in port
    /// order, until the distinct tables reach `MAX_POLICY_TABLES_IN_USE`
    /// or one does not fit the pool.
    pub fn tables(&self) -> PolicyTables {
        let mut out = PolicyTables::default();
        for (port, policy) in &self.ports {
            let Some(table) = PortTable::build(policy) else {
                continue;
            };
            let index = match out.tables.iter().position(|t| *t == table) {
                Some(index) => index,
                None if out.tables.len() < MAX_POLICY_TABLES_IN_USE => {
                    out.tables.push(table);
                    out.tables.len() - 1
                }
                None => continue,
            };
            out.ports.insert(*port, index);
        }
        out
    }
}

/// The two address families, each its own range of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The last address, as a key.
    fn last(self) -> u128 {
        match self {
            Self::V4 => u128::from(u32::MAX),
            Self::V6 => u128::MAX,
        }
    }
}

/// A block as the range of addresses it holds, in its family's keys.
#[derive(Clone, Copy, Debug)]
struct Range {
    start: u128,
    /// Inclusive.
    end: u128,
}

impl Range {
    /// `block`'s range if it is of `family` (an IPv6 block holds no IPv4
    /// source, as in Envoy, and an IPv4 block no IPv6 one).
    fn of(block: &Subnet, family: Family) -> Option<Self> {
        let (value, bits) = match (block.addr, family) {
            (IpAddr::V4(v4), Family::V4) => (u128::from(u32::from(v4)), 32),
            (IpAddr::V6(v6), Family::V6) => (u128::from(v6), 128),
            _ => return None,
        };
        let prefix = u32::from(block.prefix).min(bits);
        let host_bits = family.last().checked_shr(prefix).unwrap_or(0);
        let start = value & !host_bits;
        Some(Self {
            start,
            end: start | host_bits,
        })
    }

    /// The sweep's order: by start, then the wider first.
    fn order(self) -> (u128, Reverse<u128>) {
        (self.start, Reverse(self.end))
    }
}

impl PortTable {
    /// The table of `policy`, or `None` if its IPv4 intervals overflow the
    /// pool. IPv6 intervals past `V6_INTERVALS` leave IPv6 to the tries.
    pub fn build(policy: &PortPolicy) -> Option<Self> {
        let v4: Vec<(u32, u32)> = intervals(policy, Family::V4)
            .into_iter()
            .map(|(start, code)| (start as u32, code))
            .collect();
        let (roots, pool) = v4_roots_and_pool(&v4)?;
        let v6 = Some(intervals(policy, Family::V6)).filter(|v6| v6.len() <= V6_INTERVALS);
        Some(Self { roots, pool, v6 })
    }

    /// The kernel's value: this table, padded with zeroes.
    pub fn to_kernel(&self) -> Box<PolicyTable> {
        let mut table = PolicyTable::zeroed();
        table.roots.copy_from_slice(&self.roots);
        table.pool[..self.pool.len()].copy_from_slice(&self.pool);
        if let Some(v6) = &self.v6 {
            table.v6_count = v6.len() as u32;
            for (index, (start, code)) in v6.iter().enumerate() {
                table.v6_starts[index] = halves(*start);
                table.v6_codes[index] = *code;
            }
            let index = V6Index::of(v6);
            table.v6_region = halves(index.region);
            table.v6_region_mask = halves(index.mask);
            table.v6_region_bits = index.region_bits;
            table.v6_index_bits = index.index_bits;
            table.v6_index[..index.buckets.len()].copy_from_slice(&index.buckets);
        }
        table
    }
}

/// A 128-bit key as the kernel's (high, low) halves.
fn halves(value: u128) -> [u64; 2] {
    [(value >> 64) as u64, value as u64]
}

/// The IPv6 index: the prefix every interval edge shares, and per bucket
/// of the `index_bits` bits after it, the intervals holding its addresses.
struct V6Index {
    region: u128,
    mask: u128,
    region_bits: u32,
    index_bits: u32,
    /// First interval << 16 | count, per bucket.
    buckets: Vec<u32>,
}

impl V6Index {
    fn of(intervals: &[(u128, u32)]) -> Self {
        // The edges are the starts after the first (which is `::`).
        let (Some((first_edge, _)), Some((last_edge, _))) = (intervals.get(1), intervals.last())
        else {
            return Self {
                region: 0,
                mask: 0,
                region_bits: 0,
                index_bits: 0,
                buckets: vec![1],
            };
        };
        let region_bits = (first_edge ^ last_edge).leading_zeros();
        let mask = u128::MAX.checked_shl(128 - region_bits).unwrap_or(0);
        let region = first_edge & mask;
        let index_bits = V6_INDEX_BITS.min(128 - region_bits);
        let width = 128 - region_bits - index_bits;
        let mut buckets = Vec::with_capacity(1 << index_bits);
        let mut first = 0;
        for bucket in 0..1u128 << index_bits {
            let start = region | bucket.checked_shl(width).unwrap_or(0);
            let last = start | u128::MAX.checked_shr(128 - width).unwrap_or(0);
            while first + 1 < intervals.len() && intervals[first + 1].0 <= start {
                first += 1;
            }
            let mut end = first + 1;
            while end < intervals.len() && intervals[end].0 <= last {
                end += 1;
            }
            buckets.push(((first as u32) << 16) | (end - first) as u32);
        }
        Self {
            region,
            mask,
            region_bits,
            index_bits,
            buckets,
        }
    }
}

/// IPv4's `roots` and `pool` from its intervals, or `None` if the pool
/// overflows.
fn v4_roots_and_pool(intervals: &[(u32, u32)]) -> Option<(Vec<u32>, Vec<u32>)> {
    let mut roots = Vec::with_capacity(V4_ROOTS);
    let mut pool = Vec::new();
    let mut next = 0;
    for high in 0..V4_ROOTS as u32 {
        let first = high << 16;
        let last = first | 0xffff;
        // `intervals[next]` is the one holding `first`.
        while next + 1 < intervals.len() && intervals[next + 1].0 <= first {
            next += 1;
        }
        let mut end = next + 1;
        while end < intervals.len() && intervals[end].0 <= last {
            end += 1;
        }
        if end == next + 1 {
            roots.push(V4_LEAF | intervals[next].1);
            continue;
        }
        roots.push(pool.len() as u32);
        push_slash16(&mut pool, &intervals[next..end]);
        if pool.len() > V4_POOL_LEN {
            return None;
        }
    }
    Some((roots, pool))
}

/// A /16's intervals into `pool`: its header, the /24 index if there are
/// more than `V4_SPLIT_OVER`, then the intervals (the first from the /16's
/// first address, whatever its start).
fn push_slash16(pool: &mut Vec<u32>, intervals: &[(u32, u32)]) {
    let count = intervals.len() as u32;
    let entry = |index: usize| {
        let (start, code) = intervals[index];
        let start = if index == 0 { 0 } else { start & 0xffff };
        (start << 16) | code
    };
    if intervals.len() <= V4_SPLIT_OVER {
        pool.push(count);
    } else {
        pool.push(V4_SPLIT | count);
        let mut first = 0;
        for slash24 in 0..256u32 {
            let (start, last) = (slash24 << 8, (slash24 << 8) | 0xff);
            while first + 1 < intervals.len() && intervals[first + 1].0 & 0xffff <= start {
                first += 1;
            }
            let mut end = first + 1;
            while end < intervals.len() && intervals[end].0 & 0xffff <= last {
                end += 1;
            }
            pool.push(((first as u32) << 16) | (end - first) as u32);
        }
    }
    pool.extend((0..intervals.len()).map(entry));
}

/// The port's code for every address of `family`, as sorted (start,
/// code) runs from the family's first address, adjacent runs differing.
fn intervals(policy: &PortPolicy, family: Family) -> Vec<(u128, u32)> {
    // Sorted by start, then the wider first, so that in the sweep the
    // innermost open block is on top; a block written twice (`10.0.0.1/8`
    // and `10.0.0.0/8`) keeps its first slot, as its trie entry does.
    let mut deny: BTreeMap<(u128, Reverse<u128>), u32> = BTreeMap::new();
    for (block, slot) in &policy.deny {
        if let Some(range) = Range::of(block, family) {
            deny.entry(range.order()).or_insert(*slot);
        }
    }
    let allow: BTreeSet<(u128, Reverse<u128>)> = policy
        .allow
        .iter()
        .flatten()
        .filter_map(|block| Range::of(block, family))
        .map(Range::order)
        .collect();
    let allow_list = policy.allow.is_some();
    // Every address where the answer may change.
    let mut edges: BTreeSet<u128> = [0].into();
    for (start, Reverse(end)) in deny.keys().chain(&allow) {
        edges.insert(*start);
        if *end < family.last() {
            edges.insert(end + 1);
        }
    }
    let mut deny_blocks = deny.iter().peekable();
    let mut allow_blocks = allow.iter().peekable();
    let mut open_deny: Vec<(u128, u32)> = Vec::new();
    let mut open_allow: Vec<u128> = Vec::new();
    let mut out: Vec<(u128, u32)> = Vec::new();
    for edge in edges {
        open_deny.retain(|(end, _)| *end >= edge);
        while let Some(((_, Reverse(end)), slot)) = deny_blocks.next_if(|((s, _), _)| *s == edge) {
            open_deny.push((*end, *slot));
        }
        open_allow.retain(|end| *end >= edge);
        while let Some((_, Reverse(end))) = allow_blocks.next_if(|(s, _)| *s == edge) {
            open_allow.push(*end);
        }
        let code = match open_deny.last() {
            Some((_, slot)) => slot_code(*slot),
            None if allow_list && open_allow.is_empty() => slot_code(POLICY_ALLOW_LIST),
            None => 0,
        };
        if out.last().map(|(_, last)| *last) != Some(code) {
            out.push((edge, code));
        }
    }
    out
}

#[cfg(test)]
#[path = "policy_table_tests.rs"]
mod tests;
