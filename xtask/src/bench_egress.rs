//! `cargo xtask bench egress`: a workload's outbound HTTPS through the
//! steered path (the egress instance capturing with `--egress-from`, TLS
//! passed through by SNI) against the same workload going direct (routed
//! through the same namespace, nothing capturing), against the comparators
//! that do the same job as an egress gateway the workload connects to
//! (Envoy's `tls_inspector` + `tcp_proxy`, which is what an Istio egress
//! gateway is; HAProxy `mode tcp` routing on `req.ssl_sni`; nginx `stream`
//! with `ssl_preread`), and against an explicit HTTP CONNECT proxy
//! (Debian's tinyproxy, the reference for a client that is told), all in
//! that namespace and measured interleaved in the same run.
//!
//! Topology (created here, removed on exit, also on failure): the workload
//! runs in `egb-wl` on 192.0.2.2, default route via `egb-gw` (192.0.2.1 on
//! the workload side, 198.51.100.1 on the outside one, forwarding on); the
//! real server, nginx with TLS 1.3 for dataengine.com, runs in `egb-out` on
//! 198.51.100.2:443. Both the workload and the gateway namespace resolve
//! dataengine.com to it through `/etc/netns/<ns>/hosts`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench_memory::memory_mib,
    bench_proxy::{
        Cert, HOST, Server, TLS13_SUITE, cell, children_cpu_us, core_ticks, install_envoy,
        install_oha, make_cert, nginx_common, parse_oha, process_tree, ratio_only, run_bounded,
        stop_on_signals, stop_requested, ticks_per_second, tree_cpu_ticks, verdict,
    },
    exec::{output, run},
    netns::{self, ip},
};

const WORKLOAD_NS: &str = "egb-wl";
const GATEWAY_NS: &str = "egb-gw";
const OUTSIDE_NS: &str = "egb-out";
const WORKLOAD_IF: &str = "egbw0";
/// The gateway's workload-facing veth: XDP and `--egress-from` go here.
const GATEWAY_IF: &str = "egbg0";
const GATEWAY_OUT_IF: &str = "egbg1";
const OUTSIDE_IF: &str = "egbo0";
const WORKLOAD_IP: &str = "192.0.2.2";
const GATEWAY_IP: &str = "192.0.2.1";
const GATEWAY_OUT_IP: &str = "198.51.100.1";
const SERVER_IP: &str = "198.51.100.2";
const PROXY_PORT: u16 = 8888;
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const ADMIN: &str = "127.0.0.1:15000";
/// Targets from the issue.
const TARGET_OVERHEAD_US: f64 = 5.0;
const TARGET_VS_CONNECT: f64 = 1.0;

/// Sizes of `cargo xtask bench egress`: the defaults take about three
/// minutes on two cores; smaller ones are for trying the setup.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct EgressArgs {
    /// Interleaved rounds (each measures every path); each cell is the
    /// median (and range) over them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: u64,
    /// New TLS connections (one small request each) per connection-rate measurement.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
    pub connections: u64,
    /// Connections open at once during the connection-rate measurement.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
    /// Size of the one download of each throughput measurement, in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=8192))]
    pub mib: u64,
    /// Benchmark this gateway binary instead of building one.
    #[arg(long, value_name = "PATH")]
    pub gateway: Option<PathBuf>,
}

/// One way out of the workload namespace to the same server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Direct,
    Steered,
    /// The same gateway and passthrough, the workload connecting to the
    /// gateway's address itself: steered minus this is the capture alone.
    Explicit,
    /// Envoy with `tls_inspector` and one filter chain per SNI name into
    /// `tcp_proxy`: the listener an Istio egress gateway gets for a
    /// PASSTHROUGH server, the workload connecting to it as to `Explicit`.
    Envoy,
    /// HAProxy `mode tcp`, the backend chosen by `req.ssl_sni`.
    Haproxy,
    /// nginx `stream` with `ssl_preread`, the upstream mapped from the SNI.
    NginxStream,
    Connect,
}

const MODES: [Mode; 7] = [
    Mode::Direct,
    Mode::Steered,
    Mode::Explicit,
    Mode::Envoy,
    Mode::Haproxy,
    Mode::NginxStream,
    Mode::Connect,
];

