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

/// Returns once the cluster's resources changed and then no further change
/// came for [`DEBOUNCE_AFTER`] (or [`DEBOUNCE_MAX`] passed since the
/// first); never without `--kubernetes`, or once the watches are gone.
async fn settled(changes: Option<&mut watch::Receiver<u64>>) {
    let Some(changes) = changes else {
        return std::future::pending().await;
    };
    if changes.changed().await.is_err() {
        return std::future::pending().await;
    }
    let latest = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet =
            DEBOUNCE_AFTER.min(latest.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(quiet, changes.changed()).await {
            Ok(Ok(())) if tokio::time::Instant::now() < latest => {}
            _ => return,
        }
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
    loop {
        let why = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break }
            _ = sighup.recv() => Trigger::Asked,
            () = settled(resources.as_mut()) => Trigger::ResourcesChanged,
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

    use super::{DEBOUNCE_AFTER, DEBOUNCE_MAX, settled};

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_settles_once_quiet_for_the_debounce() {
        let (tx, mut rx) = watch::channel(0u64);
        let started = Instant::now();
        let burst = tokio::spawn(async move {
            for _ in 0..5 {
                tx.send_modify(|n| *n += 1);
                tokio::time::sleep(DEBOUNCE_AFTER / 2).await;
            }
            tx
        });
        settled(Some(&mut rx)).await;
        // The last change came at 2 debounces; quiet one more after it.
        assert_eq!(started.elapsed(), DEBOUNCE_AFTER * 3);
        drop(burst.await);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_that_never_stop_settle_at_the_most_after_the_first() {
        let (tx, mut rx) = watch::channel(0u64);
        let started = Instant::now();
        let _flapping = tokio::spawn(async move {
            loop {
                tx.send_modify(|n| *n += 1);
                tokio::time::sleep(DEBOUNCE_AFTER / 2).await;
            }
        });
        settled(Some(&mut rx)).await;
        let waited = started.elapsed();
        assert!(
            waited >= DEBOUNCE_MAX && waited < DEBOUNCE_MAX + DEBOUNCE_AFTER,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_watches_it_never_returns() {
        let waited = tokio::time::timeout(Duration::from_secs(3600), settled(None)).await;
        assert!(waited.is_err());
        let (tx, mut rx) = watch::channel(0u64);
        drop(tx);
        let gone = tokio::time::timeout(Duration::from_secs(3600), settled(Some(&mut rx))).await;
        assert!(gone.is_err());
    }
}
