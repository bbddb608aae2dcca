//! The command line: every subcommand's flags (clap), parsed into what
//! the library takes (`daemon::Options`, `daemon::ConfigSource`).
use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use gateway_userspace::{
    config::{self, Config, ConfigError},
    daemon::{self, ConfigSource},
    dataplane::AttachMode,
    kubernetes,
    model::{DEFAULT_CLUSTER_DOMAIN, Instance, Locality, ServiceKey, Subnet, parse_labels},
    proxy::access_log,
};

/// eBPF/XDP-accelerated Istio ingress gateway.
#[derive(Parser)]
#[command(name = "gateway", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve Istio Gateway resources on an interface (needs root).
    Run(Box<RunArgs>),
    /// Validate every resource in the paths; exit 1 on errors. Needs no root.
    Check(CheckArgs),
    /// Print the plan the gateway would serve: listeners, hosts, dropped servers.
    Compile(CompileArgs),
    /// Have the daemon running on an interface (in this network namespace)
    /// reload its configuration: sends it SIGHUP. An invalid configuration
    /// changes nothing; the daemon's log says why.
    Reload(ReloadArgs),
    /// Print the kernel's counters of the daemon on an interface, read from
    /// its pinned maps (no daemon needed: it may be busy, stopped with
    /// --keep-attached, or killed).
    Stats(StatsArgs),
    /// Remove the pinned maps and links left by gateways whose interface or
    /// network namespace no longer exists: nothing can adopt them, and each
    /// set holds locked kernel memory until removed (`gateway run` does the
    /// same at start). Lists every set with why it is kept or removed.
    PrunePins(PruneArgs),
}

/// `gateway prune-pins`.
#[derive(clap::Args, Debug)]
pub(crate) struct PruneArgs {
    /// List what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `gateway stats`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatsArgs {
    /// The interface the daemon serves (its `--interface`).
    #[arg(long, short = 'i', value_name = "IFNAME")]
    pub interface: String,
    /// One JSON object per report.
    #[arg(long)]
    pub json: bool,
    /// Report again every this many seconds, with rates, until interrupted.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
    /// With --watch, stop after this many reports.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

/// `gateway reload`.
#[derive(clap::Args, Debug)]
pub(crate) struct ReloadArgs {
    /// The interface the daemon serves (its `--interface`).
    #[arg(long, short = 'i', value_name = "IFNAME")]
    pub interface: String,
}

/// Which gateway workload this is (Istio matches Gateway selectors against it).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct InstanceArgs {
    /// Workload labels, `k=v,k2=v2`; a Gateway applies when its selector is a subset.
    #[arg(long, value_parser = parse_labels, default_value = "istio=ingressgateway", value_name = "K=V,...")]
    pub labels: BTreeMap<String, String>,
    /// Namespace of the gateway workload (with `--kubernetes`, also where
    /// `credentialName` Secrets are read). Default: istio-system; with
    /// `--kubernetes` in a pod, the pod's own.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Where this gateway runs, `region/zone/subzone` (Istio's locality):
    /// locality load balancing prefers endpoints near it.
    #[arg(long, value_parser = parse_locality, value_name = "REGION/ZONE/SUBZONE")]
    pub locality: Option<Locality>,
    /// Proxies in front of the gateway whose `X-Forwarded-Proto` and
    /// `X-Forwarded-For` are believed (Istio's `numTrustedProxies`). With 0,
    /// the scheme is the connection's own; behind a TLS-terminating load
    /// balancer use 1, so `httpsRedirect` does not loop. With 0 the
    /// kernel also enforces AuthorizationPolicy `remoteIpBlocks`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub trusted_proxies: u32,
}

/// `--locality`: up to three `/`-separated parts, none empty.
fn parse_locality(text: &str) -> Result<Locality, String> {
    if text.split('/').count() > 3 || text.split('/').any(str::is_empty) {
        return Err(format!(
            "{text:?} is not a locality: expected region, region/zone or region/zone/subzone"
        ));
    }
    Ok(Locality::parse(text))
}

