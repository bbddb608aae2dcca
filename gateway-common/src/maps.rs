//! Map names, capacities and the `#[repr(C)]` types stored in them.
//!
//! Every type here has explicit fields for what would otherwise be padding
//! and no `bool` or `Option`, so its bytes are fully defined on both sides;
//! the size assertions below fail the build if that ever changes.

/// Names of the maps in the XDP object, looked up by the loader.
pub mod map_names {
    /// `HashMap<ListenerKey, ListenerValue>`: which destinations belong to a listener.
    pub const LISTENERS: &str = "LISTENERS";
    /// `Array<PortValue>` indexed by `port_index`: what listens on each
    /// (protocol, port), so most packets need no hash lookup.
    pub const PORTS: &str = "PORTS";
    /// `SockMap` of `PROXY_SOCKET_SLOTS`: the proxy's listening sockets,
    /// where `sk_lookup_steer` hands listener connections (see
    /// `proxy_socket_slot`).
    pub const PROXY_SOCKETS: &str = "PROXY_SOCKETS";
    /// `HashMap<u32, u32>`: interfaces (by index) whose workloads' outbound
    /// TCP connections the egress instance captures (`--egress-from`).
    pub const EGRESS_IFACES: &str = "EGRESS_IFACES";
    /// `LpmTrie<[u8; 16], u8>`: destinations never captured (`--egress-exclude`,
    /// IPv4 mapped, prefix lengths counted on the 128-bit form).
    pub const EGRESS_EXCLUDE: &str = "EGRESS_EXCLUDE";
    /// `LpmTrie<[u8; 16], u8>`: the addresses registry entries resolve to
    /// (ServiceEntry addresses and endpoints, DNS answers), which the
    /// egress guard lets workloads connect to under REGISTRY_ONLY.
    pub const EGRESS_ALLOWED: &str = "EGRESS_ALLOWED";
    /// `HashMap<u32, u8>`: ports of registry entries with no address to
    /// know them by (wildcard hosts, resolution NONE): open to any
    /// address in the kernel, checked by SNI/Host in the proxy.
    pub const EGRESS_OPEN_PORTS: &str = "EGRESS_OPEN_PORTS";
    /// `Array<EgressPolicy>` with one entry: REGISTRY_ONLY or ALLOW_ANY.
    pub const EGRESS_POLICY: &str = "EGRESS_POLICY";
    /// `LruPerCpuHashMap<WorkloadKey, WorkloadCounters>`: per-workload
    /// connection attempts and refusals.
    pub const EGRESS_WORKLOADS: &str = "EGRESS_WORKLOADS";
    /// `RingBuf` of `EgressRefusal`: each refusal, for the daemon's log.
    pub const EGRESS_REFUSALS: &str = "EGRESS_REFUSALS";
    /// `HashMap<[u8; 16], LocalAddrValue>`: the gateway's own addresses (IPv4 mapped).
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// `Array<LocalAddrList>` with one entry: the addresses of
    /// `LOCAL_ADDRS` again, in front of it, so classifying a packet needs
    /// no hash lookup.
    pub const LOCAL_ADDR_LIST: &str = "LOCAL_ADDR_LIST";
    /// `Array<Settings>` with one entry: knobs for the decision.
    pub const SETTINGS: &str = "SETTINGS";
    /// `PerCpuArray<Counter>` indexed by `Reason` code.
    pub const REASON_STATS: &str = "REASON_STATS";
    /// `PerCpuArray<Counter>` indexed by `ListenerValue::id`.
    pub const LISTENER_STATS: &str = "LISTENER_STATS";
    /// `Array<u64>`: the management allow-list, one bit per (protocol,
    /// port); see `allowed_port_bit`.
    pub const ALLOWED_PORTS: &str = "ALLOWED_PORTS";
    /// `HashMap<HostKey, HostValue>`: every listener's server hosts, for
    /// host classification of first data segments.
    pub const HOSTS: &str = "HOSTS";
    /// `Array<HostBucket>` indexed by `host_bucket`: the keys of `HOSTS`
    /// again, in front of it, so the host match needs no hash lookup.
    pub const HOST_BUCKETS: &str = "HOST_BUCKETS";
    /// `PerCpuArray<Counter>` indexed by `HostValue::id`.
    pub const HOST_STATS: &str = "HOST_STATS";
    /// `PerCpuArray<Counter>` indexed by `host_class_index(listener, class)`.
    pub const HOST_CLASS_STATS: &str = "HOST_CLASS_STATS";
    /// `PerCpuArray<Counter>` indexed by listener id: data segments turned
    /// into resets (`LISTENER_RESET_UNKNOWN_HOSTS`).
    pub const HOST_RESETS: &str = "HOST_RESETS";
    /// `ProgramArray`: `xdp_host`, `xdp_host_value`, `xdp_host_match`,
    /// `xdp_host_reset`, the tail-call targets for a listener's data segment.
    pub const HOST_PROGRAMS: &str = "HOST_PROGRAMS";
    /// `LpmTrie<PolicyData, PolicyValue>`: (port, source block) pairs
    /// AuthorizationPolicy DENY rules deny, looked up for a SYN to a
    /// listener with `LISTENER_POLICY_DENY`.
    pub const POLICY_DENY: &str = "POLICY_DENY";
    /// `LpmTrie<PolicyData, PolicyValue>`: the source blocks an
    /// allow-listed port (`LISTENER_POLICY_ALLOW_LIST`) accepts SYNs from.
    pub const POLICY_ALLOW: &str = "POLICY_ALLOW";
    /// `Array<PolicyTable>` of `MAX_POLICY_TABLES`: the IPv4 sources'
    /// decision per distinct port policy, for listeners with
    /// `LISTENER_POLICY_TABLE` (`ip_policy_table.rs`).
    pub const POLICY_TABLES: &str = "POLICY_TABLES";
    /// `PerCpuArray<Counter>` of `MAX_POLICIES`: SYNs dropped by policy, by
    /// the slot the plan gives each DENY policy (`POLICY_ALLOW_LIST`: the
    /// allow-lists).
    pub const POLICY_STATS: &str = "POLICY_STATS";
    /// The kernel programs' own maps (scratch copies, the segment handed
    /// between tail calls, the reset flows): pinned with the others so a
    /// restarted daemon's programs and the running ones share them.
    pub const INTERNAL: [&str; 4] = ["SCRATCH", "SEGMENT", "FORGET", "RESET_FLOWS"];
    /// Every map name, for the loader's self-check.
    pub const ALL: [&str; 26] = [
        LISTENERS,
        PORTS,
        PROXY_SOCKETS,
        EGRESS_IFACES,
        EGRESS_EXCLUDE,
        EGRESS_ALLOWED,
        EGRESS_OPEN_PORTS,
        EGRESS_POLICY,
        EGRESS_WORKLOADS,
        EGRESS_REFUSALS,
        LOCAL_ADDRS,
        LOCAL_ADDR_LIST,
        SETTINGS,
        REASON_STATS,
        LISTENER_STATS,
        ALLOWED_PORTS,
        HOSTS,
        HOST_BUCKETS,
        HOST_STATS,
        HOST_CLASS_STATS,
        HOST_RESETS,
        HOST_PROGRAMS,
        POLICY_DENY,
        POLICY_ALLOW,
        POLICY_TABLES,
        POLICY_STATS,
    ];
}

