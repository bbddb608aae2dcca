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
//!
//! The admission cap is here; the deadlines are in `deadlines` and the
//! accept loop in `accept`.
mod accept;
mod deadlines;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

pub use self::{
    accept::Acceptor,
    deadlines::{Activity, Expiry, InFlight, with_deadlines},
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
    pub const ONLY: Self = Self {
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
        Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits the tests of every part of the module share.
    pub(super) const LIMITS: Limits = Limits {
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
}
