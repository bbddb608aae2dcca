//! `gateway run`: load, compile, bind, attach, serve, and detach on signal.
use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use gateway_common::Settings;
use gateway_userspace::{
    admin, compile,
    config::{Config, Severity},
    connection::{self, Counters, Gate, Limits},
    dataplane::{Dataplane, EbpfLog, EgressMaps, pins},
    egress::{
        allow_list::AllowList,
        refusal_log,
        registry::{Registry, host_cidr, registry},
    },
    log_pipe, management,
    model::Instance,
    plan,
    proxy::{self, egress::OutboundPolicy},
    readiness::{self, Readiness},
    stats,
    watch::Watcher,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{LogFormat, RunArgs};

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before any thread exists: pins must live where they outlive us.
    match pins::prepare_outer_bpffs() {
        Ok(Some(pid)) => log::info!(
            "pinned maps and links go to the bpffs at {} in the mount namespace of process {pid} (outside `ip netns exec`'s), so they outlive this process",
            pins::BPFFS
        ),
        Ok(None) => {}
        Err(err) => log::warn!(
            "cannot reach the mount namespace outside `ip netns exec`'s ({err}); the pinned maps and links will not outlive this process"
        ),
    }
    let (runtime, workers) = runtime(args.workers).context("cannot start the async runtime")?;
    log::info!("serving on {workers} worker thread(s)");
    let result = runtime.block_on(serve(args));
    // Whatever is still running (a task stuck on something outside us)
    // does not hold the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// How long the runtime's leftover tasks get at exit, after the drain.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);
/// How long the exit waits for the log's readers to take the last lines.
pub const LOG_FLUSH_ON_EXIT: Duration = Duration::from_secs(1);
/// How often lines dropped for a stalled log reader are reported.
const LOG_DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Reports, once per interval, the log lines dropped because nobody read
/// stdout or stderr fast enough (the report itself goes to stderr, so a
/// stalled stderr shows it once its reader is back).
async fn report_dropped_log_lines() {
    let mut interval = tokio::time::interval(LOG_DROP_REPORT_INTERVAL);
    let mut report = log_pipe::DropReport::default();
    loop {
        interval.tick().await;
        let [stdout, stderr] = report.since_last(log_pipe::dropped_totals());
        if stdout > 0 {
            log::error!(
                "access log: {stdout} line(s) dropped in the last {}s: stdout's reader is not keeping up (log.stdout.dropped_lines)",
                LOG_DROP_REPORT_INTERVAL.as_secs()
            );
        }
        if stderr > 0 {
            log::error!(
                "daemon log: {stderr} line(s) dropped in the last {}s: stderr's reader is not keeping up (log.stderr.dropped_lines)",
                LOG_DROP_REPORT_INTERVAL.as_secs()
            );
        }
    }
}

/// The scheduler for `--workers` (default: the CPUs this process may run
/// on) and the number of workers it has. One worker gets the
/// single-threaded scheduler: with the work-stealing one, the wake-ups
/// between a downstream and its upstream connection go through shared
/// queues for nothing (in the proxy benchmark, a TLS proxied request cost
/// about 38 µs of CPU on it against 30 µs single-threaded).
fn runtime(workers: Option<u16>) -> std::io::Result<(tokio::runtime::Runtime, usize)> {
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    Ok((builder.enable_all().build()?, workers))
}

/// Reads and validates the configuration: every diagnostic is logged in
/// the `check` format, and any error, or no Gateway selecting this
/// instance, refuses it.
fn read_config(args: &RunArgs, instance: &Instance) -> anyhow::Result<Config> {
    let config = args.source.load(&args.config)?;
    for diagnostic in &config.diagnostics {
        match diagnostic.severity {
            Severity::Error => log::error!("{diagnostic}"),
            Severity::Warning => log::warn!("{diagnostic}"),
            Severity::Note => log::info!("{diagnostic}"),
        }
    }
    let errors = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        bail!("{errors} error(s) in the configuration");
    }
    if config.model.gateways.is_empty() {
        bail!("no Gateway resources found in the configuration paths");
    }
    let read = config.model.gateways.len();
    if !config
        .model
        .gateways
        .iter()
        .any(|g| g.selects(&instance.labels))
    {
        let labels: Vec<String> = instance
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        bail!(
            "none of the {read} Gateways selects this instance (labels {}); pass the workload's labels with --labels",
            labels.join(",")
        );
    }
    Ok(config)
}

