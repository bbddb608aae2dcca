//! Mounting the daemon's bpffs: at [`BPFFS`] in this mount namespace, or,
//! under `ip netns exec`, in the outer one so the pins outlive the process.
use std::{
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use super::{BPFFS, sys::c_path};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts a bpffs at [`BPFFS`] in this mount namespace unless one is there.
pub(super) fn ensure_bpffs() -> io::Result<()> {
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
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
#[allow(
    trivial_numeric_casts,
    reason = "statfs's f_type is i64 here but narrower on other architectures"
)]
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
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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