/// Capacity of `LISTENERS` and `LISTENER_STATS`; listener ids are below it.
pub const MAX_LISTENERS: u32 = 1024;
/// Capacity of `EGRESS_IFACES` and of `EGRESS_EXCLUDE`.
pub const MAX_EGRESS_IFACES: u32 = 256;
pub const MAX_EGRESS_EXCLUDES: u32 = 1024;
/// Capacity of `EGRESS_ALLOWED`: addresses and ranges of the registry.
pub const MAX_EGRESS_ALLOWED: u32 = 16 * 1024;
/// Capacity of `EGRESS_OPEN_PORTS`.
pub const MAX_EGRESS_OPEN_PORTS: u32 = 1024;
/// Capacity of `EGRESS_WORKLOADS`; the least recently seen make room.
pub const MAX_EGRESS_WORKLOADS: u32 = 4096;
/// Bytes of `EGRESS_REFUSALS`: about 1,600 refusals between two reads.
pub const EGRESS_REFUSALS_BYTES: u32 = 64 * 1024;
/// Capacity of `LOCAL_ADDRS`.
pub const MAX_LOCAL_ADDRS: u32 = 256;
/// Capacity of `HOSTS` and `HOST_STATS`: server hosts over all listeners.
pub const MAX_HOSTS: u32 = 16 * 1024;