/// A configuration compiled and ready to serve.
struct Built {
    plan: plan::Plan,
    served: proxy::Served,
    /// What the registry lets captured workloads reach (egress).
    registry: Registry,
    /// The certificate files it names, watched for changes.
    certificates: Vec<PathBuf>,
}

/// Compiles `config` for this instance and builds what the proxy serves
/// (certificates loaded, regexes compiled). `previous`, on a reload, lends
/// its ids to the listeners and hosts that stay.
fn build(
    config: &Config,
    args: &RunArgs,
    instance: &Instance,
    addresses: &[IpAddr],
    options: &proxy::Options,
    previous: Option<&plan::Plan>,
) -> anyhow::Result<Built> {
    let mut plan = compile::plan(&config.model, instance, addresses)?;
    plan.reset_unknown_hosts(&args.reset_unknown_hosts)?;
    if let Some(previous) = previous {
        plan.keep_ids_from(previous);
    }
    for warning in &plan.warnings {
        log::warn!("{warning}");
    }
    for dropped in &plan.dropped {
        log::warn!(
            "Gateway {}: spec.servers[{}] not served: {}",
            dropped.gateway,
            dropped.server,
            dropped.reason
        );
    }
    let served = proxy::Served::new(&plan, options.clone()).map_err(|err| {
        anyhow::anyhow!(
            "{err}: {}",
            std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
        )
    })?;
    Ok(Built {
        plan,
        served,
        registry: registry(&config.model),
        certificates: certificate_files(config),
    })
}

