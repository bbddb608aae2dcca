//! The three deadlines of a connection (request head, connection idle,
//! stream idle; see the module above), judged from when requests start
//! and end so the protocol need not be known.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

// tokio's clock, so tests can pause time.
use tokio::time::Instant;

use super::{Gate, Limits};

/// When requests start and end on one connection, so the deadlines can be
/// judged without knowing the protocol.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// Requests seen so far.
    requests: AtomicU64,
    /// Milliseconds after `accepted` of the last request start or end, or
    /// of the last byte moved while a request is in progress.
    last_change_ms: AtomicU64,
    /// Milliseconds after `accepted` of the first byte of a request head
    /// that has not yet completed, after the first request ([`NO_HEAD`]: none).
    head_began_ms: AtomicU64,
}

/// `head_began_ms` when no later request head has begun.
const NO_HEAD: u64 = u64::MAX;

/// A request in progress; ends when dropped.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection was closed by its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within `request_head_timeout` of accept.
    Head,
    /// No request for `idle_timeout` after the last one ended.
    Idle,
    /// A request in progress, but no byte moved for `stream_idle_timeout`.
    StreamIdle,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Starts the clock at accept.
    pub fn new() -> Self {
        Self {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(0),
            head_began_ms: AtomicU64::new(NO_HEAD),
        }
    }

    /// Called when a complete request head has arrived; the request is in
    /// progress until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_began_ms.store(NO_HEAD, Ordering::Relaxed);
        self.touch();
        InFlight {
            activity: Arc::clone(self),
        }
    }

    /// Bytes moved for a request in progress (a response frame sent): the
    /// stream is not idle.
    pub fn moved(&self) {
        self.touch();
    }

    /// Bytes arrived from the client: a request in progress is not idle,
    /// and between requests a next request head has begun.
    pub fn received(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            self.touch();
        } else if self.requests.load(Ordering::Relaxed) > 0
            && self.head_began_ms.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_began_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.last_change_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn at(&self, ms: &AtomicU64) -> Instant {
        self.accepted + Duration::from_millis(ms.load(Ordering::Relaxed))
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &Limits) -> (Instant, Expiry) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let last = self.at(&self.last_change_ms);
            return (last + limits.stream_idle_timeout, Expiry::StreamIdle);
        }
        if self.requests.load(Ordering::Relaxed) == 0 {
            return (self.accepted + limits.request_head_timeout, Expiry::Head);
        }
        if self.head_began_ms.load(Ordering::Relaxed) != NO_HEAD {
            let began = self.at(&self.head_began_ms);
            return (began + limits.request_head_timeout, Expiry::Head);
        }
        let last = self.at(&self.last_change_ms);
        (last + limits.idle_timeout, Expiry::Idle)
    }
}

