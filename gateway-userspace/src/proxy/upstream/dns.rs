//! A cluster's endpoints: fixed addresses, or names resolved with the
//! system resolver and refreshed every [`DNS_REFRESH`].
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

use super::{UpstreamEndpoint, UpstreamError};
use crate::plan::{Locality, Placement};

pub use crate::plan::DNS_REFRESH;

/// A name to resolve, and what each of its addresses inherits.
#[derive(Debug)]
pub(in crate::proxy) struct DnsName {
    pub name: String,
    pub port: u16,
    pub weight: u32,
    pub locality: Locality,
    pub placement: Placement,
}

/// The last DNS answer and when it was taken.
pub(super) type DnsCache = Mutex<Option<(Instant, Vec<Arc<UpstreamEndpoint>>)>>;

pub(super) async fn resolved(
    names: &[DnsName],
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
    for named in names {
        match tokio::net::lookup_host((named.name.as_str(), named.port)).await {
            Ok(addrs) => {
                for addr in addrs {
                    let endpoint = reuse(cache, addr, named.weight);
                    endpoint.place.set(named.placement, &named.locality);
                    fresh.push(endpoint);
                }
            }
            Err(err) => last_error = Some((named.name.clone(), err.to_string())),
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

fn names_text(names: &[DnsName]) -> String {
    names
        .iter()
        .map(|n| n.name.as_str())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `localhost` at `port`: resolved from the hosts file, no network.
    fn localhost(port: u16) -> Vec<DnsName> {
        vec![DnsName {
            name: "localhost".to_string(),
            port,
            weight: 3,
            locality: Locality::default(),
            placement: Placement::default(),
        }]
    }

    async fn resolve(names: &[DnsName], cache: &DnsCache) -> Vec<Arc<UpstreamEndpoint>> {
        let answer = tokio::time::timeout(Duration::from_secs(5), resolved(names, cache));
        answer
            .await
            .expect("resolved in time")
            .expect("localhost resolves")
    }

    #[tokio::test]
    async fn a_name_resolves_to_endpoints_at_its_port_and_weight() {
        let endpoints = resolve(&localhost(8080), &Mutex::new(None)).await;
        assert!(!endpoints.is_empty());
        for ep in &endpoints {
            assert!(ep.addr.ip().is_loopback(), "{ep:?}");
            assert_eq!((ep.addr.port(), ep.weight), (8080, 3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_used_until_the_refresh_interval_has_passed() {
        let names = localhost(8080);
        let cache = Mutex::new(None);
        resolve(&names, &cache).await;
        // Mark the cached answer, so a new resolution shows.
        let marker = UpstreamEndpoint::new(SocketAddr::from(([192, 0, 2, 1], 80)), 1);
        if let Some((_, endpoints)) = cache.lock().expect("the cache").as_mut() {
            *endpoints = vec![Arc::clone(&marker)];
        }
        tokio::time::advance(DNS_REFRESH - Duration::from_nanos(1)).await;
        let cached = resolve(&names, &cache).await;
        assert!(
            cached.len() == 1 && Arc::ptr_eq(&cached[0], &marker),
            "{cached:?}"
        );
        tokio::time::advance(Duration::from_nanos(1)).await;
        let fresh = resolve(&names, &cache).await;
        assert!(
            fresh.iter().all(|ep| ep.addr.ip().is_loopback()),
            "{fresh:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolved_again_address_keeps_its_endpoint_and_pool() {
        let names = localhost(8080);
        let cache = Mutex::new(None);
        let first = resolve(&names, &cache).await;
        tokio::time::advance(DNS_REFRESH).await;
        let again = resolve(&names, &cache).await;
        assert_eq!(first.len(), again.len());
        for (a, b) in first.iter().zip(&again) {
            assert!(Arc::ptr_eq(a, b), "{a:?} {b:?}");
        }
    }
}
