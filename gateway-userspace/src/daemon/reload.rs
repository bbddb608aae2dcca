//! A configuration reload: read, validate and compile again off the
//! runtime, then serve the result, the proxy first and the kernel's maps
//! second, all or nothing. The maps are reached through [`Kernel`], so
//! the order and the rollback are unit-tested without root.
use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use gateway_common::Settings;
use tokio::sync::watch;

use super::{build::Inputs, host::ephemeral_range};
use crate::{
    compile::{self, egress_registry::Registry},
    dataplane::{Dataplane, DataplaneError},
    plan::Plan,
    proxy, stats,
};

/// What a reload writes the plan into: the kernel's maps.
pub trait Kernel {
    /// Makes the maps equal to `plan` (a diff; see `dataplane::sync`).
    fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError>;
}

impl Kernel for Dataplane {
    fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError> {
        Self::apply(self, plan, settings)
    }
}

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP (`gateway reload`): the operator asked for this configuration.
    Asked,
    /// The watched files changed and settled.
    FilesChanged,
    /// The cluster's Istio resources changed and settled (`--kubernetes`).
    ResourcesChanged,
}

/// What a reload needs from the start-up.
pub struct Reload<'a> {
    pub inputs: Arc<Inputs>,
    pub counters: &'a stats::ReloadCounters,
    /// Where a new registry goes (egress only).
    pub registry: Option<&'a watch::Sender<Registry>>,
}

impl Reload<'_> {
    /// Reads, validates and compiles the configuration again and, if all
    /// of that succeeds (every kernel table's capacity included), serves
    /// it: the proxy first (new connections take the new listeners, hosts
    /// and certificates; established ones keep what they had), then the
    /// kernel's maps as a diff (entries that do not change are not
    /// touched). All or nothing: a failure before the switch changes
    /// nothing, and a map write that fails part way puts the proxy and the
    /// maps back to the previous plan; either way the errors are logged in
    /// the `check` format and `config.reload_failures` counts it.
    /// Returns the new plan and the certificate files it names.
    pub async fn run(
        &self,
        why: Trigger,
        current: &Arc<Plan>,
        kernel: &mut impl Kernel,
        served_tx: &watch::Sender<Arc<proxy::Served>>,
    ) -> Option<(Plan, Vec<PathBuf>)> {
        log::info!(
            "{}: reloading the configuration",
            match why {
                Trigger::Asked => "SIGHUP",
                Trigger::FilesChanged => "the configuration files changed",
                Trigger::ResourcesChanged => "the cluster's Istio resources changed",
            }
        );
        let started = std::time::Instant::now();
        let built = self.read_and_build(current).await?;
        let compiled = started.elapsed();
        if why == Trigger::FilesChanged && !self.keeps_every_listener(current, &built.plan) {
            return None;
        }
        self.switch(current, kernel, served_tx, built.served, &built.plan)?;
        // What is served now, said on the resources (Kubernetes mode).
        if let Some(objects) = &self.inputs.source.kubernetes {
            objects.report(&built.diagnostics, Some(&built.plan));
        }
        if let Some(registry) = self.registry {
            let _ = registry.send(built.registry);
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "configuration reloaded: {} listener(s), {} server host(s); read and compiled in {:.1} ms, kernel maps updated in {:.1} ms",
            built.plan.listeners.len(),
            built.plan.kernel_hosts().len(),
            compiled.as_secs_f64() * 1000.0,
            (started.elapsed() - compiled).as_secs_f64() * 1000.0
        );
        Some((built.plan, built.certificates))
    }

    /// Reads and compiles on a blocking thread, not on the runtime that
    /// serves connections (tens of milliseconds per thousand hosts).
    async fn read_and_build(&self, current: &Arc<Plan>) -> Option<super::build::Built> {
        let (inputs, previous) = (Arc::clone(&self.inputs), Arc::clone(current));
        let built = tokio::task::spawn_blocking(move || inputs.read_and_build(Some(&previous)))
            .await
            .unwrap_or_else(|err| Err(anyhow::anyhow!("the compile task failed: {err}")));
        match built {
            Ok(built) => Some(built),
            Err(err) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "configuration reload refused ({err:#}); still serving the previous configuration"
                );
                None
            }
        }
    }

    /// Whether `next` still answers on every listener that answered in
    /// `current`: a file read while half written loses them all.
    fn keeps_every_listener(&self, current: &Plan, next: &Plan) -> bool {
        let emptied = compile::route_loss::listeners_losing_every_route(current, next);
        if emptied.is_empty() {
            return true;
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        log::error!(
            "configuration reload refused: listener {} is still declared but would answer nothing it answered before (a file read while half written?); `gateway reload` applies it anyway; still serving the previous configuration",
            emptied.join(", ")
        );
        false
    }

    /// The proxy first, so a listener the maps make reachable is known to
    /// it, then the maps; on a map failure both go back to `current`.
    fn switch(
        &self,
        current: &Plan,
        kernel: &mut impl Kernel,
        served_tx: &watch::Sender<Arc<proxy::Served>>,
        served: proxy::Served,
        plan: &Plan,
    ) -> Option<()> {
        let previous = Arc::clone(&served_tx.borrow());
        let _ = served_tx.send(Arc::new(served));
        let Err(err) = kernel.apply(plan, ephemeral_range()) else {
            return Some(());
        };
        // All or nothing: the proxy and the maps go back to the plan that
        // was serving (the maps as a diff, so what the failed apply did
        // not touch is not touched again).
        let _ = served_tx.send(previous);
        let rolled_back = kernel.apply(current, ephemeral_range());
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        match rolled_back {
            Ok(()) => log::error!(
                "configuration reload refused: updating the kernel maps failed ({err:#}); rolled back, still serving the previous configuration"
            ),
            Err(again) => log::error!(
                "configuration reload refused: updating the kernel maps failed ({err:#}), and so did restoring the previous plan's ({again:#}); the next reload writes them again"
            ),
        }
        None
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
