//! The only module that talks to the kernel's BPF side: loads the embedded
//! XDP object, applies a [`Plan`] to its maps as a diff, attaches it to an
//! interface and reads the counters. It never decides what is served.
mod egress;
mod error;
mod fronts;
pub mod orphans;
pub mod pins;

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, SockMap},
    programs::{ProgramError, SkLookup, Xdp, XdpMode, links::FdLink},
};
use gateway_common::{
    ALLOWED_PORT_WORDS, Counter, HostBucket, HostClass, HostKey, HostValue, ListenerKey,
    ListenerValue, LocalAddrList, LocalAddrValue, MAX_HOSTS, MAX_LISTENERS, PROXY_SOCKET_SLOTS,
    PortValue, Reason, Settings, host_class_index, map_names,
};

pub use self::{
    egress::{AllowedChange, EgressMaps, GUARD_PROGRAM_NAME, Workload, Workloads, key_addr},
    error::DataplaneError,
};
use crate::plan::{Plan, addr_key};

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
    /// Where maps and links are pinned (`load_pinned`); `None` for a
    /// process-owned load (tests, benchmarks).
    pins: Option<PathBuf>,
    /// The interface XDP is attached to, in pinned mode.
    pinned_interface: Option<String>,
    /// The pins were made by this process, not adopted: a daemon that
    /// fails before attaching removes them again.
    fresh_pins: bool,
    /// `HOST_BUCKETS` or `LOCAL_ADDR_LIST` is new while the hash map
    /// behind it may have been adopted (a daemon of an earlier build
    /// pinned it): the next `apply` fills them from every host and
    /// address, not just from the changed ones.
    rebuild_fronts: bool,
    /// In pinned mode, once attached: a descriptor of every pinned object,
    /// which keeps the links attached whatever happens to the pins.
    held: Option<pins::HeldPins>,
    /// The XDP mode `attach` was asked for, to attach again in.
    xdp_mode: XdpMode,
}

/// What [`Dataplane::repair`] found gone and put back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Pins removed from the bpffs and pinned again.
    pub pins_restored: usize,
    /// Links found detached and attached again (`XDP`, `sk_lookup`).
    pub reattached: Vec<&'static str>,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(dir) = &self.pins {
            if self.fresh_pins && self.pinned_interface.is_none() {
                remove_pins(dir, true);
            }
        }
    }
}

/// The socket-lookup program that hands listener connections to the proxy.
pub const STEER_PROGRAM_NAME: &str = "sk_lookup_steer";

struct Attachment {
    interface: String,
    link: aya::programs::xdp::XdpLinkId,
}

/// Which diagnostic events of the kernel programs reach the daemon's log
/// (aya-log); `Off` compiles them out at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfLog {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl EbpfLog {
    /// The `log` filter that lets these events through.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            EbpfLog::Off => log::LevelFilter::Off,
            EbpfLog::Error => log::LevelFilter::Error,
            EbpfLog::Warn => log::LevelFilter::Warn,
            EbpfLog::Info => log::LevelFilter::Info,
            EbpfLog::Debug => log::LevelFilter::Debug,
            EbpfLog::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The kernel programs' diagnostic events, for the daemon to forward to its log.
