//! Pinned state: the maps and links of a daemon live in a bpffs of its
//! own, so they outlive the process. `kill -9` leaves XDP filtering and
//! steering in place (with no proxy socket, listener connections are
//! refused), `bpftool map dump pinned ...` and `gateway stats` read the
//! maps, and a restarted daemon adopts them instead of failing with
//! "already attached".
//!
//! The bpffs is mounted at `/run/gateway/bpf`, not `/sys/fs/bpf`: `ip netns
//! exec` remounts `/sys`, and pins there would vanish inside it. One
//! directory per network namespace and interface.
mod memlock;
mod mount;
mod sys;

use std::{
    io,
    os::{fd::BorrowedFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use self::mount::{bpffs_root, ensure_bpffs, is_bpffs};
pub use self::{
    memlock::{Memlock, human_bytes},
    mount::prepare_outer_bpffs,
    sys::{link_attached, link_update, object_get, object_pin},
};
use super::DataplaneError;

/// Where the daemon's bpffs is mounted.
pub const BPFFS: &str = "/run/gateway/bpf";
/// Where the daemons' pid files and counter layouts are, beside the bpffs.
pub use crate::pidfile::RUN_DIR;
/// The pinned XDP link, in a pin directory.
pub const XDP_LINK: &str = "link_xdp";
/// The pinned socket-lookup link, in a pin directory.
pub const STEER_LINK: &str = "link_sk_lookup";

/// The pin directory of the daemon on `interface` in this network
/// namespace, with the bpffs mounted and the directory made if needed.
pub fn pin_dir(interface: &str) -> Result<PathBuf, DataplaneError> {
    let root = bpffs_root();
    let error = |source: io::Error| DataplaneError::Pins {
        path: PathBuf::from(BPFFS),
        source,
    };
    if root == Path::new(BPFFS) {
        ensure_bpffs().map_err(error)?;
    }
    let netns = std::fs::metadata("/proc/self/ns/net").map_err(error)?;
    let dir = root.join(format!("{}-{interface}", netns.ino()));
    std::fs::create_dir_all(&dir).map_err(|source| DataplaneError::Pins {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// The pin directory of the daemon on `interface` in this network
/// namespace, if one exists; mounts nothing.
pub fn existing_pin_dir(interface: &str) -> Option<PathBuf> {
    let netns = std::fs::metadata("/proc/self/ns/net").ok()?;
    let dir = bpffs_root().join(format!("{}-{interface}", netns.ino()));
    dir.is_dir().then_some(dir)
}

/// Where the daemon on `interface` describes its counter slots
/// (`stats::Layout`), beside its pid file.
pub fn layout_path(interface: &str) -> Option<PathBuf> {
    let netns = std::fs::metadata("/proc/self/ns/net").ok()?;
    Some(layout_path_of(netns.ino(), interface))
}

/// [`layout_path`] of the daemon on `interface` in network namespace `netns`.
pub fn layout_path_of(netns: u64, interface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{netns}-{interface}.layout.json"))
}

/// Every directory in the bpffs (the pin sets, by name); none when no
/// bpffs is mounted.
pub(super) fn pin_dirs() -> io::Result<Vec<(String, PathBuf)>> {
    let root = bpffs_root();
    if !is_bpffs(&root).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Where a map named `name` is pinned in `dir`.
pub fn map_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("map_{name}"))
}

/// A descriptor of every object a daemon pinned (maps and links). The
/// descriptors, not the pins, keep the links attached: removing the pin
/// directory (a clean-up job, a tmpfiles rule, an unmount) takes nothing
/// away from the running daemon, which pins everything again.
pub struct HeldPins {
    interface: String,
    objects: Vec<(std::ffi::OsString, std::os::fd::OwnedFd)>,
}

impl HeldPins {
    /// Opens every object pinned in `dir`, the pin directory of the daemon on `interface`.
    pub fn hold(interface: &str, dir: &Path) -> io::Result<Self> {
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            objects.push((entry.file_name(), object_get(&entry.path())?));
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            interface: interface.to_string(),
            objects,
        })
    }

    /// The held maps, for their locked kernel memory.
    pub fn memlock(&self) -> io::Result<Memlock> {
        let maps = self
            .objects
            .iter()
            .filter(|(name, _)| name.to_string_lossy().starts_with("map_"))
            .map(|(_, fd)| fd.try_clone())
            .collect::<io::Result<_>>()?;
        Ok(Memlock { maps })
    }

    /// The descriptor held for the object pinned as `name`.
    pub fn get(&self, name: &str) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        self.objects
            .iter()
            .find(|(held, _)| held == name)
            .map(|(_, fd)| fd.as_fd())
    }

    /// Holds `fd` as the object pinned as `name`, in place of any before.
    pub fn replace(&mut self, name: &str, fd: std::os::fd::OwnedFd) {
        self.objects.retain(|(held, _)| held != name);
        self.objects.push((name.into(), fd));
        self.objects.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// Pins again every held object whose pin is gone (the directory, and
    /// the bpffs, made again if need be); returns how many were.
    pub fn restore(&self) -> Result<usize, DataplaneError> {
        use std::os::fd::AsFd as _;
        let missing: Vec<_> = match existing_pin_dir(&self.interface) {
            Some(dir) => self
                .objects
                .iter()
                .filter(|(name, _)| !dir.join(name).exists())
                .collect(),
            None => self.objects.iter().collect(),
        };
        if missing.is_empty() {
            return Ok(0);
        }
        let dir = pin_dir(&self.interface)?;
        for (name, fd) in &missing {
            let path = dir.join(name);
            object_pin(fd.as_fd(), &path)
                .map_err(|source| DataplaneError::Pins { path, source })?;
        }
        Ok(missing.len())
    }
}

/// Removes the pinned maps in `dir`, and with `links` the pinned links
/// (which detaches them, as nothing else holds them) and the directory.
pub(super) fn remove_pins(dir: &Path, links: bool) {
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
