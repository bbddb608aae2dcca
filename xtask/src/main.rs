//! `cargo xtask <command>`: what cargo alone cannot express. Provisioning
//! the eBPF toolchain, running the gateway on a demo interface, and running
//! every test level (some need root and network namespaces).
mod bench;
mod bench_egress;
mod bench_flood;
mod bench_kube;
mod bench_memory;
mod bench_proxy;
mod code_map;
mod demo;
mod demo_egress;
mod docs;
mod exec;
mod kube_server;
mod layers;
mod mutants;
mod netns;
mod provision;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::exec::{cargo, run};

#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build, tests and lint need: nightly rust-src, a
    /// bpf-linker matching nightly's LLVM, the Debian packages the tests
    /// use, and cargo-deny.
    Setup,
    /// Provision, then build the gateway with its XDP program.
    Build,
    /// Build and run the gateway. Without arguments: serve the shipped
    /// example on a demo veth pair it creates and removes. Arguments after
    /// `--` go to `gateway run` instead.
    Run {
        /// The egress instance instead: a workload, the egress gateway
        /// capturing its outbound TCP and an outside dataengine.com, each
        /// in a network namespace the demo creates.
        #[arg(long, conflicts_with = "args")]
        egress: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build everything and run every test level: unit, BPF_PROG_TEST_RUN
    /// packet tests, netns end-to-end and proxy tests, hostile input and a
    /// fuzz smoke run (needs root).
    Test,
    /// `cargo fmt --check`, the layering check, `cargo deny` and clippy
    /// with `-D warnings` (host crates and the eBPF crate); docs/cli.md
    /// current, every `gateway` flag the documents name real, and every
    /// product file in ARCHITECTURE.md's code map.
    Lint,
    /// Check that gateway-userspace's top-level modules import each other
    /// only downwards, in the layer order of ARCHITECTURE.md, with no cycle.
    Layers,
    /// Write docs/cli.md from `gateway --help` and each subcommand's `--help`.
    Docs {
        /// Write nothing: check docs/cli.md is current, every flag the
        /// documents name exists, and ARCHITECTURE.md's code map names every
        /// product file and no missing one (what `cargo xtask lint` checks).
        #[arg(long)]
        check: bool,
    },
    /// Run every fuzz target on the committed corpus (installs cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Mutation testing (cargo-mutants) of the modules unit tests reach
    /// (the `FILES` list in xtask/src/mutants.rs). Needs no root.
    Mutants {
        /// Only mutants on lines changed since this git revision.
        #[arg(long, value_name = "BASE")]
        in_diff: Option<String>,
    },
    /// Benchmarks, reported against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Load, validate and compile a large generated Istio configuration.
    Config(bench::ConfigSize),
    /// Our gateway against nginx, HAProxy and Envoy on the same jobs (HTTP
    /// 301, TLS handshakes, proxying), interleaved, in network namespaces
    /// it creates (needs root; installs the contenders and load generators).
    Proxy(bench_proxy::ProxyArgs),
    /// ns/packet of the XDP classifier (BPF_PROG_TEST_RUN) on each path a
    /// packet can take, against a trivial XDP_PASS program in the same
    /// rounds (needs root).
    Xdp(XdpArgs),
    /// Reloads a running daemon to 1,000 listeners with 10,000 hosts and
    /// back under a client loop: time to compile and to update the maps,
    /// and failed requests (needs root).
    Reload,
    /// A workload's outbound HTTPS steered through the egress instance
    /// (TLS passthrough) against going direct and against a CONNECT proxy
    /// (tinyproxy): CPU per connection and throughput, in network
    /// namespaces it creates (needs root; installs tinyproxy, nginx, oha).
    Egress(bench_egress::EgressArgs),
    /// The Kubernetes mode at scale against a real kube-apiserver: 1,000
    /// Gateways, 10,000 VirtualServices and 1,000 Services created, the
    /// time to serve them, memory, edit latency against file mode, and
    /// the watches, requests and CPU of the steady state (needs root).
    Kubernetes(bench_kube::KubeArgs),
}

