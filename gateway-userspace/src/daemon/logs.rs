//! The daemon's own log: lines dropped for a stalled reader reported,
//! and the kernel programs' diagnostic events forwarded (`--ebpf-log`).
use std::time::Duration;

use crate::{dataplane::EventLogger, log_pipe};

/// How often lines dropped for a stalled log reader are reported.
const LOG_DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Reports, once per interval, the log lines dropped because nobody read
/// stdout or stderr fast enough (the report itself goes to stderr, so a
/// stalled stderr shows it once its reader is back).
pub(super) async fn report_dropped_log_lines() {
    let mut interval = tokio::time::interval(LOG_DROP_REPORT_INTERVAL);
    let mut report = log_pipe::DropReport::default();
    loop {
        interval.tick().await;
        let [stdout, stderr] = report.since_last(log_pipe::dropped_totals());
        if stdout > 0 {
            log::error!(
                "access log: {stdout} line(s) dropped in the last {}s: stdout's reader is not keeping up (log.stdout.dropped_lines)",
                LOG_DROP_REPORT_INTERVAL.as_secs()
            );
        }
        if stderr > 0 {
            log::error!(
                "daemon log: {stderr} line(s) dropped in the last {}s: stderr's reader is not keeping up (log.stderr.dropped_lines)",
                LOG_DROP_REPORT_INTERVAL.as_secs()
            );
        }
    }
}

/// Forwards the kernel programs' diagnostic events to the log as they come.
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
pub(super) async fn forward_kernel_events(logger: EventLogger) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: the logger owns its ring buffer's descriptor, which stays
    // open and the same until the logger (owned here) is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let Ok(mut events) = registered else {
        log::warn!("--ebpf-log: cannot poll the kernel programs' event buffer");
        return;
    };
    loop {
        let Ok(mut ready) = events.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
