//! Pin sets nobody can adopt. A daemon killed outright leaves its pins
//! (`pins.rs`) for the next one on the same interface and network
//! namespace; once that interface or namespace is gone, no daemon ever
//! will, and the maps hold their locked kernel memory until reboot. Such
//! sets are found here and removed: by `gateway run` at start, and by
//! `gateway prune-pins`.
//!
//! The decision ([`judge`]) is pure, over what was found alive
//! ([`Live`]); [`survey`] gathers that. A set is kept whenever anything
//! says it may still be used: a running daemon names it, its XDP link is
//! attached (to an interface perhaps renamed since), its steering link is
//! attached (its namespace lives, found or not), or its interface exists.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::{DataplaneError, pins};

/// One pin set: the pins of the daemon on `interface` in the network
/// namespace whose inode is `netns` (the directory `<netns>-<interface>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinSet {
    pub netns: u64,
    pub interface: String,
}

impl PinSet {
    /// The set a pin directory's name stands for; `None` for a name that
    /// is not `<inode>-<interface>`.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (netns, interface) = name.split_once('-')?;
        if interface.is_empty() || !netns.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            netns: netns.parse().ok()?,
            interface: interface.to_string(),
        })
    }

    /// The pin directory's name.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.netns, self.interface)
    }

    /// The pin directory, as the host sees it.
    pub fn path(&self) -> PathBuf {
        Path::new(pins::BPFFS).join(self.dir_name())
    }
}

/// What was found alive, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Every network namespace found, by inode, with those of the sets'
    /// interfaces that exist in it; `None` when it could not be entered.
    pub namespaces: BTreeMap<u64, Option<BTreeSet<String>>>,
    /// Sets whose pid file names a running process in their namespace.
    pub daemons: BTreeMap<PinSet, u32>,
    /// Sets whose XDP link is attached to an interface.
    pub xdp_attached: BTreeSet<PinSet>,
    /// Sets whose steering (sk_lookup) link is attached to a namespace.
    pub steering_attached: BTreeSet<PinSet>,
}

/// Whether a set is kept or removed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A daemon that is running names it in its pid file.
    HeldByDaemon { pid: u32 },
    /// Its XDP link is still attached: the interface exists, under this
    /// name or another.
    XdpAttached,
    /// The namespace is alive (its steering link is attached to it) but no
    /// process or mount here leads to it, so its interfaces cannot be
    /// checked.
    NamespaceUnreachable,
    /// The namespace exists but could not be entered to check it.
    NamespaceUnreadable,
    /// The interface exists: a daemon started on it adopts the set.
    InterfaceExists,
    /// Orphaned: no network namespace with the set's inode exists.
    NamespaceGone,
    /// Orphaned: the namespace has no interface with the set's name.
    InterfaceGone,
}

impl Verdict {
    /// Whether nothing can ever adopt the set.
    pub fn is_orphaned(&self) -> bool {
        matches!(self, Self::NamespaceGone | Self::InterfaceGone)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeldByDaemon { pid } => write!(f, "a running gateway (process {pid}) holds it"),
            Self::XdpAttached => f.write_str("its XDP link is still attached to an interface"),
            Self::NamespaceUnreachable => f.write_str(
                "its namespace is alive (its steering link is attached) but no process or mount here leads to it",
            ),
            Self::NamespaceUnreadable => {
                f.write_str("its namespace exists but could not be entered to check the interface")
            }
            Self::InterfaceExists => {
                f.write_str("the interface exists; a gateway started on it adopts the pins")
            }
            Self::NamespaceGone => f.write_str("its network namespace no longer exists"),
            Self::InterfaceGone => {
                f.write_str("its network namespace no longer has an interface of that name")
            }
        }
    }
}

/// What to do with `set`, given what is `live`.
pub fn judge(set: &PinSet, live: &Live) -> Verdict {
    if let Some(pid) = live.daemons.get(set) {
        return Verdict::HeldByDaemon { pid: *pid };
    }
    if live.xdp_attached.contains(set) {
        return Verdict::XdpAttached;
    }
    match live.namespaces.get(&set.netns) {
        None if live.steering_attached.contains(set) => Verdict::NamespaceUnreachable,
        None => Verdict::NamespaceGone,
        Some(None) => Verdict::NamespaceUnreadable,
        Some(Some(present)) if present.contains(&set.interface) => Verdict::InterfaceExists,
        Some(Some(_)) => Verdict::InterfaceGone,
    }
}

/// One pin set found in the bpffs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surveyed {
    pub set: PinSet,
    pub dir: PathBuf,
    pub verdict: Verdict,
    /// The locked kernel memory of its maps, if it could be read.
    pub memlock: Option<u64>,
}

/// Every pin set in the bpffs, judged.
pub fn survey() -> Result<Vec<Surveyed>, DataplaneError> {
    let dirs = pins::pin_dirs().map_err(|source| DataplaneError::Pins {
        path: PathBuf::from(pins::BPFFS),
        source,
    })?;
    let sets: Vec<(PinSet, PathBuf)> = dirs
        .into_iter()
        .filter_map(|(name, dir)| Some((PinSet::from_dir_name(&name)?, dir)))
        .collect();
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let mut live = Live::default();
    for (set, dir) in &sets {
        if let Some(pid) = running_daemon(set) {
            live.daemons.insert(set.clone(), pid);
        }
        if link_attached(&dir.join(pins::XDP_LINK)) {
            live.xdp_attached.insert(set.clone());
        }
        if link_attached(&dir.join(pins::STEER_LINK)) {
            live.steering_attached.insert(set.clone());
        }
    }
    for (netns, paths) in namespaces() {
        let asked: BTreeSet<String> = sets
            .iter()
            .filter(|(set, _)| set.netns == netns)
            .map(|(set, _)| set.interface.clone())
            .collect();
        // Entered only when one of its sets asks.
        let present = if asked.is_empty() {
            Some(asked)
        } else {
            paths
                .iter()
                .find_map(|path| interfaces_present(path, &asked).ok())
        };
        live.namespaces.insert(netns, present);
    }
    Ok(sets
        .into_iter()
        .map(|(set, dir)| Surveyed {
            verdict: judge(&set, &live),
            memlock: pins::Memlock::of_pins(&dir)
                .and_then(|memlock| memlock.bytes())
                .ok(),
            set,
            dir,
        })
        .collect())
}

