//! The only module that talks to the kernel's BPF side: loads the embedded
//! XDP object, applies a [`Plan`] to its maps as a diff, attaches it to an
//! interface and reads the counters. It never decides what is served.
mod error;

use std::collections::BTreeMap;

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, SockMap},
    programs::{ProgramError, SkLookup, Xdp, XdpMode},
};
use gateway_common::{
    ALLOWED_PORT_WORDS, Counter, HostClass, HostKey, HostValue, ListenerKey, ListenerValue,
    LocalAddrValue, MAX_HOSTS, MAX_LISTENERS, PortValue, Reason, Settings, host_class_index,
    map_names,
};

pub use self::error::DataplaneError;
use crate::compile::{Plan, addr_key};

/// Name of the XDP function in the object (`gateway-ebpf/src/main.rs`).
pub const PROGRAM_NAME: &str = "xdp_ingress";

/// The host-classification programs, reached only by tail call, in the
/// order of their `HOST_PROGRAMS` slots (`gateway-ebpf/src/host.rs`).
pub const HOST_PROGRAM_NAMES: [&str; 4] = [
    "xdp_host",
    "xdp_host_value",
    "xdp_host_match",
    "xdp_host_reset",
];

/// The XDP object built by build.rs, embedded so the binary is self-contained.
#[cfg(not(gateway_no_ebpf))]
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-xdp"));
/// Empty when bpf-linker was missing at build time; `load` explains.
#[cfg(gateway_no_ebpf)]
pub static XDP_OBJECT: &[u8] = &[];

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: Option<Attachment>,
    /// The non-zero `PORTS` entries as last written: the array has 131072
    /// slots, and reading them all back for every diff would cost as many
    /// system calls.
    ports: BTreeMap<u32, PortValue>,
}

/// The socket-lookup program that hands listener connections to the proxy.
pub const STEER_PROGRAM_NAME: &str = "sk_lookup_steer";

struct Attachment {
    interface: String,
    link: aya::programs::xdp::XdpLinkId,
}

/// How to attach the program to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Driver mode when the driver supports it, generic otherwise.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP, for drivers without XDP support.
    Generic,
}

