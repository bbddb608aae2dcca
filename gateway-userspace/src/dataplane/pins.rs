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
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
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

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

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

/// Mounts a bpffs at [`BPFFS`] in this mount namespace unless one is there.
fn ensure_bpffs() -> io::Result<()> {
    std::fs::create_dir_all(BPFFS)?;
    // Two daemons starting at once must not both mount: the second mount
    // would hide the first one's pins.
    let _lock = lock(Path::new(BPFFS).with_extension("lock").as_path())?;
    if !is_bpffs(Path::new(BPFFS))? {
        mount_bpffs(Path::new(BPFFS))?;
    }
    Ok(())
}

/// Where [`BPFFS`] is reached from this process: the path itself, or,
/// after [`prepare_outer_bpffs`], a descriptor of the outer namespace's
/// mount (`/proc/self/fd/N`).
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub(super) fn bpffs_root() -> PathBuf {
    ROOT.get().cloned().unwrap_or_else(|| PathBuf::from(BPFFS))
}

/// An exclusive lock on `path` (created if missing), held until dropped.
#[allow(unsafe_code)]
fn lock(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock(2) on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
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

#[allow(unsafe_code)]
pub(super) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let path = c_path(path)?;
    // SAFETY: `stat` is a plain out-parameter, `path` a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts a bpffs at `path` in this process's mount namespace.
fn mount_bpffs(path: &Path) -> io::Result<()> {
    mount_here(path)
}

/// Mounts the bpffs in the mount namespace `ip netns exec` was run from,
/// when this process runs in the private one `ip netns exec` makes (to
/// remount `/sys`, and to bind `/etc/netns/NAME/*` over `/etc`) and no
/// bpffs is at [`BPFFS`] yet. A bpffs mounted in the private namespace,
/// with every pin in it, would die with the process; in the outer one
/// (the host's) it outlives it, and the next `ip netns exec` sees it. The
/// process enters the outer namespace only long enough to mount and to
/// open the mount, then returns, so its own `/etc` and `/sys` stay as
/// `ip netns exec` made them; pins go through the open descriptor. Must
/// run before the process starts threads (`setns` refuses otherwise).
/// Returns the process whose namespace holds the bpffs.
#[allow(unsafe_code)]
pub fn prepare_outer_bpffs() -> io::Result<Option<u32>> {
    if is_bpffs(Path::new(BPFFS)).unwrap_or(false) {
        return Ok(None);
    }
    let Some((pid, outer)) = outer_mount_namespace() else {
        return Ok(None);
    };
    let ours = std::fs::File::open("/proc/self/ns/mnt")?;
    let outer = std::fs::File::open(&outer)?;
    // SAFETY: valid namespace file descriptors; the process has one thread.
    if unsafe { libc::setns(outer.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let opened = ensure_bpffs().and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(BPFFS)
    });
    // SAFETY: as above; back to the namespace this process started in.
    if unsafe { libc::setns(ours.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let dir = opened?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(dir);
    let _ = ROOT.set(PathBuf::from(format!("/proc/self/fd/{fd}")));
    Ok(Some(pid))
}

/// `/proc/<pid>/ns/mnt` of the nearest ancestor in another mount
/// namespace than this process, if any can be read.
fn outer_mount_namespace() -> Option<(u32, PathBuf)> {
    let ours = std::fs::metadata("/proc/self/ns/mnt").ok()?.ino();
    let mut pid = std::process::id();
    for _ in 0..32 {
        pid = parent_of(pid)?;
        let ns = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        match std::fs::metadata(&ns) {
            Ok(meta) if meta.ino() != ours => return Some((pid, ns)),
            Ok(_) => {}
            Err(_) => return None,
        }
        if pid <= 1 {
            return None;
        }
    }
    None
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[allow(unsafe_code)]
fn mount_here(path: &Path) -> io::Result<()> {
    let target = c_path(path)?;
    let fstype = c"bpf";
    // SAFETY: valid C strings; no data argument.
    let ret = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// `bpf(cmd, attr, size of attr)`: the call's non-negative result, or
/// its error.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` takes, zero-padded,
/// and every pointer in it valid for the call.
#[allow(unsafe_code)]
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the kernel reads `size_of::<T>()` bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Replaces the program of an existing link with `program`, atomically
/// (`BPF_LINK_UPDATE`): the adopted links of a restarted daemon run its
/// programs from the next packet on, with no moment without one.
#[allow(unsafe_code)]
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    /// The `link_update` member of `union bpf_attr`, zero-padded.
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
        pad: [u64; 14],
    }
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
        pad: [0; 14],
    };
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` member.
    unsafe { bpf(BPF_LINK_UPDATE, &attr) }?;
    Ok(())
}

/// The member of `union bpf_attr` that `BPF_OBJ_PIN` and `BPF_OBJ_GET`
/// share, zero-padded.
#[repr(C)]
struct ObjPath {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    pad: [u64; 14],
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
#[allow(unsafe_code)]
pub fn object_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = c_path(path)?;
    let attr = ObjPath {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        pad: [0; 14],
    };
    // SAFETY: `attr` is a valid `bpf_attr` member and `path` outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &attr) }?;
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the object behind `fd` at `path` (`BPF_OBJ_PIN`).
#[allow(unsafe_code)]
pub fn object_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    let path = c_path(path)?;
    let attr = ObjPath {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        pad: [0; 14],
    };
    // SAFETY: `attr` is a valid `bpf_attr` member and `path` outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &attr) }?;
    Ok(())
}

/// Whether the link behind `fd` is still attached to its interface or
/// network namespace. A link detached from outside (`BPF_LINK_DETACH`,
/// the interface deleted) lives on, defunct, with its target cleared.
#[allow(unsafe_code)]
pub fn link_attached(fd: BorrowedFd<'_>) -> io::Result<bool> {
    /// The head of `struct bpf_link_info`: type, id, prog_id, then the
    /// union (8-byte aligned), whose first word is the target for XDP
    /// (`ifindex`), netns (`netns_ino`) and TCX links alike; zero once
    /// the link is detached.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        pad: u32,
        target: u32,
        rest: [u32; 27],
    }
    /// The `info` member of `union bpf_attr`, zero-padded.
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        pad: [u64; 14],
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = LinkInfo::default();
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
        pad: [0; 14],
    };
    // SAFETY: `attr` is a valid `bpf_attr` member; `info` is writable for
    // the length given and outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    Ok(info.target != 0)
}

/// The locked kernel memory of a set of BPF maps: what the kernel
/// charges them (`memlock` in their descriptors' fdinfo: the maps' own
/// memory, per-CPU ones once per possible CPU), which no process's RSS
/// shows. Read again at each [`Memlock::bytes`], since maps that allocate
/// per element (the LPM tries, for one) grow with their contents.
pub struct Memlock {
    maps: Vec<std::os::fd::OwnedFd>,
}

impl Memlock {
    /// Opens every map pinned in the pin directory `dir`.
    pub fn of_pins(dir: &Path) -> io::Result<Self> {
        let mut maps = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("map_") {
                maps.push(object_get(&entry.path())?);
            }
        }
        Ok(Memlock { maps })
    }

    /// The maps' locked kernel memory now, in bytes.
    pub fn bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for map in &self.maps {
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", map.as_raw_fd()))?;
            total += memlock_of_fdinfo(&fdinfo).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no memlock line in a map's fdinfo",
                )
            })?;
        }
        Ok(total)
    }
}

/// The `memlock:` figure of a BPF map's `/proc/<pid>/fdinfo/<fd>`.
fn memlock_of_fdinfo(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
}

/// `bytes` for people: `6.4 MiB`, `52.0 KiB`, `0 B`.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let value = bytes as f64;
    if value >= KIB * KIB {
        format!("{:.1} MiB", value / (KIB * KIB))
    } else if value >= KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{bytes} B")
    }
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
        Ok(HeldPins {
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
    pub fn restore(&self) -> Result<usize, super::DataplaneError> {
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
                .map_err(|source| super::DataplaneError::Pins { path, source })?;
        }
        Ok(missing.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_memlock_is_read_from_its_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t6\n\
                      key_size:\t4\nvalue_size:\t16\nmax_entries:\t1024\nmap_flags:\t0x0\n\
                      map_extra:\t0x0\nmemlock:\t41272\nmap_id:\t12\nfrozen:\t0\n";
        assert_eq!(memlock_of_fdinfo(fdinfo), Some(41272));
        // A link's fdinfo has none.
        assert_eq!(memlock_of_fdinfo("link_type:\txdp\nlink_id:\t3\n"), None);
    }

    #[test]
    fn sizes_are_said_in_binary_units() {
        assert_eq!(human_bytes(6_659_304), "6.4 MiB");
        assert_eq!(human_bytes(41_272), "40.3 KiB");
        assert_eq!(human_bytes(320), "320 B");
    }
}
