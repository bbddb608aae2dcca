//! `cargo xtask bench kubernetes [--quick]`: the Kubernetes-mode daemon at
//! scale against a real kube-apiserver (the one `cargo xtask test` builds
//! and caches), with the same configuration from files as the baseline.
//! Builds the release `gateway`, `kube-bench` (tests/src/bin/kube-bench.rs)
//! and `test-backend`, runs the bench, and writes its tables to
//! `target/bench-kubernetes.md` under a heading naming the commit (the
//! Kubernetes-mode daemon's log to `target/bench/kubernetes-daemon.log`).
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    exec::{self, cargo, run},
    kube_server, provision,
};

/// Options of `cargo xtask bench kubernetes`.
#[derive(clap::Args)]
pub(crate) struct KubeArgs {
    /// A tenth of every count (100 Gateways, 1,000 VirtualServices, 100
    /// Services) and 20 s quiet windows instead of 60 s: a quick check.
    #[arg(long)]
    quick: bool,
}

/// Provisions the API server, builds, runs the bench and writes its report.
pub(crate) fn kubernetes(root: &Path, args: &KubeArgs) -> anyhow::Result<()> {
    provision::debian_packages(&[("curl", "curl"), ("ip", "iproute2"), ("openssl", "openssl")])?;
    let apiserver = kube_server::provision()?;
    let gateway = exec::build_release_gateway(root)?;
    run(&mut cargo(&[
        "build",
        "--release",
        "--package",
        "gateway-tests",
        "--bin",
        "kube-bench",
        "--bin",
        "test-backend",
    ]))?;
    // The same directory as the release gateway (CARGO_TARGET_DIR or target/).
    let release = gateway
        .parent()
        .context("the release gateway has no directory")?;
    let scratch = root.join("target/bench");
    std::fs::create_dir_all(&scratch)?;
    let mut bench = Command::new(release.join("kube-bench"));
    if args.quick {
        bench.arg("--quick");
    }
    let bench = bench
        .env("GATEWAY_BIN", &gateway)
        .env("GATEWAY_KUBE_APISERVER", &apiserver)
        .env("GATEWAY_TEST_BACKEND", release.join("test-backend"))
        .env(
            "GATEWAY_BENCH_DAEMON_LOG",
            scratch.join("kubernetes-daemon.log"),
        )
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start kube-bench")?;
    let tables = String::from_utf8_lossy(&bench.stdout).into_owned();
    if !bench.status.success() {
        print!("{tables}");
        bail!("kube-bench failed ({})", bench.status);
    }
    let commit = exec::output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .map_or_else(|| "an unknown commit".to_string(), |c| c.trim().to_string());
    let dirty =
        exec::output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
            .is_some_and(|status| !status.trim().is_empty());
    let report = format!(
        "## `cargo xtask bench kubernetes{}` at {commit}{}\n\n{tables}",
        if args.quick { " --quick" } else { "" },
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
    );
    print!("{report}");
    let out = root.join("target/bench-kubernetes.md");
    std::fs::write(&out, report).with_context(|| format!("cannot write {}", out.display()))?;
    println!("(written to {})", out.display());
    Ok(())
}
