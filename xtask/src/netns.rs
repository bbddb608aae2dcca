//! The network namespaces the benchmarks and demos create: commands run
//! inside them, resolver files for them, and their removal (namespaces
//! and the `/etc/netns` files `ip netns exec` binds over `/etc/hosts`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::exec::run;

/// `ip -n NS ARGS...`, failing with the command named.
pub(crate) fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// A command run inside `ns` (`ip netns exec` execs it, so the child's pid
/// is the program's own).
pub(crate) fn exec(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    cmd
}

/// Where `ip netns exec` finds the files it binds for `ns`.
fn files(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

/// Makes `lines` the `/etc/hosts` of the processes started in `ns`.
pub(crate) fn write_hosts(ns: &str, lines: &str) -> std::io::Result<()> {
    fs::create_dir_all(files(ns))?;
    fs::write(files(ns).join("hosts"), lines)
}

/// Deletes `namespaces` and their `/etc/netns` files, whatever is left of
/// them (a run killed outright leaves them behind).
pub(crate) fn remove(namespaces: &[&str]) {
    for ns in namespaces {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(files(ns));
    }
    // Only if empty: other tools may keep their own namespaces' files there.
    let _ = fs::remove_dir("/etc/netns");
}
