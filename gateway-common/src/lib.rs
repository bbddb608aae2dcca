//! The contract between the XDP program and the daemon.
//!
//! Everything the kernel and userspace both read lives here: map names and
//! capacities, the `#[repr(C)]` keys and values stored in those maps, the
//! reason codes counters are indexed by, and the pure decision the XDP
//! program applies once it has parsed a packet. Keeping the decision here
//! lets host unit tests pin it down without a kernel.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;

mod addr;
mod decide;
mod egress;
mod host;
mod host_buckets;
mod ip_policy;
mod ip_policy_table;
mod local_addrs;
mod maps;
mod reason;
pub mod reference;
mod reset;

pub use addr::{ADDR_ANY, ipv4_mapped};
pub use decide::{IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, unlisted_local_verdict};
pub use egress::{
    EgressPolicy, EgressRefusal, REFUSAL_V4_LEN, REFUSAL_V6_LEN, REFUSED_NOT_IN_REGISTRY, Syn,
    WorkloadCounters, WorkloadKey, egress_allowed, refusal_frame,
};
pub use host::{
    Frame, HOST_ANY, HOST_EXACT, HOST_SUFFIX, HostClass, HostKey, HostRank, HostTable, HostValue,
    MAX_FRAME_OFFSET, MAX_HOST_LEN, MAX_HTTP_SCAN, MAX_PAYLOAD_SCAN, MAX_TLS_EXTENSIONS,
    MAX_WILDCARD_DEPTH, Name, classify_host, find_name, host_class_index, host_hash, host_rank,
    host_value, http_host, http_host_value_start, match_host, tls_server_name,
};
pub use host_buckets::{
    BucketLookup, HOST_BUCKET_SLOTS, HOST_BUCKETS, HostBucket, HostSlot, host_bucket,
};
pub use ip_policy::{
    LISTENER_POLICY, LISTENER_POLICY_ALLOW_LIST, LISTENER_POLICY_DENY, MAX_POLICIES,
    MAX_POLICY_ENTRIES, POLICY_ALLOW_LIST, POLICY_PORT_BITS, POLICY_VERDICT_ALLOW,
    POLICY_VERDICT_DENY, PolicyData, PolicyKey, PolicyValue, is_ipv4_mapped, policy_decision,
};
pub use ip_policy_table::{
    LISTENER_POLICY_TABLE, MAX_POLICY_TABLES, MAX_POLICY_TABLES_IN_USE, POLICY_TABLE_SHIFT,
    PolicyTable, TABLE_CODE_MASK, V4_COUNT_MASK, V4_LEAF, V4_POOL_LEN, V4_ROOTS, V4_SEARCH_STEPS,
    V4_SPLIT, V4_SPLIT_OVER, V6_BUCKETS, V6_INDEX_BITS, V6_INTERVALS, V6_SEARCH_STEPS, bits_at,
    code_slot, policy_table_flags, policy_table_slot, slot_code, v4_code, v6_code,
};
pub use local_addrs::{LOCAL_ADDR_SLOTS, LocalAddrList, LocalAddrSlot, LocalLookup, addr_words};
pub use maps::{
    ALLOWED_PORT_WORDS, Counter, EGRESS_REFUSALS_BYTES, LISTENER_RESET_UNKNOWN_HOSTS, ListenerKey,
    ListenerKind, ListenerValue, LocalAddrValue, MAX_EGRESS_ALLOWED, MAX_EGRESS_EXCLUDES,
    MAX_EGRESS_IFACES, MAX_EGRESS_OPEN_PORTS, MAX_EGRESS_WORKLOADS, MAX_HOSTS, MAX_LISTENERS,
    MAX_LOCAL_ADDRS, PORT_BOUND, PORT_SLOTS, PORT_WILDCARD, PROXY_SOCKET_SLOTS, PortValue,
    Settings, allowed_port_bit, map_names, port_index, proxy_socket_slot,
};
pub use reason::{Reason, Verdict};
pub use reset::{MAX_RESET_HEADERS, ResetFlow, ResetHeaders, make_reset, reset_flow};