impl InstanceArgs {
    pub(crate) fn instance(&self) -> Instance {
        let mut instance = Instance {
            labels: self.labels.clone(),
            trusted_proxies: self.trusted_proxies,
            ..Instance::default()
        };
        if let Some(namespace) = &self.namespace {
            instance.namespace = namespace.clone();
        }
        if let Some(locality) = &self.locality {
            instance.locality = locality.clone();
        }
        instance
    }
}

/// How the configuration files and their secrets are read, the same for
/// every command so `check` reads exactly what `run` would.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SourceArgs {
    /// `credentialName: X` reads `DIR/X/tls.crt`, `DIR/X/tls.key` and
    /// `DIR/X/ca.crt`. Default: `credentials/X` beside the configuration
    /// file that names X, then `/etc/gateway/credentials/X`; with this flag,
    /// only `DIR/X`.
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// Largest configuration file read; larger files are an error. Bytes, or
    /// with a K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "16M", value_parser = parse_size, value_name = "SIZE")]
    pub max_config_bytes: u64,
    /// Accept resources of this kind though the gateway does not enforce
    /// them (PeerAuthentication, EnvoyFilter, Sidecar, WasmPlugin,
    /// TrafficExtension): a note instead of the error that refuses the
    /// configuration, and what they would deny is served. Repeatable.
    #[arg(long = "ignore-kind", value_name = "KIND")]
    pub ignore_kind: Vec<config::IgnoredKind>,
}

impl SourceArgs {
    /// Where and how the daemon reads the configuration at `paths`.
    pub(crate) fn source(&self, paths: &[PathBuf]) -> ConfigSource {
        ConfigSource {
            paths: paths.to_vec(),
            credentials_dir: self.credentials_dir.clone(),
            max_config_bytes: self.max_config_bytes,
            ignore_kind: self.ignore_kind.clone(),
            kubernetes: None,
        }
    }

    /// Loads and validates the configuration at `paths`.
    pub(crate) fn load(&self, paths: &[PathBuf]) -> Result<Config, ConfigError> {
        self.source(paths).load()
    }
}

/// `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host).
fn parse_cidr(text: &str) -> Result<Subnet, String> {
    text.parse::<Subnet>().map_err(|err| err.to_string())
}

/// `16M` style sizes for flags.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M or G)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size such as 16M"))
}

/// `10s`, `500ms`, `2m` style durations for flags: the Go/protobuf form
/// Istio's own durations are written in, read by the same parser.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} needs a unit: ms, s, m or h (e.g. 10s)"));
    }
    config::duration_millis(text)
        .filter(|ms| *ms > 0.0)
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .ok_or_else(|| format!("{text:?} is not a positive duration such as 10s"))
}

