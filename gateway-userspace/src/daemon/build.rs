//! The first two start-up steps, which a reload repeats: read the
//! configuration (every diagnostic logged, any error refusing it), and
//! build what is served from it (the plan compiled, certificates loaded,
//! the egress registry).
use std::{net::IpAddr, path::PathBuf};

use anyhow::bail;

use super::ConfigSource;
use crate::{
    compile::{
        self,
        egress_registry::{Registry, registry},
    },
    config::{Config, Severity},
    model::Instance,
    plan::Plan,
    proxy,
};

/// Everything a configuration is built with besides itself; the same at
/// start and at every reload.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub source: ConfigSource,
    pub instance: Instance,
    /// `--reset-unknown-hosts`.
    pub reset_unknown_hosts: Vec<u16>,
    /// The gateway's addresses.
    pub addresses: Vec<IpAddr>,
    /// What the proxy is built with besides the plan.
    pub proxy: proxy::Options,
}

/// A configuration compiled and ready to serve.
pub struct Built {
    pub plan: Plan,
    pub served: proxy::Served,
    /// What the registry lets captured workloads reach (egress).
    pub registry: Registry,
    /// The certificate files it names, watched for changes.
    pub certificates: Vec<PathBuf>,
    /// What the load said about the resources (Kubernetes mode writes it
    /// into their status).
    pub diagnostics: Vec<crate::config::Diagnostic>,
}

impl Inputs {
    /// Reads the configuration and builds it; `previous`, on a reload,
    /// lends its ids to the listeners and hosts that stay.
    pub fn read_and_build(&self, previous: Option<&Plan>) -> anyhow::Result<Built> {
        let config = read_config(&self.source, &self.instance)?;
        self.build(&config, previous)
    }

    /// Compiles `config` for this instance and builds what the proxy
    /// serves (certificates loaded, regexes compiled).
    pub fn build(&self, config: &Config, previous: Option<&Plan>) -> anyhow::Result<Built> {
        let mut plan = compile::plan(&config.model, &self.instance, &self.addresses)?;
        plan.reset_unknown_hosts(&self.reset_unknown_hosts)?;
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
        let served = proxy::Served::new(&plan, self.proxy.clone()).map_err(with_source)?;
        Ok(Built {
            plan,
            served,
            registry: registry(&config.model),
            // A cluster's Secrets are watched, not polled as files.
            certificates: if self.source.kubernetes.is_some() {
                Vec::new()
            } else {
                certificate_files(config)
            },
            diagnostics: config.diagnostics.clone(),
        })
    }
}

/// An error with its source on one line.
pub fn with_source(err: impl std::error::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "{err}: {}",
        err.source().map_or(String::new(), |s| s.to_string())
    )
}

/// Reads and validates the configuration: every diagnostic is logged in
/// the `check` format, and any error, or no Gateway selecting this
/// instance, refuses it.
pub fn read_config(source: &ConfigSource, instance: &Instance) -> anyhow::Result<Config> {
    let config = source.load()?;
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
    if source.kubernetes.is_some() {
        // A cluster's objects are each someone's: one with an error is
        // left out (its errors logged above), the others are served.
        if errors > 0 {
            log::warn!(
                "{errors} error(s) in the cluster's resources: the resources they are in are skipped, the rest is served"
            );
        }
        if !selects(&config, instance) {
            log::warn!(
                "no Gateway in the cluster selects this instance yet: nothing is served until one does"
            );
        }
        return Ok(config);
    }
    if errors > 0 {
        bail!("{errors} error(s) in the configuration");
    }
    if config.model.gateways.is_empty() {
        bail!("no Gateway resources found in the configuration paths");
    }
    let read = config.model.gateways.len();
    if !selects(&config, instance) {
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

/// Whether a Gateway of `config` selects this instance.
fn selects(config: &Config, instance: &Instance) -> bool {
    config
        .model
        .gateways
        .iter()
        .any(|g| g.selects(&instance.labels))
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
