//! The only module that talks to the kernel's BPF side: loads the embedded
//! XDP object, applies a [`Plan`] to its maps as a diff, attaches it to an
//! interface and reads the counters. It never decides what is served.
mod attach;
mod capture;
mod diff;
mod error;
#[cfg(test)]
pub mod fake;
mod fronts;
mod guard;
mod load;
pub mod orphans;
pub mod pins;
pub mod refusal_log;
mod stats;
mod store;
pub mod sync;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use gateway_common::Settings;

pub use self::{
    capture::Capture,
    diff::{Changes, diff},
    error::DataplaneError,
    guard::{AllowedChange, EgressMaps, GUARD_PROGRAM_NAME, Workload, Workloads, key_addr},
    stats::{Stats, StatsReader},
    store::{EbpfStore, MapStore},
    sync::Synced,
};
use crate::plan::Plan;

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
    /// What the last `apply` wrote, besides the maps.
    synced: Synced,
    /// Where maps and links are pinned (`load_pinned`); `None` for a
    /// process-owned load (tests, benchmarks).
    pins: Option<PathBuf>,
    /// The interface XDP is attached to, in pinned mode.
    pinned_interface: Option<String>,
    /// The pins were made by this process, not adopted: a daemon that
    /// fails before attaching removes them again.
    fresh_pins: bool,
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
                pins::remove_pins(dir, true);
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
            Self::Off => log::LevelFilter::Off,
            Self::Error => log::LevelFilter::Error,
            Self::Warn => log::LevelFilter::Warn,
            Self::Info => log::LevelFilter::Info,
            Self::Debug => log::LevelFilter::Debug,
            Self::Trace => log::LevelFilter::Trace,
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
    /// The loaded program, for `BPF_PROG_TEST_RUN` in tests and benchmarks.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        attach::xdp_program(&mut self.ebpf)
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

    /// Makes the maps equal to `plan` as a diff, in the order
    /// [`sync`] describes.
    pub fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError> {
        sync::apply(
            &mut EbpfStore(&mut self.ebpf),
            &mut self.synced,
            plan,
            settings,
        )
    }

    /// Makes the management allow-list bitmap equal to `words` (the
    /// non-zero words, from `management::allowed_port_words`).
    pub fn set_allowed_ports(&mut self, words: &BTreeMap<u32, u64>) -> Result<(), DataplaneError> {
        sync::set_allowed_ports(&mut EbpfStore(&mut self.ebpf), words)
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

    /// Takes the reader of the kernel programs' diagnostic events (the
    /// daemon polls it); only when loaded with logging on.
    pub fn take_event_logger(&mut self) -> Option<EventLogger> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }
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
