//! `cargo xtask bench kubernetes [--quick]`: the Kubernetes-mode daemon
//! (the `gateway` in `GATEWAY_BIN`) against a real kube-apiserver 1.20
//! holding 1,000 Gateways, 10,000 VirtualServices and 1,000 Services of 10
//! endpoints (`--quick`: a tenth). Measures the creates, the time from the
//! last create to its host being served, the daemon's memory, the edit
//! latency (against the same configuration served from files, in the same
//! run), and the watches, requests and CPU its steady state costs. Prints
//! Markdown tables.
use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, Daemon},
    hostile::{self, Scratch},
    kube::{ApiServer, Identity},
    kube_load::{self, Destination, HOSTS_PER_GATEWAY, NAMESPACES},
    netns::{GATEWAY_V4, Topology},
    usage,
};

/// Objects per `kubectl create -f` (its output stays under a pipe's 64 KiB).
const CHUNK: usize = 500;
/// Edits of one VirtualService measured in each mode.
const EDITS: usize = 20;
/// How often a client asks whether a change is served.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The longest the last create may take to be served.
const SERVED_WITHIN: Duration = Duration::from_secs(120);
/// The longest one edit may take to be served.
const EDIT_WITHIN: Duration = Duration::from_secs(15);
/// No reload for this long: the daemon has settled.
const SETTLED_AFTER: Duration = Duration::from_secs(5);
/// Each kubectl request's bound.
const REQUEST_TIMEOUT: &str = "--request-timeout=120s";

/// The sizes of one run.
struct Size {
    gateways: usize,
    /// The quiet windows (steady state, idle).
    window: Duration,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let size = if quick {
        Size {
            gateways: 100,
            window: Duration::from_secs(20),
        }
    } else {
        Size {
            gateways: 1000,
            window: Duration::from_secs(60),
        }
    };
    let backend_bin = PathBuf::from(
        std::env::var_os("GATEWAY_TEST_BACKEND").context("GATEWAY_TEST_BACKEND is not set")?,
    );
    let mut report = Report::default();
    let started = Instant::now();

    let mut topology = Topology::new();
    let backend_ns = topology.add_backend_namespace().to_string();
    let listen = format!("{}:8080", kube_load::ANSWERING);
    let address: SocketAddr = listen.parse()?;
    let _backend = Backend::start(
        &topology,
        &backend_ns,
        &backend_bin,
        &["--name", "kube-bench", "--listen", &listen],
        address,
    );
    let server = cluster(&topology)?;
    report.phase("1. namespaces, API server, CRDs and RBAC", started);

    let phase = Instant::now();
    let daemon = start_kubernetes_daemon(&topology, &server);
    let empty_rss = hostile::rss_kib(daemon.pid());
    report.phase("2. daemon started (no objects yet)", phase);

    let phase = Instant::now();
    create_all(&topology, &server, &size, &mut report)?;
    let last_created = Instant::now();
    report.phase("3. creates", phase);

    let phase = Instant::now();
    let last = size.gateways - 1;
    let served = until_body(
        &topology,
        last,
        HOSTS_PER_GATEWAY - 1,
        "backend=kube-bench",
        last_created,
        SERVED_WITHIN,
    )
    .with_context(|| {
        format!(
            "the last VirtualService was not served within {SERVED_WITHIN:?}:\n{}",
            tail(&daemon.log())
        )
    })?;
    report.row(
        "(a) last create returned -> its host served (routed to its Service's endpoint)",
        &format!("{:.2} s", served.as_secs_f64()),
        "",
        "",
    );
    let reloads = settle(&daemon)?;
    report.note(format!(
        "Reloads from the first create until settled: {}; the last: `{}`.",
        reloads.count, reloads.last
    ));
    report.phase("4a-b. served and settled", phase);

    let phase = Instant::now();
    let kube_edits = edit_kubernetes(&topology, &server, &daemon)?;
    report.phase("4c. 20 edits (Kubernetes)", phase);

