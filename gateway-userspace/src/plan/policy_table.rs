//! The IPv4 policy tables (`gateway_common::PolicyV4Table`): each port's
//! kernel policy ([`PortPolicy`]) answered in advance for every IPv4
//! source, so the kernel decides with one root load and a short binary
//! search instead of walking two LPM tries.
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
    MAX_POLICY_TABLES_IN_USE, POLICY_ALLOW_LIST, PolicyV4Table, V4_LEAF, V4_POOL_LEN, V4_ROOTS,
    slot_code,
};

use super::{IpPolicy, PortPolicy, Subnet};

/// One port policy's table as the kernel reads it, without the unused
/// tail of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V4Table {
    /// One entry per /16 (`V4_ROOTS`).
    roots: Vec<u32>,
    /// The intervals of the /16s that are not one code, each run led by
    /// its count; at most `V4_POOL_LEN`.
    pool: Vec<u32>,
}

/// The tables of a plan and which ports use which.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V4Tables {
    /// Distinct tables, at most `MAX_POLICY_TABLES_IN_USE`.
    pub tables: Vec<V4Table>,
    /// Index into `tables` by TCP port; a port with policy that is not
    /// here keeps the tries for its IPv4 sources too.
    pub ports: BTreeMap<u16, usize>,
}

impl IpPolicy {
    /// Each port's table, shared by ports whose tables are equal; in port
    /// order, until the distinct tables reach `MAX_POLICY_TABLES_IN_USE`
    /// or one does not fit the pool.
    pub fn v4_tables(&self) -> V4Tables {
        let mut out = V4Tables::default();
        for (port, policy) in &self.ports {
            let Some(table) = V4Table::build(policy) else {
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

/// An IPv4 block as the range of addresses it holds.
#[derive(Clone, Copy, Debug)]
struct Range {
    start: u32,
    /// Inclusive.
    end: u32,
}

impl Range {
    fn of(block: &Subnet) -> Option<Self> {
        let IpAddr::V4(v4) = block.addr else {
            return None;
        };
        let prefix = u32::from(block.prefix.min(32));
        let host_bits = u32::MAX.checked_shr(prefix).unwrap_or(0);
        let start = u32::from(v4) & !host_bits;
        Some(Self {
            start,
            end: start | host_bits,
        })
    }

    /// The sweep's order: by start, then the wider first.
    fn order(self) -> (u32, Reverse<u32>) {
        (self.start, Reverse(self.end))
    }
}

impl V4Table {
    /// The table of `policy`, or `None` if its intervals overflow the pool.
    pub fn build(policy: &PortPolicy) -> Option<Self> {
        let intervals = intervals(policy);
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
            pool.push((end - next) as u32);
            pool.push(intervals[next].1);
            for (start, code) in &intervals[next + 1..end] {
                pool.push(((start & 0xffff) << 16) | code);
            }
            if pool.len() > V4_POOL_LEN {
                return None;
            }
        }
        Some(Self { roots, pool })
    }

    /// The kernel's value: this table, its pool padded with zeroes.
    pub fn to_kernel(&self) -> Box<PolicyV4Table> {
        let mut table = PolicyV4Table::zeroed();
        table.roots.copy_from_slice(&self.roots);
        table.pool[..self.pool.len()].copy_from_slice(&self.pool);
        table
    }
}

/// The port's code for every IPv4 address, as sorted (start, code) runs
/// from address 0, adjacent runs differing. IPv6 blocks hold no IPv4
/// source, as in Envoy (the proxy matches an IPv4 peer, mapped or not,
/// against IPv4 blocks only).
fn intervals(policy: &PortPolicy) -> Vec<(u32, u32)> {
    // Sorted by start, then the wider first, so that in the sweep the
    // innermost open block is on top; a block written twice (`10.0.0.1/8`
    // and `10.0.0.0/8`) keeps its first slot, as its trie entry does.
    let mut deny: BTreeMap<(u32, Reverse<u32>), u32> = BTreeMap::new();
    for (block, slot) in &policy.deny {
        if let Some(range) = Range::of(block) {
            deny.entry(range.order()).or_insert(*slot);
        }
    }
    let allow: BTreeSet<(u32, Reverse<u32>)> = policy
        .allow
        .iter()
        .flatten()
        .filter_map(Range::of)
        .map(Range::order)
        .collect();
    let allow_list = policy.allow.is_some();
    // Every address where the answer may change.
    let mut edges: BTreeSet<u32> = [0].into();
    for (start, Reverse(end)) in deny.keys().chain(&allow) {
        edges.insert(*start);
        if let Some(after) = end.checked_add(1) {
            edges.insert(after);
        }
    }
    let mut deny_blocks = deny.iter().peekable();
    let mut allow_blocks = allow.iter().peekable();
    let mut open_deny: Vec<(u32, u32)> = Vec::new();
    let mut open_allow: Vec<u32> = Vec::new();
    let mut out: Vec<(u32, u32)> = Vec::new();
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
