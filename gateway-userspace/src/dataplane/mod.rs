//! The only module that talks to the kernel's BPF side: loads the embedded
//! XDP object, applies a [`Plan`] to its maps as a diff, attaches it to an
//! interface and reads the counters. It never decides what is served.
mod error;

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use gateway_common::{
    ALLOWED_PORT_WORDS, Counter, ListenerKey, ListenerValue, LocalAddrValue, MAX_LISTENERS, Reason,
    Settings, map_names,
};

pub use self::error::DataplaneError;
use crate::compile::{Plan, addr_key};

/// Name of the XDP function in the object (`gateway-ebpf/src/main.rs`).
pub const PROGRAM_NAME: &str = "xdp_ingress";

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
}

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
        Ok(Dataplane {
            ebpf,
            attached: None,
        })
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN` in tests and benchmarks.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        xdp_program(&mut self.ebpf)
    }

    /// Makes the maps equal to `plan`: inserts and updates what it has,
    /// removes what it no longer has; entries that do not change are not
    /// touched, so traffic to them never sees a gap.
    pub fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError> {
        let mut listeners: HashMap<&mut MapData, ListenerKey, ListenerValue> =
            map(&mut self.ebpf, map_names::LISTENERS)?;
        let wanted: Vec<(ListenerKey, ListenerValue)> = plan
            .listeners
            .iter()
            .map(|l| (l.key(), l.value()))
            .collect();
        let stale: Vec<ListenerKey> = listeners
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.iter().any(|(k, _)| k == key))
            .collect();
        for (key, value) in &wanted {
            if listeners.get(key, 0).ok().as_ref() != Some(value) {
                listeners
                    .insert(key, value, 0)
                    .map_err(|source| DataplaneError::Map {
                        name: map_names::LISTENERS,
                        source,
                    })?;
            }
        }
        for key in &stale {
            listeners
                .remove(key)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::LISTENERS,
                    source,
                })?;
        }

        let mut local: HashMap<&mut MapData, [u8; 16], LocalAddrValue> =
            map(&mut self.ebpf, map_names::LOCAL_ADDRS)?;
        let wanted: BTreeSet<[u8; 16]> = plan.local_addrs.iter().copied().map(addr_key).collect();
        let stale: Vec<[u8; 16]> = local
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(key))
            .collect();
        for key in &wanted {
            local
                .insert(key, LocalAddrValue { flags: 0 }, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::LOCAL_ADDRS,
                    source,
                })?;
        }
        for key in &stale {
            local.remove(key).map_err(|source| DataplaneError::Map {
                name: map_names::LOCAL_ADDRS,
                source,
            })?;
        }

        let mut settings_map: Array<&mut MapData, Settings> =
            map(&mut self.ebpf, map_names::SETTINGS)?;
        settings_map
            .set(0, settings, 0)
            .map_err(|source| DataplaneError::Map {
                name: map_names::SETTINGS,
                source,
            })
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
        })
    }
}

/// The per-CPU counter maps, owned.
pub struct StatsReader {
    reasons: PerCpuArray<MapData, Counter>,
    listeners: PerCpuArray<MapData, Counter>,
}

impl StatsReader {
    /// Counters summed over CPUs: every reason code, and the listeners in
    /// `listener_ids` (the daemon passes the plan's, not all
    /// [`MAX_LISTENERS`] slots, so a read costs a lookup per listener served).
    pub fn read(
        &self,
        listener_ids: impl IntoIterator<Item = u32>,
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