    let phase = Instant::now();
    let steady = window(&topology, &server, Some(daemon.pid()), size.window)?;
    report.phase("4d. steady-state window", phase);
    let phase = Instant::now();
    report.row(
        "(b) daemon RSS before any object existed",
        &format!("{:.0} MiB", empty_rss as f64 / 1024.0),
        "",
        "",
    );
    report.row(
        "(b) the watched objects as the API server serves them (`kubectl get -A -o json`)",
        &served_json(&topology, &server)?,
        "",
        "",
    );
    report.phase("4e. sizes of the watched objects", phase);
    // Kept for reading what the daemon did (the guard removes its log).
    if let Some(path) = std::env::var_os("GATEWAY_BENCH_DAEMON_LOG") {
        fs::write(&path, daemon.log()).context("cannot keep the daemon's log")?;
    }
    drop(daemon);

    let phase = Instant::now();
    // The daemon's watches are gone once its connections are closed.
    thread::sleep(SETTLED_AFTER);
    let idle = window(&topology, &server, None, size.window)?;
    report.phase("5a. idle window (no daemon)", phase);

    let phase = Instant::now();
    let scratch = Scratch::new();
    let file_edits = edit_files(&topology, &scratch.path, &size)?;
    report.phase("5b. file mode: start and 20 edits", phase);

    report.edits(&kube_edits, &file_edits);
    report.steady(&steady, &idle, size.window);
    report.note(format!(
        "Sizes: {} Gateways (one HTTP server each, ports {}-{}), {} VirtualServices (one host each, every other one routed to its Gateway's Service), {} Services with one EndpointSlice of {} endpoints (the last one's only endpoint is the test-backend), VirtualServices and Services in {NAMESPACES} namespaces; the quiet windows {} s each.",
        size.gateways,
        kube_load::FIRST_PORT,
        kube_load::port(last),
        size.gateways * HOSTS_PER_GATEWAY,
        size.gateways,
        kube_load::ENDPOINTS_PER_SERVICE,
        size.window.as_secs()
    ));
    report.phase("total", started);
    print!("{}", report.markdown());
    Ok(())
}

fn manifest(name: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name);
    fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The API server in the gateway's namespace with the CRDs, the gateway's
/// RBAC and the bench's namespaces.
fn cluster(topology: &Topology) -> anyhow::Result<ApiServer> {
    let server = ApiServer::start(topology, &topology.gateway_ns);
    server.apply(topology, &manifest("crds.yaml")?);
    server.apply(topology, &manifest("rbac.yaml")?);
    kubectl(
        topology,
        &server,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd",
            "--all",
        ],
        "",
    )?;
    let namespaces = kube_load::join(
        (0..NAMESPACES)
            .map(|n| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench-{n}}}\n")),
    );
    kubectl(topology, &server, &["create", "-f", "-"], &namespaces)?;
    Ok(server)
}

