//! The kernel's map keys and values for a plan: the only place besides
//! the dataplane that knows the kernel's ABI (`gateway-common`'s map types).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gateway_common::{
    ADDR_ANY, HOST_ANY, HOST_EXACT, HOST_SUFFIX, HostKey, HostValue, IPPROTO_TCP,
    LISTENER_POLICY_ALLOW_LIST, LISTENER_POLICY_DENY, LISTENER_RESET_UNKNOWN_HOSTS, ListenerValue,
    POLICY_VERDICT_ALLOW, POLICY_VERDICT_DENY, PORT_BOUND, PORT_WILDCARD, PolicyKey, PolicyValue,
    PortValue, host_hash, ipv4_mapped, port_index,
};

pub use gateway_common::ListenerKey;

use super::{HostPattern, HostTable, Listener, Plan, Subnet};

impl Listener {
    /// The `LISTENERS` map key.
    pub fn key(&self) -> ListenerKey {
        ListenerKey {
            addr: self.bind.map_or(ADDR_ANY, addr_key),
            port: self.port,
            protocol: self.ip_protocol,
            pad: 0,
        }
    }

    /// The `LISTENERS` map value.
    pub fn value(&self) -> ListenerValue {
        ListenerValue {
            id: self.id,
            kind: self.kind as u32,
            flags: flag(self.reset_unknown_hosts, LISTENER_RESET_UNKNOWN_HOSTS)
                | flag(self.policy_deny, LISTENER_POLICY_DENY)
                | flag(self.policy_allow_list, LISTENER_POLICY_ALLOW_LIST),
        }
    }
}

fn flag(on: bool, bit: u32) -> u32 {
    if on { bit } else { 0 }
}

/// The AuthorizationPolicy rules the kernel enforces on listeners'
/// connection attempts (built by `compile/ip_policy.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpPolicy {
    /// The DENY policies with kernel entries, `ns/name` by their
    /// `POLICY_STATS` slot (from 1; slot 0 counts the allow-lists).
    pub policies: BTreeMap<u32, String>,
    /// What each TCP listener port with any policy enforces.
    pub ports: BTreeMap<u16, PortPolicy>,
}

/// One listener port's kernel policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    /// Source blocks whose SYNs are dropped, each with the slot of the
    /// first DENY policy (Istio's order) denying it.
    pub deny: BTreeMap<Subnet, u32>,
    /// `Some`: allow-listed, and the only source blocks whose SYNs pass
    /// (empty: none do).
    pub allow: Option<BTreeSet<Subnet>>,
}

impl IpPolicy {
    /// The `POLICY_DENY` entries.
    pub fn deny_entries(&self) -> BTreeMap<PolicyKey, PolicyValue> {
        let mut out = BTreeMap::new();
        for (port, entry) in &self.ports {
            for (block, slot) in &entry.deny {
                let value = PolicyValue {
                    verdict: POLICY_VERDICT_DENY,
                    policy: *slot,
                };
                out.entry(block_key(*port, block)).or_insert(value);
            }
        }
        out
    }

    /// The `POLICY_ALLOW` entries.
    pub fn allow_entries(&self) -> BTreeMap<PolicyKey, PolicyValue> {
        let mut out = BTreeMap::new();
        for (port, entry) in &self.ports {
            for block in entry.allow.iter().flatten() {
                let value = PolicyValue {
                    verdict: POLICY_VERDICT_ALLOW,
                    policy: 0,
                };
                out.insert(block_key(*port, block), value);
            }
        }
        out
    }
}

impl Plan {
    /// Sets each TCP listener's policy flags from `ip_policy`.
    pub fn set_policy_flags(&mut self) {
        for listener in &mut self.listeners {
            let entry = (listener.ip_protocol == IPPROTO_TCP)
                .then(|| self.ip_policy.ports.get(&listener.port))
                .flatten();
            listener.policy_deny = entry.is_some_and(|e| !e.deny.is_empty());
            listener.policy_allow_list = entry.is_some_and(|e| e.allow.is_some());
        }
    }
}

/// The trie key of `block` on `port` (IPv4 mapped: 96 bits in front).
fn block_key(port: u16, block: &Subnet) -> PolicyKey {
    let bits = match block.addr {
        IpAddr::V4(_) => 96 + u32::from(block.prefix),
        IpAddr::V6(_) => u32::from(block.prefix),
    };
    PolicyKey::block(port, addr_key(block.addr), bits)
}

