//! `gateway check` and `gateway compile`: the configuration pipeline
//! without the kernel, for CI pipelines and for explaining what is served.
use std::process::ExitCode;

use anyhow::bail;
use gateway_userspace::{
    compile,
    config::{self, Config, Severity},
    model::Gateway,
    report,
};

use crate::{CheckArgs, CompileArgs, Format};

/// Prints every diagnostic and a summary; exit 1 on errors (or warnings with --strict).
pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = config::load_paths(&args.paths)?;
    for diagnostic in &config.diagnostics {
        println!("{diagnostic}");
    }
    let mut warnings = count(&config, Severity::Warning);
    if let Some(labels) = &args.labels {
        let selected: Vec<Gateway> = config
            .gateways
            .iter()
            .filter(|g| g.selects(labels))
            .cloned()
            .collect();
        println!(
            "{} of {} Gateways select the instance {} in namespace {}",
            selected.len(),
            config.gateways.len(),
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            args.namespace
        );
        let plan = compile::plan(&selected, &[])?;
        for dropped in &plan.dropped {
            println!(
                "warning: Gateway {}: spec.servers[{}]: not served: {}",
                dropped.gateway, dropped.server, dropped.reason
            );
        }
        warnings += plan.dropped.len();
    }
    let errors = count(&config, Severity::Error);
    println!("{errors} error(s), {warnings} warning(s)");
    let failed = errors > 0 || (args.strict && warnings > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the plan for the Gateways that select the instance.
pub fn compile(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let config = config::load_paths(&args.paths)?;
    let errors = count(&config, Severity::Error);
    for diagnostic in config
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Note)
    {
        eprintln!("{diagnostic}");
    }
    if errors > 0 {
        bail!("{errors} error(s) in the configuration; run `gateway check` for details");
    }
    let instance = args.instance.instance();
    let selected: Vec<Gateway> = config
        .gateways
        .into_iter()
        .filter(|g| g.selects(&instance.labels))
        .collect();
    let plan = compile::plan(&selected, &args.address)?;
    match args.format {
        Format::Table => print!("{}", report::table(&plan)),
        Format::Json => println!("{:#}", report::json(&plan)),
    }
    Ok(ExitCode::SUCCESS)
}

fn count(config: &Config, severity: Severity) -> usize {
    config
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .count()
}