/// The SNI proxies that do the egress gateway's job with the workload
/// connecting to them: ours (`Explicit`) and the three comparators.
const SNI_PROXIES: [Mode; 3] = [Mode::Envoy, Mode::Haproxy, Mode::NginxStream];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct (routed)",
            Self::Steered => "steered (--egress-from, passthrough)",
            Self::Explicit => "ours explicit (same gateway, workload connects to it)",
            Self::Envoy => "Envoy (tls_inspector + tcp_proxy)",
            Self::Haproxy => "HAProxy (mode tcp, req.ssl_sni)",
            Self::NginxStream => "nginx (stream, ssl_preread)",
            Self::Connect => "CONNECT proxy (tinyproxy)",
        }
    }

    /// The address the server sees: the workload's own when routed, the
    /// gateway namespace's when a process there opened the connection. The
    /// check before measuring proves which path was taken.
    fn peer(self) -> &'static str {
        match self {
            Self::Direct => WORKLOAD_IP,
            Self::Steered
            | Self::Explicit
            | Self::Envoy
            | Self::Haproxy
            | Self::NginxStream
            | Self::Connect => GATEWAY_OUT_IP,
        }
    }

    /// The workload's source ports on this path, disjoint from the other
    /// paths'. The gateway closes its side of a steered connection first,
    /// so its namespace keeps the workload's 4-tuple in TIME_WAIT; a
    /// routed SYN from the same port then meets that socket in early demux
    /// and `ip_forward` drops it (a socket is attached), stalling the
    /// direct path for up to a minute after a steered run.
    fn ports(self) -> &'static str {
        match self {
            Self::Direct => "1024 9999",
            Self::Steered => "10000 18999",
            Self::Explicit => "19000 27999",
            Self::Envoy => "28000 36999",
            Self::Haproxy => "37000 45999",
            Self::NginxStream => "46000 54999",
            Self::Connect => "55000 65535",
        }
    }

    /// The explicit proxy the client is told about (only for CONNECT: the
    /// other two paths are invisible to the workload).
    fn proxy(self) -> Option<String> {
        (self == Self::Connect).then(|| format!("http://{GATEWAY_IP}:{PROXY_PORT}"))
    }

    /// Where the client connects instead of the name's address (for the
    /// SNI proxies it is told about: curl's and oha's `--connect-to`).
    fn connect_to(self) -> Option<String> {
        (self == Self::Explicit || SNI_PROXIES.contains(&self))
            .then(|| format!("{HOST}:443:{GATEWAY_IP}:443"))
    }
}

/// A figure measured once per round and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    Rate,
    MachineUs,
    ProcessesUs,
    MiddleUs,
    Gbps,
    /// All cores' non-idle CPU seconds per GiB downloaded.
    MachineSecondsPerGib,
    /// The middle's PSS after the connection-rate run, plus (ours) its BPF
    /// maps' `memlock`, in MiB.
    MiddleMib,
}

/// Per (path, figure), one value per round, in round order.
#[derive(Default)]
struct Results(BTreeMap<(Mode, Metric), Vec<f64>>);

impl Results {
    fn push(&mut self, mode: Mode, metric: Metric, value: f64) {
        self.0.entry((mode, metric)).or_default().push(value);
    }

    fn values(&self, mode: Mode, metric: Metric) -> &[f64] {
        self.0.get(&(mode, metric)).map_or(&[], Vec::as_slice)
    }

    /// `top`'s value over `bottom`'s, round by round: drift of the whole
    /// machine between rounds cancels.
    fn ratios(&self, metric: Metric, top: Mode, bottom: Mode) -> Vec<f64> {
        let (t, b) = (self.values(top, metric), self.values(bottom, metric));
        t.iter().zip(b).map(|(t, b)| t / b.max(1e-9)).collect()
    }

    fn differences(&self, metric: Metric, top: Mode, bottom: Mode) -> Vec<f64> {
        let (t, b) = (self.values(top, metric), self.values(bottom, metric));
        t.iter().zip(b).map(|(t, b)| t - b).collect()
    }
}

/// Paths of what the benchmark runs and serves.
struct Setup {
    gateway: PathBuf,
    envoy: PathBuf,
    oha: PathBuf,
    scratch: PathBuf,
    cert: Cert,
}

/// The issue's targets compare paths, so every path is measured in every
/// round on the same topology, and the table and verdicts (also written to
/// `target/bench-egress.md`) only ever relate figures of the same round.
pub(crate) fn egress(root: &Path, args: &EgressArgs) -> anyhow::Result<()> {
    let setup = provision(root, args)?;
    write_files(&setup, args.mib)?;
    // Per round: each path's start, checks, both measurements and stop.
    let per_round = 3 * (60 + args.connections / 50 + args.mib / 10);
    let limit = Duration::from_secs(2 * args.rounds * per_round);
    let started = Instant::now();
    stop_on_signals();
    let _network = Network::create()?;
    let mut server = start_server(&setup)?;
    let server_pid = server.pid();
    let mut results = Results::default();
    for round in 1..=args.rounds {
        for mode in MODES {
            stop_requested()?;
            if started.elapsed() > limit {
                bail!("the benchmark ran past its {} s limit", limit.as_secs());
            }
            println!("== round {round}/{}: {}", args.rounds, mode.name());
            bench_mode(mode, &setup, args, server_pid, &mut results)
                .with_context(|| format!("{} (round {round})", mode.name()))?;
            server.alive()?;
        }
    }
    let kernel = kernel_steering(root)?;
    let report = table(&results, args, &kernel);
    println!("\n{report}");
    let out = root.join("target/bench-egress.md");
    fs::write(&out, &report).with_context(|| format!("cannot write {}", out.display()))?;
    println!("(written to {})", out.display());
    Ok(())
}