impl Dataplane {
    /// Loads the object into the kernel and checks every map the loader
    /// relies on exists.
    pub fn load() -> Result<Self, DataplaneError> {
        if XDP_OBJECT.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(DataplaneError::from_load)?;
        for name in map_names::ALL {
            if ebpf.map(name).is_none() {
                return Err(DataplaneError::MissingMap { name });
            }
        }
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(DataplaneError::from_load)?;
        load_host_programs(&mut ebpf)?;
        load_steering(&mut ebpf)?;
        Ok(Dataplane {
            ebpf,
            attached: None,
            ports: BTreeMap::new(),
        })
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN` in tests and benchmarks.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        xdp_program(&mut self.ebpf)
    }

    /// How many instructions the verifier walked for each program, to
    /// show it stays well inside the kernel's 1M limit (`None` where the
    /// kernel does not say).
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        std::iter::once(PROGRAM_NAME)
            .chain(HOST_PROGRAM_NAMES)
            .chain([STEER_PROGRAM_NAME])
            .map(|name| {
                let count = self
                    .ebpf
                    .program(name)
                    .and_then(|program| program.info().ok())
                    .and_then(|info| info.verified_instruction_count());
                (name, count)
            })
            .collect()
    }

    /// Makes the maps equal to `plan`: inserts and updates what it has,
    /// removes what it no longer has; entries that do not change are not
    /// touched, so traffic to them never sees a gap.
    pub fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError> {
        let listeners: BTreeMap<ListenerKey, ListenerValue> = plan
            .listeners
            .iter()
            .map(|l| (l.key(), l.value()))
            .collect();
        self.sync(map_names::LISTENERS, &listeners)?;
        self.sync_ports(plan.ports())?;
        let local: BTreeMap<[u8; 16], LocalAddrValue> = plan
            .local_addrs
            .iter()
            .map(|addr| (addr_key(*addr), LocalAddrValue { flags: 0 }))
            .collect();
        self.sync(map_names::LOCAL_ADDRS, &local)?;
        let kernel_hosts = plan.kernel_hosts();
        if kernel_hosts.len() > MAX_HOSTS as usize {
            return Err(DataplaneError::TooManyHosts {
                count: kernel_hosts.len(),
                max: MAX_HOSTS as usize,
            });
        }
        let hosts: BTreeMap<HostKey, HostValue> =
            kernel_hosts.iter().map(|h| (h.key(), h.value())).collect();
        self.sync(map_names::HOSTS, &hosts)?;

        let mut settings_map: Array<&mut MapData, Settings> =
            map(&mut self.ebpf, map_names::SETTINGS)?;
        if settings_map.get(&0, 0).ok() != Some(settings) {
            settings_map
                .set(0, settings, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::SETTINGS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Makes the hash map `name` hold exactly `wanted`, writing only the
    /// difference ([`diff`]).
    fn sync<K: Pod + Ord, V: Pod + PartialEq>(
        &mut self,
        name: &'static str,
        wanted: &BTreeMap<K, V>,
    ) -> Result<(), DataplaneError> {
        let mut table: HashMap<&mut MapData, K, V> = map(&mut self.ebpf, name)?;
        let current: BTreeMap<K, V> = table.iter().filter_map(Result::ok).collect();
        let error = |source| DataplaneError::Map { name, source };
        let changes = diff(&current, wanted);
        for (key, value) in changes.upserts {
            table.insert(key, value, 0).map_err(error)?;
        }
        for key in changes.removals {
            table.remove(key).map_err(error)?;
        }
        Ok(())
    }

    /// Makes `PORTS` hold `wanted` (zero elsewhere), writing only the
    /// difference from what was last written; removed entries are zeroed.
    /// Runs after `LISTENERS` is synced, so a port never points at a bound
    /// listener that is not there yet.
    fn sync_ports(&mut self, wanted: BTreeMap<u32, PortValue>) -> Result<(), DataplaneError> {
        let mut array: Array<&mut MapData, PortValue> = map(&mut self.ebpf, map_names::PORTS)?;
        let error = |source| DataplaneError::Map {
            name: map_names::PORTS,
            source,
        };
        let changes = diff(&self.ports, &wanted);
        for (index, value) in changes.upserts {
            array.set(*index, *value, 0).map_err(error)?;
        }
        for index in changes.removals {
            array.set(*index, PortValue::default(), 0).map_err(error)?;
        }
        self.ports = wanted;
        Ok(())
    }

    /// Makes the management allow-list bitmap equal to `words` (the
    /// non-zero words, from `management::allowed_port_words`); words that
    /// do not change are not written.
    pub fn set_allowed_ports(&mut self, words: &BTreeMap<u32, u64>) -> Result<(), DataplaneError> {
        let mut bitmap: Array<&mut MapData, u64> = map(&mut self.ebpf, map_names::ALLOWED_PORTS)?;
        let error = |source| DataplaneError::Map {
            name: map_names::ALLOWED_PORTS,
            source,
        };
        for index in 0..ALLOWED_PORT_WORDS {
            let wanted = words.get(&index).copied().unwrap_or(0);
            if bitmap.get(&index, 0).map_err(error)? != wanted {
                bitmap.set(index, wanted, 0).map_err(error)?;
            }
        }
        Ok(())
    }

    /// Puts the proxy's listening sockets (`v4`, and `v6` when IPv6 is
    /// available) where the socket-lookup program hands listener
    /// connections (`PROXY_SOCKETS`).
    pub fn set_proxy_sockets(
        &mut self,
        v4: &impl AsRawFd,
        v6: Option<&impl AsRawFd>,
    ) -> Result<(), DataplaneError> {
        let mut sockets: SockMap<&mut MapData> = map(&mut self.ebpf, map_names::PROXY_SOCKETS)?;
        let error = |source| DataplaneError::Map {
            name: map_names::PROXY_SOCKETS,
            source,
        };
        sockets.set(0, v4, 0).map_err(error)?;
        match v6 {
            Some(v6) => sockets.set(1, v6, 0).map_err(error)?,
            None => match sockets.clear_index(&1) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(error(source)),
            },
        }
        Ok(())
    }

    /// The socket-lookup program, for `BPF_PROG_TEST_RUN` in tests.
    pub fn steering_program(&self) -> Result<&SkLookup, DataplaneError> {
        self.ebpf
            .program(STEER_PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram {
                name: STEER_PROGRAM_NAME,
            })?
            .try_into()
            .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
    }

    /// Attaches the socket-lookup program to this process's network
    /// namespace: from then on every connection to a listener's (address,
    /// port) reaches the proxy's sockets, whatever ports they are bound
    /// to. The link lives as long as the `Dataplane`.
    pub fn attach_steering(&mut self) -> Result<(), DataplaneError> {
        let netns = std::fs::File::open("/proc/self/ns/net").map_err(|source| {
            DataplaneError::AttachSteering {
                source: Box::new(source),
            }
        })?;
        let program: &mut SkLookup = self
            .ebpf
            .program_mut(STEER_PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram {
                name: STEER_PROGRAM_NAME,
            })?
            .try_into()
            .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })?;
        program
            .attach(netns)
            .map_err(|source| DataplaneError::AttachSteering {
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Attaches the program to `interface`. Fails if any XDP program is
    /// already attached there (another instance, or a stale attachment).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let xdp_mode = match mode {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        let program = xdp_program(&mut self.ebpf)?;
        let link = program
            .attach(interface, xdp_mode)
            .map_err(|source| DataplaneError::from_attach(interface, source))?;
        self.attached = Some(Attachment {
            interface: interface.to_string(),
            link,
        });
        Ok(())
    }

    /// Detaches from the interface; dropping the `Dataplane` does the same.
    pub fn detach(&mut self) -> Result<Option<String>, DataplaneError> {
        let Some(attachment) = self.attached.take() else {
            return Ok(None);
        };
        let program = xdp_program(&mut self.ebpf)?;
        program
            .detach(attachment.link)
            .map_err(|source| DataplaneError::Detach { source })?;
        Ok(Some(attachment.interface))
    }

    /// Takes the counter maps out of the object, so their reader (the admin
    /// thread) shares no lock with the rest of the daemon.
    pub fn take_stats_reader(&mut self) -> Result<StatsReader, DataplaneError> {
        let mut take =
            |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, DataplaneError> {
                let raw = self
                    .ebpf
                    .take_map(name)
                    .ok_or(DataplaneError::MissingMap { name })?;
                PerCpuArray::try_from(raw).map_err(|source| DataplaneError::Map { name, source })
            };
        Ok(StatsReader {
            reasons: take(map_names::REASON_STATS)?,
            listeners: take(map_names::LISTENER_STATS)?,
            hosts: take(map_names::HOST_STATS)?,
            host_classes: take(map_names::HOST_CLASS_STATS)?,
            resets: take(map_names::HOST_RESETS)?,
        })
    }
}

/// What turns one map's contents into another's: entries to insert or
/// overwrite, then keys to remove. Entries equal on both sides are in
/// neither, so lookups of them never see a gap.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes<'a, K, V> {
    pub upserts: Vec<(&'a K, &'a V)>,
    pub removals: Vec<&'a K>,
}

/// The changes from `current` to `wanted`; pure, so the plan-to-map
/// update is tested without a kernel.
pub fn diff<'a, K: Ord, V: PartialEq>(
    current: &'a BTreeMap<K, V>,
    wanted: &'a BTreeMap<K, V>,
) -> Changes<'a, K, V> {
    Changes {
        upserts: wanted
            .iter()
            .filter(|(key, value)| current.get(key) != Some(value))
            .collect(),
        removals: current
            .keys()
            .filter(|key| !wanted.contains_key(key))
            .collect(),
    }
}

/// The per-CPU counter maps, owned.
pub struct StatsReader {
    reasons: PerCpuArray<MapData, Counter>,
    listeners: PerCpuArray<MapData, Counter>,
    hosts: PerCpuArray<MapData, Counter>,
    host_classes: PerCpuArray<MapData, Counter>,
    resets: PerCpuArray<MapData, Counter>,
}

impl StatsReader {
    /// Counters summed over CPUs: every reason code, the listeners in
    /// `listener_ids` with their host classes, and the hosts in `host_ids`
    /// (the daemon passes the plan's, not every slot, so a read costs a
    /// lookup per listener and host served).
    pub fn read(
        &self,
        listener_ids: impl IntoIterator<Item = u32>,
        host_ids: impl IntoIterator<Item = u32>,
    ) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        for reason in Reason::ALL {
            stats.reasons.push((
                reason,
                sum(&self.reasons, reason as u32, map_names::REASON_STATS)?,
            ));
        }
        for id in listener_ids.into_iter().filter(|id| *id < MAX_LISTENERS) {
            let counter = sum(&self.listeners, id, map_names::LISTENER_STATS)?;
            if counter.packets != 0 {
                stats.listeners.push((id, counter));
            }
            let resets = sum(&self.resets, id, map_names::HOST_RESETS)?;
            if resets.packets != 0 {
                stats.resets.push((id, resets));
            }
            for class in HostClass::ALL {
                let index = host_class_index(id, class);
                let counter = sum(&self.host_classes, index, map_names::HOST_CLASS_STATS)?;
                if counter.packets != 0 {
                    stats.host_classes.push((id, class, counter));
                }
            }
        }
        for id in host_ids.into_iter().filter(|id| *id < MAX_HOSTS) {
            let counter = sum(&self.hosts, id, map_names::HOST_STATS)?;
            if counter.packets != 0 {
                stats.hosts.push((id, counter));
            }
        }
        Ok(stats)
    }
}

/// One counter summed over CPUs.
fn sum(
    array: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DataplaneError> {
    array
        .get(&index, 0)
        .map(|per_cpu| {
            per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
        })
        .map_err(|source| DataplaneError::Map { name, source })
}

/// Counter snapshot, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every reason, in code order.
    pub reasons: Vec<(Reason, Counter)>,
    /// Listeners that saw at least one packet, by id.
    pub listeners: Vec<(u32, Counter)>,
    /// Host classes of listeners' data segments (listener id, class), those seen.
    pub host_classes: Vec<(u32, HostClass, Counter)>,
    /// Known hosts (`KernelHost::id`) that saw at least one data segment.
    pub hosts: Vec<(u32, Counter)>,
    /// Listeners that reset connections for an unknown host, and how many.
    pub resets: Vec<(u32, Counter)>,
}

impl Stats {
    /// The counter of one reason.
    pub fn reason(&self, reason: Reason) -> Counter {
        self.reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(Counter::default(), |(_, c)| *c)
    }
}

/// Loads the host-classification programs into the `HOST_PROGRAMS` slots
/// the ingress program tail-calls for a listener's data segment, in order.
fn load_host_programs(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    for (slot, name) in (0u32..).zip(HOST_PROGRAM_NAMES) {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })?;
        program.load().map_err(DataplaneError::from_load)?;
        let fd = program
            .fd()
            .map_err(DataplaneError::from_load)?
            .try_clone()
            .map_err(DataplaneError::from_load)?;
        let mut slots: ProgramArray<&mut MapData> = map(ebpf, map_names::HOST_PROGRAMS)?;
        slots
            .set(slot, &fd, 0)
            .map_err(|source| DataplaneError::Map {
                name: map_names::HOST_PROGRAMS,
                source,
            })?;
    }
    Ok(())
}

/// Loads the socket-lookup program (attached later, by `steer_to`).
fn load_steering(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let program: &mut SkLookup = ebpf
        .program_mut(STEER_PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram {
            name: STEER_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })?;
    program.load().map_err(DataplaneError::from_load)
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram { name: PROGRAM_NAME })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
}

fn map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let raw = ebpf
        .map_mut(name)
        .ok_or(DataplaneError::MissingMap { name })?;
    T::try_from(raw).map_err(|source| DataplaneError::Map { name, source })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so map
/// creation does not fail there. Newer kernels ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_writes_new_and_changed_entries_and_removes_gone_ones_only() {
        let current = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let wanted = BTreeMap::from([(1, 'a'), (2, 'B'), (4, 'd')]);
        let changes = diff(&current, &wanted);
        assert_eq!(changes.upserts, vec![(&2, &'B'), (&4, &'d')]);
        assert_eq!(changes.removals, vec![&3]);
    }

    #[test]
    fn equal_contents_need_no_write() {
        let same = BTreeMap::from([(1, 'a'), (2, 'b')]);
        let changes = diff(&same, &same);
        assert!(changes.upserts.is_empty() && changes.removals.is_empty());
        let empty = BTreeMap::new();
        let changes = diff(&same, &empty);
        assert_eq!(changes.removals, vec![&1, &2]);
        let changes = diff(&empty, &same);
        assert_eq!(changes.upserts.len(), 2);
    }
}