pub type EventLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

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
    /// relies on exists. Maps and links belong to this process.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_logging(EbpfLog::Off)
    }

    /// [`Dataplane::load`] with the kernel programs' diagnostic events on
    /// at `log` (for the benchmark of their cost).
    pub fn load_logging(log: EbpfLog) -> Result<Self, DataplaneError> {
        let ebpf = load_object(None, log)?;
        Ok(Dataplane {
            ebpf,
            attached: None,
            ports: BTreeMap::new(),
            pins: None,
            pinned_interface: None,
            fresh_pins: false,
            rebuild_fronts: false,
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
        let ebpf = match load_object(Some(&dir), log) {
            Ok(ebpf) => ebpf,
            Err(err) => {
                log::warn!(
                    "the pinned maps in {} do not fit this build ({err}); replacing them",
                    dir.display()
                );
                remove_pins(&dir, false);
                load_object(Some(&dir), log)?
            }
        };
        let mut dataplane = Dataplane {
            ebpf,
            attached: None,
            ports: BTreeMap::new(),
            pins: Some(dir),
            pinned_interface: None,
            fresh_pins,
            rebuild_fronts,
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
        dataplane.ports = crate::plan::ports_of(listeners.iter().filter_map(Result::ok));
        Ok(dataplane)
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
            .chain([STEER_PROGRAM_NAME, GUARD_PROGRAM_NAME])
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
        // Before any write: a plan the tables cannot hold changes nothing
        // (`compile::plan` refuses it first; this keeps the maps whole
        // whatever hands a plan in).
        let kernel_hosts = plan.kernel_hosts();
        if kernel_hosts.len() > MAX_HOSTS as usize {
            return Err(DataplaneError::TooManyHosts {
                count: kernel_hosts.len(),
                max: MAX_HOSTS as usize,
            });
        }
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
        self.sync_local_addrs(&local)?;
        let hosts: BTreeMap<HostKey, HostValue> =
            kernel_hosts.iter().map(|h| (h.key(), h.value())).collect();
        self.sync_hosts(&hosts)?;
        self.rebuild_fronts = false;

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
        self.sync_around(name, wanted, |_, _| Ok(()))
    }

    /// [`Dataplane::sync`], with `front` run between the hash map's new
    /// and changed entries and its removals: it writes the array in front
    /// of the map from the changes, so the front never names an entry
    /// the map lacks while the front may overflow into it.
    fn sync_around<K: Pod + Ord, V: Pod + PartialEq>(
        &mut self,
        name: &'static str,
        wanted: &BTreeMap<K, V>,
        front: impl FnOnce(&mut Ebpf, &Changes<'_, K, V>) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let error = |source| DataplaneError::Map { name, source };
        let mut table: HashMap<&mut MapData, K, V> = map(&mut self.ebpf, name)?;
        let current: BTreeMap<K, V> = table.iter().filter_map(Result::ok).collect();
        let changes = diff(&current, wanted);
        for (key, value) in &changes.upserts {
            table.insert(*key, *value, 0).map_err(error)?;
        }
        front(&mut self.ebpf, &changes)?;
        let mut table: HashMap<&mut MapData, K, V> = map(&mut self.ebpf, name)?;
        for key in changes.removals {
            table.remove(key).map_err(error)?;
        }
        Ok(())
    }

    /// Makes `HOSTS` hold exactly `wanted` and `HOST_BUCKETS` agree with it.
    fn sync_hosts(&mut self, wanted: &BTreeMap<HostKey, HostValue>) -> Result<(), DataplaneError> {
        let rebuild = self.rebuild_fronts;
        self.sync_around(map_names::HOSTS, wanted, |ebpf, changes| {
            let error = |source| DataplaneError::Map {
                name: map_names::HOST_BUCKETS,
                source,
            };
            let mut buckets: Array<&mut MapData, HostBucket> = map(ebpf, map_names::HOST_BUCKETS)?;
            // A bucket that cannot be read is an error, not an empty bucket:
            // rewriting it from the changes alone would drop its other keys.
            let writes = fronts::bucket_writes(changes, wanted, rebuild, |index| {
                buckets.get(&index, 0).map_err(error)
            })?;
            for (index, bucket) in writes {
                buckets.set(index, bucket, 0).map_err(error)?;
            }
            Ok(())
        })
    }

    /// Makes `LOCAL_ADDRS` hold exactly `wanted` and `LOCAL_ADDR_LIST`
    /// agree with it.
    fn sync_local_addrs(
        &mut self,
        wanted: &BTreeMap<[u8; 16], LocalAddrValue>,
    ) -> Result<(), DataplaneError> {
        let rebuild = self.rebuild_fronts;
        self.sync_around(map_names::LOCAL_ADDRS, wanted, |ebpf, changes| {
            let error = |source| DataplaneError::Map {
                name: map_names::LOCAL_ADDR_LIST,
                source,
            };
            let mut list: Array<&mut MapData, LocalAddrList> =
                map(ebpf, map_names::LOCAL_ADDR_LIST)?;
            let old = list.get(&0, 0).map_err(error)?;
            for value in fronts::list_writes(old, changes, wanted, rebuild) {
                list.set(0, value, 0).map_err(error)?;
            }
            Ok(())
        })
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

    /// Puts the proxy's listening sockets in their `PROXY_SOCKETS` slots
    /// (`gateway_common::proxy_socket_slot`), where the socket-lookup
    /// program hands listener connections; slots with no socket (no IPv6
    /// on the host) are cleared, so their connections are refused.
    pub fn set_proxy_sockets(
        &mut self,
        sockets: &[(u32, std::os::fd::BorrowedFd<'_>)],
    ) -> Result<(), DataplaneError> {
        let mut map: SockMap<&mut MapData> = map(&mut self.ebpf, map_names::PROXY_SOCKETS)?;
        let error = |source| DataplaneError::Map {
            name: map_names::PROXY_SOCKETS,
            source,
        };
        for slot in 0..PROXY_SOCKET_SLOTS {
            match sockets.iter().find(|(s, _)| *s == slot) {
                Some((_, fd)) => map.set(slot, fd, 0).map_err(error)?,
                None => match map.clear_index(&slot) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(source) => return Err(error(source)),
                },
            }
        }
        Ok(())
    }

    /// Captures the outbound TCP connections arriving on `ifindexes` for
    /// the egress proxy, except to `excludes` (`EGRESS_IFACES`,
    /// `EGRESS_EXCLUDE`; the routing side is `egress::Capture`).
    pub fn set_egress(
        &mut self,
        ifindexes: &[u32],
        excludes: &[crate::egress::Cidr],
    ) -> Result<(), DataplaneError> {
        let mut ifaces: HashMap<&mut MapData, u32, u32> =
            map(&mut self.ebpf, map_names::EGRESS_IFACES)?;
        for index in ifindexes {
            ifaces
                .insert(index, 1, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::EGRESS_IFACES,
                    source,
                })?;
        }
        let mut trie: aya::maps::lpm_trie::LpmTrie<&mut MapData, [u8; 16], u8> =
            map(&mut self.ebpf, map_names::EGRESS_EXCLUDE)?;
        for cidr in excludes {
            // IPv4 is stored mapped (`::ffff:a.b.c.d`): 96 bits in front.
            let prefix = match cidr.addr {
                std::net::IpAddr::V4(_) => u32::from(cidr.prefix) + 96,
                std::net::IpAddr::V6(_) => u32::from(cidr.prefix),
            };
            let key = aya::maps::lpm_trie::Key::new(prefix, addr_key(cidr.addr));
            trie.insert(&key, 1, 0)
                .map_err(|source| DataplaneError::Map {
                    name: map_names::EGRESS_EXCLUDE,
                    source,
                })?;
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
        if let Some(dir) = self.pins.clone() {
            let path = dir.join(pins::STEER_LINK);
            let program = steering_program(&mut self.ebpf)?;
            if adopt_link(
                &path,
                program.fd().map_err(link_error("sk_lookup"))?.as_fd(),
            )? {
                return Ok(());
            }
            return self.attach_steering_pinned(netns, &path);
        }
        steering_program(&mut self.ebpf)?
            .attach(netns)
            .map_err(|source| DataplaneError::AttachSteering {
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Attaches the socket-lookup program to `netns` with a new link
    /// pinned at `path`.
    fn attach_steering_pinned(
        &mut self,
        netns: std::fs::File,
        path: &Path,
    ) -> Result<(), DataplaneError> {
        let program = steering_program(&mut self.ebpf)?;
        let link_id = program
            .attach(netns)
            .map_err(|source| DataplaneError::AttachSteering {
                source: Box::new(source),
            })?;
        let link = program
            .take_link(link_id)
            .map_err(link_error("sk_lookup"))?;
        FdLink::from(link)
            .pin(path)
            .map_err(link_error("sk_lookup"))?;
        Ok(())
    }

    /// Attaches the program to `interface`. Fails if any XDP program is
    /// already attached there (another instance, or a stale attachment),
    /// except, in pinned mode, the link a previous daemon pinned, whose
    /// program is replaced with this one atomically.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let xdp_mode = match mode {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        self.xdp_mode = xdp_mode;
        if let Some(dir) = self.pins.clone() {
            let path = dir.join(pins::XDP_LINK);
            let program = xdp_program(&mut self.ebpf)?;
            if !adopt_link(&path, program.fd().map_err(link_error("XDP"))?.as_fd())? {
                self.attach_xdp_pinned(interface, &path)?;
            }
            self.pinned_interface = Some(interface.to_string());
            return Ok(());
        }
        let link = xdp_program(&mut self.ebpf)?
            .attach(interface, xdp_mode)
            .map_err(|source| DataplaneError::from_attach(interface, source))?;
        self.attached = Some(Attachment {
            interface: interface.to_string(),
            link,
        });
        Ok(())
    }

    /// Attaches XDP to `interface` with a new link pinned at `path`.
    fn attach_xdp_pinned(&mut self, interface: &str, path: &Path) -> Result<(), DataplaneError> {
        let program = xdp_program(&mut self.ebpf)?;
        let link_id = program
            .attach(interface, self.xdp_mode)
            .map_err(|source| DataplaneError::from_attach(interface, source))?;
        let link = program.take_link(link_id).map_err(link_error("XDP"))?;
        let link = FdLink::try_from(link).map_err(link_error("XDP"))?;
        link.pin(path).map_err(link_error("XDP"))?;
        Ok(())
    }

    /// In pinned mode, once attached: holds a descriptor of every pinned
    /// map and link, so that the links stay attached (and [`Self::repair`]
    /// can pin them again) whatever happens to the pin directory.
    pub fn hold_pins(&mut self) -> Result<(), DataplaneError> {
        let (Some(dir), Some(interface)) = (&self.pins, &self.pinned_interface) else {
            return Ok(());
        };
        let held = pins::HeldPins::hold(interface, dir).map_err(|source| DataplaneError::Pins {
            path: dir.clone(),
            source,
        })?;
        self.held = Some(held);
        Ok(())
    }

    /// Puts back what was taken from under the daemon: a link detached
    /// from outside is attached again (a new link, pinned in its place),
    /// and pins removed from the bpffs are pinned again. Cheap enough to
    /// run every second: one `stat` of the pin directory's entries and
    /// one info query per link.
    pub fn repair(&mut self) -> Result<Repair, DataplaneError> {
        let mut repair = Repair::default();
        let (Some(held), Some(interface)) = (&self.held, self.pinned_interface.clone()) else {
            return Ok(repair);
        };
        let attached = |name: &str| {
            held.get(name)
                .is_none_or(|fd| pins::link_attached(fd).unwrap_or(true))
        };
        let xdp_lost = !attached(pins::XDP_LINK);
        let steering_lost = !attached(pins::STEER_LINK);
        if xdp_lost || steering_lost {
            let dir = pins::pin_dir(&interface)?;
            if xdp_lost {
                self.reattach(&dir, pins::XDP_LINK, |dataplane, path| {
                    dataplane.attach_xdp_pinned(&interface, path)
                })?;
                repair.reattached.push("XDP");
            }
            if steering_lost {
                self.reattach(&dir, pins::STEER_LINK, |dataplane, path| {
                    let netns = std::fs::File::open("/proc/self/ns/net").map_err(|source| {
                        DataplaneError::AttachSteering {
                            source: Box::new(source),
                        }
                    })?;
                    dataplane.attach_steering_pinned(netns, path)
                })?;
                repair.reattached.push("sk_lookup");
            }
        }
        if let Some(held) = &self.held {
            repair.pins_restored = held.restore()?;
        }
        Ok(repair)
    }

    /// Replaces the defunct link pinned as `link` in `dir`: `attach` makes
    /// a new one pinned at its path, which the daemon then holds.
    fn reattach(
        &mut self,
        dir: &Path,
        link: &str,
        attach: impl FnOnce(&mut Self, &Path) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let path = dir.join(link);
        let _ = std::fs::remove_file(&path);
        attach(self, &path)?;
        let fd = pins::object_get(&path).map_err(|source| DataplaneError::Pins {
            path: path.clone(),
            source,
        })?;
        if let Some(held) = self.held.as_mut() {
            held.replace(link, fd);
        }
        Ok(())
    }

    /// The maps' locked kernel memory, read again at each
    /// [`pins::Memlock::bytes`]: through the descriptors the daemon holds
    /// once attached, else through the pins; `None` for a process-owned load.
    pub fn memlock(&self) -> Option<std::io::Result<pins::Memlock>> {
        match (&self.held, &self.pins) {
            (Some(held), _) => Some(held.memlock()),
            (None, Some(dir)) => Some(pins::Memlock::of_pins(dir)),
            (None, None) => None,
        }
    }

    /// Whether the maps and links are pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_deref()
    }

    /// Detaches from the interface; dropping a process-owned `Dataplane`
    /// does the same. In pinned mode, `keep_attached` leaves the links and
    /// maps pinned (XDP keeps filtering; with no proxy socket, listener
    /// connections are refused); otherwise links and pins are removed.
    pub fn detach(&mut self, keep_attached: bool) -> Result<Option<String>, DataplaneError> {
        // Without the descriptors, the pins are all that holds the links.
        self.held = None;
        if let Some(dir) = &self.pins {
            if keep_attached {
                return Ok(None);
            }
            remove_pins(dir, true);
            return Ok(self.pinned_interface.take());
        }
        let Some(attachment) = self.attached.take() else {
            return Ok(None);
        };
        let program = xdp_program(&mut self.ebpf)?;
        program
            .detach(attachment.link)
            .map_err(|source| DataplaneError::Detach { source })?;
        Ok(Some(attachment.interface))
    }

    /// Takes the reader of the kernel programs' diagnostic events (the
    /// daemon polls it); only when loaded with logging on.
    pub fn take_event_logger(&mut self) -> Option<EventLogger> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
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
    /// The counter maps a daemon pinned in `dir` (`pins::pin_dir`), read
    /// without the daemon: `gateway stats`.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        let open = |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, DataplaneError> {
            let data = MapData::from_pin(pins::map_path(dir, name))
                .map_err(|source| DataplaneError::Map { name, source })?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
                .map_err(|source| DataplaneError::Map { name, source })
        };
        Ok(StatsReader {
            reasons: open(map_names::REASON_STATS)?,
            listeners: open(map_names::LISTENER_STATS)?,
            hosts: open(map_names::HOST_STATS)?,
            host_classes: open(map_names::HOST_CLASS_STATS)?,
            resets: open(map_names::HOST_RESETS)?,
        })
    }

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
    egress::load_guard(&mut ebpf)?;
    Ok(ebpf)
}

/// Points the link pinned at `path`, if there is one, at `program`;
/// returns whether there was one.
fn adopt_link(path: &Path, program: std::os::fd::BorrowedFd<'_>) -> Result<bool, DataplaneError> {
    if !path.exists() {
        return Ok(false);
    }
    let link = pins::object_get(path).map_err(|source| DataplaneError::Pins {
        path: path.to_path_buf(),
        source,
    })?;
    pins::link_update(link.as_fd(), program).map_err(|source| DataplaneError::Pins {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Removes the pinned maps in `dir`, and with `links` the pinned links
/// (which detaches them, as nothing else holds them) and the directory.
fn remove_pins(dir: &Path, links: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_link = name.to_string_lossy().starts_with("link_");
        if links || !is_link {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if links {
        let _ = std::fs::remove_dir(dir);
    }
}

fn link_error<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl Fn(E) -> DataplaneError {
    move |source| DataplaneError::Link {
        what,
        source: Box::new(source),
    }
}

/// Loads the socket-lookup program (attached later, by `attach_steering`).
fn load_steering(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    steering_program(ebpf)?
        .load()
        .map_err(DataplaneError::from_load)
}

fn steering_program(ebpf: &mut Ebpf) -> Result<&mut SkLookup, DataplaneError> {
    ebpf.program_mut(STEER_PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram {
            name: STEER_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
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