/// Installs nginx, tinyproxy and curl (Debian) and oha, builds the release
/// gateway unless given one, and makes the scratch directory and certificate.
fn provision(root: &Path, args: &EgressArgs) -> anyhow::Result<Setup> {
    crate::provision::debian_packages(&[
        ("ip", "iproute2"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("nginx", "nginx-light"),
        ("tinyproxy", "tinyproxy"),
        ("haproxy", "haproxy"),
        ("python3", "python3"),
        // nginx's `stream` module (with `ssl_preread`) is a package of its own.
        (NGINX_STREAM_MODULE, "libnginx-mod-stream"),
    ])?;
    let tools = root.join("target/bench-tools");
    let oha = install_oha(&tools)?;
    let envoy = install_envoy(&tools)?;
    let gateway = match &args.gateway {
        Some(gateway) => fs::canonicalize(gateway)
            .with_context(|| format!("no gateway binary at {}", gateway.display()))?,
        None => {
            println!("== building the gateway (release)");
            crate::exec::build_release_gateway(root)?
        }
    };
    let scratch = root.join("target/bench/egress");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(scratch.join("tmp"))?;
    let cert = make_cert(&scratch)?;
    Ok(Setup {
        gateway,
        envoy,
        oha,
        scratch,
        cert,
    })
}

/// nginx's, the gateway's and tinyproxy's configurations, and the download:
/// a sparse file, so it costs no disk and reads from the page cache.
fn write_files(setup: &Setup, mib: u64) -> anyhow::Result<()> {
    let dir = &setup.scratch;
    let www = dir.join("www");
    fs::create_dir_all(&www)?;
    fs::File::create(www.join("big"))?.set_len(mib << 20)?;
    let nginx = nginx_common(dir)
        + &format!(
            "  server {{
    listen {SERVER_IP}:443 ssl;
    server_name {HOST};
    ssl_certificate {};
    ssl_certificate_key {};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {TLS13_SUITE};
    root {};
    location = /tiny {{ return 200 \"ok\"; }}
    location = /peer {{ return 200 \"$remote_addr\"; }}
  }}
}}
",
            setup.cert.crt.display(),
            setup.cert.key.display(),
            www.display()
        );
    fs::write(dir.join("nginx.conf"), nginx)?;
    fs::write(dir.join("egress.yaml"), gateway_yaml())?;
    fs::write(dir.join("tinyproxy.conf"), tinyproxy_conf(dir))?;
    fs::write(dir.join("envoy.yaml"), envoy_yaml())?;
    fs::write(dir.join("haproxy.cfg"), haproxy_cfg())?;
    fs::create_dir_all(dir.join("stream"))?;
    fs::write(
        dir.join("stream/nginx.conf"),
        nginx_stream_conf(&dir.join("stream")),
    )?;
    Ok(())
}

/// What Istio gives an egress gateway's PASSTHROUGH server: a listener
/// with `tls_inspector`, a filter chain matching the SNI name, and
/// `tcp_proxy` to the external service's cluster. One worker, as every
/// middle gets; no access log, as the others.
fn envoy_yaml() -> String {
    format!(
        "static_resources:
  listeners:
  - name: egress
    address: {{socket_address: {{address: {GATEWAY_IP}, port_value: 443}}}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
    filter_chains:
    - filter_chain_match: {{server_names: [{HOST}]}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: egress
          cluster: external
  clusters:
  - name: external
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: external
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {SERVER_IP}, port_value: 443}}}}}}
"
    )
}

/// HAProxy routing on the ClientHello's SNI without terminating TLS, with
/// kernel splicing where it helps (`splice-auto`): its best for this job.
fn haproxy_cfg() -> String {
    format!(
        "global
  nbthread 1
  # Pipes for splicing need descriptors too: 4000 fits the process's limit.
  maxconn 4000
defaults
  mode tcp
  option splice-auto
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend egress
  bind {GATEWAY_IP}:443
  tcp-request inspect-delay 5s
  tcp-request content accept if {{ req.ssl_hello_type 1 }}
  use_backend external if {{ req.ssl_sni -i {HOST} }}
backend external
  server s1 {SERVER_IP}:443
"
    )
}

/// nginx `stream` reading the SNI with `ssl_preread` and mapping it to
/// the upstream; any other name goes nowhere (a closed local port).
fn nginx_stream_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
stream {{
  map $ssl_preread_server_name $upstream {{
    {HOST} {SERVER_IP}:443;
    default 127.0.0.1:9;
  }}
  server {{
    listen {GATEWAY_IP}:443;
    ssl_preread on;
    proxy_pass $upstream;
  }}
}}
"
    )
}

