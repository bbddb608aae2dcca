//! `gateway`: command-line parsing and wiring only.
mod run;

use std::{net::IpAddr, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gateway_userspace::dataplane::AttachMode;

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
}

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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
