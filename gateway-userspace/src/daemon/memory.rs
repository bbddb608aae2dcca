//! Giving memory back to the system: after a burst of connections, and
//! once after start-up (loading the program parses the kernel's BTF).
use std::{sync::Arc, time::Duration};

use crate::connection::Counters;

/// How often the daemon looks for a burst of connections that has ended,
/// and how many connections make a burst.
const BURST_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const BURST_CONNECTIONS: usize = 256;

/// Gives the memory of a connection burst back to the system once it is
/// over. glibc keeps freed memory in per-thread arenas; without a trim, a
/// flood of 2,000 connections leaves the daemon 10 MB larger for good.
pub async fn return_memory_after_bursts(counters: Arc<Counters>) {
    let mut interval = tokio::time::interval(BURST_CHECK_INTERVAL);
    let mut bursts = BurstWatch::default();
    loop {
        interval.tick().await;
        let peak = counters.take_peak();
        let active = counters.active.load(std::sync::atomic::Ordering::Relaxed);
        if bursts.trim_now(peak, active) {
            release_freed_memory();
        }
    }
}

/// When to trim: at every check while a burst of connections is ending,
/// including its tail. A burst that ends over several checks (deferred
/// accept hands silent clients over about a second late, so their
/// deadlines fall later) was trimmed once while part of it was still
/// open, and what the rest freed stayed with the process.
#[derive(Debug, Default)]
struct BurstWatch {
    /// The highest connection count since connections last stopped ending.
    burst_peak: usize,
}

impl BurstWatch {
    /// Whether to trim, given the peak since the last check and the count now.
    fn trim_now(&mut self, peak: usize, active: usize) -> bool {
        let ending = peak > active;
        if !ending {
            self.burst_peak = active;
            return false;
        }
        self.burst_peak = self.burst_peak.max(peak);
        self.burst_peak >= active + BURST_CONNECTIONS
    }
}

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::BurstWatch;

    #[test]
    fn a_burst_is_trimmed_at_every_check_until_its_tail_has_ended() {
        let mut w = BurstWatch::default();
        // Steady traffic: no trim.
        assert!(!w.trim_now(50, 50));
        assert!(!w.trim_now(60, 55));
        // 2,000 connections rise over two checks and end over two more.
        assert!(!w.trim_now(1_000, 1_000));
        assert!(!w.trim_now(2_000, 2_000));
        assert!(w.trim_now(2_000, 100), "most of the burst ended");
        assert!(w.trim_now(100, 0), "its tail ended too: trim again");
        // Quiet again: no more trims, and a small churn is not a burst.
        assert!(!w.trim_now(0, 0));
        assert!(!w.trim_now(30, 10));
        // A burst that rises and ends between two checks.
        assert!(w.trim_now(2_000, 0));
    }
}
