//! Writes each resource's [`Report`] into its `status` subresource, from
//! the one replica that holds the status Lease ([`super::lease`]).
//!
//! - Only differences are written: a status equal to the object's current
//!   one (its `lastTransitionTime` aside) is left alone, so a restart or a
//!   new writer rewrites nothing that is already right;
//! - writes are paced ([`WRITE_INTERVAL`]) and coalesced: the writer always
//!   works from the latest reports, so a resource that flaps between two
//!   loads is written at most once per round, never once per change;
//! - `lastTransitionTime` moves only when `Accepted` changes.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::chrono::{SecondsFormat, Utc};
use kube::{
    Client,
    api::{Api, ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::status::{Report, ResourceKey};

/// The pause between two status writes: at most 50 a second.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// The status the object has now, as the watches hold it.
pub type CurrentStatus = Arc<dyn Fn(&ResourceKey) -> Option<Value> + Send + Sync>;

/// The latest reports, for the writer task.
#[derive(Debug, Clone)]
pub struct StatusWriter {
    desired: Arc<watch::Sender<Arc<BTreeMap<ResourceKey, Report>>>>,
}

impl StatusWriter {
    /// Starts the writer on the current runtime: it writes while `leader`
    /// says this replica holds the Lease.
    pub fn start(
        client: Client,
        resources: BTreeMap<String, ApiResource>,
        current: CurrentStatus,
        mut leader: watch::Receiver<bool>,
    ) -> Self {
        let (desired, mut reports) = watch::channel(Arc::new(BTreeMap::new()));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = reports.changed() => if changed.is_err() { return },
                    changed = leader.changed() => if changed.is_err() { return },
                }
                if !*leader.borrow_and_update() {
                    continue;
                }
                let latest = Arc::clone(&reports.borrow_and_update());
                write_round(&client, &resources, &current, &latest, &reports).await;
            }
        });
        Self {
            desired: Arc::new(desired),
        }
    }

    /// Makes `reports` the statuses to write (replacing any not yet written).
    pub fn publish(&self, reports: BTreeMap<ResourceKey, Report>) {
        self.desired.send_replace(Arc::new(reports));
    }
}

/// Writes every report whose status differs from the object's, paced;
/// stops early when newer reports arrive (the next round takes them).
async fn write_round(
    client: &Client,
    resources: &BTreeMap<String, ApiResource>,
    current: &CurrentStatus,
    latest: &BTreeMap<ResourceKey, Report>,
    newer: &watch::Receiver<Arc<BTreeMap<ResourceKey, Report>>>,
) {
    for (key, report) in latest {
        if newer.has_changed().unwrap_or(true) {
            return;
        }
        let Some(resource) = resources.get(&key.kind) else {
            continue;
        };
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let existing = current(key);
        let Some(status) = status_to_write(report, existing.as_ref(), &now) else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, resource);
        let patch = Patch::Merge(json!({ "status": status }));
        match api
            .patch_status(&key.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: nothing to say.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => log::warn!("cannot write the status of {key}: {err}"),
        }
        tokio::time::sleep(WRITE_INTERVAL).await;
    }
}

/// The status to write for `report`, or `None` when `existing` already
/// says the same (its transition time aside). The transition time is kept
/// while `Accepted` keeps its value, else `now`.
pub fn status_to_write(report: &Report, existing: Option<&Value>, now: &str) -> Option<Value> {
    let accepted_now = if report.accepted() { "True" } else { "False" };
    let condition = existing.and_then(|s| s.get("conditions")?.get(0));
    let since = match condition {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(accepted_now) => c
            .get("lastTransitionTime")
            .and_then(Value::as_str)
            .unwrap_or(now),
        _ => now,
    };
    let status = report.status(since);
    (existing != Some(&status)).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::status::{Finding, Level};

    fn report(level: Option<Level>) -> Report {
        Report {
            generation: Some(3),
            findings: level
                .map(|level| Finding {
                    level,
                    type_name: "InvalidResource",
                    message: "spec.hosts: required".into(),
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_status_already_there_is_not_written_again_and_its_transition_time_stays() {
        let first = status_to_write(&report(None), None, "t1").expect("a first status");
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(status_to_write(&report(None), Some(&first), "t2"), None);
        let warned = status_to_write(&report(Some(Level::Warning)), Some(&first), "t2")
            .expect("a new message");
        assert_eq!(warned["conditions"][0]["lastTransitionTime"], "t1");
        let refused =
            status_to_write(&report(Some(Level::Error)), Some(&warned), "t3").expect("refused now");
        assert_eq!(refused["conditions"][0]["status"], "False");
        assert_eq!(refused["conditions"][0]["lastTransitionTime"], "t3");
    }
}
