//! What every accepted connection is held to, proxy and admin alike: a cap
//! on how many are served at once, three deadlines, and accept loops that
//! back off when the process runs out of file descriptors instead of
//! spinning. Each deadline means one thing (Envoy's names in brackets):
//!
//! - request head (`request_headers_timeout`): from accept to the first
//!   complete request head whatever the protocol turns out to be, and on a
//!   kept-alive connection from the first byte of a later head to its end;
//!   an HTTP/1 client that sent part of a head gets 408.
//! - connection idle (`idle_timeout`): no request in progress (the last
//!   response body has ended) and nothing of a next one received; the
//!   connection is closed gracefully, counted, never with an answer.
//! - stream idle (`stream_idle_timeout`): a request in progress but no
//!   bytes moving either way: neither request body read nor response
//!   frame sent. Per connection, so on HTTP/2 it is every stream of the
//!   connection that must be quiet (Envoy times each stream alone).
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

// tokio's clock, so tests can pause time.
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};

/// Limits of one kind of listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the first complete request head.
    pub request_head_timeout: Duration,
    /// With no request in progress, between the end of one response and the
    /// first byte of the next request.
    pub idle_timeout: Duration,
    /// With a request in progress, no byte moving either way.
    pub stream_idle_timeout: Duration,
    /// Connections served at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Connections served at once from one source (an IPv4 address, an
    /// IPv6 /64): one client cannot fill the cap for everyone.
    pub max_per_source: usize,
}

/// The default per-source cap: an eighth of the connection cap, at least 8.
pub fn default_max_per_source(max_connections: usize) -> usize {
    (max_connections / 8).max(8).min(max_connections)
}

/// Descriptors kept back from the connection cap for listeners, maps,
/// log files, upstream connections being opened and the admin endpoint.
const FD_RESERVE: u64 = 128;

/// The default connection cap for an open-file limit: half of what is left
/// after the reserve, since a proxied connection needs two descriptors
/// (client and upstream).
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let usable = open_file_limit.saturating_sub(FD_RESERVE) / 2;
    usize::try_from(usable).unwrap_or(usize::MAX).max(16)
}

/// Counters of one kind of listener, for `/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every connection `accept` returned, admitted or not.
    pub accepted: AtomicU64,
    /// Being served now.
    pub active: AtomicUsize,
    /// Most connections active at once since the last [`Counters::take_peak`].
    pub peak: AtomicUsize,
    /// Closed at accept because `max_connections` were being served.
    pub rejected: AtomicU64,
    /// Closed at accept because their source had `max_per_source` open.
    pub rejected_per_source: AtomicU64,
    /// Closed at accept because their listener had used its reserve and the
    /// shared part of the cap was taken.
    pub rejected_listener_share: AtomicU64,
    /// Closed because no complete request head came in time.
    pub head_timeouts: AtomicU64,
    /// Closed after `idle_timeout` without a request.
    pub idle_timeouts: AtomicU64,
    /// Closed after `stream_idle_timeout` with a request in progress and no bytes moving.
    pub stream_idle_timeouts: AtomicU64,
    /// Failed `accept` calls (EMFILE and friends).
    pub accept_errors: AtomicU64,
}

impl Counters {
    /// The peak since the last call, restarting the count from now.
    pub fn take_peak(&self) -> usize {
        let active = self.active.load(Ordering::Relaxed);
        self.peak.swap(active, Ordering::Relaxed).max(active)
    }
}

/// Admission of connections against the cap, shared by every accept loop
/// of one kind.
///
/// Fair to listeners by reserve: of the cap, each of the `L` listeners
/// has `max_connections / (2 L)` slots no other listener can take, and the
/// rest is shared, first come; so a flood on one listener leaves every
/// other its reserve. And fair to clients: one source holds at most
/// `max_per_source` connections at once.
#[derive(Debug)]
pub struct Gate {
    pub limits: Limits,
    pub counters: Arc<Counters>,
    shares: Arc<Mutex<Shares>>,
}

/// Who holds the connections being served.
#[derive(Debug, Default)]
struct Shares {
    by_source: HashMap<IpAddr, usize>,
    by_listener: HashMap<u32, usize>,
    /// Connections beyond their listener's reserve.
    pooled: usize,
}

/// Where a connection was made to: its listener and how many listeners
/// share the cap now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub listener: u32,
    pub listeners: usize,
}

impl Place {
    /// For a gate with one kind of connection (the admin endpoint).
    pub const ONLY: Place = Place {
        listener: 0,
        listeners: 1,
    };
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Cap,
    Source,
    ListenerShare,
}

/// A connection being served; counted until dropped.
#[derive(Debug)]
pub struct Admitted {
    counters: Arc<Counters>,
    shares: Arc<Mutex<Shares>>,
    source: IpAddr,
    listener: u32,
    pooled: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        let Ok(mut shares) = self.shares.lock() else {
            return;
        };
        release(&mut shares.by_source, self.source);
        release(&mut shares.by_listener, self.listener);
        if self.pooled {
            shares.pooled = shares.pooled.saturating_sub(1);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut entry) = counts.entry(key) {
        *entry.get_mut() -= 1;
        if *entry.get() == 0 {
            entry.remove();
        }
    }
}