/// Every certificate, key and CA file the configuration names.
fn certificate_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for gateway in &config.model.gateways {
        for server in &gateway.servers {
            let Some(tls) = &server.tls else { continue };
            for cert in &tls.certificates {
                files.push(PathBuf::from(&cert.certificate));
                files.push(PathBuf::from(&cert.private_key));
            }
            files.extend(tls.client_ca.iter().map(PathBuf::from));
        }
    }
    files.sort();
    files.dedup();
    files
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    // Shared with the reloads, which compile on a blocking thread.
    let args = Arc::new(args);
    let instance = Arc::new(args.instance.instance());
    let config = read_config(&args, &instance)
        .map_err(|err| anyhow::anyhow!("{err:#}; nothing was started"))?;
    let allowed = management::allow_list(&args.allow_port).map_err(anyhow::Error::msg)?;
    // Privilege first: loading needs CAP_BPF, and touches nothing outside the process.
    if let Some(pid) = gateway_userspace::pidfile::running(&args.interface) {
        bail!(
            "another gateway (process {pid}) already serves interface {}; stop it first, or `gateway reload --interface {}` to change its configuration",
            args.interface,
            args.interface
        );
    }
    // Pins no daemon can adopt any more (their interface or namespace is
    // gone) hold kernel memory until removed: this start removes them.
    prune_orphaned_pins();
    // Maps and links are pinned: a daemon killed outright leaves XDP in
    // place, and this one adopts what a previous one left.
    let mut dataplane = Dataplane::load_pinned(&args.interface, args.ebpf_log)?;
    let interface_addrs = interface_addresses(&args.interface)?;
    let addresses = if args.address.is_empty() {
        interface_addrs
    } else {
        check_addresses_on_interface(&args.address, &interface_addrs, &args.interface)?;
        args.address.clone()
    };
    let open_files = raise_open_file_limit();
    let max_connections = args.max_connections.map_or_else(
        || connection::default_max_connections(open_files),
        |n| usize::try_from(n).unwrap_or(usize::MAX),
    );
    let proxy_gate = Arc::new(Gate::new(Limits {
        request_head_timeout: args.request_head_timeout,
        idle_timeout: args.idle_timeout,
        stream_idle_timeout: args.stream_idle_timeout,
        max_connections,
        max_per_source: args.max_connections_per_source.map_or_else(
            || connection::default_max_per_source(max_connections),
            |n| usize::try_from(n).unwrap_or(usize::MAX),
        ),
    }));
    let admin_gate = Arc::new(Gate::new(Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        max_per_source: ADMIN_MAX_CONNECTIONS,
        ..proxy_gate.limits
    }));
    let captured = captured_interfaces(&args.egress_from)?;
    let egress_maps = if captured.is_empty() {
        None
    } else {
        Some(dataplane.take_egress_maps()?)
    };
    let workloads_for_stats = egress_maps.as_ref().map(|maps| maps.workloads());
    let options = proxy::Options {
        trusted_proxies: args.trusted_proxies,
        tcp_idle_timeout: args.tcp_idle_timeout,
        access_log: match (args.access_log.as_str(), args.access_log_format) {
            ("off", _) => proxy::access_log::Format::Off,
            (_, LogFormat::Json) => proxy::access_log::Format::Json,
            (_, LogFormat::Text) => proxy::access_log::Format::Text,
        },
        egress: egress_maps.as_ref().map(|maps| proxy::egress::Egress {
            policy: args.outbound_traffic_policy,
            gateway_addresses: addresses.clone(),
            interfaces: captured
                .iter()
                .map(|(index, name)| (*index, Arc::from(name.as_str())))
                .collect(),
            workloads: Some({
                let workloads = maps.workloads();
                Arc::new(move |addr, among: &mut dyn Iterator<Item = u32>| {
                    workloads.interface_of(addr, among)
                }) as proxy::egress::InterfaceLookup
            }),
        }),
    };
    // Certificates and keys are loaded before anything is attached.
    let Built {
        plan,
        served,
        registry,
        certificates,
    } = build(&config, &args, &instance, &addresses, &options, None)?;
    drop(config);
    // The proxy's sockets on loopback ports (per address family and per
    // listener kind); the kernel steers every listener's connections into
    // them (sk_lookup), so nothing is bound per listener and no listener
    // port can be taken by another process.
    let listeners = proxy::steering_sockets(!args.egress_from.is_empty()).map_err(|err| {
        anyhow::anyhow!(
            "{err}: {}",
            std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
        )
    })?;
    let admin_listener = std::net::TcpListener::bind(args.admin_address)
        .with_context(|| format!("cannot listen on the admin address {}", args.admin_address))?;

    dataplane.apply(&plan, ephemeral_range())?;
    dataplane.set_allowed_ports(&management::allowed_port_words(&allowed))?;
    dataplane.set_proxy_sockets(
        &listeners
            .iter()
            .map(|l| (l.slot, std::os::fd::AsFd::as_fd(l)))
            .collect::<Vec<_>>(),
    )?;
    dataplane.attach_steering()?;
    let registry_tx = match egress_maps {
        Some(maps) => {
            Some(start_egress_guard(&args, &mut dataplane, maps, &captured, registry).await?)
        }
        None => None,
    };
    let _capture = if args.egress_from.is_empty() {
        None
    } else {
        let capture =
            gateway_userspace::egress::Capture::install(&args.egress_from, &args.egress_exclude)
                .map_err(anyhow::Error::msg)?;
        log::info!(
            "egress: capturing the outbound TCP of the workloads behind {} (excluded: {})",
            args.egress_from.join(", "),
            args.egress_exclude
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Some(capture)
    };
    let default_routes = management::default_route_interfaces(
        &fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    );
    if let Some(warning) = management::lockout_warning(&args.interface, &allowed, &default_routes) {
        log::warn!("{warning}");
    }
    dataplane.attach(&args.interface, args.xdp_mode)?;
    // From here on the daemon's own descriptors hold the links: removing
    // the pins takes nothing away (`repair` pins them again).
    dataplane.hold_pins()?;
    // Written once this instance owns the interface; `gateway reload` reads it.
    write_layout(&args.interface, &plan);
    let _pid_file = match gateway_userspace::pidfile::PidFile::create(&args.interface) {
        Ok(file) => Some(file),
        Err(err) => {
            log::warn!(
                "{err:#}; `gateway reload` will not find this daemon (send SIGHUP yourself)"
            );
            None
        }
    };
    // The maps' kernel memory, which no RSS shows: said at start, and a
    // gauge on /stats.
    let memlock = match dataplane.memlock() {
        Some(Ok(memlock)) => Some(memlock),
        Some(Err(err)) => {
            log::warn!("cannot open the maps to read their kernel memory (memlock): {err}");
            None
        }
        None => None,
    };
    let memlock_bytes = memlock.as_ref().and_then(|m| m.bytes().ok());
    log::info!(
        "XDP attached to {} ({:?} mode); gateway addresses: {}; the maps hold {} of locked kernel memory (memlock, outside the RSS)",
        args.interface,
        args.xdp_mode,
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        memlock_bytes.map_or("an unknown amount".to_string(), pins::human_bytes)
    );
    log::info!(
        "management ports passed on the gateway's addresses (--allow-port): {}",
        management::describe(&allowed)
    );
    for listener in &plan.listeners {
        let bind = listener.bind.map_or("*".to_string(), |ip| ip.to_string());
        log::info!("listener {bind}:{} {:?}", listener.port, listener.kind);
    }
    log::info!(
        "listener connections are steered (sk_lookup) to the proxy's sockets {}",
        listeners
            .iter()
            .map(|l| l.local_addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let limits = proxy_gate.limits;
    log::info!(
        "connections: at most {} at once (open-file limit {open_files}), {} from one client, each listener keeping a reserve of 1/(2 x listeners) of them; request head within {:?}; HTTP idle timeout {:?}, stream idle timeout {:?}; TCP idle timeout {:?}",
        limits.max_connections,
        limits.max_per_source,
        limits.request_head_timeout,
        limits.idle_timeout,
        limits.stream_idle_timeout,
        args.tcp_idle_timeout
    );

    let stats_reader = dataplane.take_stats_reader()?;
    let (proxy_counters, admin_counters) = (
        Arc::clone(&proxy_gate.counters),
        Arc::clone(&admin_gate.counters),
    );
    let reloads = Arc::new(stats::ReloadCounters::default());
    let daemon_counters = Arc::new(stats::DaemonCounters::default());
    let readiness = Arc::new(Readiness::default());
    // The plan the counters are read for: a reload replaces it.
    let (plan_tx, plan_rx) = watch::channel(Arc::new(plan));
    let render_reloads = Arc::clone(&reloads);
    let render_daemon = Arc::clone(&daemon_counters);
    let workloads = workloads_for_stats;
    let captured_names = captured.clone();
    let render: admin::RenderFn = Box::new(move |format| {
        let plan = Arc::clone(&plan_rx.borrow());
        let hosts = plan.kernel_hosts();
        let snapshot = stats_reader
            .read(
                plan.listeners.iter().map(|l| l.id),
                hosts.iter().map(|h| h.id),
            )
            .map_err(|err| err.to_string())?;
        let mut samples = stats::samples(
            &snapshot,
            &plan,
            &render_reloads,
            &[("proxy", &proxy_counters), ("admin", &admin_counters)],
        );
        if let Some(workloads) = &workloads {
            samples.extend(stats::workload_samples(&workloads.all(), &captured_names));
        }
        samples.extend(stats::daemon_samples(
            log_pipe::dropped_totals(),
            &render_daemon,
            memlock.as_ref().and_then(|m| m.bytes().ok()),
        ));
        Ok(match format {
            admin::StatsFormat::Text => stats::render(&samples),
            admin::StatsFormat::Prometheus => stats::render_prometheus(&samples),
        })
    });

    if args.ebpf_log != EbpfLog::Off {
        match dataplane.take_event_logger() {
            Some(logger) => {
                tokio::spawn(forward_kernel_events(logger));
            }
            None => log::warn!("--ebpf-log: the kernel programs' event buffer is missing"),
        }
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(return_memory_after_bursts(Arc::clone(&proxy_gate.counters)));
    tokio::spawn(report_dropped_log_lines());
    readiness.beat(std::time::Instant::now());
    tokio::spawn(readiness::heartbeat(Arc::clone(&readiness)));
    // The sender stays here: a configuration reload replaces what is served.
    let (served_tx, served_rx) = watch::channel(Arc::new(served));
    let proxy_task = tokio::spawn(proxy::serve(
        listeners,
        served_rx,
        proxy_gate,
        shutdown_rx.clone(),
    ));
    let admin_thread = admin::spawn(
        admin_listener,
        render,
        Arc::clone(&readiness),
        admin_gate,
        shutdown_rx,
    )
    .context("cannot start the admin thread")?;
    log::info!("admin on http://{}/stats", args.admin_address);
    // Loading the program parses the kernel's BTF (tens of MB at peak, all
    // freed by now): give that memory back instead of idling on it.
    release_freed_memory();

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut watcher = Watcher::new(args.config.clone(), certificates, args.config_settle);
    let mut poll = tokio::time::interval(WATCH_INTERVAL);
    let reload = Reload {
        args: Arc::clone(&args),
        instance: Arc::clone(&instance),
        addresses: Arc::from(addresses.as_slice()),
        options,
        counters: &reloads,
        registry: registry_tx.as_ref(),
    };
    loop {
        let why = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break }
            _ = sighup.recv() => Trigger::Asked,
            _ = poll.tick() => {
                repair_dataplane(&mut dataplane, &daemon_counters, &readiness);
                if !watcher.poll() {
                    continue;
                }
                Trigger::FilesChanged
            }
        };
        let current = Arc::clone(&plan_tx.borrow());
        let reloaded = reload.run(why, &current, &mut dataplane, &served_tx).await;
        if let Some((plan, certificates)) = reloaded {
            watcher.rebase(certificates);
            write_layout(&args.interface, &plan);
            let _ = plan_tx.send(Arc::new(plan));
        }
    }
    let _ = shutdown_tx.send(true);
    if args.keep_attached {
        log::info!(
            "--keep-attached: XDP and steering stay attached, maps pinned in {}",
            dataplane
                .pin_dir()
                .map_or(String::new(), |dir| dir.display().to_string())
        );
    }
    if !args.keep_attached {
        if let Some(path) = pins::layout_path(&args.interface) {
            let _ = fs::remove_file(path);
        }
    }
    if let Some(interface) = dataplane.detach(args.keep_attached)? {
        log::info!("XDP detached from {interface}");
    }
    let _ = proxy_task.await;
    let _ = tokio::task::spawn_blocking(move || admin_thread.join()).await;
    Ok(())
}

/// Removes the pin sets whose interface or network namespace is gone,
/// logging each with the kernel memory it held; a failure to look stops
/// nothing.
fn prune_orphaned_pins() {
    let pruned = match gateway_userspace::dataplane::orphans::prune(false) {
        Ok(pruned) => pruned,
        Err(err) => {
            let err = anyhow::Error::from(err);
            log::warn!("cannot look for orphaned pins ({err:#}); none removed");
            return;
        }
    };
    for pruned in pruned {
        let (surveyed, Some(removed)) = (&pruned.surveyed, pruned.removed) else {
            continue;
        };
        let memlock = surveyed
            .memlock
            .map_or("an unknown amount".to_string(), pins::human_bytes);
        match removed {
            Ok(()) => log::info!(
                "removed the orphaned pins {} (namespace {}, interface {}: {}): {memlock} of locked kernel memory freed",
                surveyed.set.path().display(),
                surveyed.set.netns,
                surveyed.set.interface,
                surveyed.verdict
            ),
            Err(err) => log::warn!(
                "cannot remove the orphaned pins {} ({}; {memlock} of locked kernel memory): {:#}",
                surveyed.set.path().display(),
                surveyed.verdict,
                anyhow::Error::from(err)
            ),
        }
    }
}

/// Puts back kernel state taken from under the daemon (pins removed,
/// links detached from outside), logging each as the error it is and
/// counting it; `/ready` fails while the programs cannot be attached.
fn repair_dataplane(
    dataplane: &mut Dataplane,
    counters: &stats::DaemonCounters,
    readiness: &Readiness,
) {
    match dataplane.repair() {
        Ok(repair) => {
            if repair.pins_restored > 0 {
                log::error!(
                    "{} pinned map(s) and link(s) were removed from {} by something else; pinned them again (the daemon's own descriptors kept everything attached meanwhile)",
                    repair.pins_restored,
                    dataplane
                        .pin_dir()
                        .map_or(String::new(), |dir| dir.display().to_string())
                );
                counters
                    .pins_restored
                    .fetch_add(repair.pins_restored as u64, Ordering::Relaxed);
            }
            for link in &repair.reattached {
                log::error!("the {link} program was detached by something else; attached it again");
                counters
                    .attachments_restored
                    .fetch_add(1, Ordering::Relaxed);
            }
            readiness.set_attached(true);
        }
        Err(err) => {
            log::error!(
                "the kernel programs cannot be attached again ({err:#}); not ready until they are"
            );
            readiness.set_attached(false);
        }
    }
}

/// The `--egress-from` interfaces by index.
fn captured_interfaces(names: &[String]) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut captured = BTreeMap::new();
    for name in names {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .with_context(|| format!("--egress-from {name}: no such interface (see `ip link`)"))?;
        captured.insert(index, name.clone());
    }
    Ok(captured)
}

