//! The daemon's kernel state outside the plan: orphaned pin sets removed
//! at start, links and pins taken from under it put back, and the counter
//! layout written beside the pins for `gateway stats`.
use std::{fs, sync::atomic::Ordering};

use crate::{
    dataplane::{Dataplane, orphans, pins},
    plan,
    readiness::Readiness,
    stats,
};

/// Removes the pin sets whose interface or network namespace is gone,
/// logging each with the kernel memory it held; a failure to look stops
/// nothing.
pub(super) fn prune_orphaned_pins() {
    let pruned = match orphans::prune(false) {
        Ok(pruned) => pruned,
        Err(err) => {
            let err = anyhow::Error::from(err);
            log::warn!("cannot look for orphaned pins ({err:#}); none removed");
            return;
        }
    };
    for pruned in pruned {
        let (surveyed, Some(removed)) = (&pruned.surveyed, pruned.removed) else {
            continue;
        };
        let memlock = surveyed
            .memlock
            .map_or("an unknown amount".to_string(), pins::human_bytes);
        match removed {
            Ok(()) => log::info!(
                "removed the orphaned pins {} (namespace {}, interface {}: {}): {memlock} of locked kernel memory freed",
                surveyed.set.path().display(),
                surveyed.set.netns,
                surveyed.set.interface,
                surveyed.verdict
            ),
            Err(err) => log::warn!(
                "cannot remove the orphaned pins {} ({}; {memlock} of locked kernel memory): {:#}",
                surveyed.set.path().display(),
                surveyed.verdict,
                anyhow::Error::from(err)
            ),
        }
    }
}

/// Puts back kernel state taken from under the daemon (pins removed,
/// links detached from outside), logging each as the error it is and
/// counting it; `/ready` fails while the programs cannot be attached.
pub(super) fn repair_dataplane(
    dataplane: &mut Dataplane,
    counters: &stats::DaemonCounters,
    readiness: &Readiness,
) {
    match dataplane.repair() {
        Ok(repair) => {
            if repair.pins_restored > 0 {
                log::error!(
                    "{} pinned map(s) and link(s) were removed from {} by something else; pinned them again (the daemon's own descriptors kept everything attached meanwhile)",
                    repair.pins_restored,
                    dataplane
                        .pin_dir()
                        .map_or(String::new(), |dir| dir.display().to_string())
                );
                counters
                    .pins_restored
                    .fetch_add(repair.pins_restored as u64, Ordering::Relaxed);
            }
            for link in &repair.reattached {
                log::error!("the {link} program was detached by something else; attached it again");
                counters
                    .attachments_restored
                    .fetch_add(1, Ordering::Relaxed);
            }
            readiness.set_attached(true);
        }
        Err(err) => {
            log::error!(
                "the kernel programs cannot be attached again ({err:#}); not ready until they are"
            );
            readiness.set_attached(false);
        }
    }
}

/// Writes what the kernel's counter slots stand for, for `gateway stats`.
pub(super) fn write_layout(interface: &str, plan: &plan::Plan) {
    let Some(path) = pins::layout_path(interface) else {
        return;
    };
    let staged = path.with_extension("staged");
    let written = fs::write(&staged, stats::Layout::of(plan).to_json())
        .and_then(|()| fs::rename(&staged, &path));
    if let Err(err) = written {
        log::warn!(
            "cannot write {} ({err}); `gateway stats` cannot name the counters",
            path.display()
        );
    }
}
