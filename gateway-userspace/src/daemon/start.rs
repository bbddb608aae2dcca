//! Start-up, in the order that leaves the interface untouched on any
//! failure: [`read`](super::build::read_config) the configuration, load
//! or adopt the pinned kernel state ([`load`]), [`build`](Inputs::build)
//! what is served (certificates loaded), open the proxy's steering
//! sockets ([`Sockets::open`]), write the maps and [`attach`], then
//! [`serve`] until a signal stops it ([`super::signals`]).
use std::{collections::BTreeMap, fs, net::IpAddr, sync::Arc};

use anyhow::{Context as _, bail};
use tokio::sync::watch;

use super::{
    Options,
    build::{Built, Inputs, read_config, with_source},
    egress_guard, host, kernel_state, logs, memory,
    signals::{self, Running},
    stats_page,
};
use crate::{
    admin,
    compile::egress_registry::Registry,
    connection::{self, Gate, Limits},
    dataplane::{Capture, Dataplane, EbpfLog, EgressMaps, pins},
    discovery::Discovery,
    kubernetes::{self, IstioObjects},
    management::{self, AllowedPort},
    pidfile::{self, PidFile},
    plan::Plan,
    proxy::{self, BoundListener},
    readiness::{self, Readiness},
    stats,
};

/// Admin connections served at once: operators and scrapers on loopback.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Starts everything, serves until SIGTERM or SIGINT, and stops.
pub(super) async fn serve(mut args: Options) -> anyhow::Result<()> {
    let discovery = Arc::new(Discovery::default());
    if let Some(options) = &args.kubernetes {
        args.source.kubernetes = Some(watch_cluster(options, Arc::clone(&discovery)).await?);
    }
    let (source, instance) = (args.source.clone(), args.instance.clone());
    let config = tokio::task::spawn_blocking(move || read_config(&source, &instance))
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("the configuration task failed: {err}")))
        .map_err(|err| anyhow::anyhow!("{err:#}; nothing was started"))?;
    let allowed = management::allow_list(&args.allow_port).map_err(anyhow::Error::msg)?;
    let mut dataplane = load(&args)?;
    let addresses = gateway_addresses(&args)?;
    let (gates, open_files) = Gates::new(&args);
    let captured = egress_guard::captured_interfaces(&args.egress_from)?;
    let egress_maps = if captured.is_empty() {
        None
    } else {
        Some(dataplane.take_egress_maps()?)
    };
    // The per-workload counters, for the stats page.
    let workloads = egress_maps.as_ref().map(EgressMaps::workloads);
    let inputs = Arc::new(Inputs {
        source: args.source.clone(),
        instance: args.instance.clone(),
        reset_unknown_hosts: args.reset_unknown_hosts.clone(),
        addresses: addresses.clone(),
        proxy: proxy_options(
            &args,
            &addresses,
            &captured,
            egress_maps.as_ref(),
            discovery,
        ),
    });
    // Certificates and keys are loaded before anything is attached.
    let built = inputs.build(&config, None)?;
    drop(config);
    let sockets = Sockets::open(&args)?;
    let attached = attach(
        &args,
        &mut dataplane,
        &built,
        &allowed,
        &sockets,
        egress_maps,
        &captured,
    )
    .await?;
    // What is served now, said on the resources (Kubernetes mode).
    if let Some(objects) = &inputs.source.kubernetes {
        objects.report(&built.diagnostics, Some(&built.plan));
    }
    let memlock = log_started(
        &args,
        &dataplane,
        &built.plan,
        &addresses,
        &allowed,
        &sockets,
    );
    log_limits(&args, &gates.proxy.limits, open_files);
    let Built {
        plan,
        served,
        certificates,
        ..
    } = built;
    let egress = stats_page::Egress {
        workloads,
        captured,
    };
    let running = start_serving(
        &args,
        &mut dataplane,
        plan,
        served,
        sockets,
        gates,
        egress,
        memlock,
    )?;
    let reload = super::reload::Reload {
        inputs,
        counters: &running.reloads,
        registry: attached.registry.as_ref(),
    };
    signals::until_stopped(&args, &mut dataplane, &reload, &running, certificates).await?;
    stop(&args, &mut dataplane, running).await
}