/// The seed's egress shape (Gateway with a PASSTHROUGH server, a TLS route
/// by SNI, a DNS ServiceEntry) for the benchmark's host alone.
fn gateway_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [{HOST}]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: egress, namespace: istio-system}}
spec:
  hosts: [{HOST}]
  gateways: [egress]
  tls:
  - match: [{{port: 443, sniHosts: [{HOST}]}}]
    route: [{{destination: {{host: {HOST}, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: istio-system}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS
"
    )
}

/// tinyproxy for the workload's network only, CONNECT to 443 only, no
/// Via header and (nearly) no logging, like the gateway's `--access-log off`.
fn tinyproxy_conf(dir: &Path) -> String {
    format!(
        "Port {PROXY_PORT}\nListen {GATEWAY_IP}\nTimeout 60\nMaxClients 1024\n\
         Allow 192.0.2.0/24\nConnectPort 443\nDisableViaHeader Yes\nLogLevel Critical\n\
         LogFile \"{}/tinyproxy.log\"\n",
        dir.display()
    )
}

/// The three namespaces, two veth pairs and resolver files; removed on drop.
struct Network;

const NAMESPACES: [&str; 3] = [WORKLOAD_NS, GATEWAY_NS, OUTSIDE_NS];

impl Network {
    fn create() -> anyhow::Result<Self> {
        remove_network(); // leftovers of a run killed with SIGKILL
        let guard = Self;
        for ns in NAMESPACES {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        for (a, a_ns, a_ip, b, b_ns, b_ip) in [
            (
                GATEWAY_IF,
                GATEWAY_NS,
                GATEWAY_IP,
                WORKLOAD_IF,
                WORKLOAD_NS,
                WORKLOAD_IP,
            ),
            (
                GATEWAY_OUT_IF,
                GATEWAY_NS,
                GATEWAY_OUT_IP,
                OUTSIDE_IF,
                OUTSIDE_NS,
                SERVER_IP,
            ),
        ] {
            ip(
                a_ns,
                &[
                    "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
                ],
            )?;
            for (ns, dev, addr) in [(a_ns, a, a_ip), (b_ns, b, b_ip)] {
                ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ip(ns, &["link", "set", dev, "up"])?;
            }
        }
        ip(WORKLOAD_NS, &["route", "add", "default", "via", GATEWAY_IP])?;
        ip(
            OUTSIDE_NS,
            &["route", "add", "192.0.2.0/24", "via", GATEWAY_OUT_IP],
        )?;
        // New connections by the thousand: reuse TIME_WAIT ports.
        for (ns, setting) in [
            (GATEWAY_NS, "net.ipv4.ip_forward=1"),
            (WORKLOAD_NS, "net.ipv4.tcp_tw_reuse=1"),
            (GATEWAY_NS, "net.ipv4.tcp_tw_reuse=1"),
            (GATEWAY_NS, "net.ipv4.ip_local_port_range=1024 65535"),
        ] {
            run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", setting]))?;
        }
        // `ip netns exec` bind-mounts this over /etc/hosts.
        for ns in [WORKLOAD_NS, GATEWAY_NS] {
            netns::write_hosts(ns, &format!("127.0.0.1 localhost\n{SERVER_IP} {HOST}\n"))?;
        }
        Ok(guard)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove_network();
    }
}

fn remove_network() {
    netns::remove(&NAMESPACES);
}

/// The outside HTTPS server, answering the workload directly.
fn start_server(setup: &Setup) -> anyhow::Result<Server> {
    let dir = &setup.scratch;
    let mut server = Server::start(
        "nginx",
        netns::exec(OUTSIDE_NS)
            .args(["nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir),
        &dir.join("nginx.log"),
    )?;
    wait_for(&mut server, || check_peer(Mode::Direct, &setup.cert.crt))?;
    Ok(server)
}

/// What sits on the path for `mode`: nothing, the egress gateway, or tinyproxy.
fn start_middle(mode: Mode, setup: &Setup) -> anyhow::Result<Option<Server>> {
    let dir = &setup.scratch;
    let mut cmd = netns::exec(GATEWAY_NS);
    let name = match mode {
        Mode::Direct => return Ok(None),
        Mode::Steered | Mode::Explicit => {
            cmd.arg(&setup.gateway)
                .args(["run", "--labels", "istio=egressgateway", "--config"])
                .arg(dir.join("egress.yaml"))
                .args(["--interface", GATEWAY_IF, "--address", GATEWAY_IP])
                .args(["--admin-address", ADMIN, "--access-log", "off"])
                // One worker, as every other middle gets.
                .args(["--workers", "1"]);
            if mode == Mode::Steered {
                cmd.args(["--egress-from", GATEWAY_IF]);
            }
            "gateway"
        }
        Mode::Envoy => {
            cmd.arg(&setup.envoy)
                .arg("-c")
                .arg(dir.join("envoy.yaml"))
                .args(["--concurrency", "1", "--disable-hot-restart"])
                .args(["--log-level", "warn"]);
            "envoy"
        }
        Mode::Haproxy => {
            cmd.args(["haproxy", "-db", "-f"])
                .arg(dir.join("haproxy.cfg"));
            "haproxy"
        }
        Mode::NginxStream => {
            let stream = dir.join("stream");
            cmd.args(["nginx", "-c"])
                .arg(stream.join("nginx.conf"))
                .arg("-p")
                .arg(&stream);
            "nginx-stream"
        }
        Mode::Connect => {
            cmd.args(["tinyproxy", "-d", "-c"])
                .arg(dir.join("tinyproxy.conf"));
            "tinyproxy"
        }
    };
    let mut middle = Server::start(name, &mut cmd, &dir.join(format!("{name}.log")))?;
    wait_for(&mut middle, || check_peer(mode, &setup.cert.crt))?;
    Ok(Some(middle))
}

/// Polls `ready` every 100 ms for up to 30 s while `server` runs; the
/// last failure is the error.
fn wait_for(
    server: &mut Server,
    mut ready: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.alive()?;
        match ready() {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                return Err(err.context("not ready after 30 s"));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The workload's curl of `/peer` over `mode`'s path, with the server's
/// certificate verified, must name the peer that path implies.
fn check_peer(mode: Mode, ca: &Path) -> anyhow::Result<()> {
    let mut cmd = curl(mode, ca, 2);
    cmd.arg(format!("https://{HOST}/peer"));
    let body = output(&mut cmd).with_context(|| format!("{cmd:?} failed"))?;
    if body.trim() != mode.peer() {
        bail!(
            "the server saw {body:?}, not {}: not the {} path",
            mode.peer(),
            mode.name()
        );
    }
    Ok(())
}

/// curl in the workload namespace over `mode`'s path, verifying the server
/// against `ca`, bounded by `seconds`.
fn curl(mode: Mode, ca: &Path, seconds: u64) -> Command {
    let mut cmd = netns::exec(WORKLOAD_NS);
    cmd.args([
        "curl",
        "-sS",
        "--max-time",
        &seconds.to_string(),
        "--cacert",
    ])
    .arg(ca);
    if let Some(proxy) = mode.proxy() {
        cmd.args(["-x", &proxy]);
    }
    if let Some(to) = mode.connect_to() {
        cmd.args(["--connect-to", &to]);
    }
    cmd
}

/// Starts what `mode` needs, measures connection rate and throughput, stops it.
fn bench_mode(
    mode: Mode,
    setup: &Setup,
    args: &EgressArgs,
    server_pid: u32,
    results: &mut Results,
) -> anyhow::Result<()> {
    let ports = format!("net.ipv4.ip_local_port_range={}", mode.ports());
    run(netns::exec(WORKLOAD_NS).args(["sysctl", "-q", "-w", &ports]))?;
    let mut middle = start_middle(mode, setup)?;
    let watched = Watched {
        server: server_pid,
        middle: middle.as_ref().map(Server::pid),
    };
    // Warm-up (page cache, the proxy's first connections), not measured.
    connections(mode, setup, 200, args.concurrency, &watched)?;
    let c = connections(mode, setup, args.connections, args.concurrency, &watched)?;
    println!(
        "   {:.0} connections/s; CPU per connection: machine {:.1} µs, benchmark processes {:.1} µs, middle process {:.1} µs; {} errors",
        c.rate, c.machine_us, c.processes_us, c.middle_us, c.errors
    );
    let middle_mib = middle.as_ref().map(|m| middle_memory_mib(m.pid()));
    if let Some(mib) = middle_mib {
        println!("   middle's memory after the connection run: {mib:.1} MiB (PSS + BPF maps)");
    }
    stop_requested()?;
    let (gbps, machine_s_per_gib) = throughput(mode, setup, args.mib)?;
    println!("   download: {gbps:.2} Gbit/s, machine CPU {machine_s_per_gib:.2} s/GiB");
    if let Some(m) = middle.as_mut() {
        m.alive()?;
    }
    results.push(mode, Metric::Rate, c.rate);
    results.push(mode, Metric::MachineUs, c.machine_us);
    results.push(mode, Metric::ProcessesUs, c.processes_us);
    results.push(mode, Metric::MiddleUs, c.middle_us);
    results.push(mode, Metric::Gbps, gbps);
    results.push(mode, Metric::MachineSecondsPerGib, machine_s_per_gib);
    if let Some(mib) = middle_mib {
        results.push(mode, Metric::MiddleMib, mib);
    }
    Ok(())
}

/// The middle's PSS plus the `memlock` of the BPF maps it holds (ours'
/// only; kernel memory that no PSS shows), in MiB.
fn middle_memory_mib(pid: u32) -> f64 {
    let (pss, maps) = memory_mib(&process_tree(pid));
    pss + maps
}

/// The long-running processes whose CPU time a measurement counts.
struct Watched {
    server: u32,
    middle: Option<u32>,
}

/// One connection-rate run's figures.
struct Connections {
    rate: f64,
    /// All non-idle CPU time of the machine per successful connection.
    machine_us: f64,
    /// oha's, nginx's and the middle's CPU time per successful connection:
    /// blind to other work on the machine (and to softirq run outside them).
    processes_us: f64,
    /// The gateway's or tinyproxy's own CPU time per successful connection.
    middle_us: f64,
    errors: u64,
}

/// CPU ticks of (the machine, the watched processes' trees, the middle's tree).
fn ticks(watched: &Watched) -> (u64, u64, u64) {
    let middle = watched.middle.map_or(0, tree_cpu_ticks);
    // `cpu ` (no number) is /proc/stat's line for all cores together.
    let machine = core_ticks("").0;
    (machine, tree_cpu_ticks(watched.server) + middle, middle)
}

/// `count` requests, each on a new TLS connection (oha without keep-alive
/// and, as built by the proxy benchmark, without TLS resumption: a full
/// handshake each), `concurrency` at a time.
fn connections(
    mode: Mode,
    setup: &Setup,
    count: u64,
    concurrency: u64,
    watched: &Watched,
) -> anyhow::Result<Connections> {
    let mut cmd = netns::exec(WORKLOAD_NS);
    cmd.arg(&setup.oha)
        .args(["-n", &count.to_string(), "-c", &concurrency.to_string()])
        .args(["--disable-keepalive", "--insecure", "--no-tui"])
        .args(["--output-format", "json", "-t", "10s"]);
    if let Some(proxy) = mode.proxy() {
        cmd.args(["-x", &proxy]);
    }
    if let Some(to) = mode.connect_to() {
        cmd.args(["--connect-to", &to]);
    }
    cmd.arg(format!("https://{HOST}/tiny"));
    let before = ticks(watched);
    let client_before = children_cpu_us();
    let limit = Duration::from_secs(60 + count / 20);
    let text = run_bounded(&mut cmd, limit, &setup.scratch.join("oha.log"))?;
    let client_us = children_cpu_us() - client_before;
    let after = ticks(watched);
    let load = parse_oha(&text)?;
    if load.ok == 0 {
        bail!("no successful connection at all:\n{text}");
    }
    let us = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second();
    let per = |us: f64| us / load.ok as f64;
    Ok(Connections {
        rate: load.ok as f64 / load.seconds.max(1e-9),
        machine_us: per(us(after.0.saturating_sub(before.0))),
        processes_us: per(us(after.1.saturating_sub(before.1)) + client_us),
        middle_us: per(us(after.2.saturating_sub(before.2))),
        errors: load.errors,
    })
}

/// One TLS download of the whole file over `mode`'s path: Gbit/s, and the
/// machine's CPU seconds (all cores) per GiB.
fn throughput(mode: Mode, setup: &Setup, mib: u64) -> anyhow::Result<(f64, f64)> {
    let seconds = 30 + mib / 16;
    let mut cmd = curl(mode, &setup.cert.crt, seconds);
    cmd.args([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{speed_download}",
    ])
    .arg(format!("https://{HOST}/big"));
    let limit = Duration::from_secs(seconds + 10);
    let before = core_ticks("").0;
    let text = run_bounded(&mut cmd, limit, &setup.scratch.join("curl.log"))?;
    let machine_ticks = core_ticks("").0.saturating_sub(before);
    let gbps = parse_download(&text, mib << 20)?;
    let seconds_per_gib = machine_ticks as f64 / ticks_per_second() / (mib as f64 / 1024.0);
    Ok((gbps, seconds_per_gib))
}

/// curl's `%{http_code} %{size_download} %{speed_download}` (bytes/s) ->
/// Gbit/s, refusing anything but a 200 with the whole body.
fn parse_download(text: &str, bytes: u64) -> anyhow::Result<f64> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [code, size, speed] = fields.as_slice() else {
        bail!("unexpected curl output {text:?}");
    };
    let size: u64 = size.parse().with_context(|| format!("size in {text:?}"))?;
    let speed: f64 = speed
        .parse()
        .with_context(|| format!("speed in {text:?}"))?;
    if *code != "200" || size != bytes {
        bail!("download answered {code} with {size} of {bytes} bytes");
    }
    Ok(speed * 8.0 / 1e9)
}

/// The kernel's part of the capture, from `steer-bench`
/// (BPF_PROG_TEST_RUN): its table, and the nanoseconds per connection.
struct KernelSteering {
    table: String,
    per_connection_ns: f64,
}

fn kernel_steering(root: &Path) -> anyhow::Result<KernelSteering> {
    println!("== the kernel's part of the capture (BPF_PROG_TEST_RUN)");
    run(crate::exec::cargo(&[
        "build",
        "--release",
        "--package",
        "gateway-tests",
        "--bin",
        "steer-bench",
    ])
    .current_dir(root))?;
    let table = output(&mut Command::new(root.join("target/release/steer-bench")))
        .context("steer-bench failed")?;
    let per_connection_ns =
        per_connection_ns(&table).context("steer-bench printed no per-connection figure")?;
    Ok(KernelSteering {
        table,
        per_connection_ns,
    })
}

/// The `per connection` row of steer-bench's table, in ns.
fn per_connection_ns(table: &str) -> Option<f64> {
    let row = table.lines().find(|line| line.contains("per connection"))?;
    row.trim_end_matches('|')
        .rsplit('|')
        .next()?
        .trim()
        .trim_matches('*')
        .parse()
        .ok()
}

fn table(r: &Results, args: &EgressArgs, kernel: &KernelSteering) -> String {
    let mut out = format!(
        "# cargo xtask bench egress\n\n{} rounds, paths interleaved in each; median (min–max) over rounds, \
         ratios against direct taken round by round. Connection rate: {} new TLS 1.3 connections \
         (full handshake, GET /tiny) per measurement, {} at a time. Throughput: one {} MiB download.\n\n\
         | path | connections/s | machine CPU µs/connection | × direct | benchmark processes µs/connection | × direct | middle process µs/connection | Gbit/s | × direct | machine CPU s/GiB | middle memory, MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        args.rounds, args.connections, args.concurrency, args.mib
    );
    for mode in MODES {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            cell(r.values(mode, Metric::Rate)),
            cell(r.values(mode, Metric::MachineUs)),
            ratio_only(&r.ratios(Metric::MachineUs, mode, Mode::Direct)),
            cell(r.values(mode, Metric::ProcessesUs)),
            ratio_only(&r.ratios(Metric::ProcessesUs, mode, Mode::Direct)),
            cell(r.values(mode, Metric::MiddleUs)),
            cell(r.values(mode, Metric::Gbps)),
            ratio_only(&r.ratios(Metric::Gbps, mode, Mode::Direct)),
            cell(r.values(mode, Metric::MachineSecondsPerGib)),
            cell(r.values(mode, Metric::MiddleMib)),
        );
    }
    out + "\n"
        + &comparison(r)
        + "\n"
        + &verdicts(r, kernel)
        + "\n"
        + &kernel.table
        + "\n"
        + &notes(args)
}

/// Ours (explicit and steered) against each SNI proxy that does the same
/// job, round by round: their CPU per connection over ours (above 1: ours
/// is cheaper), ours' throughput over theirs, their memory over ours.
fn comparison(r: &Results) -> String {
    let mut out = String::from(
        "| against | their machine CPU/connection ÷ ours explicit | ÷ ours steered | ours explicit Gbit/s ÷ theirs | their machine CPU/GiB ÷ ours explicit | their memory ÷ ours |\n\
         |---|---|---|---|---|---|\n",
    );
    for them in SNI_PROXIES {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            them.name(),
            ratio_only(&r.ratios(Metric::MachineUs, them, Mode::Explicit)),
            ratio_only(&r.ratios(Metric::MachineUs, them, Mode::Steered)),
            ratio_only(&r.ratios(Metric::Gbps, Mode::Explicit, them)),
            ratio_only(&r.ratios(Metric::MachineSecondsPerGib, them, Mode::Explicit)),
            ratio_only(&r.ratios(Metric::MiddleMib, them, Mode::Explicit)),
        );
    }
    out
}

fn verdicts(r: &Results, kernel: &KernelSteering) -> String {
    let kernel_us = kernel.per_connection_ns / 1000.0;
    let pass = kernel_us < TARGET_OVERHEAD_US;
    let capture = r.differences(Metric::MachineUs, Mode::Steered, Mode::Explicit);
    let capture_processes = r.differences(Metric::ProcessesUs, Mode::Steered, Mode::Explicit);
    let overhead = r.differences(Metric::MachineUs, Mode::Steered, Mode::Direct);
    let connect = r.differences(Metric::MachineUs, Mode::Connect, Mode::Direct);
    format!(
        "- The steering itself (the kernel's capture per connection: the guard on the SYN and \
         the socket lookup that hands it to the proxy, BPF_PROG_TEST_RUN below): {kernel_us:.2} µs \
         (target < {TARGET_OVERHEAD_US} µs) {}. End to end, steered − explicit (the same gateway \
         and passthrough, the workload connecting to it by address) is {} µs of machine CPU per \
         connection ({} µs by the benchmark's processes): within this machine's noise of \
         hundreds of µs, which the kernel figure is not.\n\
         - Steered − direct (the capture plus the userspace passthrough proxy: accept, SNI read, \
         upstream connect, relaying both ways; the gateway's own processes: {} µs): {} µs. The \
         CONNECT proxy costs {} µs over direct.\n\
         - Passthrough throughput / CONNECT proxy throughput: {}\n",
        if pass { "PASS" } else { "MISS" },
        cell(&capture),
        cell(&capture_processes),
        cell(r.values(Mode::Steered, Metric::MiddleUs)),
        cell(&overhead),
        cell(&connect),
        verdict(
            &r.ratios(Metric::Gbps, Mode::Steered, Mode::Connect),
            TARGET_VS_CONNECT
        ),
    )
}

fn notes(args: &EgressArgs) -> String {
    // /proc/stat counts whole clock ticks, so no difference is finer than one.
    let tick_us = 1e6 / ticks_per_second() / args.connections as f64;
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Method:\n\
         - Namespaces egb-wl (workload, {WORKLOAD_IP}, default route via {GATEWAY_IP}), egb-gw \
         (forwarding; the middle when its path is measured) and egb-out (nginx, \
         one worker, TLS 1.3 with one suite, {TLS13_SUITE} (`ssl_conf_command Ciphersuites`; \
         oha offers only it, curl gets it), ECDSA P-256, {SERVER_IP}:443). Every middle has one \
         worker (ours `--workers 1`, Envoy `--concurrency 1`, HAProxy `nbthread 1`, nginx \
         `worker_processes 1`) and no access log. Before each path is measured, the \
         server's view of the peer proves the path ({WORKLOAD_IP} direct, {GATEWAY_OUT_IP} \
         through the middle).\n\
         - Direct: nothing in egb-gw but forwarding (no XDP). Steered: `gateway run --labels \
         istio=egressgateway --egress-from {GATEWAY_IF} --access-log off` (XDP on {GATEWAY_IF}), \
         the workload unaware. Explicit: the same gateway without `--egress-from`, the workload \
         connecting to {GATEWAY_IP}:443 (`--connect-to`): the same proxy work, no capture. \
         The SNI proxies that do the same job, the workload connecting to {GATEWAY_IP}:443 as to \
         ours explicit: Envoy 1.40 with `tls_inspector` and a filter chain matching the name into \
         `tcp_proxy` (the listener Istio gives an egress gateway's PASSTHROUGH server), HAProxy \
         `mode tcp` with `req.ssl_sni` and `option splice-auto`, nginx `stream` with `ssl_preread` \
         and a `map` of the name; the three are given the server's address, ours resolves the \
         name (a DNS ServiceEntry, /etc/hosts here). CONNECT: tinyproxy on \
         {GATEWAY_IP}:{PROXY_PORT}, the client told (`oha -x`, `curl -x`): the reference for \
         an explicit proxy, not the same job. Each path has its own range of workload source ports: the \
         gateway leaves the workload's 4-tuples in TIME_WAIT in egb-gw, and a routed SYN that \
         reuses one is dropped there.\n\
         - Machine CPU = all non-idle time of all cores (/proc/stat `cpu`, so kernel and softirq \
         work counts) during the load run, per successful connection: client, server and path \
         together, and any other work on the machine, which the difference against direct \
         cancels only if it is steady. One clock tick of CPU time is {tick_us:.2} µs per \
         connection here, and tick sampling scatters each figure by several ticks. Benchmark \
         processes = utime+stime of oha, nginx and the middle (blind to other work, and to \
         softirq run outside them). Middle process = the middle's own processes alone.\n\
         - Connections: oha -n/-c --disable-keepalive, built without TLS resumption \
         (full handshake each), certificate not verified by oha (the same for every path). \
         Throughput: curl -o /dev/null with --cacert, `speed_download` of one download of a \
         sparse file (page cache); machine CPU s/GiB = all cores' non-idle time during it. \
         Middle memory = the middle's PSS (summed over its processes, /proc/PID/smaps_rollup) \
         after the connection-rate run, plus for ours the `memlock` of its BPF maps.\n\
         Kernel {}, {} CPUs, load average at the end: {}\n",
        kernel.trim(),
        thread::available_parallelism().map_or(1, usize::from),
        load.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_connection_row_of_the_kernel_table_is_read() {
        let table = "| kernel step of the capture | ns |\n|---|---|\n| guard | 180.0 |\n\
                     | **per connection (SYN through the guard + one lookup)** | **318.0** |\n";
        assert_eq!(per_connection_ns(table), Some(318.0));
        assert_eq!(per_connection_ns("| guard | 1 |"), None);
    }

    #[test]
    fn a_whole_download_is_read_in_gigabits() {
        let gbps = parse_download("200 1073741824 250000000.000\n", 1 << 30).expect("parsed");
        assert!((gbps - 2.0).abs() < 1e-9);
        assert!(parse_download("200 1000 250000000", 1 << 30).is_err());
        assert!(parse_download("502 1073741824 1", 1 << 30).is_err());
        assert!(parse_download("", 1 << 30).is_err());
    }

    #[test]
    fn each_sni_proxy_is_compared_with_ours_round_by_round() {
        let mut r = Results::default();
        for (mode, us, gbps) in [
            (Mode::Explicit, [40.0, 50.0], [4.0, 3.0]),
            (Mode::Steered, [40.0, 50.0], [4.0, 3.0]),
            (Mode::Envoy, [80.0, 100.0], [2.0, 3.0]),
            (Mode::Haproxy, [60.0, 50.0], [4.0, 3.0]),
        ] {
            for (u, g) in us.into_iter().zip(gbps) {
                r.push(mode, Metric::MachineUs, u);
                r.push(mode, Metric::Gbps, g);
            }
        }
        let table = comparison(&r);
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| {name}")))
                .unwrap_or_default()
                .to_string()
        };
        // Envoy costs twice ours per connection in both rounds; ours moves
        // 2× and 1× its bytes.
        assert!(
            row("Envoy").starts_with("| Envoy (tls_inspector + tcp_proxy) | 2.00× (2.00–2.00) | 2.00× (2.00–2.00) | 1.50× (1.00–2.00) |"),
            "{table}"
        );
        assert!(row("HAProxy").contains("| 1.25× (1.00–1.50) |"), "{table}");
        assert!(row("nginx").contains("| – |"), "{table}");
    }

    #[test]
    fn overhead_and_ratios_are_taken_round_by_round() {
        let mut r = Results::default();
        // The second round runs on a slower machine, for every path.
        for (mode, us, gbps) in [
            (Mode::Direct, [40.0, 50.0], [10.0, 8.0]),
            (Mode::Steered, [43.0, 54.0], [4.0, 3.0]),
            (Mode::Explicit, [42.0, 52.0], [4.0, 3.0]),
            (Mode::Connect, [60.0, 70.0], [2.0, 2.0]),
        ] {
            for (u, g) in us.into_iter().zip(gbps) {
                r.push(mode, Metric::MachineUs, u);
                r.push(mode, Metric::Gbps, g);
            }
        }
        assert_eq!(
            r.differences(Metric::MachineUs, Mode::Steered, Mode::Direct),
            [3.0, 4.0]
        );
        assert_eq!(
            r.ratios(Metric::Gbps, Mode::Steered, Mode::Connect),
            [2.0, 1.5]
        );
        let kernel = KernelSteering {
            table: String::new(),
            per_connection_ns: 318.0,
        };
        let lines = verdicts(&r, &kernel);
        assert!(lines.contains("0.32 µs (target < 5 µs) PASS"), "{lines}");
        assert!(
            lines.contains("steered − explicit (the same gateway"),
            "{lines}"
        );
        assert!(lines.contains("is 1.50 (1.00–2.00) µs"), "{lines}");
        let slow = KernelSteering {
            table: String::new(),
            per_connection_ns: 5_200.0,
        };
        assert!(verdicts(&r, &slow).contains("5.20 µs (target < 5 µs) MISS"));
        assert!(
            lines.contains("1.75× (1.50–2.00) (target ≥ 1×) PASS"),
            "{lines}"
        );
    }
}