/// Slots of `PROXY_SOCKETS`: IPv4 and IPv6, each for listeners whose
/// clients speak first and for the others.
pub const PROXY_SOCKET_SLOTS: u32 = 4;

/// The `PROXY_SOCKETS` slot for a connection over IPv6 (or IPv4) to a
/// listener whose clients speak first (HTTP, TLS) or not (opaque TCP, whose
/// server may speak first, and captured egress connections, whose protocol
/// is unknown). The proxy accepts the first kind only once data has arrived
/// (`TCP_DEFER_ACCEPT`): one wake-up per connection instead of two, and a
/// connection that never sends costs the proxy nothing.
#[inline(always)]
pub fn proxy_socket_slot(ipv6: bool, client_first: bool) -> u32 {
    u32::from(ipv6) | (u32::from(!client_first) << 1)
}

/// Entries of `ALLOWED_PORTS`: 1024 words of 64 bits for TCP's 65536
/// ports, then as many for UDP's. An array indexed by port costs the drop
/// path one direct lookup, no hashing.
pub const ALLOWED_PORT_WORDS: u32 = 2 * 1024;

/// Where the bit for (`protocol`, `port`) lives in `ALLOWED_PORTS`: the word
/// index and the mask within it; `None` for protocols other than TCP and UDP.
#[inline(always)]
pub fn allowed_port_bit(protocol: u8, port: u16) -> Option<(u32, u64)> {
    let base = match protocol {
        crate::IPPROTO_TCP => 0,
        crate::IPPROTO_UDP => ALLOWED_PORT_WORDS / 2,
        _ => return None,
    };
    Some((base + u32::from(port / 64), 1u64 << (port % 64)))
}

/// Entries of `PORTS`: TCP's 65536 ports, then UDP's.
pub const PORT_SLOTS: u32 = 2 * 65536;

/// The `PORTS` index of (`protocol`, `port`); `None` for protocols other
/// than TCP and UDP.
#[inline(always)]
pub fn port_index(protocol: u8, port: u16) -> Option<u32> {
    match protocol {
        crate::IPPROTO_TCP => Some(u32::from(port)),
        crate::IPPROTO_UDP => Some(PORT_SLOTS / 2 + u32::from(port)),
        _ => None,
    }
}

/// Value of `PORTS`: the listeners on one (protocol, port). Most
/// gateways listen on every address, and then this array entry alone
/// names the listener: the packet path hashes only the destination
/// address (is it the gateway's?), never the listener key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortValue {
    /// The listener on every gateway address (valid with `PORT_WILDCARD`).
    pub wildcard: ListenerValue,
    /// `PORT_*` bits.
    pub flags: u32,
}

/// `PortValue::flags`: a listener on every gateway address.
pub const PORT_WILDCARD: u32 = 1;
/// `PortValue::flags`: listeners bound to particular addresses (in
/// `LISTENERS`, looked up by the packet's destination).
pub const PORT_BOUND: u32 = 2;

/// Key of `LISTENERS`: a destination the gateway serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// Destination address, IPv4 as `::ffff:a.b.c.d`; `ADDR_ANY` for any gateway address.
    pub addr: [u8; 16],
    /// Destination port, host byte order.
    pub port: u16,
    /// IANA L4 protocol (`IPPROTO_TCP`, `IPPROTO_UDP`).
    pub protocol: u8,
    /// Always zero; makes the trailing byte explicit so hashing sees no garbage.
    pub pad: u8,
}

/// How a listener's traffic is handled once it passes; chooses the later
/// in-kernel steps (SNI classification for `Tls`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListenerKind {
    /// Plaintext HTTP family (HTTP, HTTP2, GRPC, GRPC-WEB): served by the proxy.
    Http = 1,
    /// TLS (HTTPS, TLS): SNI decides the server.
    Tls = 2,
    /// Opaque TCP (TCP, MONGO, ...).
    Tcp = 3,
}

