//! Loading the embedded object: every program verified and loaded, the
//! host-classification programs put in their tail-call slots, and, in
//! pinned mode, the maps a previous daemon pinned adopted.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, ProgramArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use gateway_common::{ListenerKey, ListenerValue, Reason, map_names};

use super::{
    Dataplane, DataplaneError, EbpfLog, HOST_PROGRAM_NAMES, Synced, XDP_OBJECT,
    attach::{steering_program, xdp_program},
    map, pins,
};

impl Dataplane {
    /// Loads the object into the kernel and checks every map the loader
    /// relies on exists. Maps and links belong to this process.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_logging(EbpfLog::Off)
    }

    /// [`Dataplane::load`] with the kernel programs' diagnostic events on
    /// at `log` (for the benchmark of their cost).
    pub fn load_logging(log: EbpfLog) -> Result<Self, DataplaneError> {
        let ebpf = load_object(None, log)?;
        Ok(Self {
            ebpf,
            attached: None,
            synced: Synced::default(),
            pins: None,
            pinned_interface: None,
            fresh_pins: false,
            held: None,
            xdp_mode: XdpMode::Default,
        })
    }

    /// Loads the object with its maps pinned for the daemon on
    /// `interface` ([`pins`]): maps a previous daemon pinned there are
    /// adopted, contents and counters included, and `attach` and
    /// `attach_steering` take over its links. Maps of another build that
    /// do not fit are replaced (their contents lost, said in the log).
    pub fn load_pinned(interface: &str, log: EbpfLog) -> Result<Self, DataplaneError> {
        let dir = pins::pin_dir(interface)?;
        let fresh_pins = !pins::map_path(&dir, map_names::LISTENERS).exists();
        let rebuild_fronts = [map_names::HOST_BUCKETS, map_names::LOCAL_ADDR_LIST]
            .iter()
            .any(|name| !pins::map_path(&dir, name).exists());
        drop_outgrown_reasons(&dir);
        let ebpf = match load_object(Some(&dir), log) {
            Ok(ebpf) => ebpf,
            Err(err) => {
                log::warn!(
                    "the pinned maps in {} do not fit this build ({err}); replacing them",
                    dir.display()
                );
                pins::remove_pins(&dir, false);
                load_object(Some(&dir), log)?
            }
        };
        let mut dataplane = Self {
            ebpf,
            attached: None,
            synced: Synced {
                ports: BTreeMap::new(),
                rebuild_fronts,
                policy_tables: BTreeMap::new(),
            },
            pins: Some(dir),
            pinned_interface: None,
            fresh_pins,
            held: None,
            xdp_mode: XdpMode::Default,
        };
        // What an adopted PORTS array holds follows from LISTENERS.
        let listeners: HashMap<&MapData, ListenerKey, ListenerValue> = dataplane
            .ebpf
            .map(map_names::LISTENERS)
            .ok_or(DataplaneError::MissingMap {
                name: map_names::LISTENERS,
            })?
            .try_into()
            .map_err(|source| DataplaneError::Map {
                name: map_names::LISTENERS,
                source,
            })?;
        dataplane.synced.ports = crate::plan::ports_of(listeners.iter().filter_map(Result::ok));
        Ok(dataplane)
    }
}

/// Removes a pinned `REASON_STATS` smaller than this build's: a daemon of
/// an earlier build pinned it before a `Reason` code was appended (10
/// before `PolicyDenied`). Adopted, the new code's counter would be
/// missing (`record_verdict` aborts on it, the stats reader fails); made
/// anew, only the reason counters restart. aya adopts a pin without
/// comparing sizes, hence this check.
fn drop_outgrown_reasons(dir: &Path) {
    let path = pins::map_path(dir, map_names::REASON_STATS);
    let Ok(pinned) = MapData::from_pin(&path) else {
        return;
    };
    let outgrown = pinned
        .info()
        .is_ok_and(|info| info.max_entries() < Reason::COUNT);
    drop(pinned);
    if outgrown {
        log::warn!(
            "the pinned reason counters in {} are from a build with fewer reasons; starting them anew",
            dir.display()
        );
        let _ = std::fs::remove_file(&path);
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

/// Loads the object, with every map pinned in `pins` when given (adopted
/// if already there), and its programs; checks every map name resolves.
fn load_object(pins: Option<&Path>, log: EbpfLog) -> Result<Ebpf, DataplaneError> {
    if XDP_OBJECT.is_empty() {
        return Err(DataplaneError::NotBuilt);
    }
    raise_memlock_limit();
    let names: Vec<&'static str> = map_names::ALL
        .iter()
        .chain(map_names::INTERNAL.iter())
        .copied()
        .collect();
    let paths: Vec<(&'static str, PathBuf)> = match pins {
        Some(dir) => names
            .iter()
            .map(|name| (*name, pins::map_path(dir, name)))
            .collect(),
        None => Vec::new(),
    };
    let mut loader = EbpfLoader::new();
    // A load-time constant: with logging off, the verifier drops every
    // log statement as dead code, so it costs the packet path nothing.
    let level = log as u8;
    loader.override_global("AYA_LOG_LEVEL", &level, true);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(XDP_OBJECT).map_err(DataplaneError::from_load)?;
    for name in map_names::ALL {
        if ebpf.map(name).is_none() {
            return Err(DataplaneError::MissingMap { name });
        }
    }
    let program = xdp_program(&mut ebpf)?;
    program.load().map_err(DataplaneError::from_load)?;
    load_host_programs(&mut ebpf)?;
    load_steering(&mut ebpf)?;
    super::guard::load_guard(&mut ebpf)?;
    Ok(ebpf)
}

/// Loads the socket-lookup program (attached later, by `attach_steering`).
fn load_steering(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    steering_program(ebpf)?
        .load()
        .map_err(DataplaneError::from_load)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so map
/// creation does not fail there. Newer kernels ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {err}");
    }
}