/// Options of `gateway run`.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Istio YAML file or directory (searched recursively); repeatable.
    #[arg(
        long = "config",
        short = 'c',
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes",
        value_name = "PATH"
    )]
    pub config: Vec<PathBuf>,
    /// Read Gateway, VirtualService, DestinationRule and ServiceEntry from
    /// the Kubernetes API server and watch them, instead of files: as the
    /// pod's service account, or with `--kubeconfig` or `KUBECONFIG`. A
    /// resource with errors is skipped (and logged); the rest is served.
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubeconfig for `--kubernetes` (default: `KUBECONFIG`, then the
    /// in-cluster service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// With `--kubernetes`, watch only this namespace; repeatable. Default:
    /// every namespace.
    #[arg(
        long = "watch-namespace",
        value_name = "NAMESPACE",
        requires = "kubernetes"
    )]
    pub watch_namespace: Vec<String>,
    /// With `--kubernetes`, the cluster's DNS domain: a route's `reviews`
    /// in namespace `prod` is the Service `reviews.prod.svc.<DOMAIN>`.
    /// Default: cluster.local.
    #[arg(long = "cluster-domain", value_name = "DOMAIN", value_parser = cluster_domain)]
    pub cluster_domain: Option<String>,
    /// With `--kubernetes`, protect the node's own addresses on the
    /// interface too (its unlisted ports dropped but `--allow-port`'s).
    /// Without it, Kubernetes mode protects only the `--address` VIPs, and
    /// kubelet, NodePorts and the CNI's overlay on the node's addresses are
    /// never touched.
    #[arg(long = "protect-node-addresses")]
    pub protect_node_addresses: bool,
    /// With `--kubernetes`, the gateway's own Service: a Gateway server on
    /// one of its ports listens on that port's `targetPort`, as Istio's
    /// gateway does. Default: the Services of the gateway's namespace that
    /// select its `--labels`.
    #[arg(long = "service", value_name = "NAMESPACE/NAME", value_parser = service_name)]
    pub service: Option<ServiceKey>,
    /// Interface to attach the XDP program to.
    #[arg(long, short = 'i', value_name = "IFNAME")]
    pub interface: String,
    /// The gateway's own address, which must be on `--interface`; repeatable.
    /// Default: the interface's addresses, with listeners on the wildcard address.
    #[arg(long = "address", short = 'a', value_name = "IP")]
    pub address: Vec<IpAddr>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: AttachMode,
    /// A port no listener owns that still reaches the host on the gateway's
    /// addresses (SSH and other management): `22` for TCP and UDP, `22/tcp`,
    /// `161/udp`, a range `30000-32767/tcp`; repeatable. Ports given replace
    /// the default 22 (name it again to keep SSH); `none` allows nothing.
    #[arg(
        long = "allow-port",
        default_value = "22",
        value_parser = gateway_userspace::management::parse_allow_port,
        value_name = "PORT[-LAST][/tcp|/udp]|none"
    )]
    pub allow_port: Vec<gateway_userspace::management::AllowPort>,
    /// Have the kernel reset connections on this port whose first data
    /// segment names a host (TLS SNI, HTTP `Host`) no server on the port
    /// accepts, so they never reach the proxy; repeatable. Off by default:
    /// a host the kernel cannot see in one segment is always let through.
    #[arg(long = "reset-unknown-hosts", value_name = "PORT")]
    pub reset_unknown_hosts: Vec<u16>,
    /// Diagnostic events of the kernel programs (a drop, an unknown host, a
    /// reset) in this log, at this level and above; off by default, when
    /// they cost the packet path nothing.
    #[arg(long, value_enum, default_value = "off", value_name = "LEVEL")]
    pub ebpf_log: gateway_userspace::dataplane::EbpfLog,
    /// On a clean stop (SIGTERM, SIGINT), leave XDP and steering attached
    /// with their maps pinned: unlisted ports stay dropped and listener
    /// connections are refused until a daemon starts again and adopts them.
    #[arg(long, conflicts_with = "detach_on_exit")]
    pub keep_attached: bool,
    /// On a clean stop, detach XDP and steering and remove the pinned maps
    /// (the default). A daemon killed outright (`kill -9`) leaves them
    /// either way, and the next one adopts them.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Egress: capture the outbound TCP connections of the workloads behind
    /// this interface (their veth's host side) for this instance, without
    /// iptables or proxy settings in the workloads; repeatable.
    #[arg(long = "egress-from", value_name = "IFNAME")]
    pub egress_from: Vec<String>,
    /// Egress: destinations never captured (`10.0.0.0/8`, `2001:db8::/32`,
    /// or one address); repeatable. The node's own addresses never are.
    #[arg(long = "egress-exclude", value_parser = parse_cidr, value_name = "CIDR")]
    pub egress_exclude: Vec<Subnet>,
    /// Egress: Istio's `outboundTrafficPolicy` for the captured workloads.
    /// `registry-only` refuses, in the kernel, connections to addresses no
    /// ServiceEntry resolves to, and in the proxy hosts and ports the
    /// egress Gateway does not serve; `allow-any` sends those to their
    /// original destination.
    #[arg(long, value_enum, default_value = "registry-only", value_name = "MODE")]
    pub outbound_traffic_policy: gateway_userspace::proxy::egress::OutboundPolicy,
    /// Admin endpoint (`/stats`, `/ready`).
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR:PORT")]
    pub admin_address: SocketAddr,
    /// A connection that has not sent a complete request head this long
    /// after it was accepted is closed, whatever its protocol (silent
    /// clients, a partial HTTP/2 preface, slowloris).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_head_timeout: Duration,
    /// An HTTP connection with no request in progress (the last response
    /// ended, nothing of a next request received) for this long is closed
    /// gracefully (Envoy's connection `idle_timeout`).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// An HTTP connection with a request in progress but no byte moving
    /// either way (request body, response) for this long is closed (Envoy's
    /// `stream_idle_timeout`, whose default this is).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub stream_idle_timeout: Duration,
    /// An opaque TCP, TLS passthrough or TLS-terminated TCP connection that
    /// moves no byte either way for this long is closed (the idle timeout
    /// of Envoy's TCP proxy, one hour by default under Istio).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub tcp_idle_timeout: Duration,
    /// How often the key sets of RequestAuthentication rules that name a
    /// `jwksUri` (or only an `issuer`: OpenID discovery) are fetched again
    /// (istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL); after a failed fetch,
    /// again after 1 minute (at most this), doubling up to 60 minutes.
    #[arg(long, default_value = "20m", value_parser = parse_duration, value_name = "DURATION")]
    pub jwks_refresh: Duration,
    /// A change to the configuration files is applied once they have not
    /// changed for this long (a copy in progress is not read half
    /// written); replacing a file by renaming a complete one over it is
    /// safe at any setting.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub config_settle: Duration,
    /// Most client connections served at once; past it new connections are
    /// reset at accept. Default: half the open-file limit left after a
    /// reserve of 128, since a proxied connection needs two descriptors (the
    /// figure is logged at start).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Most connections served at once from one client (an IPv4 address or
    /// an IPv6 /64), so one client cannot fill the cap for everyone; past
    /// it its new connections are reset at accept. Default: an eighth of
    /// `--max-connections`, at least 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_source: Option<u64>,
    /// Access log on stdout, one line per request or TCP connection: `on` or `off`.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub access_log: String,
    /// Access-log line format: Istio's default text line, or one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    pub access_log_format: LogFormat,
    /// Threads serving connections (Envoy's `--concurrency`, nginx's
    /// `worker_processes`). Default: the CPUs this process may run on. With
    /// 1, the proxy runs on a single-threaded scheduler, which saves the
    /// cross-thread wake-ups a work-stealing one pays for nothing.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// `--service`: `namespace/name`.
