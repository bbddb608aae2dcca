//! The daemon (`gateway run`): start-up as named steps (`start`), the
//! reload ([`reload`]), the signal loop (`signals`), the egress guard
//! ([`egress_guard`]), the host facts it reads ([`host`]) and the memory
//! it gives back ([`memory`]). The binary parses the command line into
//! [`Options`] and calls [`run`]; everything else is here.
pub mod build;
pub mod egress_guard;
pub mod host;
mod kernel_state;
mod logs;
pub mod memory;
pub mod reload;
mod signals;
mod start;
mod stats_page;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    config::{self, Config, ConfigError, Environment, IgnoredKind},
    dataplane::{AttachMode, EbpfLog, pins},
    kubernetes::{self, IstioObjects},
    management::AllowPort,
    model::{Instance, Subnet},
    proxy::{access_log, egress::OutboundPolicy},
};

/// How long the runtime's leftover tasks get at exit, after the drain.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);
/// How long the exit waits for the log's readers to take the last lines.
pub const LOG_FLUSH_ON_EXIT: Duration = Duration::from_secs(1);

/// Where the configuration is read from and how, the same for every
/// command so `gateway check` reads exactly what `gateway run` would.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Istio YAML files or directories.
    pub paths: Vec<PathBuf>,
    /// `--credentials-dir`.
    pub credentials_dir: Option<PathBuf>,
    /// `--max-config-bytes`.
    pub max_config_bytes: u64,
    /// `--ignore-kind`.
    pub ignore_kind: Vec<IgnoredKind>,
    /// `--kubernetes`, once its watches run: the cluster's objects are
    /// read instead of `paths`.
    pub kubernetes: Option<IstioObjects>,
}

impl ConfigSource {
    /// Loads and validates the configuration. In Kubernetes mode it may
    /// wait for newly routed Services: call it off the runtime.
    pub fn load(&self) -> Result<Config, ConfigError> {
        if let Some(objects) = &self.kubernetes {
            let secrets = objects.secret_files();
            let root = secrets.root();
            let env = Environment {
                files: &secrets,
                credentials_dir: Some(&root),
                unreadable_credential_drops_server: true,
            };
            let sources = kubernetes::sources::sources(&objects.snapshot());
            let mut config = config::load_sources_with(&sources, Some(&env));
            objects.add_services(&mut config.model);
            return Ok(config);
        }
        config::load_from_disk(
            &self.paths,
            self.credentials_dir.as_deref(),
            self.max_config_bytes,
            &self.ignore_kind,
        )
    }
}

/// What `gateway run` was asked to do (the flags of the same names).
#[derive(Clone, Debug)]
pub struct Options {
    pub source: ConfigSource,
    /// `--kubernetes` and its flags: where the watches connect.
    pub kubernetes: Option<kubernetes::Options>,
    pub instance: Instance,
    pub interface: String,
    /// `--address`; empty: the interface's addresses.
    pub address: Vec<IpAddr>,
    /// `--protect-node-addresses` (Kubernetes mode): the interface's own
    /// addresses are the gateway's too.
    pub protect_node_addresses: bool,
    pub xdp_mode: AttachMode,
    pub allow_port: Vec<AllowPort>,
    pub reset_unknown_hosts: Vec<u16>,
    pub ebpf_log: EbpfLog,
    pub keep_attached: bool,
    pub egress_from: Vec<String>,
    pub egress_exclude: Vec<Subnet>,
    pub outbound_traffic_policy: OutboundPolicy,
    pub admin_address: SocketAddr,
    pub request_head_timeout: Duration,
    pub idle_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub jwks_refresh: Duration,
    pub config_settle: Duration,
    pub max_connections: Option<u64>,
    pub max_connections_per_source: Option<u64>,
    pub access_log: access_log::Format,
    pub workers: Option<u16>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
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
    let (runtime, workers) = runtime(options.workers).context("cannot start the async runtime")?;
    log::info!("serving on {workers} worker thread(s)");
    let result = runtime.block_on(start::serve(options));
    // Whatever is still running (a task stuck on something outside us)
    // does not hold the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
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
