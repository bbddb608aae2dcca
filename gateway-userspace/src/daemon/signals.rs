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
use crate::{dataplane::Dataplane, plan::Plan, proxy, readiness::Readiness, stats, watch::Watcher};

/// How often the configuration files are looked at (a change is applied
/// once they have not changed for `--config-settle`), and the daemon's
/// kernel state checked (`Dataplane::repair`).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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
    loop {
        let why = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break }
            _ = sighup.recv() => Trigger::Asked,
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
