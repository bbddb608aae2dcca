//! Where a running daemon says who it is, so `gateway reload` can signal
//! it: `/run/gateway/<netns>-<interface>.pid`, one per network namespace
//! and interface (the same pair a second instance is refused on).
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where the daemons' run-time state is: the pid files, and beside them
/// the counter layouts and the bpffs of the pins (`dataplane::pins`).
pub const RUN_DIR: &str = "/run/gateway";

/// The directory of the pid files.
const DIR: &str = RUN_DIR;

/// Why `gateway reload` could not signal a daemon.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot tell which network namespace this is (/proc/self/ns/net)")]
    Namespace(#[source] io::Error),
    #[error(
        "no gateway is running on interface {interface} in this network namespace ({path} is missing)"
    )]
    NotRunning { interface: String, path: PathBuf },
    #[error("{path} does not hold a process id")]
    Malformed { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot signal the gateway (process {pid})")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// The pid file of the daemon on `interface` in this network namespace.
pub fn path(interface: &str) -> Result<PathBuf, PidFileError> {
    let netns = fs::metadata("/proc/self/ns/net").map_err(PidFileError::Namespace)?;
    Ok(path_of(netns.ino(), interface))
}

/// The pid file of the daemon on `interface` in network namespace `netns`.
pub fn path_of(netns: u64, interface: &str) -> PathBuf {
    Path::new(DIR).join(format!("{netns}-{interface}.pid"))
}

/// The daemon's pid file, removed when dropped.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id for `interface`.
    pub fn create(interface: &str) -> Result<Self, PidFileError> {
        let path = path(interface)?;
        let write = || -> io::Result<()> {
            fs::create_dir_all(DIR)?;
            fs::write(&path, format!("{}\n", std::process::id()))
        };
        write().map_err(|source| PidFileError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The process id of a live daemon on `interface` in this network
/// namespace other than this process, if its pid file names one.
pub fn running(interface: &str) -> Option<i32> {
    let text = fs::read_to_string(path(interface).ok()?).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|pid| *pid > 0)?;
    (pid != std::process::id() as i32 && alive(pid)).then_some(pid)
}

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Sends SIGHUP (reload the configuration) to the daemon on `interface`
/// in this network namespace; returns its process id.
pub fn signal_reload(interface: &str) -> Result<i32, PidFileError> {
    let path = path(interface)?;
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(PidFileError::NotRunning {
                interface: interface.to_string(),
                path,
            });
        }
        Err(source) => return Err(PidFileError::Read { path, source }),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| PidFileError::Malformed { path: path.clone() })?;
    send_hangup(pid).map_err(|source| PidFileError::Signal { pid, source })?;
    Ok(pid)
}

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
fn send_hangup(pid: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
