//! `gateway run`: load, compile, bind, attach, serve, and detach on signal.
use std::{
    fs,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use gateway_common::Settings;
use gateway_userspace::{admin, compile, config::Severity, dataplane::Dataplane, proxy, stats};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::RunArgs;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
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
        bail!("{errors} error(s) in the configuration; nothing was started");
    }
    if config.model.gateways.is_empty() {
        bail!("no Gateway resources found in the configuration paths");
    }
    let instance = args.instance.instance();
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

    // Privilege first: loading needs CAP_BPF, and touches nothing outside the process.
    let mut dataplane = Dataplane::load()?;
    let addresses = if args.address.is_empty() {
        interface_addresses(&args.interface)?
    } else {
        args.address.clone()
    };
    let plan = compile::plan(&config.model, &instance, &addresses)?;
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
    // Bind before attaching, so a port conflict changes nothing on the interface.
    let listeners = proxy::bind_all(&plan.http, &args.address).map_err(|err| {
        let busy = matches!(&err, proxy::ProxyError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse);
        let hint = if busy { " (is another gateway instance running?)" } else { "" };
        anyhow::anyhow!("{err}: {}{hint}", std::error::Error::source(&err).map_or(String::new(), |s| s.to_string()))
    })?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_address)
        .await
        .with_context(|| format!("cannot listen on the admin address {}", args.admin_address))?;

    dataplane.apply(&plan, ephemeral_range())?;
    dataplane.attach(&args.interface, args.xdp_mode)?;
    log::info!(
        "XDP attached to {} ({:?} mode); gateway addresses: {}",
        args.interface,
        args.xdp_mode,
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for listener in &plan.listeners {
        let bind = listener.bind.map_or("*".to_string(), |ip| ip.to_string());
        log::info!("listener {bind}:{} {:?}", listener.port, listener.kind);
    }
    for bound in &listeners {
        log::info!("serving HTTP on {}", bound.local_addr);
    }
    log::info!("admin on http://{}/stats", args.admin_address);

    let dataplane = Arc::new(Mutex::new(dataplane));
    let stats_plan = plan.clone();
    let stats_dataplane = Arc::clone(&dataplane);
    let stats_fn: admin::StatsFn = Arc::new(move || {
        let dataplane = stats_dataplane
            .lock()
            .map_err(|_| "stats unavailable".to_string())?;
        let snapshot = dataplane.stats().map_err(|err| err.to_string())?;
        Ok(stats::render(&snapshot, &stats_plan))
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let proxy_task = tokio::spawn(proxy::serve(listeners, shutdown_rx.clone()));
    let admin_task = tokio::spawn(admin::serve(admin_listener, stats_fn, shutdown_rx));

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = sigterm.recv() => log::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => log::info!("SIGINT: shutting down"),
    }
    let _ = shutdown_tx.send(true);
    let detached = dataplane
        .lock()
        .map_err(|_| anyhow::anyhow!("dataplane lock poisoned"))?
        .detach()?;
    if let Some(interface) = detached {
        log::info!("XDP detached from {interface}");
    }
    let _ = proxy_task.await;
    let _ = admin_task.await;
    Ok(())
}

/// The addresses configured on `interface`, which the gateway then owns.
fn interface_addresses(interface: &str) -> anyhow::Result<Vec<IpAddr>> {
    if nix::net::if_::if_nametoindex(interface).is_err() {
        bail!("no network interface named {interface:?} (see `ip link`)");
    }
    let mut addresses = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().context("cannot list interface addresses")? {
        if ifaddr.interface_name != interface {
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
    if addresses.is_empty() {
        bail!(
            "interface {interface} has no IP address; give the gateway's addresses with --address"
        );
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