fn service_name(text: &str) -> Result<ServiceKey, String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ServiceKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// `--cluster-domain`: DNS labels of letters, digits and `-`, lower-cased.
fn cluster_domain(text: &str) -> Result<String, String> {
    let domain = text.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.split('.').all(label_ok) {
        Ok(domain)
    } else {
        Err(format!(
            "{text:?} is not a DNS domain (labels of letters, digits and '-', separated by '.')"
        ))
    }
}

impl RunArgs {
    /// The daemon's options: the flags, parsed.
    pub(crate) fn options(self) -> anyhow::Result<daemon::Options> {
        // clap counts a `bool` flag as given even when it is not, so its
        // `requires` cannot say this.
        let kubernetes_flags = self.kubeconfig.is_some()
            || !self.watch_namespace.is_empty()
            || self.cluster_domain.is_some()
            || self.protect_node_addresses
            || self.service.is_some();
        if !self.kubernetes && kubernetes_flags {
            anyhow::bail!(
                "--kubeconfig, --watch-namespace, --cluster-domain, --protect-node-addresses and --service need --kubernetes"
            );
        }
        if self.kubernetes && self.address.is_empty() && !self.protect_node_addresses {
            anyhow::bail!(
                "in Kubernetes mode the gateway protects only its own addresses: name its VIPs with --address; the node's addresses on {} carry kubelet, NodePorts and the CNI's overlay, and are protected only with --protect-node-addresses and an --allow-port list for them",
                self.interface
            );
        }
        let mut instance = self.instance.instance();
        if self.kubernetes && self.instance.namespace.is_none() {
            if let Some(own) = kubernetes::pod_namespace() {
                instance.namespace = own;
            }
        }
        Ok(daemon::Options {
            source: self.source.source(&self.config),
            kubernetes: self.kubernetes.then(|| kubernetes::Options {
                kubeconfig: self.kubeconfig.clone(),
                namespaces: self.watch_namespace.clone(),
                cluster_domain: self
                    .cluster_domain
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_string()),
                namespace: instance.namespace.clone(),
                service: self.service.clone(),
            }),
            instance,
            interface: self.interface,
            address: self.address,
            protect_node_addresses: self.protect_node_addresses,
            xdp_mode: self.xdp_mode,
            allow_port: self.allow_port,
            reset_unknown_hosts: self.reset_unknown_hosts,
            ebpf_log: self.ebpf_log,
            keep_attached: self.keep_attached,
            egress_from: self.egress_from,
            egress_exclude: self.egress_exclude,
            outbound_traffic_policy: self.outbound_traffic_policy,
            admin_address: self.admin_address,
            request_head_timeout: self.request_head_timeout,
            idle_timeout: self.idle_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            tcp_idle_timeout: self.tcp_idle_timeout,
            jwks_refresh: self.jwks_refresh,
            config_settle: self.config_settle,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            access_log: match (self.access_log.as_str(), self.access_log_format) {
                ("off", _) => access_log::Format::Off,
                (_, LogFormat::Json) => access_log::Format::Json,
                (_, LogFormat::Text) => access_log::Format::Text,
            },
            workers: self.workers,
        })
    }
}

