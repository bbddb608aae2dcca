//! Every map of the program. Names must match `gateway_common::map_names`
//! (the loader checks each one resolves).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use gateway_common::{
    ALLOWED_PORT_WORDS, Counter, ListenerKey, ListenerValue, LocalAddrValue, MAX_LISTENERS,
    MAX_LOCAL_ADDRS, Reason, Settings,
};

#[map]
pub static LISTENERS: HashMap<ListenerKey, ListenerValue> =
    HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map]
pub static LOCAL_ADDRS: HashMap<[u8; 16], LocalAddrValue> =
    HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);

#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map]
pub static REASON_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[map]
pub static LISTENER_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

#[map]
pub static ALLOWED_PORTS: Array<u64> = Array::with_max_entries(ALLOWED_PORT_WORDS, 0);