/// The key a client's connections are counted under: its IPv4 address,
/// or its IPv6 /64 (one host is given a whole /64 to pick addresses from).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl Gate {
    /// A gate with fresh counters.
    pub fn new(limits: Limits) -> Self {
        Gate {
            limits,
            counters: Arc::default(),
            shares: Arc::default(),
        }
    }

    /// Admits a connection from `source` to `place` if the cap, the
    /// source's cap and the listener's share allow it, and says why not otherwise.
    pub fn admit(&self, source: IpAddr, place: Place) -> Result<Admitted, Refused> {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let refused = |counter: &AtomicU64, why| {
            counter.fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        let max = self.limits.max_connections;
        let source = source_key(source);
        let Ok(mut shares) = self.shares.lock() else {
            return refused(&self.counters.rejected, Refused::Cap);
        };
        let active = self.counters.active.load(Ordering::Relaxed);
        if active >= max {
            return refused(&self.counters.rejected, Refused::Cap);
        }
        let from_source = shares.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_per_source {
            return refused(&self.counters.rejected_per_source, Refused::Source);
        }
        let listeners = place.listeners.max(1);
        let reserve = max / (2 * listeners);
        let pool = max.saturating_sub(reserve * listeners);
        let on_listener = shares
            .by_listener
            .get(&place.listener)
            .copied()
            .unwrap_or(0);
        let pooled = on_listener >= reserve;
        if pooled && shares.pooled >= pool {
            return refused(
                &self.counters.rejected_listener_share,
                Refused::ListenerShare,
            );
        }
        *shares.by_source.entry(source).or_default() += 1;
        *shares.by_listener.entry(place.listener).or_default() += 1;
        shares.pooled += usize::from(pooled);
        drop(shares);
        let previous = self.counters.active.fetch_add(1, Ordering::Relaxed);
        self.counters
            .peak
            .fetch_max(previous + 1, Ordering::Relaxed);
        Ok(Admitted {
            counters: Arc::clone(&self.counters),
            shares: Arc::clone(&self.shares),
            source,
            listener: place.listener,
            pooled,
        })
    }
}

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
        Activity {
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

/// How long an accept loop sleeps after the first resource error, and at most.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per interval per listener for failed accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `accept` that survives running out of descriptors: on any error but the
/// ones that concern a single pending connection (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM and anything unexpected) it sleeps, 10 ms doubling to 1 s, so the
/// loop never spins, and it logs failures at most once per 10 seconds with a
/// count.
#[derive(Debug)]
pub struct Acceptor {
    what: String,
    backoff: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Acceptor {
    /// `what` names the listener in log lines (`proxy 0.0.0.0:80`).
    pub fn new(what: String) -> Self {
        Acceptor {
            what,
            backoff: BACKOFF_FIRST,
            last_log: None,
            suppressed: 0,
        }
    }

    /// The next connection; errors are counted, logged (rate-limited) and
    /// retried, never returned.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        counters: &Counters,
    ) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.backoff = BACKOFF_FIRST;
                    return accepted;
                }
                Err(err) => {
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let transient = concerns_one_connection(&err);
                    self.log(&err, !transient);
                    if !transient {
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// The next connection `gate` admits, with its peer address; `place`
    /// says which listener a connection was made to. Those refused are
    /// reset (no TIME_WAIT, and the client learns at once rather than
    /// waiting for a timeout) and skipped.
    pub async fn admitted(
        &mut self,
        listener: &TcpListener,
        gate: &Gate,
        place: impl Fn(&TcpStream) -> Place,
    ) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (stream, peer) = self.accept(listener, &gate.counters).await;
            match gate.admit(peer.ip(), place(&stream)) {
                Ok(admitted) => return (stream, peer, admitted),
                Err(_) => {
                    let _ = stream.set_zero_linger();
                }
            }
        }
    }

    fn log(&mut self, err: &io::Error, backing_off: bool) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|last| now.duration_since(last) < ACCEPT_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        let action = if backing_off {
            "; backing off (if the process is out of descriptors: raise the open-file limit or lower --max-connections)"
        } else {
            ""
        };
        log::warn!("{}: accept failed: {err}{more}{action}", self.what);
        self.last_log = Some(now);
        self.suppressed = 0;
    }
}

