//! A cluster's endpoints: fixed addresses, or names resolved with the
//! system resolver and refreshed every [`DNS_REFRESH`].
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{UpstreamEndpoint, UpstreamError};

/// How long a resolved DNS answer is used. The system resolver gives no
/// TTL, so this is Envoy's `dns_refresh_rate` default.
pub const DNS_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) enum Endpoints {
    Static(Vec<Arc<UpstreamEndpoint>>),
    /// Names resolved with the system resolver, each at its port.
    Dns {
        names: Vec<(String, u16, u32)>,
        cache: DnsCache,
    },
}

/// The last DNS answer and when it was taken.
pub(super) type DnsCache = Mutex<Option<(Instant, Vec<Arc<UpstreamEndpoint>>)>>;

pub(super) async fn resolved(
    names: &[(String, u16, u32)],
    cache: &DnsCache,
) -> Result<Vec<Arc<UpstreamEndpoint>>, UpstreamError> {
    if let Ok(guard) = cache.lock() {
        if let Some((at, endpoints)) = guard.as_ref() {
            if at.elapsed() < DNS_REFRESH {
                return Ok(endpoints.clone());
            }
        }
    }
    let mut fresh: Vec<Arc<UpstreamEndpoint>> = Vec::new();
    let mut last_error = None;
    for (name, port, weight) in names {
        match tokio::net::lookup_host((name.as_str(), *port)).await {
            Ok(addrs) => {
                for addr in addrs {
                    fresh.push(reuse(cache, addr, *weight));
                }
            }
            Err(err) => last_error = Some((name.clone(), err.to_string())),
        }
    }
    if fresh.is_empty() {
        // Keep serving the last answer if the resolver is down for a moment.
        if let Ok(guard) = cache.lock() {
            if let Some((_, endpoints)) = guard.as_ref() {
                return Ok(endpoints.clone());
            }
        }
        let (host, reason) = last_error.unwrap_or_else(|| (names_text(names), "no address".into()));
        return Err(UpstreamError::Resolve { host, reason });
    }
    if let Ok(mut guard) = cache.lock() {
        *guard = Some((Instant::now(), fresh.clone()));
    }
    Ok(fresh)
}

fn names_text(names: &[(String, u16, u32)]) -> String {
    names
        .iter()
        .map(|(n, _, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The endpoint for `addr` from the last answer (keeping its pool), or a new one.
fn reuse(cache: &DnsCache, addr: SocketAddr, weight: u32) -> Arc<UpstreamEndpoint> {
    let known = cache.lock().ok().and_then(|guard| {
        guard
            .as_ref()
            .and_then(|(_, eps)| eps.iter().find(|ep| ep.addr == addr).cloned())
    });
    known.unwrap_or_else(|| UpstreamEndpoint::new(addr, weight))
}
