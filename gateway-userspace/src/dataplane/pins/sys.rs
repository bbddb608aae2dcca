//! The `bpf()` calls aya does not make for us: pinning and opening pinned
//! objects, and updating and inspecting links, by hand-built `bpf_attr`s.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

/// `path` as the C string the syscalls take.
pub(super) fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// `bpf(cmd, attr, size of attr)`: the call's non-negative result, or
/// its error.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` takes, zero-padded,
/// and every pointer in it valid for the call.
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the kernel reads `size_of::<T>()` bytes.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Replaces the program of an existing link with `program`, atomically
/// (`BPF_LINK_UPDATE`): the adopted links of a restarted daemon run its
/// programs from the next packet on, with no moment without one.
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
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
        info_len: size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
        pad: [0; 14],
    };
    // SAFETY: `attr` is a valid `bpf_attr` member; `info` is writable for
    // the length given and outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    Ok(info.target != 0)
}
