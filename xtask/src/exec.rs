//! Running child processes with the command line shown and failures named.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A `cargo` command that builds the XDP program or fails (never silently
/// builds a gateway without it).
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).env("GATEWAY_REQUIRE_EBPF", "1");
    cmd
}

/// Runs `cmd` with inherited stdio; an error names the command and its status.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout if it succeeded.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `name` is an executable on PATH.
pub(crate) fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(name);
        std::fs::metadata(&candidate).is_ok_and(|m| m.is_file())
    })
}

/// Builds the `gateway` binary, in the release profile with `release`,
/// and returns its path (under `CARGO_TARGET_DIR`, else `root/target`).
pub(crate) fn build_gateway(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(["--package", "gateway-userspace", "--bin", "gateway"]);
    run(&mut cargo(&args))?;
    // A relative CARGO_TARGET_DIR is cargo's, from the same working directory.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("gateway"))
}

/// [`build_gateway`] in the release profile (the benchmarks' build).
pub(crate) fn build_release_gateway(root: &Path) -> anyhow::Result<PathBuf> {
    build_gateway(root, true)
}