/// `--access-log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Options of `gateway check`.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// Istio YAML files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Also analyse how the Gateways selected by these labels merge.
    #[arg(long, value_parser = parse_labels, value_name = "K=V,...")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Namespace of the gateway workload for the merge analysis.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// Explain which AuthorizationPolicy rule allows or denies one request
    /// at the instance (`--labels`, else Istio's default ingress gateway):
    /// 'METHOD SCHEME://HOST[:PORT]/PATH from CLIENT_IP [via PEER_IP]',
    /// SCHEME http, https, tcp or tls.
    #[arg(long, value_name = "REQUEST")]
    pub explain_request: Option<crate::explain::ExplainRequest>,
    /// A request header for --explain-request, 'Name: value'; repeatable.
    #[arg(long, value_parser = crate::explain::parse_header, value_name = "HEADER")]
    pub explain_header: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// The verified JWT payload for --explain-request, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub explain_claims: Option<String>,
    /// As for `gateway run`: what the kernel may enforce of
    /// AuthorizationPolicy `remoteIpBlocks` depends on it.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub trusted_proxies: u32,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Options of `gateway compile`.
#[derive(clap::Args, Debug)]
pub(crate) struct CompileArgs {
    /// Istio YAML files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// The gateway's own addresses, as for `gateway run`.
    #[arg(long = "address", value_name = "IP")]
    pub address: Vec<IpAddr>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// `gateway compile --format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("300"), Ok(300));
        assert!(parse_size("0").is_err());
        assert!(parse_size("16MB").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn the_flag_default_is_the_loaders_default_file_limit() {
        let cli = Cli::parse_from(["gateway", "check", "x.yaml"]);
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.source.max_config_bytes, config::DEFAULT_MAX_FILE_BYTES);
    }

    #[test]
    fn credentials_dir_help_names_the_default_search() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let check = cli.find_subcommand_mut("check").unwrap();
        let arg = check
            .get_arguments()
            .find(|a| a.get_id() == "credentials_dir")
            .unwrap();
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        assert!(help.contains("beside the configuration"), "{help}");
        assert!(help.contains(config::SYSTEM_CREDENTIALS_DIR), "{help}");
        assert_eq!(arg.get_default_values(), &[] as &[clap::builder::OsStr]);
    }

    #[test]
    fn ignore_kind_help_names_every_refused_kind() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let check = cli.find_subcommand_mut("check").unwrap();
        let arg = check
            .get_arguments()
            .find(|a| a.get_id() == "ignore_kind")
            .unwrap();
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        for refused in config::REFUSED_KINDS {
            assert!(
                help.contains(refused.kind),
                "{} missing: {help}",
                refused.kind
            );
        }
    }

    #[test]
    fn cidrs_parse_with_and_without_a_prefix() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Ok(Subnet {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            })
        );
        assert_eq!(parse_cidr("2001:db8::1").map(|c| c.prefix), Ok(128));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
