//! A retry budget's `budgetInterval`: the requests started within the last
//! interval, as Envoy counts them (`RetryBudgetImpl` in
//! source/common/upstream/resource_manager_impl.h). Envoy splits the
//! interval into ten slots: a timer at every slot's end moves the requests
//! started since the last one into a queue and, once the queue holds ten,
//! takes the oldest slot's requests off the total. A request so counts
//! from its start until nine or ten slots later. Here the slots are
//! reckoned from the window's creation when the window is read or written
//! (no timer task), which gives the same totals at the same instants; the
//! memory is ten counters whatever the traffic.
use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Slots an interval is split into (Envoy's `NumSlots`).
const SLOTS: usize = 10;

/// Requests started within the last interval, in slots.
#[derive(Debug)]
pub(super) struct RequestWindow {
    /// One slot: the interval's tenth, whole milliseconds as Envoy's timer
    /// takes it, and at least one (Envoy's timer would fire again at once).
    slot: Duration,
    started: Instant,
    state: Mutex<Slots>,
}

/// Envoy's `IntervalState`: the total, the current slot's count, and the
/// closed slots not yet taken off (oldest first), in a ring.
#[derive(Debug, Default)]
struct Slots {
    /// Slot ends already applied since `started`.
    ticks: u64,
    /// `req_in_interval`: what the budget is a share of.
    in_interval: u64,
    /// `req_to_expire`: started since the last slot end.
    current: u64,
    /// `expire_amounts`, as a ring of `len` entries from `head`.
    closed: [u64; SLOTS],
    head: usize,
    len: usize,
}

impl Slots {
    /// One slot end (Envoy's `expireRequests`): the current slot's count
    /// queued; with ten queued, the oldest taken off the total.
    fn tick(&mut self) {
        let at = (self.head + self.len) % SLOTS;
        self.closed[at] = std::mem::take(&mut self.current);
        self.len += 1;
        if self.len >= SLOTS {
            let expired = self.closed[self.head];
            self.head = (self.head + 1) % SLOTS;
            self.len -= 1;
            self.in_interval = self.in_interval.saturating_sub(expired);
        }
    }
}

impl RequestWindow {
    /// A window of `interval` (non-zero) starting at `now`.
    pub(super) fn new(interval: Duration, now: Instant) -> Self {
        let millis = interval.as_millis() / SLOTS as u128;
        let slot = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX).max(1));
        Self {
            slot,
            started: now,
            state: Mutex::new(Slots::default()),
        }
    }

    /// Counts a request started at `now` (Envoy's `writeRequest`, called
    /// as a request becomes active).
    pub(super) fn record(&self, now: Instant) {
        if let Ok(mut state) = self.state.lock() {
            self.advance(&mut state, now);
            state.in_interval += 1;
            state.current += 1;
        }
    }

    /// The requests started within the interval, as of `now`.
    pub(super) fn requests(&self, now: Instant) -> u64 {
        match self.state.lock() {
            Ok(mut state) => {
                self.advance(&mut state, now);
                state.in_interval
            }
            Err(_) => 0,
        }
    }

    /// Applies the slot ends passed by `now`. Past ten, a slot end only
    /// queues and takes off zeros: ten are applied, the rest skipped.
    fn advance(&self, state: &mut Slots, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started).as_nanos();
        let due = u64::try_from(elapsed / self.slot.as_nanos()).unwrap_or(u64::MAX);
        let pending = due.saturating_sub(state.ticks);
        for _ in 0..pending.min(SLOTS as u64) {
            state.tick();
        }
        state.ticks = state.ticks.max(due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn a_request_counts_until_nine_or_ten_slots_after_its_slot() {
        let start = Instant::now();
        // 1s: ten slots of 100ms.
        let window = RequestWindow::new(Duration::from_secs(1), start);
        window.record(at(start, 50));
        assert_eq!(window.requests(at(start, 50)), 1);
        // Its slot ends at 100ms; queued, still counted until the tenth end.
        assert_eq!(window.requests(at(start, 999)), 1);
        assert_eq!(window.requests(at(start, 1_000)), 0);
        // One started just before a slot end lasts nine slots.
        window.record(at(start, 1_099));
        assert_eq!(window.requests(at(start, 1_999)), 1);
        assert_eq!(window.requests(at(start, 2_000)), 0);
    }

    #[test]
    fn requests_of_several_slots_leave_slot_by_slot() {
        let start = Instant::now();
        let window = RequestWindow::new(Duration::from_secs(1), start);
        for _ in 0..3 {
            window.record(at(start, 10));
        }
        for _ in 0..2 {
            window.record(at(start, 310));
        }
        assert_eq!(window.requests(at(start, 400)), 5);
        // The first slot's three leave at its tenth end (1.0s), the
        // fourth slot's two at 1.3s.
        assert_eq!(window.requests(at(start, 1_000)), 2);
        assert_eq!(window.requests(at(start, 1_299)), 2);
        assert_eq!(window.requests(at(start, 1_300)), 0);
    }

    #[test]
    fn a_long_quiet_spell_empties_the_window() {
        let start = Instant::now();
        let window = RequestWindow::new(Duration::from_secs(1), start);
        window.record(at(start, 0));
        // A year later (ten slot ends applied, not 3e8): empty.
        let later = start + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(window.requests(later), 0);
        window.record(later);
        assert_eq!(window.requests(later), 1);
        assert_eq!(window.requests(later + Duration::from_secs(1)), 0);
    }

    #[test]
    fn an_interval_under_ten_milliseconds_takes_one_millisecond_slots() {
        let start = Instant::now();
        let window = RequestWindow::new(Duration::from_millis(5), start);
        window.record(start);
        assert_eq!(window.requests(at(start, 9)), 1);
        assert_eq!(window.requests(at(start, 10)), 0);
    }
}
