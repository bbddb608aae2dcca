//! What `/ready` answers: whether this instance can serve right now, not
//! merely whether the admin thread is alive. Two things can stop it while
//! the process lives on: the proxy's workers no longer running tasks (a
//! worker stuck in a system call), and the kernel programs no longer
//! attached (a link detached from outside). Each has its own signal here;
//! `/ready` fails, with the reason, while either is down.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How often the proxy's runtime proves it runs tasks.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// A heartbeat older than this means the workers are stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Readiness {
    epoch: Instant,
    /// Milliseconds since `epoch` of the proxy runtime's last heartbeat.
    last_beat_ms: AtomicU64,
    attached: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            attached: AtomicBool::new(true),
        }
    }
}

impl Readiness {
    /// Records that the proxy's runtime ran a task at `now`.
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        self.last_beat_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whether the kernel programs are attached (XDP and steering).
    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Ordering::Relaxed);
    }

    /// `Ok` when the instance can serve at `now`, else why not.
    pub fn check(&self, now: Instant) -> Result<(), &'static str> {
        if !self.attached.load(Ordering::Relaxed) {
            return Err("the kernel programs are not attached");
        }
        let last = self.epoch + Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        if now.saturating_duration_since(last) > HEARTBEAT_STALE {
            return Err("the proxy's workers are not running");
        }
        Ok(())
    }
}

/// Beats on the proxy's runtime for as long as it runs tasks.
pub async fn heartbeat(readiness: std::sync::Arc<Readiness>) {
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        interval.tick().await;
        readiness.beat(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_while_the_heartbeat_is_fresh_and_the_programs_are_attached() {
        let readiness = Readiness::default();
        let start = Instant::now();
        readiness.beat(start);
        assert_eq!(readiness.check(start + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            readiness.check(start + HEARTBEAT_STALE + Duration::from_millis(10)),
            Err("the proxy's workers are not running")
        );
        readiness.beat(start + Duration::from_secs(5));
        assert_eq!(readiness.check(start + Duration::from_secs(6)), Ok(()));
        readiness.set_attached(false);
        assert_eq!(
            readiness.check(start + Duration::from_secs(6)),
            Err("the kernel programs are not attached")
        );
        readiness.set_attached(true);
        assert_eq!(readiness.check(start + Duration::from_secs(6)), Ok(()));
    }
}