/// Errors accept(2) reports for one pending connection that failed (the
/// man page says to retry them as EAGAIN); the next accept may well succeed.
fn concerns_one_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        stream_idle_timeout: Duration::from_secs(300),
        max_connections: 2,
        max_per_source: 2,
    };

    #[test]
    fn default_cap_leaves_a_reserve_and_two_descriptors_per_connection() {
        assert_eq!(default_max_connections(1024), 448);
        assert_eq!(default_max_connections(1_048_576), 524_224);
        assert_eq!(default_max_connections(100), 16);
    }

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

    #[test]
    fn only_errors_about_one_connection_are_retried_at_once() {
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::EINTR] {
            assert!(concerns_one_connection(&io::Error::from_raw_os_error(
                errno
            )));
        }
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EINVAL,
        ] {
            assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
                errno
            )));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_are_logged_once_per_interval() {
        let mut acceptor = Acceptor::new("test".into());
        let err = io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..1_000 {
            acceptor.log(&err, true);
        }
        assert_eq!(acceptor.suppressed, 999);
        tokio::time::advance(ACCEPT_LOG_INTERVAL).await;
        acceptor.log(&err, true);
        assert_eq!(acceptor.suppressed, 0);
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn connections_past_the_cap_are_refused_and_counted() {
        let gate = Gate::new(LIMITS);
        let mut kept = Vec::new();
        for i in 0..3u8 {
            let client = IpAddr::from([192, 0, 2, i]);
            if let Ok(admitted) = gate.admit(client, Place::ONLY) {
                kept.push(admitted);
            }
        }
        assert_eq!(kept.len(), 2);
        assert_eq!(gate.counters.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(gate.counters.active.load(Ordering::Relaxed), 2);
        kept.pop();
        assert_eq!(gate.counters.active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn one_source_holds_at_most_its_share_and_gets_it_back_as_connections_end() {
        let gate = Gate::new(Limits {
            max_connections: 100,
            max_per_source: 12,
            ..LIMITS
        });
        let held: Vec<_> = (0..100)
            .filter_map(|_| gate.admit(CLIENT, Place::ONLY).ok())
            .collect();
        assert_eq!(held.len(), 12);
        assert_eq!(
            gate.counters.rejected_per_source.load(Ordering::Relaxed),
            88
        );
        assert_eq!(gate.admit(CLIENT, Place::ONLY).err(), Some(Refused::Source));
        // Another client is served; an IPv6 client's whole /64 is one source.
        assert!(
            gate.admit(IpAddr::from([192, 0, 2, 3]), Place::ONLY)
                .is_ok()
        );
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last]);
        let from_64: Vec<_> = (1..=20)
            .filter_map(|i| gate.admit(v6(i), Place::ONLY).ok())
            .collect();
        assert_eq!(from_64.len(), 12);
        assert_eq!(source_key(v6(7)), v6(0));
        // An IPv4-mapped address is its IPv4 source.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 2).to_ipv6_mapped());
        assert_eq!(gate.admit(mapped, Place::ONLY).err(), Some(Refused::Source));
        drop(held);
        assert!(gate.admit(CLIENT, Place::ONLY).is_ok());
    }

    #[test]
    fn a_flooded_listener_leaves_every_other_its_reserve() {
        // Cap 100 over 4 listeners: 12 reserved for each, 52 shared.
        let gate = Gate::new(Limits {
            max_connections: 100,
            max_per_source: 100,
            ..LIMITS
        });
        let on = |listener| Place {
            listener,
            listeners: 4,
        };
        let client = |i: usize| IpAddr::from([198, 51, 100, u8::try_from(i % 250).unwrap()]);
        let flood: Vec<_> = (0..100)
            .filter_map(|i| gate.admit(client(i), on(0)).ok())
            .collect();
        assert_eq!(flood.len(), 12 + 52, "its reserve and the shared part");
        assert_eq!(
            gate.counters
                .rejected_listener_share
                .load(Ordering::Relaxed),
            36
        );
        let mut others = Vec::new();
        for listener in 1..4 {
            let reserve: Vec<_> = (0..12)
                .filter_map(|i| gate.admit(client(i), on(listener)).ok())
                .collect();
            assert_eq!(reserve.len(), 12, "listener {listener} has its reserve");
            // Beyond it, the shared part is taken (and, for the last
            // listener's, the whole cap is in use).
            assert!(gate.admit(client(99), on(listener)).is_err());
            others.extend(reserve);
        }
        assert_eq!(
            gate.counters
                .rejected_listener_share
                .load(Ordering::Relaxed),
            36 + 2
        );
        assert_eq!(gate.counters.rejected.load(Ordering::Relaxed), 1);
        // The flood's connections end: the shared part is free again.
        drop(flood);
        assert!(gate.admit(client(1), on(2)).is_ok());
    }

    #[tokio::test]
    async fn refused_connections_are_reset_and_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate::new(Limits {
            max_connections: 1,
            ..LIMITS
        });
        let _first = TcpStream::connect(addr).await.unwrap();
        let mut acceptor = Acceptor::new("test".into());
        let (_stream, _, _admitted) = acceptor.admitted(&listener, &gate, |_| Place::ONLY).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accept = acceptor.admitted(&listener, &gate, |_| Place::ONLY);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), accept)
                .await
                .is_err(),
            "the second connection is not handed out"
        );
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut second, &mut byte).await;
        assert!(read.is_err(), "reset, not closed: {read:?}");
        assert_eq!(gate.counters.rejected.load(Ordering::Relaxed), 1);
    }
}
