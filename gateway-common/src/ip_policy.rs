//! AuthorizationPolicy IP rules the kernel enforces on a listener's
//! connection attempts (SYN without ACK): the LPM trie key and value, the
//! listener flags that say a port has any, and the decision over the two
//! tries' answers. What goes into the tries, and why it is sound (the
//! kernel drops only what the proxy would certainly deny), is
//! `compile/ip_policy.rs` and docs/security-policy.md.

/// Capacity of each policy trie (`POLICY_DENY`, `POLICY_ALLOW`): 10,000
/// CIDRs on a handful of ports fit. Entries are allocated on insert
/// (`BPF_F_NO_PREALLOC`, which LPM tries require), so the capacity costs
/// nothing until used.
pub const MAX_POLICY_ENTRIES: u32 = 65_536;

/// Slots of `POLICY_STATS`: slot [`POLICY_ALLOW_LIST`] counts the SYNs no
/// allow-listed port's set holds; the others, the DENY policies by the
/// index the plan gives them.
pub const MAX_POLICIES: u32 = 1024;

/// The `POLICY_STATS` slot of SYNs dropped because an allow-listed port's
/// ALLOW rules hold no block with their source.
pub const POLICY_ALLOW_LIST: u32 = 0;

/// `ListenerValue::flags`: the port has DENY entries in `POLICY_DENY`.
pub const LISTENER_POLICY_DENY: u32 = 2;
/// `ListenerValue::flags`: the port is allow-listed: a SYN whose source is
/// not in its `POLICY_ALLOW` set is dropped.
pub const LISTENER_POLICY_ALLOW_LIST: u32 = 4;
/// Either policy flag: the one test a port without policy pays.
pub const LISTENER_POLICY: u32 = LISTENER_POLICY_DENY | LISTENER_POLICY_ALLOW_LIST;

/// Bits of the destination port in front of the address.
pub const POLICY_PORT_BITS: u32 = 16;

/// `PolicyValue::verdict` of a `POLICY_DENY` entry.
pub const POLICY_VERDICT_DENY: u32 = 1;
/// `PolicyValue::verdict` of a `POLICY_ALLOW` entry.
pub const POLICY_VERDICT_ALLOW: u32 = 2;

/// The trie's data after the prefix length: the destination port
/// (big-endian, so its bits come first in the prefix), then the source
/// address (IPv4 mapped under `::ffff:0:0/96`). The two trailing bytes are
/// never within a prefix (at most 16 + 128 bits) and always zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyData {
    pub port: [u8; 2],
    pub addr: [u8; 16],
    pub pad: [u8; 2],
}

/// A key of `POLICY_DENY` and `POLICY_ALLOW` as the kernel lays it out
/// (`struct bpf_lpm_trie_key`): the prefix length in bits over
/// [`PolicyData`], 16 (the port) + 96 for an IPv4 block + its own bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub data: PolicyData,
}

impl PolicyKey {
    /// The key of the block `addr`/`bits` (bits counted on the 16-byte
    /// form: an IPv4 /24 is 120) on `port`; host bits cleared, so a block
    /// has one key however it was written.
    pub fn block(port: u16, addr: [u8; 16], bits: u32) -> Self {
        let bits = if bits > 128 { 128 } else { bits };
        let mut masked = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let keep = bits.saturating_sub(i as u32 * 8);
            masked[i] = if keep >= 8 {
                addr[i]
            } else {
                addr[i] & !(0xffu8 >> keep)
            };
            i += 1;
        }
        Self {
            prefixlen: POLICY_PORT_BITS + bits,
            data: PolicyData {
                port: port.to_be_bytes(),
                addr: masked,
                pad: [0; 2],
            },
        }
    }

    /// The key a packet is looked up with: its full source address.
    #[inline(always)]
    pub fn lookup(port: u16, src: [u8; 16]) -> Self {
        Self {
            prefixlen: POLICY_PORT_BITS + 128,
            data: PolicyData {
                port: port.to_be_bytes(),
                addr: src,
                pad: [0; 2],
            },
        }
    }
}