/// A server host of a listener, as the kernel classifies the listener's
/// first data segments (TLS SNI, HTTP `Host`) against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelHost {
    /// Index into the kernel's per-host counters.
    pub id: u32,
    pub listener_id: u32,
    pub pattern: HostPattern,
}

impl KernelHost {
    /// The `HOSTS` map key.
    pub fn key(&self) -> HostKey {
        let (kind, hash) = match &self.pattern {
            HostPattern::Exact(name) => (HOST_EXACT, host_hash(name.as_bytes())),
            HostPattern::Suffix(suffix) => (HOST_SUFFIX, host_hash(suffix.as_bytes())),
            HostPattern::Any => (HOST_ANY, 0),
        };
        HostKey {
            listener: self.listener_id,
            kind,
            hash,
        }
    }

    /// The `HOSTS` map value.
    pub fn value(&self) -> HostValue {
        HostValue {
            id: self.id,
            pad: 0,
        }
    }
}

impl Plan {
    /// The `PORTS` entries: per (protocol, port), the listener on every
    /// gateway address and whether address-bound listeners exist. Ports
    /// without listeners are absent (zero in the kernel's array).
    pub fn ports(&self) -> BTreeMap<u32, PortValue> {
        ports_of(self.listeners.iter().map(|l| (l.key(), l.value())))
    }

    /// Every listener's server hosts for the kernel: an HTTP port's
    /// virtual hosts, a TLS port's SNI hosts and the virtual hosts of the
    /// plaintext servers sharing it. De-duplicated per listener; ids count
    /// up in (listener, pattern) order, so the same plan gives the same ids.
    pub fn kernel_hosts(&self) -> Vec<KernelHost> {
        let wanted: BTreeSet<(u32, HostPattern)> = self
            .kernel_host_keys()
            .into_iter()
            .map(|(listener, pattern)| (listener, pattern.clone()))
            .collect();
        // Ids kept from the previous plan first, then the lowest free ones.
        let used: BTreeSet<u32> = wanted
            .iter()
            .filter_map(|key| self.host_ids.get(key).copied())
            .collect();
        let mut free = FreeIds::new(used);
        wanted
            .into_iter()
            .map(|(listener_id, pattern)| {
                let id = match self.host_ids.get(&(listener_id, pattern.clone())) {
                    Some(id) => *id,
                    None => free.take(),
                };
                KernelHost {
                    id,
                    listener_id,
                    pattern,
                }
            })
            .collect()
    }

    /// The (listener, host pattern) pairs the kernel's host table holds,
    /// borrowed: counting them copies no name.
    pub(crate) fn kernel_host_keys(&self) -> BTreeSet<(u32, &HostPattern)> {
        let mut wanted = BTreeSet::new();
        for listener in &self.http {
            for host in listener.hosts.hosts() {
                wanted.insert((listener.listener_id, &host.pattern));
            }
        }
        for listener in &self.tls {
            for server in &listener.servers {
                for pattern in &server.hosts {
                    wanted.insert((listener.listener_id, pattern));
                }
            }
            for host in listener.plaintext.iter().flat_map(HostTable::hosts) {
                wanted.insert((listener.listener_id, &host.pattern));
            }
        }
        wanted
    }
}

/// The `PORTS` entries for `LISTENERS` entries: what [`Plan::ports`]
/// writes, and what a restarted daemon finds in the pinned maps it adopts.
pub fn ports_of(
    listeners: impl IntoIterator<Item = (ListenerKey, ListenerValue)>,
) -> BTreeMap<u32, PortValue> {
    let mut ports: BTreeMap<u32, PortValue> = BTreeMap::new();
    for (key, value) in listeners {
        let Some(index) = port_index(key.protocol, key.port) else {
            continue;
        };
        let entry = ports.entry(index).or_default();
        if key.addr == ADDR_ANY {
            entry.wildcard = value;
            entry.flags |= PORT_WILDCARD;
        } else {
            entry.flags |= PORT_BOUND;
        }
    }
    ports
}

/// The 16-byte map form of an address (IPv4 mapped into IPv6).
pub fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The lowest ids not in use, in order.
pub(crate) struct FreeIds {
    used: BTreeSet<u32>,
    next: u32,
}

impl FreeIds {
    pub(crate) fn new(used: BTreeSet<u32>) -> Self {
        Self { used, next: 0 }
    }

    pub(crate) fn take(&mut self) -> u32 {
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        let id = self.next;
        self.used.insert(id);
        id
    }
}