#[derive(clap::Args)]
struct XdpArgs {
    /// Runs of each program on each path per measurement (the kernel reports their mean).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Interleaved rounds, of the table and of the flood; each cell is the
    /// median (and range) over them.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// SYNs sent per flood measurement.
    #[arg(long, default_value_t = 1_000_000)]
    flood_packets: u64,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).context("cannot enter the workspace root")?;
    match Cli::parse().command {
        Command::Setup => {
            provision::all()?;
            provision::cargo_deny()
        }
        Command::Build => {
            provision::toolchain()?;
            build_gateway().map(|_| ())
        }
        Command::Run { egress, args } => {
            require_root(
                "cargo xtask run",
                "it attaches XDP and, by default, creates a demo interface",
            )?;
            provision::toolchain()?;
            provision::debian_packages(provision::RUN_PACKAGES)?;
            let gateway = build_gateway()?;
            if args.is_empty() {
                run(&mut cargo(&[
                    "build",
                    "--package",
                    "gateway-tests",
                    "--bin",
                    "test-backend",
                ]))?;
                let backend = workspace_root().join("target/debug/test-backend");
                if egress {
                    demo_egress::serve(&gateway, &backend)
                } else {
                    demo::serve(&gateway, &backend)
                }
            } else {
                let status = std::process::Command::new(&gateway)
                    .arg("run")
                    .args(&args)
                    .status()
                    .with_context(|| format!("cannot start {}", gateway.display()))?;
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Command::Test => test(),
        Command::Layers => layers::run(&root),
        Command::Docs { check: false } => docs::write(&root),
        Command::Docs { check: true } => docs::check(&root),
        Command::Lint => {
            provision::toolchain()?;
            provision::cargo_deny()?;
            lint()
        }
        Command::Fuzz { seconds } => {
            provision::toolchain()?;
            fuzz(&root, seconds)
        }
        Command::Mutants { in_diff } => mutants::run(in_diff.as_deref()),
        Command::Bench { which } => {
            provision::toolchain()?;
            match which {
                Bench::Config(size) => bench::config(&root, size),
                Bench::Proxy(args) => {
                    require_root(
                        "cargo xtask bench proxy",
                        "it creates network namespaces and attaches XDP programs",
                    )?;
                    bench_proxy::proxy(&root, args)
                }
                Bench::Xdp(args) => {
                    require_root("cargo xtask bench xdp", "it loads BPF programs")?;
                    bench_xdp(&root, &args)
                }
                Bench::Reload => {
                    require_root(
                        "cargo xtask bench reload",
                        "it creates network namespaces and attaches XDP programs",
                    )?;
                    bench_reload(&root)
                }
                Bench::Egress(args) => {
                    require_root(
                        "cargo xtask bench egress",
                        "it creates network namespaces and attaches XDP and steering programs",
                    )?;
                    bench_egress::egress(&root, &args)
                }
                Bench::Kubernetes(args) => {
                    require_root(
                        "cargo xtask bench kubernetes",
                        "it creates network namespaces and attaches XDP programs",
                    )?;
                    bench_kube::kubernetes(&root, &args)
                }
            }
        }
    }
}

/// Builds the XDP_PASS baseline and the release benchmark binary (with the
/// XDP object), runs it, and writes its table to `target/bench-xdp.md`.
fn bench_xdp(root: &Path, args: &XdpArgs) -> anyhow::Result<()> {
    provision::debian_packages(&[("llc", "llvm")])?;
    let scratch = root.join("target/bench/xdp");
    std::fs::create_dir_all(&scratch)?;
    let baseline = bench_proxy::build_xdp_pass(&scratch)?;
    run(&mut cargo(&[
        "build",
        "--release",
        "--package",
        "gateway-tests",
        "--bin",
        "xdp-bench",
    ]))?;
    let bench = std::process::Command::new(root.join("target/release/xdp-bench"))
        .arg(&baseline)
        .arg(args.repeat.to_string())
        .arg(args.rounds.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start xdp-bench")?;
    if !bench.status.success() {
        bail!("xdp-bench failed ({})", bench.status);
    }
    let table = String::from_utf8_lossy(&bench.stdout);
    provision::debian_packages(&[("trafgen", "netsniff-ng"), ("nft", "nftables")])?;
    let gateway = exec::build_release_gateway(root)?;
    let flood = bench_flood::flood(root, &gateway, args.flood_packets, args.rounds)?;
    let machine = exec::output(std::process::Command::new("uname").arg("-r")).unwrap_or_default();
    let report = format!(
        "{table}\n{flood}\nKernel {}, {} CPUs.\n",
        machine.trim(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    print!("{report}");
    let out = root.join("target/bench-xdp.md");
    std::fs::write(&out, report)?;
    println!("(written to {})", out.display());
    Ok(())
}

/// Builds the release gateway and the reload benchmark, runs it, and
/// writes its table to `target/bench-reload.md`.
fn bench_reload(root: &Path) -> anyhow::Result<()> {
    provision::debian_packages(&[("curl", "curl"), ("ip", "iproute2")])?;
    let gateway = exec::build_release_gateway(root)?;
    run(&mut cargo(&[
        "build",
        "--release",
        "--package",
        "gateway-tests",
        "--bin",
        "reload-bench",
    ]))?;
    let bench = std::process::Command::new(root.join("target/release/reload-bench"))
        .env("GATEWAY_BIN", &gateway)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start reload-bench")?;
    let table = String::from_utf8_lossy(&bench.stdout).into_owned();
    print!("{table}");
    if !bench.status.success() {
        bail!("reload-bench failed ({})", bench.status);
    }
    let out = root.join("target/bench-reload.md");
    std::fs::write(&out, table)?;
    println!("(written to {})", out.display());
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds the `gateway` binary (debug) with its XDP object, which must be built.
fn build_gateway() -> anyhow::Result<PathBuf> {
    exec::build_gateway(&workspace_root(), false)
}

/// Runs one test file of `gateway-tests` against the `gateway` binary; with
/// `serial`, one test at a time.
fn gateway_tests(file: &str, gateway: &Path, serial: bool) -> anyhow::Result<()> {
    let mut cmd = cargo(&["test", "--package", "gateway-tests", "--test", file]);
    if serial {
        cmd.args(["--", "--test-threads", "1"]);
    }
    cmd.env("GATEWAY_BIN", gateway);
    run(&mut cmd)
}

fn test() -> anyhow::Result<()> {
    provision::all()?;
    require_root(
        "cargo xtask test",
        "the packet tests load BPF programs and the end-to-end tests create network namespaces",
    )?;
    println!("== unit tests (host crates)");
    run(&mut cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "gateway-tests",
        "--exclude",
        "gateway-ebpf",
    ]))?;
    let gateway = build_gateway()?;
    println!("== packet tests (BPF_PROG_TEST_RUN on the XDP program)");
    gateway_tests("packet", &gateway, false)?;
    gateway_tests("packet_hosts", &gateway, false)?;
    gateway_tests("packet_steering", &gateway, false)?;
    gateway_tests("packet_egress", &gateway, false)?;
    gateway_tests("packet_reference", &gateway, false)?;
    println!("== end-to-end tests (network namespaces, real clients)");
    gateway_tests("e2e", &gateway, false)?;
    gateway_tests("reload", &gateway, false)?;
    // Serial: every daemon started prunes the orphaned pin sets of all
    // namespaces, including the ones another restart test is inspecting.
    gateway_tests("restart", &gateway, true)?;
    gateway_tests("egress", &gateway, false)?;
    println!(
        "== proxy end to end (TLS, mTLS, passthrough, routing, upstreams, websocket, TCP; curl, openssl, nginx)"
    );
    // One at a time: the slow-client and drain scenarios measure time.
    gateway_tests("proxy", &gateway, true)?;
    println!(
        "== traffic policy end to end (retries, timeouts, pool limits, outlier detection; killed, failing and hanging backends)"
    );
    // One at a time: the scenarios measure time and kill backends mid-run.
    gateway_tests("traffic_policy", &gateway, true)?;
    println!(
        "== security policy end to end (AuthorizationPolicy: IP allow-lists behind a trusted hop, paths, methods, headers, dry-run, reload)"
    );
    gateway_tests("authz", &gateway, false)?;
    println!("== JWT validation end to end (RequestAuthentication; keys fetched, rotated)");
    gateway_tests("jwt", &gateway, true)?;
    println!("== hostile input (alias bombs, deep nesting, FIFOs, silent and flooding clients)");
    // One at a time: the load tests measure latency and CPU time.
    gateway_tests("hostile", &gateway, true)?;
    println!(
        "== Kubernetes (a real kube-apiserver {} and etcd; the apiserver is built once per machine)",
        kube_server::VERSION
    );
    let apiserver = kube_server::provision()?;
    // One at a time: each test runs its own API server, and two measure
    // how soon an edit is served.
    let mut cmd = cargo(&[
        "test",
        "--package",
        "gateway-tests",
        "--test",
        "kubernetes",
        "--",
        "--test-threads",
        "1",
    ]);
    cmd.env("GATEWAY_BIN", &gateway)
        .env("GATEWAY_KUBE_APISERVER", &apiserver);
    run(&mut cmd)?;
    println!("== fuzz smoke ({FUZZ_SMOKE_SECONDS} s per target)");
    fuzz(&workspace_root(), FUZZ_SMOKE_SECONDS)?;
    println!("== all test levels passed");
    Ok(())
}

/// Fuzz targets (`fuzz/fuzz_targets/*.rs`), each with a seed corpus in `fuzz/corpus/<name>`.
const FUZZ_TARGETS: &[&str] = &[
    "config",
    "yaml",
    "client_hello",
    "request",
    "certificate",
    "host",
    "jwt",
];
/// Dictionary of YAML tokens (anchors, aliases, nesting) every target runs with.
const FUZZ_DICTIONARY: &str = "fuzz/yaml.dict";
/// Length of the smoke run `cargo xtask test` does per target.
const FUZZ_SMOKE_SECONDS: u64 = 15;

fn fuzz(root: &Path, seconds: u64) -> anyhow::Result<()> {
    provision::cargo_fuzz()?;
    for target in FUZZ_TARGETS {
        // New inputs go to a scratch corpus; the committed seeds are read only.
        let scratch = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let mut cmd = std::process::Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&scratch)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-dict={}", root.join(FUZZ_DICTIONARY).display()))
            // An input that takes this much memory or time is a finding:
            // the loader's limits are meant to prevent exactly that.
            .arg("-rss_limit_mb=1024")
            .arg("-timeout=10")
            .env("GATEWAY_SKIP_EBPF", "1")
            // cargo fuzz builds the release profile, whose fat LTO (there for
            // the daemon's speed) drops the sanitizer-coverage symbols.
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        run(&mut cmd)?;
    }
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    docs::check(&workspace_root())?;
    run(&mut cargo(&["fmt", "--all", "--check"]))?;
    println!("== layers (module imports against the layer order of ARCHITECTURE.md)");
    layers::run(&workspace_root())?;
    println!("== cargo deny (licenses, duplicate versions, sources; see deny.toml)");
    // Advisories are left out: their database is fetched from GitHub,
    // which this machine and CI cannot reach (deny.toml says more).
    run(std::process::Command::new("cargo").args([
        "deny",
        "--workspace",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))?;
    run(&mut cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "gateway-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the BPF target, with nightly and build-std.
    let mut ebpf = std::process::Command::new("rustup");
    ebpf.args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "gateway-ebpf",
        "--release",
    ])
    .args([
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ])
    .env("GATEWAY_REQUIRE_EBPF", "1")
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run(&mut ebpf)
}

fn require_root(command: &str, why: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{command} needs root because {why}: run it as root (e.g. `sudo -E {command}`)");
    }
    Ok(())
}
