//! `gateway check` and `gateway compile`: the configuration pipeline
//! without the kernel, for CI pipelines and for explaining what is served.
use std::process::ExitCode;

use anyhow::bail;
use gateway_userspace::{
    compile,
    config::{Config, Severity},
    model::Instance,
    report,
};

use crate::cli::{CheckArgs, CompileArgs, Format};

/// Prints every diagnostic and a summary; exit 1 on errors (or warnings with --strict).
pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.source.load(&args.paths)?;
    for diagnostic in &config.diagnostics {
        println!("{diagnostic}");
    }
    let mut warnings = count(&config, Severity::Warning);
    if let Some(labels) = &args.labels {
        let instance = Instance {
            labels: labels.clone(),
            namespace: args.namespace.clone(),
            trusted_proxies: args.trusted_proxies,
            ..Instance::default()
        };
        let selected = config
            .model
            .gateways
            .iter()
            .filter(|g| g.selects(labels))
            .count();
        let labels_text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{selected} of {} Gateways select the instance {} in namespace {}",
            config.model.gateways.len(),
            labels_text.join(","),
            args.namespace
        );
        let plan = compile::plan(&config.model, &instance, &[])?;
        for dropped in &plan.dropped {
            println!(
                "warning: Gateway {}: spec.servers[{}]: not served: {}",
                dropped.gateway, dropped.server, dropped.reason
            );
        }
        for warning in &plan.warnings {
            println!("warning: {warning}");
        }
        warnings += plan.dropped.len() + plan.warnings.len();
    }
    let mut errors = count(&config, Severity::Error);
    if let (Some(request), 0) = (&args.explain_request, errors) {
        let instance = Instance {
            labels: args
                .labels
                .clone()
                .unwrap_or_else(|| Instance::default().labels),
            namespace: args.namespace.clone(),
            ..Instance::default()
        };
        let plan = compile::plan(&config.model, &instance, &[])?;
        print!(
            "{}",
            crate::explain::explain(
                &plan,
                request,
                &args.explain_header,
                args.explain_claims.as_deref()
            )?
        );
    }
    if args.labels.is_none() && errors == 0 {
        errors += kernel_limit_errors(&config, &args.namespace, args.trusted_proxies);
    }
    println!("{errors} error(s), {warnings} warning(s)");
    let failed = errors > 0 || (args.strict && warnings > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the plan for the Gateways that select the instance.
pub(crate) fn compile(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let config = args.source.load(&args.paths)?;
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
    let plan = compile::plan(&config.model, &args.instance.instance(), &args.address)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    match args.format {
        Format::Table => print!("{}", report::table(&plan)),
        Format::Json => println!("{:#}", report::json(&plan)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Compiles the plan of every gateway instance the Gateways' selectors
/// describe and prints what no kernel could hold (too many listeners,
/// hosts or addresses), which a reload would refuse; returns how many.
fn kernel_limit_errors(config: &Config, namespace: &str, trusted_proxies: u32) -> usize {
    let selectors: std::collections::BTreeSet<_> =
        config.model.gateways.iter().map(|g| &g.selector).collect();
    let mut errors = 0;
    for selector in selectors {
        let instance = Instance {
            labels: selector.clone(),
            namespace: namespace.to_string(),
            trusted_proxies,
            ..Instance::default()
        };
        if let Err(err) = compile::plan(&config.model, &instance, &[]) {
            let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "error: the gateway instance labelled {}: {err}",
                labels.join(",")
            );
            errors += 1;
        }
    }
    errors
}

fn count(config: &Config, severity: Severity) -> usize {
    config
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .count()
}
