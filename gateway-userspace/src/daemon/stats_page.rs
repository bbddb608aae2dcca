//! What `/stats` and `/stats/prometheus` render: the kernel's counters
//! for the plan being served, the reloads, the connection gates, the
//! egress workloads and the daemon's own counters.
use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

use crate::{
    admin,
    connection::Counters,
    dataplane::{StatsReader, Workloads, pins::Memlock},
    log_pipe,
    plan::Plan,
    proxy, stats,
};

/// Everything the page reads, owned by the admin thread.
pub(super) struct Sources {
    pub reader: StatsReader,
    /// The plan the counters are read for: a reload replaces it.
    pub plan: watch::Receiver<Arc<Plan>>,
    pub reloads: Arc<stats::ReloadCounters>,
    pub daemon: Arc<stats::DaemonCounters>,
    pub proxy: Arc<Counters>,
    pub admin: Arc<Counters>,
    pub egress: Egress,
    pub memlock: Option<Memlock>,
}

/// The egress side of the page (empty when nothing is captured).
pub(super) struct Egress {
    /// The `--egress-from` interfaces by index.
    pub captured: BTreeMap<u32, String>,
    /// The guard's per-workload counters.
    pub workloads: Option<Workloads>,
}

/// The admin endpoint's renderer of `sources`.
pub(super) fn render(sources: Sources) -> admin::RenderFn {
    Box::new(move |format| {
        let plan = Arc::clone(&sources.plan.borrow());
        let hosts = plan.kernel_hosts();
        let mut snapshot = sources
            .reader
            .read(
                plan.listeners.iter().map(|l| l.id),
                hosts.iter().map(|h| h.id),
            )
            .map_err(|err| err.to_string())?;
        snapshot.policies = sources
            .reader
            .read_policies(
                std::iter::once(gateway_common::POLICY_ALLOW_LIST)
                    .chain(plan.ip_policy.policies.keys().copied()),
            )
            .map_err(|err| err.to_string())?;
        let mut samples = stats::samples(
            &snapshot,
            &plan,
            &sources.reloads,
            &[("proxy", &sources.proxy), ("admin", &sources.admin)],
        );
        if let Some(workloads) = &sources.egress.workloads {
            samples.extend(stats::workload_samples(
                &workloads.all(),
                &sources.egress.captured,
            ));
        }
        samples.extend(stats::cluster_samples(&proxy::upstream::cluster_counts()));
        samples.extend(stats::daemon_samples(
            log_pipe::dropped_totals(),
            &sources.daemon,
            sources.memlock.as_ref().and_then(|m| m.bytes().ok()),
        ));
        Ok(match format {
            admin::StatsFormat::Text => stats::render(&samples),
            admin::StatsFormat::Prometheus => stats::render_prometheus(&samples),
        })
    })
}
