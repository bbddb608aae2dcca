//! The daemon's main loop once serving: SIGTERM and SIGINT stop it,
//! SIGHUP reloads, and every [`WATCH_INTERVAL`] the kernel state is
//! repaired and the configuration files looked at (a settled change
//! reloads too).
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinHandle,
    time::Instant,
};

use super::{
    Options, kernel_state,
    reload::{Reload, Trigger},
};
use crate::{
    dataplane::Dataplane,
    kubernetes::{DEBOUNCE_AFTER, DEBOUNCE_MAX, IstioObjects},
    plan::Plan,
    proxy,
    readiness::Readiness,
    stats,
    watch::Watcher,
};

/// How often the configuration files are looked at (a change is applied
/// once they have not changed for `--config-settle`), and the daemon's
/// kernel state checked (`Dataplane::repair`).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster's changes waiting to be applied: due once no other came
/// for [`DEBOUNCE_AFTER`], or [`DEBOUNCE_MAX`] after the first. Kept
/// outside the signal loop's `select!`, whose other branches (the 1 s
/// poll) would otherwise drop a wait in progress and the change with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Debounce {
    /// The first and the last change not yet applied.
    pending: Option<(Instant, Instant)>,
}

impl Debounce {
    fn changed(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// When the pending changes are to be applied, if there are any.
    fn due(&self) -> Option<Instant> {
        self.pending
            .map(|(first, last)| (last + DEBOUNCE_AFTER).min(first + DEBOUNCE_MAX))
    }
}

/// The next change of the cluster's resources; never without
/// `--kubernetes` or once the watches are gone. Cancel-safe: a change
/// is marked seen only when this returns.
async fn next_change(changes: Option<&mut watch::Receiver<u64>>) {
    let Some(changes) = changes else {
        return std::future::pending().await;
    };
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Until `due`, or forever without one.
async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// What is running once the daemon serves.
pub(super) struct Running {
    /// The plan being served (the counters are read for it).
    pub plan_tx: watch::Sender<Arc<Plan>>,
    /// What the proxy serves.
    pub served_tx: watch::Sender<Arc<proxy::Served>>,
    pub reloads: Arc<stats::ReloadCounters>,
    pub daemon_counters: Arc<stats::DaemonCounters>,
    pub readiness: Arc<Readiness>,
    /// Tells the proxy and the admin thread to stop.
    pub shutdown_tx: watch::Sender<bool>,
    pub proxy_task: JoinHandle<()>,
    pub admin_thread: std::thread::JoinHandle<()>,
}

/// Serves until SIGTERM or SIGINT, reloading on SIGHUP and on a settled
/// change to the configuration files or the `certificates` they name.
pub(super) async fn until_stopped(
    args: &Options,
    dataplane: &mut Dataplane,
    reload: &Reload<'_>,
    running: &Running,
    certificates: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut watcher = Watcher::new(args.source.paths.clone(), certificates, args.config_settle);
    let mut poll = tokio::time::interval(WATCH_INTERVAL);
    let mut resources = args.source.kubernetes.as_ref().map(IstioObjects::changes);
    let mut debounce = Debounce::default();
    loop {
        let why = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break }
            _ = sighup.recv() => Trigger::Asked,
            () = next_change(resources.as_mut()) => {
                debounce.changed(Instant::now());
                continue;
            }
            () = until(debounce.due()) => {
                debounce = Debounce::default();
                Trigger::ResourcesChanged
            }
            _ = poll.tick() => {
                kernel_state::repair_dataplane(dataplane, &running.daemon_counters, &running.readiness);
                if !watcher.poll() {
                    continue;
                }
                Trigger::FilesChanged
            }
        };
        let current = Arc::clone(&running.plan_tx.borrow());
        let reloaded = reload
            .run(why, &current, dataplane, &running.served_tx)
            .await;
        if let Some((plan, certificates)) = reloaded {
            watcher.rebase(certificates);
            kernel_state::write_layout(&args.interface, &plan);
            let _ = running.plan_tx.send(Arc::new(plan));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{sync::watch, time::Instant};

    use super::{DEBOUNCE_AFTER, DEBOUNCE_MAX, Debounce, next_change};

    #[test]
    fn changes_are_due_once_quiet_for_the_debounce() {
        let start = Instant::now();
        let mut debounce = Debounce::default();
        assert_eq!(debounce.due(), None);
        for step in 0..5 {
            debounce.changed(start + DEBOUNCE_AFTER / 2 * step);
        }
        // The last change came at 2 debounces; due one more after it.
        assert_eq!(debounce.due(), Some(start + DEBOUNCE_AFTER * 3));
    }

    #[test]
    fn changes_that_never_stop_are_due_at_the_most_after_the_first() {
        let start = Instant::now();
        let mut debounce = Debounce::default();
        let mut now = start;
        while now < start + DEBOUNCE_MAX * 2 {
            debounce.changed(now);
            now += DEBOUNCE_AFTER / 2;
        }
        assert_eq!(debounce.due(), Some(start + DEBOUNCE_MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_waited_for_and_dropped_is_still_seen_by_the_next_wait() {
        let (tx, mut rx) = watch::channel(0u64);
        // Another branch of the loop wins while the wait is pending.
        let dropped = tokio::time::timeout(Duration::from_millis(10), next_change(Some(&mut rx)));
        assert!(dropped.await.is_err());
        tx.send_modify(|n| *n += 1);
        let seen = tokio::time::timeout(Duration::from_secs(1), next_change(Some(&mut rx)));
        assert!(seen.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn without_watches_there_is_never_a_change() {
        let waited = tokio::time::timeout(Duration::from_secs(3600), next_change(None)).await;
        assert!(waited.is_err());
        let (tx, mut rx) = watch::channel(0u64);
        drop(tx);
        let gone =
            tokio::time::timeout(Duration::from_secs(3600), next_change(Some(&mut rx))).await;
        assert!(gone.is_err());
    }
}