/// Value of `LISTENERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerValue {
    /// Index into `LISTENER_STATS`, below `MAX_LISTENERS`.
    pub id: u32,
    /// A `ListenerKind` code.
    pub kind: u32,
    /// `LISTENER_*` option bits.
    pub flags: u32,
}

/// `ListenerValue::flags`: reset connections whose first data segment
/// names a host no server on the listener accepts (off by default).
pub const LISTENER_RESET_UNKNOWN_HOSTS: u32 = 1;
// Bits 2 and 4 are the AuthorizationPolicy flags (`ip_policy.rs`), bit 8
// and bits 16-18 the policy table's (`ip_policy_table.rs`).

/// Value of `LOCAL_ADDRS`; the key's presence is what matters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalAddrValue {
    /// Reserved for per-address options; zero today.
    pub flags: u32,
}

/// The single entry of `SETTINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// First port of the host's ephemeral range (`net.ipv4.ip_local_port_range`); 0 = no range.
    pub ephemeral_first: u16,
    /// Last port of the ephemeral range, inclusive.
    pub ephemeral_last: u16,
}

impl Settings {
    /// Whether `port` is in the host's ephemeral range.
    #[inline(always)]
    pub fn is_ephemeral(&self, port: u16) -> bool {
        self.ephemeral_first != 0 && port >= self.ephemeral_first && port <= self.ephemeral_last
    }
}

/// A packet and byte count; the value of both per-CPU stats arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen, whole frame from the Ethernet header on.
    pub bytes: u64,
}

const _: () = assert!(size_of::<ListenerKey>() == 20);
const _: () = assert!(size_of::<ListenerValue>() == 12);
const _: () = assert!(size_of::<PortValue>() == 16);
const _: () = assert!(size_of::<LocalAddrValue>() == 4);
const _: () = assert!(size_of::<Settings>() == 4);
const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls): `#[repr(C)]`, only integer and integer-array fields,
    // no implicit padding (checked by the size assertions above), so every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::ListenerValue {}
    unsafe impl aya::Pod for super::PortValue {}
    unsafe impl aya::Pod for super::LocalAddrValue {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for crate::HostKey {}
    unsafe impl aya::Pod for crate::HostValue {}
    unsafe impl aya::Pod for crate::HostBucket {}
    unsafe impl aya::Pod for crate::LocalAddrList {}
    unsafe impl aya::Pod for crate::WorkloadKey {}
    unsafe impl aya::Pod for crate::WorkloadCounters {}
    unsafe impl aya::Pod for crate::EgressPolicy {}
    unsafe impl aya::Pod for crate::PolicyData {}
    unsafe impl aya::Pod for crate::PolicyKey {}
    unsafe impl aya::Pod for crate::PolicyValue {}
    unsafe impl aya::Pod for crate::PolicyTable {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IPPROTO_TCP, IPPROTO_UDP};

    #[test]
    fn every_tcp_and_udp_port_has_its_own_bit() {
        let mut seen = [0u64; ALLOWED_PORT_WORDS as usize];
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            for port in 0..=u16::MAX {
                let (word, mask) = allowed_port_bit(protocol, port).unwrap();
                assert!(word < ALLOWED_PORT_WORDS, "{protocol}/{port}");
                assert_eq!(mask.count_ones(), 1);
                assert_eq!(
                    seen[word as usize] & mask,
                    0,
                    "{protocol}/{port} shares a bit"
                );
                seen[word as usize] |= mask;
            }
        }
        assert!(seen.iter().all(|w| *w == u64::MAX), "every bit used");
    }

    #[test]
    fn ssh_is_bit_22_of_the_first_word_and_udp_starts_half_way() {
        assert_eq!(allowed_port_bit(IPPROTO_TCP, 22), Some((0, 1 << 22)));
        assert_eq!(allowed_port_bit(IPPROTO_TCP, 65), Some((1, 1 << 1)));
        assert_eq!(allowed_port_bit(IPPROTO_UDP, 22), Some((1024, 1 << 22)));
        assert_eq!(allowed_port_bit(1, 22), None);
    }
}