/// The egress guard: what is never captured (the excluded ranges and
/// every address of the node), the policy, the registry's addresses
/// written once before the guard is attached to the captured interfaces,
/// then the tasks that keep them current and log the refusals. Returns
/// where a reload sends the new registry.
async fn start_egress_guard(
    args: &RunArgs,
    dataplane: &mut Dataplane,
    mut maps: EgressMaps,
    captured: &BTreeMap<u32, String>,
    registry: Registry,
) -> anyhow::Result<watch::Sender<Registry>> {
    let mut never = args.egress_exclude.clone();
    never.extend(node_addresses(None)?.into_iter().map(host_cidr));
    let ifindexes: Vec<u32> = captured.keys().copied().collect();
    dataplane.set_egress(&ifindexes, &never)?;
    maps.set_policy(args.outbound_traffic_policy == OutboundPolicy::AllowAny)?;
    if let Some(refusals) = maps.take_refusals() {
        tokio::spawn(refusal_log::log_refusals(refusals, captured.clone()));
    }
    let mut allow_list = AllowList::new(maps);
    allow_list.refresh(&registry).await;
    log::info!(
        "egress: outboundTrafficPolicy {:?}; the registry allows {} fixed address range(s), the current addresses of {} name(s), and any address on {} port(s) left to the proxy",
        args.outbound_traffic_policy,
        registry.fixed.len(),
        registry.names.len(),
        registry.open_ports.len()
    );
    dataplane.attach_egress_guard(&args.egress_from)?;
    let (registry_tx, registry_rx) = watch::channel(registry);
    tokio::spawn(allow_list.keep_current(registry_rx));
    Ok(registry_tx)
}