/// Starts the watches of the cluster's Istio objects and waits for their
/// first complete list: the first plan is the cluster's whole configuration.
async fn watch_cluster(
    options: &kubernetes::Options,
    discovery: Arc<Discovery>,
) -> anyhow::Result<IstioObjects> {
    let mut objects = IstioObjects::start(options, discovery)
        .await
        .map_err(|err| anyhow::anyhow!("{err}; nothing was started"))?;
    objects.ready().await;
    // The first plan is read from here on: what came before is in it.
    objects.mark_read();
    log::info!("listed the cluster's Istio resources");
    Ok(objects)
}

/// Loads the kernel programs, adopting the maps and links a previous
/// daemon on this interface pinned; refuses when one still runs. Pins no
/// daemon can adopt any more are removed first.
fn load(args: &Options) -> anyhow::Result<Dataplane> {
    // Privilege first: loading needs CAP_BPF, and touches nothing outside the process.
    if let Some(pid) = pidfile::running(&args.interface) {
        bail!(
            "another gateway (process {pid}) already serves interface {}; stop it first, or `gateway reload --interface {}` to change its configuration",
            args.interface,
            args.interface
        );
    }
    // Pins no daemon can adopt any more (their interface or namespace is
    // gone) hold kernel memory until removed: this start removes them.
    kernel_state::prune_orphaned_pins();
    // Maps and links are pinned: a daemon killed outright leaves XDP in
    // place, and this one adopts what a previous one left.
    Ok(Dataplane::load_pinned(&args.interface, args.ebpf_log)?)
}

/// `--address`, each checked to be on the interface, or else the
/// interface's own addresses.
fn gateway_addresses(args: &Options) -> anyhow::Result<Vec<IpAddr>> {
    let interface_addrs = host::interface_addresses(&args.interface)?;
    // Kubernetes mode without --address needs --protect-node-addresses
    // (`gateway run` refuses otherwise): then the interface's addresses.
    let on_a_node = args.kubernetes.is_some();
    if args.address.is_empty() {
        return Ok(interface_addrs);
    }
    host::check_addresses_on_interface(&args.address, &interface_addrs, &args.interface)?;
    let mut addresses = args.address.clone();
    if on_a_node && args.protect_node_addresses {
        addresses.extend(interface_addrs);
        addresses.sort();
        addresses.dedup();
    }
    Ok(addresses)
}

/// The connection gates of the proxy and of the admin endpoint.
pub(super) struct Gates {
    pub proxy: Arc<Gate>,
    pub admin: Arc<Gate>,
}

impl Gates {
    /// The gates for `args`, and the open-file limit (raised) they follow.
    fn new(args: &Options) -> (Self, u64) {
        let open_files = host::raise_open_file_limit();
        let max_connections = args.max_connections.map_or_else(
            || connection::default_max_connections(open_files),
            |n| usize::try_from(n).unwrap_or(usize::MAX),
        );
        let proxy = Arc::new(Gate::new(Limits {
            request_head_timeout: args.request_head_timeout,
            idle_timeout: args.idle_timeout,
            stream_idle_timeout: args.stream_idle_timeout,
            max_connections,
            max_per_source: args.max_connections_per_source.map_or_else(
                || connection::default_max_per_source(max_connections),
                |n| usize::try_from(n).unwrap_or(usize::MAX),
            ),
        }));
        let admin = Arc::new(Gate::new(Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_per_source: ADMIN_MAX_CONNECTIONS,
            ..proxy.limits
        }));
        (Self { proxy, admin }, open_files)
    }
}

