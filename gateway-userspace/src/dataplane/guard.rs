//! The egress guard's side of the kernel: attaching `tc_egress_guard` to
//! the captured interfaces, and the maps it reads (policy, the registry's
//! addresses, open ports) and writes (per-workload counters, refusals).
use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuHashMap, RingBuf, lpm_trie::LpmTrie},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
};
use gateway_common::{EgressPolicy, WorkloadCounters, WorkloadKey, map_names};

use super::{Dataplane, DataplaneError};
use crate::plan::{Subnet, addr_key};

/// Name of the TC program in the object (`gateway-ebpf/src/main.rs`).
pub const GUARD_PROGRAM_NAME: &str = "tc_egress_guard";

impl Dataplane {
    /// Captures the outbound TCP connections arriving on `ifindexes` for
    /// the egress proxy, except to `excludes` (`EGRESS_IFACES`,
    /// `EGRESS_EXCLUDE`; the routing side is [`super::Capture`]).
    pub fn set_egress(
        &mut self,
        ifindexes: &[u32],
        excludes: &[Subnet],
    ) -> Result<(), DataplaneError> {
        let mut ifaces: HashMap<&mut MapData, u32, u32> =
            super::map(&mut self.ebpf, map_names::EGRESS_IFACES)?;
        for index in ifindexes {
            ifaces
                .insert(index, 1, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::EGRESS_IFACES,
                    source,
                })?;
        }
        let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
            super::map(&mut self.ebpf, map_names::EGRESS_EXCLUDE)?;
        for cidr in excludes {
            trie.insert(&trie_key(cidr), 1, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::EGRESS_EXCLUDE,
                    source,
                })?;
        }
        Ok(())
    }

    /// Loads the guard and attaches it at TC ingress of each captured
    /// interface (TCX links on kernels that have them, a clsact filter
    /// otherwise). The links live as long as the `Dataplane`: a daemon
    /// that stops takes its guard with it, and its capture rules too.
    pub fn attach_egress_guard(&mut self, interfaces: &[String]) -> Result<(), DataplaneError> {
        let program = guard_program(&mut self.ebpf)?;
        for interface in interfaces {
            // Needed before kernel 6.6 (no TCX); an existing one is fine.
            if let Err(err) = tc::qdisc_add_clsact(interface) {
                log::debug!("clsact on {interface}: {err}");
            }
            program
                .attach(interface, TcAttachType::Ingress)
                .map_err(|source| DataplaneError::Link {
                    what: "egress guard (TC)",
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Takes the guard's maps out of the object for the daemon's tasks
    /// that keep the registry's addresses current and read the counters.
    pub fn take_egress_maps(&mut self) -> Result<EgressMaps, DataplaneError> {
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or(DataplaneError::MissingMap { name })
        };
        let error = |name: &'static str| move |source| DataplaneError::Map { name, source };
        Ok(EgressMaps {
            allowed: LpmTrie::try_from(take(map_names::EGRESS_ALLOWED)?)
                .map_err(error(map_names::EGRESS_ALLOWED))?,
            open_ports: HashMap::try_from(take(map_names::EGRESS_OPEN_PORTS)?)
                .map_err(error(map_names::EGRESS_OPEN_PORTS))?,
            policy: Array::try_from(take(map_names::EGRESS_POLICY)?)
                .map_err(error(map_names::EGRESS_POLICY))?,
            workloads: Workloads(Arc::new(Mutex::new(
                PerCpuHashMap::try_from(take(map_names::EGRESS_WORKLOADS)?)
                    .map_err(error(map_names::EGRESS_WORKLOADS))?,
            ))),
            refusals: Some(
                RingBuf::try_from(take(map_names::EGRESS_REFUSALS)?)
                    .map_err(error(map_names::EGRESS_REFUSALS))?,
            ),
            written: BTreeSet::new(),
            written_ports: BTreeSet::new(),
        })
    }

    /// The guard program, for `BPF_PROG_TEST_RUN` in tests.
    pub fn egress_guard_program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        guard_program(&mut self.ebpf)
    }
}

/// Loads the guard (attached later, by `attach_egress_guard`).
pub(super) fn load_guard(ebpf: &mut aya::Ebpf) -> Result<(), DataplaneError> {
    guard_program(ebpf)?
        .load()
        .map_err(DataplaneError::from_load)
}

fn guard_program(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(GUARD_PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram {
            name: GUARD_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
}

/// The guard's maps, owned by the daemon's egress task.
pub struct EgressMaps {
    allowed: LpmTrie<MapData, [u8; 16], u8>,
    open_ports: HashMap<MapData, u32, u8>,
    policy: Array<MapData, EgressPolicy>,
    workloads: Workloads,
    refusals: Option<RingBuf<MapData>>,
    /// What `allowed` and `open_ports` hold, as last written.
    written: BTreeSet<Subnet>,
    written_ports: BTreeSet<u16>,
}

/// What one update of the registry's addresses changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AllowedChange {
    pub added: Vec<Subnet>,
    pub removed: Vec<Subnet>,
}

impl EgressMaps {
    /// REGISTRY_ONLY (`allow_any` false) or ALLOW_ANY.
    pub fn set_policy(&mut self, allow_any: bool) -> Result<(), DataplaneError> {
        let policy = EgressPolicy {
            allow_any: u32::from(allow_any),
        };
        self.policy
            .set(0, policy, 0)
            .map_err(|source| DataplaneError::Map {
                name: map_names::EGRESS_POLICY,
                source,
            })
    }

    /// Makes the registry's addresses and open ports in the kernel equal
    /// to `cidrs` and `ports`: new ones inserted before gone ones are
    /// removed, so an address in both never sees a gap.
    pub fn set_allowed(
        &mut self,
        cidrs: &BTreeSet<Subnet>,
        ports: &BTreeSet<u16>,
    ) -> Result<AllowedChange, DataplaneError> {
        let error = |source| DataplaneError::Map {
            name: map_names::EGRESS_ALLOWED,
            source,
        };
        let change = AllowedChange {
            added: cidrs.difference(&self.written).copied().collect(),
            removed: self.written.difference(cidrs).copied().collect(),
        };
        for cidr in &change.added {
            self.allowed.insert(&trie_key(cidr), 1, 0).map_err(error)?;
        }
        for cidr in &change.removed {
            self.allowed.remove(&trie_key(cidr)).map_err(error)?;
        }
        self.written = cidrs.clone();
        let port_error = |source| DataplaneError::Map {
            name: map_names::EGRESS_OPEN_PORTS,
            source,
        };
        for port in ports.difference(&self.written_ports) {
            self.open_ports
                .insert(u32::from(*port), 1, 0)
                .map_err(port_error)?;
        }
        for port in self.written_ports.difference(ports) {
            self.open_ports
                .remove(&u32::from(*port))
                .map_err(port_error)?;
        }
        self.written_ports = ports.clone();
        Ok(change)
    }

    /// The per-workload counters, shared with the stats page and the proxy.
    pub fn workloads(&self) -> Workloads {
        self.workloads.clone()
    }

    /// The refusal events, for the task that logs them.
    pub fn take_refusals(&mut self) -> Option<RingBuf<MapData>> {
        self.refusals.take()
    }
}

/// The LPM trie key of `cidr` (IPv4 mapped: 96 bits in front).
fn trie_key(cidr: &Subnet) -> aya::maps::lpm_trie::Key<[u8; 16]> {
    let prefix = match cidr.addr {
        IpAddr::V4(_) => u32::from(cidr.prefix) + 96,
        IpAddr::V6(_) => u32::from(cidr.prefix),
    };
    aya::maps::lpm_trie::Key::new(prefix, addr_key(cidr.addr))
}

/// `EGRESS_WORKLOADS`, summed over CPUs when read.
#[derive(Clone)]
pub struct Workloads(Arc<Mutex<PerCpuHashMap<MapData, WorkloadKey, WorkloadCounters>>>);

/// One workload's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub addr: IpAddr,
    pub ifindex: u32,
    pub counters: WorkloadCounters,
}

impl Workloads {
    /// The counters a daemon pinned in `dir`, read without the daemon:
    /// `gateway stats`.
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self, DataplaneError> {
        let name = map_names::EGRESS_WORKLOADS;
        let error = |source| DataplaneError::Map { name, source };
        let data = MapData::from_pin(super::pins::map_path(dir, name)).map_err(error)?;
        let map = PerCpuHashMap::try_from(aya::maps::Map::PerCpuLruHashMap(data)).map_err(error)?;
        Ok(Self(Arc::new(Mutex::new(map))))
    }

    /// Every workload the guard has seen (the least recent make room).
    pub fn all(&self) -> Vec<Workload> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        let mut all: Vec<Workload> = map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, values)| Workload {
                addr: key_addr(key.addr),
                ifindex: key.ifindex,
                counters: sum(values.iter()),
            })
            .collect();
        all.sort_by_key(|w| (w.ifindex, w.addr));
        all
    }

    /// The interface among `ifindexes` the guard saw `addr` on, if any.
    pub fn interface_of(
        &self,
        addr: IpAddr,
        mut ifindexes: impl Iterator<Item = u32>,
    ) -> Option<u32> {
        let map = self.0.lock().ok()?;
        let key_addr = addr_key(addr);
        ifindexes.find(|ifindex| {
            map.get(
                &WorkloadKey {
                    addr: key_addr,
                    ifindex: *ifindex,
                },
                0,
            )
            .is_ok()
        })
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a WorkloadCounters>) -> WorkloadCounters {
    values.fold(WorkloadCounters::default(), |total, v| WorkloadCounters {
        connections: total.connections + v.connections,
        refused: total.refused + v.refused,
    })
}

/// The address of a key: IPv4 when mapped.
pub fn key_addr(key: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}