/// Forwards the kernel programs' diagnostic events to the log as they come.
#[allow(unsafe_code)]
async fn forward_kernel_events(logger: gateway_userspace::dataplane::EventLogger) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: the logger owns its ring buffer's descriptor, which stays
    // open and the same until the logger (owned here) is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let Ok(mut events) = registered else {
        log::warn!("--ebpf-log: cannot poll the kernel programs' event buffer");
        return;
    };
    loop {
        let Ok(mut ready) = events.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}

/// Writes what the kernel's counter slots stand for, for `gateway stats`.
fn write_layout(interface: &str, plan: &plan::Plan) {
    let Some(path) = pins::layout_path(interface) else {
        return;
    };
    let staged = path.with_extension("staged");
    let written = fs::write(&staged, stats::Layout::of(plan).to_json())
        .and_then(|()| fs::rename(&staged, &path));
    if let Err(err) = written {
        log::warn!(
            "cannot write {} ({err}); `gateway stats` cannot name the counters",
            path.display()
        );
    }
}

/// How often the configuration files are looked at (a change is applied
/// once they have not changed for `--config-settle`), and the daemon's
/// kernel state checked (`Dataplane::repair`).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// SIGHUP (`gateway reload`): the operator asked for this configuration.
    Asked,
    /// The watched files changed and settled.
    FilesChanged,
}

