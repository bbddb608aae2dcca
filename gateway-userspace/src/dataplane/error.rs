use std::io;

use aya::{maps::MapError, programs::ProgramError};

/// Why the kernel side could not be set up; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The binary was built without bpf-linker, so it carries no XDP object.
    #[error(
        "this binary was built without the XDP program (bpf-linker or the nightly toolchain was missing); rebuild with `cargo xtask run`, which installs them"
    )]
    NotBuilt,
    /// Loading needs CAP_BPF and CAP_NET_ADMIN.
    #[error("permission denied loading the XDP program: run the gateway as root")]
    PermissionDenied,
    /// The verifier or the kernel refused the object.
    #[error(
        "the kernel rejected the XDP program; this gateway needs Linux >= 5.10 with BPF and BTF enabled"
    )]
    KernelRejected {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object lacks a map the loader needs: a build mismatch.
    #[error("the XDP object has no map named {name}; rebuild the gateway")]
    MissingMap { name: &'static str },
    /// The plan names more server hosts than the kernel's host table holds.
    #[error(
        "the configuration has {count} server hosts over all listeners; the kernel's host table holds {max}"
    )]
    TooManyHosts { count: usize, max: usize },
    /// More AuthorizationPolicy entries than a policy trie holds.
    #[error(
        "the configuration has {count} AuthorizationPolicy entries for the kernel's {trie} trie; it holds {max}"
    )]
    TooManyPolicyEntries {
        trie: &'static str,
        count: usize,
        max: usize,
    },
    /// The object lacks the program: a build mismatch.
    #[error("the XDP object has no program named {name}; rebuild the gateway")]
    MissingProgram { name: &'static str },
    /// A program is not of the type the loader expects: a build mismatch.
    #[error("a program in the object is not of the expected type; rebuild the gateway")]
    WrongProgramType {
        #[source]
        source: ProgramError,
    },
    /// Reading or writing a map failed.
    #[error("map {name} operation failed")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// No interface with that name in this network namespace.
    #[error("no network interface named {interface:?} (see `ip link`)")]
    UnknownInterface { interface: String },
    /// Another XDP program is attached to the interface.
    #[error(
        "interface {interface} already has an XDP program attached (another gateway instance, or a stale one: `ip link set dev {interface} xdp off` removes it)"
    )]
    AlreadyAttached { interface: String },
    /// The driver does not support the requested mode.
    #[error("cannot attach XDP to {interface} in the requested mode; try `--xdp-mode generic`")]
    Attach {
        interface: String,
        #[source]
        source: ProgramError,
    },
    /// Attaching the socket-lookup program to the network namespace failed.
    #[error("cannot attach the socket-steering (sk_lookup) program to this network namespace")]
    AttachSteering {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The pin directory (a bpffs under /run) cannot be set up or used.
    #[error("cannot use the pinned state at {path}")]
    Pins {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// Pinning or adopting a link failed.
    #[error("cannot pin or adopt the {what} link")]
    Link {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Detaching failed.
    #[error("detaching the XDP program failed")]
    Detach {
        #[source]
        source: ProgramError,
    },
}

impl DataplaneError {
    /// Loading the object or the program failed: missing privilege, or the kernel said no.
    pub(super) fn from_load(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        // EPERM is a missing capability; the verifier rejects a program
        // with EACCES (or EINVAL), and its log is in the source chain.
        if io_errno(&err) == Some(libc::EPERM) {
            return Self::PermissionDenied;
        }
        Self::KernelRejected {
            source: Box::new(err),
        }
    }

    pub(super) fn from_attach(interface: &str, err: ProgramError) -> Self {
        match &err {
            ProgramError::UnknownInterface { .. } => Self::UnknownInterface {
                interface: interface.to_string(),
            },
            _ if io_errno(&err) == Some(libc::EBUSY) || io_errno(&err) == Some(libc::EEXIST) => {
                Self::AlreadyAttached {
                    interface: interface.to_string(),
                }
            }
            _ if is_permission_error(&err) => Self::PermissionDenied,
            _ => Self::Attach {
                interface: interface.to_string(),
                source: err,
            },
        }
    }
}

/// The errno of the first `io::Error` in the source chain.
fn io_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        current = e.source();
    }
    None
}

fn is_permission_error(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(io_errno(err), Some(libc::EPERM) | Some(libc::EACCES))
}