/// What the proxy is built with besides the plan.
fn proxy_options(
    args: &Options,
    addresses: &[IpAddr],
    captured: &BTreeMap<u32, String>,
    egress_maps: Option<&EgressMaps>,
    discovery: Arc<Discovery>,
) -> proxy::Options {
    proxy::Options {
        discovery,
        files: match &args.source.kubernetes {
            Some(objects) => Arc::new(objects.secret_files()),
            None => Arc::new(crate::files::Disk),
        },
        trusted_proxies: args.instance.trusted_proxies,
        tcp_idle_timeout: args.tcp_idle_timeout,
        jwks_refresh: args.jwks_refresh,
        access_log: args.access_log,
        egress: egress_maps.map(|maps| proxy::egress::Egress {
            policy: args.outbound_traffic_policy,
            gateway_addresses: addresses.to_vec(),
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
    }
}

/// The proxy's sockets on loopback ports (per address family and per
/// listener kind), which the kernel steers every listener's connections
/// into (sk_lookup): nothing is bound per listener and no listener port
/// can be taken by another process. And the admin endpoint's.
pub(super) struct Sockets {
    pub proxy: Vec<BoundListener>,
    pub admin: std::net::TcpListener,
}

impl Sockets {
    fn open(args: &Options) -> anyhow::Result<Self> {
        let proxy = proxy::steering_sockets(!args.egress_from.is_empty()).map_err(with_source)?;
        let admin = std::net::TcpListener::bind(args.admin_address).with_context(|| {
            format!("cannot listen on the admin address {}", args.admin_address)
        })?;
        Ok(Self { proxy, admin })
    }
}

/// What attaching leaves for the rest of the daemon's life.
struct Attached {
    /// Where a reload sends the new registry (egress only).
    registry: Option<watch::Sender<Registry>>,
    /// The egress capture's routing rules, removed on drop.
    _capture: Option<Capture>,
    /// Says who serves the interface, for `gateway reload`.
    _pid_file: Option<PidFile>,
}

/// Writes the plan and the sockets into the maps, attaches steering, the
/// egress guard and XDP, and says this daemon owns the interface.
async fn attach(
    args: &Options,
    dataplane: &mut Dataplane,
    built: &Built,
    allowed: &[AllowedPort],
    sockets: &Sockets,
    egress_maps: Option<EgressMaps>,
    captured: &BTreeMap<u32, String>,
) -> anyhow::Result<Attached> {
    dataplane.apply(&built.plan, host::ephemeral_range())?;
    dataplane.set_allowed_ports(&management::allowed_port_words(allowed))?;
    dataplane.set_proxy_sockets(
        &sockets
            .proxy
            .iter()
            .map(|l| (l.slot, std::os::fd::AsFd::as_fd(l)))
            .collect::<Vec<_>>(),
    )?;
    dataplane.attach_steering()?;
    let registry = match egress_maps {
        Some(maps) => Some(
            egress_guard::start(args, dataplane, maps, captured, built.registry.clone()).await?,
        ),
        None => None,
    };
    let capture = if args.egress_from.is_empty() {
        None
    } else {
        Some(egress_guard::capture(args)?)
    };
    let default_routes = management::default_route_interfaces(
        &fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    );
    if let Some(warning) = management::lockout_warning(&args.interface, allowed, &default_routes) {
        log::warn!("{warning}");
    }
    dataplane.attach(&args.interface, args.xdp_mode)?;
    // From here on the daemon's own descriptors hold the links: removing
    // the pins takes nothing away (`repair` pins them again).
    dataplane.hold_pins()?;
    // Written once this instance owns the interface; `gateway reload` reads it.
    kernel_state::write_layout(&args.interface, &built.plan);
    let pid_file = match PidFile::create(&args.interface) {
        Ok(file) => Some(file),
        Err(err) => {
            log::warn!(
                "{err:#}; `gateway reload` will not find this daemon (send SIGHUP yourself)"
            );
            None
        }
    };
    Ok(Attached {
        registry,
        _capture: capture,
        _pid_file: pid_file,
    })
}

/// Says what was started: the interface and its addresses, the maps'
/// kernel memory (which no RSS shows; also a gauge on /stats, so it is
/// returned), the management ports, the listeners and the sockets.
fn log_started(
    args: &Options,
    dataplane: &Dataplane,
    plan: &Plan,
    addresses: &[IpAddr],
    allowed: &[AllowedPort],
    sockets: &Sockets,
) -> Option<pins::Memlock> {
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
        management::describe(allowed)
    );
    for listener in &plan.listeners {
        let bind = listener.bind.map_or("*".to_string(), |ip| ip.to_string());
        log::info!("listener {bind}:{} {:?}", listener.port, listener.kind);
    }
    log::info!(
        "listener connections are steered (sk_lookup) to the proxy's sockets {}",
        sockets
            .proxy
            .iter()
            .map(|l| l.local_addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    memlock
}

/// Says what every connection is held to.
fn log_limits(args: &Options, limits: &Limits, open_files: u64) {
    log::info!(
        "connections: at most {} at once (open-file limit {open_files}), {} from one client, each listener keeping a reserve of 1/(2 x listeners) of them; request head within {:?}; HTTP idle timeout {:?}, stream idle timeout {:?}; TCP idle timeout {:?}",
        limits.max_connections,
        limits.max_per_source,
        limits.request_head_timeout,
        limits.idle_timeout,
        limits.stream_idle_timeout,
        args.tcp_idle_timeout
    );
}

/// Starts serving: the admin thread (which owns the counter maps), the
/// daemon's background tasks, and the proxy on its sockets.
#[expect(
    clippy::too_many_arguments,
    reason = "one call, the hand-over of everything start-up built"
)]
fn start_serving(
    args: &Options,
    dataplane: &mut Dataplane,
    plan: Plan,
    served: proxy::Served,
    sockets: Sockets,
    gates: Gates,
    egress: stats_page::Egress,
    memlock: Option<pins::Memlock>,
) -> anyhow::Result<Running> {
    let reloads = Arc::new(stats::ReloadCounters::default());
    let daemon_counters = Arc::new(stats::DaemonCounters::default());
    let readiness = Arc::new(Readiness::default());
    let (plan_tx, plan_rx) = watch::channel(Arc::new(plan));
    let render = stats_page::render(stats_page::Sources {
        reader: dataplane.take_stats_reader()?,
        plan: plan_rx,
        reloads: Arc::clone(&reloads),
        daemon: Arc::clone(&daemon_counters),
        proxy: Arc::clone(&gates.proxy.counters),
        admin: Arc::clone(&gates.admin.counters),
        egress,
        memlock,
    });
    if args.ebpf_log != EbpfLog::Off {
        match dataplane.take_event_logger() {
            Some(logger) => {
                tokio::spawn(logs::forward_kernel_events(logger));
            }
            None => log::warn!("--ebpf-log: the kernel programs' event buffer is missing"),
        }
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(memory::return_memory_after_bursts(Arc::clone(
        &gates.proxy.counters,
    )));
    tokio::spawn(logs::report_dropped_log_lines());
    readiness.beat(std::time::Instant::now());
    tokio::spawn(readiness::heartbeat(Arc::clone(&readiness)));
    // The sender stays here: a configuration reload replaces what is served.
    let (served_tx, served_rx) = watch::channel(Arc::new(served));
    let proxy_task = tokio::spawn(proxy::serve(
        sockets.proxy,
        served_rx,
        gates.proxy,
        shutdown_rx.clone(),
    ));
    let admin_thread = admin::spawn(
        sockets.admin,
        render,
        Arc::clone(&readiness),
        gates.admin,
        shutdown_rx,
    )
    .context("cannot start the admin thread")?;
    log::info!("admin on http://{}/stats", args.admin_address);
    // Loading the program parses the kernel's BTF (tens of MB at peak, all
    // freed by now): give that memory back instead of idling on it.
    memory::release_freed_memory();
    Ok(Running {
        plan_tx,
        served_tx,
        reloads,
        daemon_counters,
        readiness,
        shutdown_tx,
        proxy_task,
        admin_thread,
    })
}

/// Stops serving (the proxy drains), then detaches, or leaves everything
/// attached with `--keep-attached`.
async fn stop(args: &Options, dataplane: &mut Dataplane, running: Running) -> anyhow::Result<()> {
    let _ = running.shutdown_tx.send(true);
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
    let _ = running.proxy_task.await;
    let admin_thread = running.admin_thread;
    let _ = tokio::task::spawn_blocking(move || admin_thread.join()).await;
    Ok(())
}