/// Drives `connection` until it ends or `activity` passes a deadline of
/// the gate's limits, whichever is first, counting expiries on the gate. A
/// timed-out connection is left to the caller to close (drop, or shut down
/// gracefully first).
pub async fn with_deadlines<F: Future>(
    mut connection: Pin<&mut F>,
    activity: &Activity,
    gate: &Gate,
) -> Result<F::Output, Expiry> {
    let (limits, counters) = (&gate.limits, &gate.counters);
    loop {
        // Activity moves the deadline later; the sleep ends at the one in
        // force when it began, and the deadline is looked at again then.
        let (wake_at, _) = activity.deadline(limits);
        tokio::select! {
            output = connection.as_mut() => return Ok(output),
            () = tokio::time::sleep_until(wake_at) => {
                let (due, expiry) = activity.deadline(limits);
                if due <= Instant::now() {
                    let counter = match expiry {
                        Expiry::Head => &counters.head_timeouts,
                        Expiry::Idle => &counters.idle_timeouts,
                        Expiry::StreamIdle => &counters.stream_idle_timeouts,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return Err(expiry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::tests::LIMITS;

    #[test]
    fn the_head_deadline_counts_from_accept_until_the_first_request() {
        let activity = Arc::new(Activity::new());
        let (due, expiry) = activity.deadline(&LIMITS);
        assert_eq!(expiry, Expiry::Head);
        assert_eq!(due, activity.accepted + LIMITS.request_head_timeout);
        // Bytes of the first head change nothing: it is still due from accept.
        activity.received();
        assert_eq!(activity.deadline(&LIMITS), (due, Expiry::Head));
        let request = activity.begin();
        assert_eq!(activity.deadline(&LIMITS).1, Expiry::StreamIdle);
        drop(request);
        let (due, expiry) = activity.deadline(&LIMITS);
        assert_eq!(expiry, Expiry::Idle);
        assert!(due >= activity.accepted + LIMITS.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_kept_alive_connection_is_idle_and_a_begun_head_is_due_from_its_first_byte() {
        let activity = Arc::new(Activity::new());
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(30)).await;
        // Quiet after a response: the idle timeout, not the head deadline.
        let (due, expiry) = activity.deadline(&LIMITS);
        assert_eq!(expiry, Expiry::Idle);
        assert_eq!(due, activity.accepted + LIMITS.idle_timeout);
        // The next head begins: due a head timeout after its first byte.
        activity.received();
        let began = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.received();
        assert_eq!(
            activity.deadline(&LIMITS),
            (began + LIMITS.request_head_timeout, Expiry::Head)
        );
        // It completes: a request again, then idle from its end.
        drop(activity.begin());
        assert_eq!(activity.deadline(&LIMITS).1, Expiry::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_from_the_client_keep_a_request_in_progress_from_going_idle() {
        let activity = Arc::new(Activity::new());
        let _request = activity.begin();
        tokio::time::advance(Duration::from_secs(7)).await;
        // A request body arriving: the stream idle timeout runs from now.
        activity.received();
        assert_eq!(
            activity.deadline(&LIMITS),
            (
                Instant::now() + LIMITS.stream_idle_timeout,
                Expiry::StreamIdle
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_kept_alive_connection_closes_at_the_idle_timeout() {
        let activity = Arc::new(Activity::new());
        let gate = Gate::new(LIMITS);
        drop(activity.begin());
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let started = Instant::now();
        let result = with_deadlines(never.as_mut(), &activity, &gate).await;
        assert_eq!(result, Err(Expiry::Idle));
        assert_eq!(started.elapsed(), LIMITS.idle_timeout);
        assert_eq!(gate.counters.idle_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(gate.counters.head_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_moving_bytes_lives_on_and_a_stalled_one_ends_at_the_stream_idle_timeout() {
        let activity = Arc::new(Activity::new());
        let gate = Gate::new(LIMITS);
        // A response streaming a frame a second for twice the stream idle timeout.
        let streaming = async {
            let _request = activity.begin();
            for _ in 0..LIMITS.stream_idle_timeout.as_secs() * 2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                activity.moved();
            }
        };
        tokio::pin!(streaming);
        assert_eq!(
            with_deadlines(streaming.as_mut(), &activity, &gate).await,
            Ok(())
        );
        // Then one whose bytes stop.
        let stalled = async {
            let _request = activity.begin();
            std::future::pending::<()>().await;
        };
        tokio::pin!(stalled);
        let started = Instant::now();
        let result = with_deadlines(stalled.as_mut(), &activity, &gate).await;
        assert_eq!(result, Err(Expiry::StreamIdle));
        assert_eq!(started.elapsed(), LIMITS.stream_idle_timeout);
        assert_eq!(
            gate.counters.stream_idle_timeouts.load(Ordering::Relaxed),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_at_the_head_deadline() {
        let activity = Activity::new();
        let gate = Gate::new(LIMITS);
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let started = Instant::now();
        let result = with_deadlines(never.as_mut(), &activity, &gate).await;
        assert_eq!(result, Err(Expiry::Head));
        assert_eq!(started.elapsed(), LIMITS.request_head_timeout);
        assert_eq!(gate.counters.head_timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_request_is_never_cut_by_the_idle_timeout() {
        let activity = Arc::new(Activity::new());
        let gate = Gate::new(LIMITS);
        let work = async {
            let _request = activity.begin();
            tokio::time::sleep(LIMITS.idle_timeout * 3).await;
        };
        tokio::pin!(work);
        let result = with_deadlines(work.as_mut(), &activity, &gate).await;
        assert_eq!(result, Ok(()));
    }
}
