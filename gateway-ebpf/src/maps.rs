//! Every map of the program. Names must match `gateway_common::map_names`
//! (the loader checks each one resolves).
use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
        SockMap,
    },
};
use gateway_common::{
    ALLOWED_PORT_WORDS, Counter, EGRESS_REFUSALS_BYTES, EgressPolicy,
    HOST_BUCKETS as HOST_BUCKETS_LEN, HostBucket, HostClass, HostKey, HostValue, ListenerKey,
    ListenerValue, LocalAddrList, LocalAddrValue, MAX_EGRESS_ALLOWED, MAX_EGRESS_EXCLUDES,
    MAX_EGRESS_IFACES, MAX_EGRESS_OPEN_PORTS, MAX_EGRESS_WORKLOADS, MAX_HOSTS, MAX_LISTENERS,
    MAX_LOCAL_ADDRS, MAX_PAYLOAD_SCAN, MAX_POLICIES, MAX_POLICY_ENTRIES, MAX_POLICY_TABLES,
    PORT_SLOTS, PROXY_SOCKET_SLOTS, PolicyData, PolicyTable, PolicyValue, PortValue, Reason,
    ResetFlow, Settings, WorkloadCounters, WorkloadKey,
};

#[map]
pub(crate) static LISTENERS: HashMap<ListenerKey, ListenerValue> =
    HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map]
pub(crate) static PORTS: Array<PortValue> = Array::with_max_entries(PORT_SLOTS, 0);

/// The proxy's listening sockets, in the slots `proxy_socket_slot` gives
/// (address family and listener kind, `sk_lookup.rs`); filled by the daemon.
#[map]
pub(crate) static PROXY_SOCKETS: SockMap = SockMap::with_max_entries(PROXY_SOCKET_SLOTS, 0);

#[map]
pub(crate) static EGRESS_IFACES: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_EGRESS_IFACES, 0);

/// Flag 1: required by the kernel for LPM tries (BPF_F_NO_PREALLOC).
#[map]
pub(crate) static EGRESS_EXCLUDE: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_EGRESS_EXCLUDES, 1);

/// Flag 1: required by the kernel for LPM tries (BPF_F_NO_PREALLOC).
#[map]
pub(crate) static EGRESS_ALLOWED: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_EGRESS_ALLOWED, 1);

#[map]
pub(crate) static EGRESS_OPEN_PORTS: HashMap<u32, u8> =
    HashMap::with_max_entries(MAX_EGRESS_OPEN_PORTS, 0);

#[map]
pub(crate) static EGRESS_POLICY: Array<EgressPolicy> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static EGRESS_WORKLOADS: LruPerCpuHashMap<WorkloadKey, WorkloadCounters> =
    LruPerCpuHashMap::with_max_entries(MAX_EGRESS_WORKLOADS, 0);

#[map]
pub(crate) static EGRESS_REFUSALS: RingBuf = RingBuf::with_byte_size(EGRESS_REFUSALS_BYTES, 0);

#[map]
pub(crate) static LOCAL_ADDRS: HashMap<[u8; 16], LocalAddrValue> =
    HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);

#[map]
pub(crate) static LOCAL_ADDR_LIST: Array<LocalAddrList> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static REASON_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[map]
pub(crate) static LISTENER_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// Flag 1: required by the kernel for LPM tries (BPF_F_NO_PREALLOC).
#[map]
pub(crate) static POLICY_DENY: LpmTrie<PolicyData, PolicyValue> =
    LpmTrie::with_max_entries(MAX_POLICY_ENTRIES, 1);

/// Flag 1: required by the kernel for LPM tries (BPF_F_NO_PREALLOC).
/// A trie of its own, so a longest match here never hides a DENY entry.
#[map]
pub(crate) static POLICY_ALLOW: LpmTrie<PolicyData, PolicyValue> =
    LpmTrie::with_max_entries(MAX_POLICY_ENTRIES, 1);

/// 1.1 MiB per slot, preallocated like every array (9 MiB in all): the
/// price of a lookup that does not walk the trie.
#[map]
pub(crate) static POLICY_TABLES: Array<PolicyTable> = Array::with_max_entries(MAX_POLICY_TABLES, 0);

#[map]
pub(crate) static POLICY_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_POLICIES, 0);

#[map]
pub(crate) static ALLOWED_PORTS: Array<u64> = Array::with_max_entries(ALLOWED_PORT_WORDS, 0);

#[map]
pub(crate) static HOSTS: HashMap<HostKey, HostValue> = HashMap::with_max_entries(MAX_HOSTS, 0);

#[map]
pub(crate) static HOST_BUCKETS: Array<HostBucket> = Array::with_max_entries(HOST_BUCKETS_LEN, 0);

#[map]
pub(crate) static HOST_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_HOSTS, 0);

#[map]
pub(crate) static HOST_CLASS_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_LISTENERS * HostClass::COUNT, 0);

#[map]
pub(crate) static HOST_RESETS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// Connections `xdp_host_reset` reset towards the local stack, so the
/// client's retransmission passes untouched and the stack resets the
/// client too. Least recently used entries make room.
#[map]
pub(crate) static RESET_FLOWS: LruHashMap<ResetFlow, u8> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU copy of a segment's payload for the host parser (`host.rs`).
#[map]
pub(crate) static SCRATCH: PerCpuArray<[u8; MAX_PAYLOAD_SCAN]> =
    PerCpuArray::with_max_entries(1, 0);

/// The listener data segment `xdp_ingress` hands to `xdp_host`.
#[map]
pub(crate) static SEGMENT: PerCpuArray<Segment> = PerCpuArray::with_max_entries(1, 0);

/// A listener's data segment as it goes from program to program:
/// `xdp_ingress` fills in where the payload is, `xdp_host` the scratch
/// copy's length and where the `Host` value starts, `xdp_host_value` or
/// `xdp_host` where the name is.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Segment {
    pub listener: u32,
    /// A `ListenerKind` code.
    pub kind: u32,
    /// Payload start and end offsets in the frame.
    pub payload: u32,
    pub payload_end: u32,
    pub frame_len: u64,
    /// The scratch copy's length.
    pub scratch_len: u32,
    /// Where the HTTP `Host` header's value starts in the scratch copy.
    pub value_start: u32,
    /// The name's offset and length in the scratch copy.
    pub name_offset: u32,
    pub name_len: u32,
    /// Offsets of the IP and TCP headers in the frame.
    pub ip: u32,
    pub tcp: u32,
    /// 1 for IPv6, 0 for IPv4.
    pub ipv6: u32,
    /// The listener's `LISTENER_*` option bits.
    pub flags: u32,
}

/// `xdp_host`, `xdp_host_value`, `xdp_host_match` and `xdp_host_reset`,
/// the tail-call targets; filled by the loader.
#[map]
pub(crate) static HOST_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(4, 0);

/// Per-CPU slot `host::forget` passes a value through to hide it from
/// the verifier.
#[map]
pub(crate) static FORGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