/// What a reload needs from the start-up.
struct Reload<'a> {
    args: Arc<RunArgs>,
    instance: Arc<Instance>,
    addresses: Arc<[IpAddr]>,
    options: proxy::Options,
    counters: &'a stats::ReloadCounters,
    /// Where a new registry goes (egress only).
    registry: Option<&'a watch::Sender<Registry>>,
}

impl Reload<'_> {
    /// Reads, validates and compiles the configuration again and, if all
    /// of that succeeds (every kernel table's capacity included), serves
    /// it: the proxy first (new connections take the new listeners, hosts
    /// and certificates; established ones keep what they had), then the
    /// kernel's maps as a diff (entries that do not change are not
    /// touched). All or nothing: a failure before the switch changes
    /// nothing, and a map write that fails part way puts the proxy and the
    /// maps back to the previous plan; either way the errors are logged in
    /// the `check` format and `config.reload_failures` counts it.
    /// Returns the new plan and the certificate files it names.
    async fn run(
        &self,
        why: Trigger,
        current: &Arc<plan::Plan>,
        dataplane: &mut Dataplane,
        served_tx: &watch::Sender<Arc<proxy::Served>>,
    ) -> Option<(plan::Plan, Vec<PathBuf>)> {
        log::info!(
            "{}: reloading the configuration",
            match why {
                Trigger::Asked => "SIGHUP",
                Trigger::FilesChanged => "the configuration files changed",
            }
        );
        let started = std::time::Instant::now();
        // Reading and compiling take long for a large configuration (tens
        // of milliseconds per thousand hosts): on a blocking thread, not
        // on the runtime that serves connections.
        let (args, instance, addresses, options, previous) = (
            Arc::clone(&self.args),
            Arc::clone(&self.instance),
            Arc::clone(&self.addresses),
            self.options.clone(),
            Arc::clone(current),
        );
        let built = tokio::task::spawn_blocking(move || {
            read_config(&args, &instance).and_then(|config| {
                build(
                    &config,
                    &args,
                    &instance,
                    &addresses,
                    &options,
                    Some(&previous),
                )
            })
        })
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("the compile task failed: {err}")));
        let built = match built {
            Ok(built) => built,
            Err(err) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "configuration reload refused ({err:#}); still serving the previous configuration"
                );
                return None;
            }
        };
        let compiled = started.elapsed();
        if why == Trigger::FilesChanged {
            let emptied = compile::route_loss::listeners_losing_every_route(current, &built.plan);
            if !emptied.is_empty() {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "configuration reload refused: listener {} is still declared but would answer nothing it answered before (a file read while half written?); `gateway reload` applies it anyway; still serving the previous configuration",
                    emptied.join(", ")
                );
                return None;
            }
        }
        // The proxy first, so a listener the maps make reachable is known
        // to it; the previous one is kept to go back to.
        let previous = Arc::clone(&served_tx.borrow());
        let _ = served_tx.send(Arc::new(built.served));
        if let Err(err) = dataplane.apply(&built.plan, ephemeral_range()) {
            // All or nothing: the proxy and the maps go back to the plan
            // that was serving (the maps as a diff, so what the failed
            // apply did not touch is not touched again).
            let _ = served_tx.send(previous);
            let rolled_back = dataplane.apply(current, ephemeral_range());
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            match rolled_back {
                Ok(()) => log::error!(
                    "configuration reload refused: updating the kernel maps failed ({err:#}); rolled back, still serving the previous configuration"
                ),
                Err(again) => log::error!(
                    "configuration reload refused: updating the kernel maps failed ({err:#}), and so did restoring the previous plan's ({again:#}); the next reload writes them again"
                ),
            }
            return None;
        }
        if let Some(registry) = self.registry {
            let _ = registry.send(built.registry);
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "configuration reloaded: {} listener(s), {} server host(s); read and compiled in {:.1} ms, kernel maps updated in {:.1} ms",
            built.plan.listeners.len(),
            built.plan.kernel_hosts().len(),
            compiled.as_secs_f64() * 1000.0,
            (started.elapsed() - compiled).as_secs_f64() * 1000.0
        );
        Some((built.plan, built.certificates))
    }
}

