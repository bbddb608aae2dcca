//! `cargo xtask bench config`: time and peak memory to load, validate and
//! compile a large generated configuration, against a baseline measured in
//! the same run (hashing the same YAML bytes).
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Targets from the issue: under 1 second and under 200 MB.
const TARGET_SECONDS: f64 = 1.0;
const TARGET_MB: f64 = 200.0;
const RUNS: usize = 5;

/// Sizes of the generated configuration.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct ConfigSize {
    /// Gateways to generate (every other one also has an HTTPS server).
    #[arg(long, default_value_t = 1000)]
    pub gateways: usize,
    /// Hosts per Gateway server.
    #[arg(long, default_value_t = 10)]
    pub hosts_per_gateway: usize,
    /// VirtualServices, spread evenly over the Gateways' hosts.
    #[arg(long, default_value_t = 10_000)]
    pub virtual_services: usize,
}

/// Writes the configuration into `dir`; returns its size in bytes.
fn generate(dir: &Path, size: ConfigSize) -> anyhow::Result<u64> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut gateways = String::new();
    for g in 0..size.gateways {
        let hosts: Vec<String> = (0..size.hosts_per_gateway)
            .map(|h| format!("h{g}-{h}.bench.example.com"))
            .collect();
        let _ = write!(
            gateways,
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw{g}\n  namespace: ns{}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{}]\n",
            g % 10,
            hosts.join(", ")
        );
        if g % 2 == 0 {
            let _ = write!(
                gateways,
                "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{}]\n    tls: {{mode: SIMPLE, credentialName: dataengine-com-cert}}\n",
                hosts.join(", ")
            );
        }
        gateways.push_str("---\n");
    }
    let mut services = String::new();
    for v in 0..size.virtual_services {
        let g = v % size.gateways.max(1);
        let h = (v / size.gateways.max(1)) % size.hosts_per_gateway.max(1);
        let _ = write!(
            services,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs{v}\n  namespace: ns{}\nspec:\n  hosts: [h{g}-{h}.bench.example.com]\n  gateways: [ns{}/gw{g}]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}]\n    route:\n    - destination: {{host: web.ns0.svc.cluster.local, subset: v1}}\n  - route:\n    - destination: {{host: web.ns0.svc.cluster.local}}\n---\n",
            g % 10,
            g % 10
        );
    }
    let backends = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web, namespace: ns0}\nspec:\n  hosts: [web.ns0.svc.cluster.local]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - {address: 192.0.2.10, labels: {version: v1}}\n  - {address: 192.0.2.11, labels: {version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: ns0}\nspec:\n  host: web.ns0.svc.cluster.local\n  subsets:\n  - {name: v1, labels: {version: v1}}\n";
    let mut total = 0;
    for (name, text) in [
        ("gateways.yaml", gateways.as_str()),
        ("virtual-services.yaml", services.as_str()),
        ("backends.yaml", backends),
    ] {
        fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))?;
        total += text.len() as u64;
    }
    Ok(total)
}

/// Wall time of `cmd` and its own peak RSS in KiB (from `wait4`, so
/// earlier children such as the build do not count).
fn measure(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid, writing into locals we own; the
    // std handle is dropped without waiting, so the child is reaped once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    drop(child);
    if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    Ok((elapsed, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

/// Runs the config benchmark and prints the report.
pub fn config(root: &Path, size: ConfigSize) -> anyhow::Result<()> {
    let dir = root.join("target/bench/config");
    let bytes = generate(&dir, size)?;
    let gateway = crate::exec::build_release_gateway(root)?;
    let files: Vec<PathBuf> = ["backends.yaml", "gateways.yaml", "virtual-services.yaml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();

    let mut baseline = Duration::MAX;
    for _ in 0..RUNS {
        let (t, _) = measure(Command::new("sha256sum").args(&files))?;
        baseline = baseline.min(t);
    }
    let mut best = Duration::MAX;
    let mut peak_kib = 0;
    for _ in 0..RUNS {
        let mut cmd = Command::new(&gateway);
        cmd.args([
            "check",
            "--labels",
            "istio=ingressgateway",
            "--credentials-dir",
        ])
        .arg(root.join("examples/credentials"))
        .arg(&dir);
        let (t, rss) = measure(&mut cmd)?;
        best = best.min(t);
        peak_kib = peak_kib.max(rss);
    }
    let seconds = best.as_secs_f64();
    let mb = peak_kib as f64 / 1024.0;
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "config benchmark: {} Gateways, {} hosts, {} VirtualServices ({:.1} MB of YAML)",
        size.gateways,
        size.gateways * size.hosts_per_gateway,
        size.virtual_services,
        bytes as f64 / 1e6
    );
    println!(
        "  load + validate + compile (gateway check): best {seconds:.3} s of {RUNS}, peak RSS {mb:.1} MB"
    );
    println!(
        "  baseline, sha256sum of the same YAML: {:.3} s -> pipeline is {:.1}x the baseline",
        baseline.as_secs_f64(),
        seconds / baseline.as_secs_f64()
    );
    println!(
        "  peak memory / YAML size: {:.1}x",
        (peak_kib as f64 * 1024.0) / bytes as f64
    );
    println!(
        "  targets: < {TARGET_SECONDS} s {}, < {TARGET_MB} MB {}",
        met(seconds < TARGET_SECONDS),
        met(mb < TARGET_MB)
    );
    Ok(())
}
