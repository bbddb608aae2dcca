//! `gateway`: command-line parsing ([`cli`]), then a call into the
//! library (`daemon::run`) or a thin command wrapper.
mod check;
mod cli;
mod explain;
mod inspect;
mod prune;

use std::process::ExitCode;

use clap::Parser;
use gateway_userspace::daemon;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let daemon = matches!(cli.command, Command::Run(_));
    if let Command::Run(args) = &cli.command {
        // The kernel programs' events carry their crate's target.
        logger.filter_module("gateway_xdp", args.ebpf_log.filter());
        // The daemon never waits on its log: a stalled reader of stderr
        // costs dropped, counted lines (`log_pipe`), not service.
        use std::io::IsTerminal as _;
        logger
            .target(env_logger::Target::Pipe(Box::new(
                gateway_userspace::log_pipe::StderrWriter,
            )))
            .write_style(if std::io::stderr().is_terminal() {
                env_logger::WriteStyle::Auto
            } else {
                env_logger::WriteStyle::Never
            });
    }
    logger.init();
    let result = match cli.command {
        Command::Run(args) => args
            .options()
            .and_then(daemon::run)
            .map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check::check(&args),
        Command::Compile(args) => check::compile(&args),
        Command::Stats(args) => inspect::stats(&args).map(|()| ExitCode::SUCCESS),
        Command::PrunePins(args) => prune::prune_pins(&args),
        Command::Reload(args) => gateway_userspace::pidfile::signal_reload(&args.interface)
            .map(|pid| {
                println!(
                    "asked the gateway on {} (process {pid}) to reload its configuration",
                    args.interface
                );
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) if daemon => {
            let line = format!("error: {err:#}\n");
            match gateway_userspace::log_pipe::stderr() {
                Some(pipe) => {
                    pipe.push(line.as_bytes());
                }
                None => eprint!("{line}"),
            }
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    if daemon {
        // The last lines go out if anyone reads them; the exit does not wait longer.
        gateway_userspace::log_pipe::flush_all(daemon::LOG_FLUSH_ON_EXIT);
    }
    code
}
