//! `gateway`: command-line parsing and wiring only.
mod check;
mod run;

use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gateway_userspace::{
    dataplane::AttachMode,
    model::{Instance, parse_labels},
};

/// eBPF/XDP-accelerated Istio ingress gateway.
#[derive(Parser)]
#[command(name = "gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Istio Gateway resources on an interface (needs root).
    Run(RunArgs),
    /// Validate every resource in the paths; exit 1 on errors. Needs no root.
    Check(CheckArgs),
    /// Print the plan the gateway would serve: listeners, hosts, dropped servers.
    Compile(CompileArgs),
}

/// Which gateway workload this is (Istio matches Gateway selectors against it).
#[derive(clap::Args, Debug, Clone)]
pub struct InstanceArgs {
    /// Workload labels, `k=v,k2=v2`; a Gateway applies when its selector is a subset.
    #[arg(long, value_parser = parse_labels, default_value = "istio=ingressgateway", value_name = "K=V,...")]
    pub labels: BTreeMap<String, String>,
    /// Namespace of the gateway workload.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
}

impl InstanceArgs {
    fn instance(&self) -> Instance {
        Instance {
            labels: self.labels.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// Where `credentialName` secrets live in standalone mode.
const DEFAULT_CREDENTIALS_DIR: &str = "/etc/gateway/credentials";

/// Options of `gateway run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Istio YAML file or directory (searched recursively); repeatable.
    #[arg(long = "config", short = 'c', required = true, value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Interface to attach the XDP program to.
    #[arg(long, short = 'i', value_name = "IFNAME")]
    pub interface: String,
    /// The gateway's own address; repeatable. Default: the interface's addresses,
    /// with listeners on the wildcard address.
    #[arg(long = "address", short = 'a', value_name = "IP")]
    pub address: Vec<IpAddr>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: AttachMode,
    /// Admin endpoint (`/stats`, `/ready`).
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR:PORT")]
    pub admin_address: SocketAddr,
    /// `credentialName: X` reads `DIR/X/tls.crt`, `DIR/X/tls.key` and `DIR/X/ca.crt`.
    #[arg(long, default_value = DEFAULT_CREDENTIALS_DIR, value_name = "DIR")]
    pub credentials_dir: PathBuf,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// Options of `gateway check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
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
    /// Where `credentialName` secrets live, as for `gateway run`.
    #[arg(long, default_value = DEFAULT_CREDENTIALS_DIR, value_name = "DIR")]
    pub credentials_dir: PathBuf,
}

/// Options of `gateway compile`.
#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// Istio YAML files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// The gateway's own addresses, as for `gateway run`.
    #[arg(long = "address", value_name = "IP")]
    pub address: Vec<IpAddr>,
    /// Where `credentialName` secrets live, as for `gateway run`.
    #[arg(long, default_value = DEFAULT_CREDENTIALS_DIR, value_name = "DIR")]
    pub credentials_dir: PathBuf,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// `gateway compile --format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check::check(&args),
        Command::Compile(args) => check::compile(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