/// `kubectl <args>` as the admin with `stdin`; an error carries its output.
fn kubectl(
    topology: &Topology,
    server: &ApiServer,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<()> {
    let mut argv = vec![REQUEST_TIMEOUT];
    argv.extend_from_slice(args);
    let out = server.kubectl(topology, Identity::Admin, &argv, stdin);
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The daemon in Kubernetes mode as the gateway's service account.
fn start_kubernetes_daemon(topology: &Topology, server: &ApiServer) -> Daemon {
    let kubeconfig = server.kubeconfig(Identity::Gateway);
    let kubeconfig = kubeconfig.to_string_lossy();
    Daemon::start(
        topology,
        &[
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--interface",
            &topology.gateway_if,
            "--address",
            GATEWAY_V4,
            "--admin-address",
            ADMIN,
        ],
    )
}

/// Creates the Services (with their slices), then the Gateways, then the
/// VirtualServices, `CHUNK` objects per `kubectl create`; reports each.
fn create_all(
    topology: &Topology,
    server: &ApiServer,
    size: &Size,
    report: &mut Report,
) -> anyhow::Result<()> {
    let last = size.gateways - 1;
    let kinds: [(&str, Vec<String>); 3] = [
        (
            "Services + EndpointSlices",
            (0..size.gateways)
                .flat_map(|i| {
                    kube_load::service(i, i == last)
                        .split("---\n")
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
        (
            "Gateways",
            (0..size.gateways).map(kube_load::gateway).collect(),
        ),
        (
            "VirtualServices",
            (0..size.gateways)
                .flat_map(|i| {
                    (0..HOSTS_PER_GATEWAY)
                        .map(move |j| kube_load::virtual_service(i, j, Destination::Service, 0))
                })
                .collect(),
        ),
    ];
    for (what, documents) in kinds {
        let count = documents.len();
        let started = Instant::now();
        for chunk in documents.chunks(CHUNK) {
            let text = kube_load::join(chunk.iter().cloned());
            kubectl(
                topology,
                server,
                &["create", "-o", "name", "-f", "-"],
                &text,
            )?;
        }
        let took = started.elapsed().as_secs_f64();
        report.row(
            &format!("create {count} {what} (`kubectl create -f`, {CHUNK} a call)"),
            &format!("{took:.1} s ({:.0} objects/s)", count as f64 / took),
            "",
            "",
        );
    }
    Ok(())
}

/// What VirtualService `vs` of Gateway `gateway` answers, or `None` when
/// the request failed.
fn get(topology: &Topology, gateway: usize, vs: usize) -> Option<String> {
    let host = kube_load::host(gateway, vs);
    let port = kube_load::port(gateway);
    let out = topology.client(&[
        "curl",
        "-s",
        "--connect-timeout",
        "0.2",
        "--max-time",
        "1",
        "--resolve",
        &format!("{host}:{port}:{GATEWAY_V4}"),
        &format!("http://{host}:{port}/"),
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls every [`POLL_EVERY`] until the host's body starts with `want`;
/// the time from `since`, or `None` after `within`.
fn until_body(
    topology: &Topology,
    gateway: usize,
    vs: usize,
    want: &str,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let polls = within.as_millis() / POLL_EVERY.as_millis();
    for _ in 0..polls {
        let asked = Instant::now();
        if get(topology, gateway, vs).is_some_and(|body| body.starts_with(want)) {
            return Some(since.elapsed());
        }
        if since.elapsed() > within {
            return None;
        }
        thread::sleep(POLL_EVERY.saturating_sub(asked.elapsed()));
    }
    None
}

/// The daemon's reloads so far: how many, and the last one's log line.
struct Reloads {
    count: usize,
    last: String,
}

fn reloads(daemon: &Daemon) -> Reloads {
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration reloaded:"))
        .collect();
    Reloads {
        count: lines.len(),
        last: lines
            .last()
            .map_or_else(String::new, |l| l.trim().to_string()),
    }
}

/// (read + compile ms, kernel maps ms) of each reload logged after the
/// first `skip` reloads.
fn reload_times(daemon: &Daemon, skip: usize) -> Vec<(f64, f64)> {
    let number = |line: &str, after: &str| -> Option<f64> {
        let rest = &line[line.find(after)? + after.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("configuration reloaded:"))
        .skip(skip)
        .filter_map(|l| Some((number(l, "compiled in ")?, number(l, "maps updated in ")?)))
        .collect()
}

/// Waits (at most 3 minutes) until no reload came for [`SETTLED_AFTER`].
fn settle(daemon: &Daemon) -> anyhow::Result<Reloads> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = reloads(daemon).count;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        let now = reloads(daemon);
        if now.count != seen {
            seen = now.count;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= SETTLED_AFTER {
            return Ok(now);
        }
    }
    bail!(
        "the daemon still reloads after 3 minutes:\n{}",
        tail(&daemon.log())
    )
}

/// One mode's edits: how long each took to be served, and the requests
/// on the way that answered neither the old body nor the new one.
struct Edits {
    took: Vec<Duration>,
    failed: usize,
    /// The daemon's reloads meanwhile: (read + compile ms, kernel maps ms).
    reloads: Vec<(f64, f64)>,
    /// The daemon's resident memory before the edits (once settled).
    rss_kib: u64,
}

/// Edits VirtualService 0 of Gateway 0 (a direct response) [`EDITS`] times
/// with `change`, each time polling until its new body is served.
fn edits(
    topology: &Topology,
    daemon: &Daemon,
    mut change: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Edits> {
    let mut out = Edits {
        took: Vec::new(),
        failed: 0,
        reloads: Vec::new(),
        rss_kib: hostile::rss_kib(daemon.pid()),
    };
    let before = reloads(daemon).count;
    if get(topology, 0, 0).as_deref() != Some(kube_load::body(0, 0, 0).as_str()) {
        bail!("the edited host does not answer its first body");
    }
    for version in 1..=EDITS {
        change(version)?;
        let since = Instant::now();
        let (old, new) = (
            kube_load::body(0, 0, version - 1),
            kube_load::body(0, 0, version),
        );
        let polls = EDIT_WITHIN.as_millis() / POLL_EVERY.as_millis();
        let mut served = None;
        for _ in 0..polls {
            let asked = Instant::now();
            match get(topology, 0, 0) {
                Some(body) if body == new => {
                    served = Some(since.elapsed());
                    break;
                }
                Some(body) if body == old => {}
                _ => out.failed += 1,
            }
            thread::sleep(POLL_EVERY.saturating_sub(asked.elapsed()));
        }
        out.took.push(
            served.with_context(|| format!("edit {version} not served within {EDIT_WITHIN:?}"))?,
        );
        // Apart, so each edit is measured alone.
        thread::sleep(Duration::from_millis(300));
    }
    out.reloads = reload_times(daemon, before);
    Ok(out)
}

/// The edits through the API server (`kubectl apply`, as an operator edits).
fn edit_kubernetes(
    topology: &Topology,
    server: &ApiServer,
    daemon: &Daemon,
) -> anyhow::Result<Edits> {
    edits(topology, daemon, |version| {
        let text = kube_load::virtual_service(0, 0, Destination::Service, version);
        kubectl(topology, server, &["apply", "-f", "-"], &text)
    })
    .with_context(|| tail(&daemon.log()))
}

/// The same configuration from files, one daemon serving it, and the
/// edits of its VirtualService file (a temp file renamed over it).
fn edit_files(topology: &Topology, dir: &Path, size: &Size) -> anyhow::Result<Edits> {
    let last = size.gateways - 1;
    let config = dir.join("config");
    fs::create_dir_all(&config)?;
    fs::write(
        config.join("gateways.yaml"),
        kube_load::join((0..size.gateways).map(kube_load::gateway)),
    )?;
    fs::write(
        config.join("service-entries.yaml"),
        kube_load::join((0..size.gateways).map(|i| kube_load::service_entry(i, i == last))),
    )?;
    let others = (0..size.gateways).flat_map(|i| {
        (0..HOSTS_PER_GATEWAY)
            .filter(move |j| (i, *j) != (0, 0))
            .map(move |j| kube_load::virtual_service(i, j, Destination::ServiceEntry, 0))
    });
    fs::write(
        config.join("virtual-services.yaml"),
        kube_load::join(others),
    )?;
    let edited = config.join("edited.yaml");
    let write = |version: usize| -> anyhow::Result<()> {
        let staged = dir.join("edited.staged");
        fs::write(
            &staged,
            kube_load::virtual_service(0, 0, Destination::ServiceEntry, version),
        )?;
        fs::rename(&staged, &edited)?;
        Ok(())
    };
    write(0)?;
    let config_arg = config.to_string_lossy();
    let daemon = Daemon::start(
        topology,
        &[
            "--config",
            &config_arg,
            "--interface",
            &topology.gateway_if,
            "--address",
            GATEWAY_V4,
            "--admin-address",
            ADMIN,
        ],
    );
    if until_body(
        topology,
        last,
        HOSTS_PER_GATEWAY - 1,
        "backend=kube-bench",
        Instant::now(),
        SERVED_WITHIN,
    )
    .is_none()
    {
        bail!(
            "file mode does not serve the last route:\n{}",
            tail(&daemon.log())
        );
    }
    // Its RSS is read once it has settled, as in Kubernetes mode.
    settle(&daemon)?;
    edits(topology, &daemon, write).with_context(|| tail(&daemon.log()))
}

/// What one quiet window saw: the API server's watches at its end, and
/// its requests, the machine's CPU and the daemon's over it.
struct Window {
    watches: f64,
    watches_by_resource: std::collections::BTreeMap<String, f64>,
    requests: f64,
    /// CPU seconds of the API server and etcd (and the idle backend).
    cluster_cpu: f64,
    /// The requests by `verb resource`.
    requests_by: std::collections::BTreeMap<String, f64>,
    machine_cpu: f64,
    daemon_cpu: Option<f64>,
}

/// A window of `length` in which the bench does nothing: the API server's
/// `/metrics` read before and after, the CPU counters right around it.
fn window(
    topology: &Topology,
    server: &ApiServer,
    daemon: Option<u32>,
    length: Duration,
) -> anyhow::Result<Window> {
    let before = metrics(topology, server)?;
    let machine = usage::machine_busy_seconds().context("/proc/stat")?;
    let own = daemon.map(hostile::cpu_time);
    let cluster = cluster_cpu(daemon);
    thread::sleep(length);
    let machine_cpu = usage::machine_busy_seconds().context("/proc/stat")? - machine;
    let daemon_cpu = daemon
        .map(hostile::cpu_time)
        .zip(own)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64());
    let cluster_cpu = cluster_cpu(daemon).saturating_sub(cluster).as_secs_f64();
    let after = metrics(topology, server)?;
    let watch = [("verb", "WATCH")];
    // Requests for resources only: the bench's own /metrics reads are
    // not resource requests (the 1.20 server does not count them at all).
    let requests = |text: &str| {
        usage::sum(text, "apiserver_request_total", &[])
            - usage::sum(text, "apiserver_request_total", &[("resource", "")])
    };
    Ok(Window {
        watches: usage::sum(&after, "apiserver_longrunning_gauge", &watch),
        watches_by_resource: usage::sum_by(
            &after,
            "apiserver_longrunning_gauge",
            &["resource"],
            &watch,
        ),
        requests: requests(&after) - requests(&before),
        requests_by: {
            let by = |text: &str| {
                usage::sum_by(text, "apiserver_request_total", &["verb", "resource"], &[])
            };
            let earlier = by(&before);
            by(&after)
                .into_iter()
                .map(|(key, n)| (n - earlier.get(&key).copied().unwrap_or(0.0), key))
                .filter(|(n, _)| *n > 0.0)
                .map(|(n, key)| (key, n))
                .collect()
        },
        machine_cpu,
        daemon_cpu,
        cluster_cpu,
    })
}

/// The JSON size of the kinds the daemon watches here, as `kubectl get -A
/// -o json` returns them (what a list or watch carries, `managedFields`
/// included): a figure to set the daemon's memory against.
fn served_json(topology: &Topology, server: &ApiServer) -> anyhow::Result<String> {
    let mut sizes = Vec::new();
    for kind in [
        "gateways.networking.istio.io",
        "virtualservices.networking.istio.io",
        "services",
        "endpointslices.discovery.k8s.io",
    ] {
        let out = server.kubectl(
            topology,
            Identity::Admin,
            &[REQUEST_TIMEOUT, "get", kind, "-A", "-o", "json"],
            "",
        );
        if !out.status.success() {
            bail!(
                "cannot list {kind}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let short = kind.split('.').next().unwrap_or(kind);
        sizes.push(format!(
            "{short} {:.1} MB",
            out.stdout.len() as f64 / 1_000_000.0
        ));
    }
    Ok(sizes.join(", "))
}

/// CPU time so far of the bench's servers (every child but the daemon).
fn cluster_cpu(daemon: Option<u32>) -> Duration {
    usage::children(std::process::id())
        .into_iter()
        .filter(|pid| Some(*pid) != daemon)
        .map(hostile::cpu_time)
        .sum()
}

fn metrics(topology: &Topology, server: &ApiServer) -> anyhow::Result<String> {
    let out = server.kubectl(
        topology,
        Identity::Admin,
        &[REQUEST_TIMEOUT, "get", "--raw", "/metrics"],
        "",
    );
    if !out.status.success() {
        bail!(
            "cannot read /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last 40 lines of a log, for an error.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The tables being written.
#[derive(Default)]
struct Report {
    rows: Vec<[String; 4]>,
    phases: Vec<(String, Duration)>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, figure: &str, kubernetes: &str, file: &str, target: &str) {
        self.rows.push([
            figure.to_string(),
            kubernetes.to_string(),
            file.to_string(),
            target.to_string(),
        ]);
    }

    fn phase(&mut self, name: &str, since: Instant) {
        self.phases.push((name.to_string(), since.elapsed()));
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn edits(&mut self, kube: &Edits, file: &Edits) {
        let mib = |edits: &Edits| format!("{:.0} MiB", edits.rss_kib as f64 / 1024.0);
        self.row("(b) daemon RSS, settled", &mib(kube), &mib(file), "");
        let (k, f) = (percentiles(&kube.took), percentiles(&file.took));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let ratio = |a: Duration, b: Duration| ms(a) / ms(b).max(0.001);
        for (name, index, target) in [
            ("median", 0, "< 100 ms (Kubernetes)"),
            ("p90", 1, ""),
            ("max", 2, ""),
        ] {
            self.row(
                &format!("(c) edit -> new body served, {name} of {EDITS}"),
                &format!("{:.0} ms", ms(k[index])),
                &format!(
                    "{:.0} ms (Kubernetes/file {:.2}x)",
                    ms(f[index]),
                    ratio(k[index], f[index])
                ),
                target,
            );
        }
        let median = |edits: &Edits, part: fn(&(f64, f64)) -> f64| {
            let mut values: Vec<f64> = edits.reloads.iter().map(part).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let reload = |edits: &Edits| {
            format!(
                "{} reloads; median {:.0} ms read + compile, {:.1} ms kernel maps",
                edits.reloads.len(),
                median(edits, |r| r.0),
                median(edits, |r| r.1)
            )
        };
        self.row(
            "(c) the daemon's reloads during the edits (its log)",
            &reload(kube),
            &reload(file),
            "",
        );
        self.row(
            "(c) requests that answered neither body during the edits",
            &kube.failed.to_string(),
            &file.failed.to_string(),
            "0",
        );
    }

    fn steady(&mut self, steady: &Window, idle: &Window, length: Duration) {
        let seconds = length.as_secs_f64();
        let daemons_watches: Vec<String> = steady
            .watches_by_resource
            .iter()
            .map(|(resource, n)| {
                let before = idle
                    .watches_by_resource
                    .get(resource)
                    .copied()
                    .unwrap_or(0.0);
                (resource, n - before)
            })
            .filter(|(_, n)| *n != 0.0)
            .map(|(resource, n)| format!("{resource} {n}"))
            .collect();
        self.row(
            "(d) watches held (API server's WATCH gauge, with daemon minus without)",
            &format!(
                "{} ({} - {}): {}",
                steady.watches - idle.watches,
                steady.watches,
                idle.watches,
                daemons_watches.join(", ")
            ),
            "",
            "",
        );
        self.row(
            "(d) API requests/s over the quiet window (with daemon minus without)",
            &format!(
                "{:.2} ({:.0} - {:.0} requests in {seconds:.0} s)",
                (steady.requests - idle.requests) / seconds,
                steady.requests,
                idle.requests
            ),
            "",
            "",
        );
        let list = |window: &Window| {
            window
                .requests_by
                .iter()
                .map(|(key, n)| format!("{} {n}", key.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.note(format!(
            "Requests the API server completed in the quiet windows, by verb and resource (a watch counts when it ends; the rest are the API server's own loops): with the daemon: {}; without: {}.",
            list(steady),
            list(idle)
        ));
        self.row(
            "(d) whole-machine CPU over the quiet window: daemon running vs idle (API server and etcd up, no daemon)",
            &format!(
                "{:.2} s vs {:.2} s ({:+.2} s); of which the daemon's own {:.2} s, the API server's and etcd's {:.2} s vs {:.2} s",
                steady.machine_cpu,
                idle.machine_cpu,
                steady.machine_cpu - idle.machine_cpu,
                steady.daemon_cpu.unwrap_or(f64::NAN),
                steady.cluster_cpu,
                idle.cluster_cpu
            ),
            "",
            "",
        );
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "| figure | Kubernetes mode | file mode (baseline) | target |\n|---|---|---|---|\n",
        );
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push('\n');
        for note in &self.notes {
            out.push_str(note);
            out.push_str("\n\n");
        }
        out.push_str("| phase | seconds |\n|---|---|\n");
        for (name, took) in &self.phases {
            out.push_str(&format!("| {name} | {:.1} |\n", took.as_secs_f64()));
        }
        out
    }
}

/// Median, p90 and max of `took`.
fn percentiles(took: &[Duration]) -> [Duration; 3] {
    [0.5, 0.9, 1.0].map(|q| hostile::quantile(took, q))
}