/// Value of both policy tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyValue {
    /// `POLICY_VERDICT_DENY` or `POLICY_VERDICT_ALLOW`.
    pub verdict: u32,
    /// The `POLICY_STATS` slot a drop is counted in.
    pub policy: u32,
}

/// Whether a source is IPv4-mapped (`::ffff:a.b.c.d`): an IPv6 packet
/// from such an address is left to the proxy, as the tries cannot tell
/// it from an IPv4 source and Envoy does not match it against IPv4 blocks.
#[inline(always)]
pub fn is_ipv4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff
}

/// The decision on a listener's SYN, from its listener `flags` and what
/// the tries answered for (port, source): `Some(slot)` drops it, counted
/// in `POLICY_STATS[slot]`; `None` passes it. A DENY entry wins over the
/// allow-list: DENY is evaluated first (Istio's order).
#[inline(always)]
pub fn policy_decision(flags: u32, deny: Option<PolicyValue>, allowed: bool) -> Option<u32> {
    if flags & LISTENER_POLICY_DENY != 0 {
        if let Some(entry) = deny {
            return Some(entry.policy);
        }
    }
    if flags & LISTENER_POLICY_ALLOW_LIST != 0 && !allowed {
        return Some(POLICY_ALLOW_LIST);
    }
    None
}

const _: () = assert!(size_of::<PolicyData>() == 20);
const _: () = assert!(size_of::<PolicyKey>() == 24);
const _: () = assert!(size_of::<PolicyValue>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    const DENY_3: PolicyValue = PolicyValue {
        verdict: POLICY_VERDICT_DENY,
        policy: 3,
    };

    #[test]
    fn a_port_without_policy_flags_passes_whatever_the_tries_say() {
        assert_eq!(policy_decision(0, Some(DENY_3), false), None);
        assert_eq!(policy_decision(1, Some(DENY_3), false), None);
    }

    #[test]
    fn a_deny_entry_drops_and_names_its_policy_before_the_allow_list() {
        let both = LISTENER_POLICY_DENY | LISTENER_POLICY_ALLOW_LIST;
        assert_eq!(policy_decision(both, Some(DENY_3), true), Some(3));
        assert_eq!(
            policy_decision(LISTENER_POLICY_DENY, Some(DENY_3), false),
            Some(3)
        );
        assert_eq!(policy_decision(LISTENER_POLICY_DENY, None, false), None);
    }

    #[test]
    fn an_allow_listed_port_drops_a_source_outside_its_set() {
        let flags = LISTENER_POLICY_ALLOW_LIST;
        assert_eq!(policy_decision(flags, None, false), Some(POLICY_ALLOW_LIST));
        assert_eq!(policy_decision(flags, None, true), None);
    }

    #[test]
    fn a_block_key_counts_the_port_and_clears_host_bits() {
        let addr = crate::ipv4_mapped([10, 1, 2, 3]);
        let key = PolicyKey::block(443, addr, 96 + 20);
        assert_eq!(key.prefixlen, 16 + 96 + 20);
        assert_eq!(key.data.port, [1, 187]);
        assert_eq!(key.data.addr, crate::ipv4_mapped([10, 1, 0, 0]));
        let any = PolicyKey::block(443, [0xff; 16], 0);
        assert_eq!((any.prefixlen, any.data.addr), (16, [0; 16]));
        let host = PolicyKey::block(1, [0xff; 16], 128);
        assert_eq!(host.data.addr, [0xff; 16]);
    }

    #[test]
    fn only_the_mapped_range_is_ipv4_mapped() {
        assert!(is_ipv4_mapped(&crate::ipv4_mapped([192, 0, 2, 1])));
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        assert!(!is_ipv4_mapped(&v6));
        assert!(!is_ipv4_mapped(&[0; 16]));
    }
}
