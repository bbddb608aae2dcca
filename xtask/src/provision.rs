//! Installs what the build and tests need, and is quick when all is there.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::exec::{on_path, output, run};

/// bpf-linker release to install for each LLVM major of the nightly
/// toolchain. bpf-linker loads rustc's own LLVM, so the two majors must agree.
const BPF_LINKER_FOR_LLVM: &[(u32, &str)] = &[(22, "0.10.2")];

/// cargo-fuzz release installed for `cargo xtask fuzz`.
const CARGO_FUZZ: &str = "0.13.1";
/// cargo-mutants release installed for `cargo xtask mutants` (needs rustc >= 1.88).
const CARGO_MUTANTS: &str = "27.1.0";
/// cargo-deny release installed for `cargo xtask lint` (needs rustc >= 1.88).
const CARGO_DENY: &str = "0.20.2";

/// (command, Debian package) the `run` demo needs.
pub(crate) const RUN_PACKAGES: &[(&str, &str)] = &[("ip", "iproute2"), ("curl", "curl")];
/// (command, Debian package) the end-to-end tests need.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("curl", "curl"),
    ("ping", "iputils-ping"),
    ("openssl", "openssl"),
    // A real backend for one proxy scenario.
    ("nginx", "nginx-light"),
    // Debian's own Python (stdlib only) runs the TLS and websocket clients.
    ("/usr/bin/python3", "python3"),
    // Reads the pinned maps in the restart test, as an operator would.
    ("bpftool", "bpftool"),
    // `ss` lists the daemon's sockets (iproute2 too), `nsenter` is util-linux.
    ("ss", "iproute2"),
];

/// Toolchain and test packages.
pub(crate) fn all() -> anyhow::Result<()> {
    toolchain()?;
    debian_packages(TEST_PACKAGES)
}

/// The installed `nightly` with rust-src, and a matching bpf-linker.
pub(crate) fn toolchain() -> anyhow::Result<()> {
    let Some(version) = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
    else {
        bail!(
            "the `nightly` toolchain is not installed; the eBPF program needs it (install it with `rustup toolchain install nightly`)"
        );
    };
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        println!("== installing the nightly rust-src component (needed for -Z build-std)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let llvm =
        llvm_major(&version).context("cannot read the LLVM version from `rustc +nightly -vV`")?;
    let Some((_, pinned)) = BPF_LINKER_FOR_LLVM.iter().find(|(major, _)| *major == llvm) else {
        let known: Vec<String> = BPF_LINKER_FOR_LLVM
            .iter()
            .map(|(m, v)| format!("LLVM {m} -> bpf-linker {v}"))
            .collect();
        bail!(
            "nightly rustc uses LLVM {llvm}, but no bpf-linker version is pinned for it (known: {}); add one to BPF_LINKER_FOR_LLVM in xtask/src/provision.rs",
            known.join(", ")
        );
    };
    let current = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if current.trim() != format!("bpf-linker {pinned}") {
        println!(
            "== installing bpf-linker {pinned} for LLVM {llvm} (found: {:?}); takes a few minutes",
            current.trim()
        );
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{pinned}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

/// The pinned `cargo-fuzz`, installed if missing or of another version.
pub(crate) fn cargo_fuzz() -> anyhow::Result<()> {
    cargo_subcommand("fuzz", CARGO_FUZZ)
}

/// The pinned `cargo-mutants`, installed if missing or of another version.
pub(crate) fn cargo_mutants() -> anyhow::Result<()> {
    cargo_subcommand("mutants", CARGO_MUTANTS)
}

/// The pinned `cargo-deny`, installed if missing or of another version.
pub(crate) fn cargo_deny() -> anyhow::Result<()> {
    cargo_subcommand("deny", CARGO_DENY)
}

/// Installs `cargo-<name>@<version>` unless `cargo <name> --version` says it is there.
fn cargo_subcommand(name: &str, version: &str) -> anyhow::Result<()> {
    let current = output(Command::new("cargo").args([name, "--version"])).unwrap_or_default();
    if current.trim() != format!("cargo-{name} {version}") {
        println!(
            "== installing cargo-{name} {version} (found: {:?})",
            current.trim()
        );
        run(Command::new("cargo").args([
            "install",
            &format!("cargo-{name}@{version}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

/// Installs the Debian packages whose commands are missing.
pub(crate) fn debian_packages(needed: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| {
            // An absolute path is a file the package installs (a module, not a command).
            !if cmd.starts_with('/') {
                std::path::Path::new(cmd).exists()
            } else {
                on_path(cmd)
            }
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "missing commands; install these packages: {}",
            missing.join(" ")
        );
    }
    println!("== installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut install)
}

/// `LLVM version: 22.1.4` -> 22.
fn llvm_major(rustc_verbose_version: &str) -> Option<u32> {
    rustc_verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_is_read_from_rustc_verbose_version() {
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(text), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn every_pinned_llvm_major_is_unique() {
        let mut majors: Vec<u32> = BPF_LINKER_FOR_LLVM.iter().map(|(m, _)| *m).collect();
        majors.dedup();
        assert_eq!(majors.len(), BPF_LINKER_FOR_LLVM.len());
    }
}