/// How often the daemon looks for a burst of connections that has ended,
/// and how many connections make a burst.
const BURST_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const BURST_CONNECTIONS: usize = 256;

/// Gives the memory of a connection burst back to the system once it is
/// over. glibc keeps freed memory in per-thread arenas; without a trim, a
/// flood of 2,000 connections leaves the daemon 10 MB larger for good.
async fn return_memory_after_bursts(counters: Arc<Counters>) {
    let mut interval = tokio::time::interval(BURST_CHECK_INTERVAL);
    let mut bursts = BurstWatch::default();
    loop {
        interval.tick().await;
        let peak = counters.take_peak();
        let active = counters.active.load(std::sync::atomic::Ordering::Relaxed);
        if bursts.trim_now(peak, active) {
            release_freed_memory();
        }
    }
}

/// When to trim: at every check while a burst of connections is ending,
/// including its tail. A burst that ends over several checks (deferred
/// accept hands silent clients over about a second late, so their
/// deadlines fall later) was trimmed once while part of it was still
/// open, and what the rest freed stayed with the process.
#[derive(Debug, Default)]
struct BurstWatch {
    /// The highest connection count since connections last stopped ending.
    burst_peak: usize,
}

impl BurstWatch {
    /// Whether to trim, given the peak since the last check and the count now.
    fn trim_now(&mut self, peak: usize, active: usize) -> bool {
        let ending = peak > active;
        if !ending {
            self.burst_peak = active;
            return false;
        }
        self.burst_peak = self.burst_peak.max(peak);
        self.burst_peak >= active + BURST_CONNECTIONS
    }
}