/// Removes an orphaned set: its pins (the links with them, which nothing
/// else holds) and directory, and the pid file and counter layout its
/// daemon left in [`pins::RUN_DIR`]. Does nothing to a set that is kept.
pub fn remove(surveyed: &Surveyed) -> Result<(), DataplaneError> {
    if !surveyed.verdict.is_orphaned() {
        return Ok(());
    }
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataplaneError::Pins { path, source }
    };
    let gone = |result: io::Result<()>| match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let dir = &surveyed.dir;
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(error(dir))?;
                gone(std::fs::remove_file(entry.path())).map_err(error(&entry.path()))?;
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(error(dir)(err)),
    }
    gone(std::fs::remove_dir(dir)).map_err(error(dir))?;
    let set = &surveyed.set;
    let layout = pins::layout_path_of(set.netns, &set.interface);
    for leftover in [
        crate::pidfile::path_of(set.netns, &set.interface),
        layout.with_extension("staged"),
        layout,
    ] {
        gone(std::fs::remove_file(&leftover)).map_err(error(&leftover))?;
    }
    Ok(())
}

/// A set surveyed, and, unless kept or a dry run, how its removal went.
pub struct Pruned {
    pub surveyed: Surveyed,
    pub removed: Option<Result<(), DataplaneError>>,
}

/// Surveys the pin sets and removes the orphaned ones (none with `dry_run`).
pub fn prune(dry_run: bool) -> Result<Vec<Pruned>, DataplaneError> {
    Ok(survey()?
        .into_iter()
        .map(|surveyed| {
            let removed = (surveyed.verdict.is_orphaned() && !dry_run).then(|| remove(&surveyed));
            Pruned { surveyed, removed }
        })
        .collect())
}

/// The process a set's pid file names, if it runs in the set's namespace
/// (a pid reused by an unrelated process elsewhere holds nothing).
fn running_daemon(set: &PinSet) -> Option<u32> {
    let path = crate::pidfile::path_of(set.netns, &set.interface);
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    (netns.ino() == set.netns).then_some(pid)
}

/// Whether the link pinned at `path` is attached; a missing pin is not,
/// and a link that cannot be asked is taken to be (kept, not removed).
fn link_attached(path: &Path) -> bool {
    match pins::object_get(path) {
        Ok(link) => pins::link_attached(std::os::fd::AsFd::as_fd(&link)).unwrap_or(true),
        Err(err) => err.kind() != io::ErrorKind::NotFound,
    }
}

/// Every network namespace reachable from here, by inode, with up to a
/// few paths that lead to it: the bind mounts of `ip netns add` (which
/// keep a namespace with no process), any other namespace mount, and
/// every process's namespace.
fn namespaces() -> BTreeMap<u64, Vec<PathBuf>> {
    const PATHS_PER_NAMESPACE: usize = 4;
    let mut found: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    // Every namespace file is on nsfs: a mount point whose bind mount is
    // gone is a plain file of another file system, and not a namespace.
    let Ok(nsfs) = std::fs::metadata("/proc/self/ns/net").map(|m| m.dev()) else {
        return found;
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            candidates.extend(entries.flatten().map(|entry| entry.path()));
        }
    }
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        candidates.extend(net_namespace_mounts(&mountinfo));
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        candidates.extend(
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
                .map(|entry| entry.path().join("ns/net")),
        );
    }
    for path in candidates {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.dev() != nsfs {
            continue;
        }
        let paths = found.entry(meta.ino()).or_default();
        if paths.len() < PATHS_PER_NAMESPACE {
            paths.push(path);
        }
    }
    found
}

/// The mount points of network namespaces in a `/proc/<pid>/mountinfo`.
fn net_namespace_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
            let nsfs = fields.get(separator + 1) == Some(&"nsfs");
            (nsfs && root.starts_with("net:[")).then(|| PathBuf::from(unescape_octal(mount_point)))
        })
        .collect()
}

/// mountinfo's escapes (`\040` for a space, `\134` for a backslash) undone.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .map(|d| (d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Those of `names` that are interfaces of the network namespace at
/// `namespace`. A short-lived thread enters the namespace (`setns` moves
/// only the calling thread) and asks `if_nametoindex`, whose socket is
/// made in the namespace the thread is in. Simpler than netlink, which
/// would need a socket in that namespace too, and then a dump to parse,
/// to answer a yes or no per name.
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
fn interfaces_present(namespace: &Path, names: &BTreeSet<String>) -> io::Result<BTreeSet<String>> {
    let file = std::fs::File::open(namespace)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) on a descriptor we own; it moves this
                // thread only, and the thread ends when the function does.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut present = BTreeSet::new();
                for name in names {
                    match nix::net::if_::if_nametoindex(name.as_str()) {
                        Ok(_) => {
                            present.insert(name.clone());
                        }
                        Err(nix::errno::Errno::ENODEV) => {}
                        Err(err) => return Err(io::Error::from(err)),
                    }
                }
                Ok(present)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace check panicked")))
    })
}

#[cfg(test)]
mod tests;