#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Admin connections served at once: operators and scrapers on loopback.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Every `--address` must be on the interface XDP attaches to: an address
/// elsewhere would be served by the proxy but never protected by XDP.
fn check_addresses_on_interface(
    wanted: &[IpAddr],
    present: &[IpAddr],
    interface: &str,
) -> anyhow::Result<()> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|ip| !present.contains(ip))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let present: Vec<String> = present.iter().map(ToString::to_string).collect();
    bail!(
        "--address {} is not an address of interface {interface} (it has {}); XDP on {interface} would not protect it: add the address to the interface or name the interface that has it",
        missing.join(", "),
        present.join(", ")
    )
}

/// Raises the soft open-file limit to the hard limit (connections are
/// descriptors) and returns the limit in force.
fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                log::info!("open-file limit raised from {soft} to {hard}");
                return hard;
            }
            Err(err) => {
                log::warn!("open-file limit stays at {soft}: cannot raise it to {hard}: {err}")
            }
        }
    }
    soft
}

/// The addresses configured on `interface`, which the gateway then owns.
fn interface_addresses(interface: &str) -> anyhow::Result<Vec<IpAddr>> {
    if nix::net::if_::if_nametoindex(interface).is_err() {
        bail!("no network interface named {interface:?} (see `ip link`)");
    }
    let addresses = node_addresses(Some(interface))?;
    if addresses.is_empty() {
        bail!(
            "interface {interface} has no IP address; give the gateway's addresses with --address"
        );
    }
    Ok(addresses)
}

/// The addresses of `interface`, or of every interface of the node.
fn node_addresses(interface: Option<&str>) -> anyhow::Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().context("cannot list interface addresses")? {
        if interface.is_some_and(|name| ifaddr.interface_name != name) {
            continue;
        }
        let Some(address) = ifaddr.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(addresses)
}

/// The host's ephemeral port range: replies to its own connections land there.
fn ephemeral_range() -> Settings {
    let parsed = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        });
    let (first, last) = parsed.unwrap_or((32768, 60999));
    Settings {
        ephemeral_first: first,
        ephemeral_last: last,
    }
}

#[cfg(test)]
mod runtime_tests {
    use tokio::runtime::RuntimeFlavor;

    use super::runtime;

    #[test]
    fn one_worker_is_the_single_threaded_scheduler_and_more_are_work_stealing() {
        let (one, workers) = runtime(Some(1)).unwrap();
        assert_eq!(workers, 1);
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let (three, workers) = runtime(Some(3)).unwrap();
        assert_eq!(workers, 3);
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
    }

    #[test]
    fn the_default_is_one_worker_per_usable_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let (_, workers) = runtime(None).unwrap();
        assert_eq!(workers, cpus);
    }
}

#[cfg(test)]
mod burst_tests {
    use super::BurstWatch;

    #[test]
    fn a_burst_is_trimmed_at_every_check_until_its_tail_has_ended() {
        let mut w = BurstWatch::default();
        // Steady traffic: no trim.
        assert!(!w.trim_now(50, 50));
        assert!(!w.trim_now(60, 55));
        // 2,000 connections rise over two checks and end over two more.
        assert!(!w.trim_now(1_000, 1_000));
        assert!(!w.trim_now(2_000, 2_000));
        assert!(w.trim_now(2_000, 100), "most of the burst ended");
        assert!(w.trim_now(100, 0), "its tail ended too: trim again");
        // Quiet again: no more trims, and a small churn is not a burst.
        assert!(!w.trim_now(0, 0));
        assert!(!w.trim_now(30, 10));
        // A burst that rises and ends between two checks.
        assert!(w.trim_now(2_000, 0));
    }
}
