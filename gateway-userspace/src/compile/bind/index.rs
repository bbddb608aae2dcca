//! The VirtualServices indexed per Gateway, so a server finds the ones it
//! binds by host without comparing every pair.
use std::{
    cell::OnceCell,
    collections::{HashMap, HashSet},
};

use super::Accepted;
use crate::model::{HostIndex, HostPattern, VirtualService};

/// A tls match's SNI host: (service, rule, match, SNI) positions.
pub(super) type SniAt = (usize, usize, usize, usize);

/// The VirtualServices that name one Gateway, with their hosts indexed so
/// that a server finds the ones it binds without comparing each of its
/// hosts with each of theirs (quadratic: issue 19). The indexes are built
/// on first use: a Gateway this instance does not serve needs none.
#[derive(Default)]
pub(super) struct Bound<'m> {
    /// In Istio's order.
    pub(super) services: Vec<&'m VirtualService>,
    /// `spec.hosts`: (service, host) positions.
    hosts: OnceCell<Scoped<'m, (usize, usize)>>,
    /// `spec.tls[].match[].sniHosts`, and the services with a tls match
    /// that names destination subnets: they are warned about whether or
    /// not an SNI host binds.
    sni_hosts: OnceCell<(Scoped<'m, SniAt>, Vec<usize>)>,
}

impl<'m> Bound<'m> {
    fn hosts(&self) -> &Scoped<'m, (usize, usize)> {
        self.hosts.get_or_init(|| {
            let mut hosts = Scoped::default();
            for (at, vs) in self.services.iter().enumerate() {
                for (host_index, host) in vs.hosts.iter().enumerate() {
                    hosts.push(&vs.namespace, host, (at, host_index));
                }
            }
            hosts
        })
    }

    fn sni_hosts(&self) -> &(Scoped<'m, SniAt>, Vec<usize>) {
        self.sni_hosts.get_or_init(|| {
            let mut sni_hosts = Scoped::default();
            let mut subnets = Vec::new();
            for (at, vs) in self.services.iter().enumerate() {
                for (rule_index, rule) in vs.tls.iter().enumerate() {
                    for (match_index, m) in rule.matches.iter().enumerate() {
                        for (sni_index, sni) in m.sni_hosts.iter().enumerate() {
                            let key = (at, rule_index, match_index, sni_index);
                            sni_hosts.push(&vs.namespace, sni, key);
                        }
                    }
                }
                let mut matches = vs.tls.iter().flat_map(|rule| &rule.matches);
                if matches.any(|m| !m.destination_subnets.is_empty()) {
                    subnets.push(at);
                }
            }
            (sni_hosts, subnets)
        })
    }

    /// The services that bind to `accepted`, in order, each with its
    /// virtual host names: every non-empty intersection of a server host
    /// it may bind to with one of its hosts (the more specific wins), in
    /// server host order, then its own host order, each name once.
    pub(super) fn bindings(
        &self,
        accepted: &Accepted<'_>,
    ) -> Vec<(&'m VirtualService, Vec<HostPattern>)> {
        let mut found = self.hosts().intersections(accepted);
        found.sort_by_key(|&((service, host), server_host, _)| (service, server_host, host));
        let mut out: Vec<(&'m VirtualService, Vec<HostPattern>)> = Vec::new();
        let mut last = None;
        let mut seen = HashSet::new();
        for ((service, _), _, name) in found {
            if last != Some(service) {
                last = Some(service);
                seen.clear();
                out.push((self.services[service], Vec::new()));
            }
            if seen.insert(name.clone()) {
                if let Some((_, names)) = out.last_mut() {
                    names.push(name);
                }
            }
        }
        out
    }

    /// The services whose tls routes `accepted` may take, in order, and the
    /// name each SNI host gets there: its intersection with the first
    /// server host, in order, it may bind to that it intersects.
    pub(super) fn sni_names(
        &self,
        accepted: &Accepted<'_>,
    ) -> (
        Vec<(usize, &'m VirtualService)>,
        HashMap<SniAt, HostPattern>,
    ) {
        let (sni_hosts, subnets) = self.sni_hosts();
        let mut found = sni_hosts.intersections(accepted);
        found.sort_by_key(|&(sni, server_host, _)| (sni, server_host));
        let mut names = HashMap::new();
        let mut services = subnets.clone();
        for (sni, _, name) in found {
            services.push(sni.0);
            names.entry(sni).or_insert(name);
        }
        services.sort_unstable();
        services.dedup();
        let services = services
            .into_iter()
            .map(|at| (at, self.services[at]))
            .collect();
        (services, names)
    }
}

/// VirtualService hosts, indexed whole and per namespace: a server host
/// `ns/name` binds only VirtualServices of `ns` (`.`: the Gateway's own),
/// `name` and `*/name` bind any.
struct Scoped<'m, T> {
    all: HostIndex<T>,
    /// The namespace of each entry of `all`.
    namespaces: Vec<&'m str>,
    /// `all` split by namespace, built for the first `ns/name` server host
    /// (most Gateways have none, and it would double the index).
    by_namespace: OnceCell<HashMap<&'m str, HostIndex<T>>>,
}

impl<T> Default for Scoped<'_, T> {
    fn default() -> Self {
        Scoped {
            all: HostIndex::default(),
            namespaces: Vec::new(),
            by_namespace: OnceCell::new(),
        }
    }
}

impl<'m, T: Copy> Scoped<'m, T> {
    fn push(&mut self, namespace: &'m str, host: &str, value: T) {
        self.all.push(HostPattern::from_server_host(host), value);
        self.namespaces.push(namespace);
    }

    fn in_namespace(&self, namespace: &str) -> Option<&HostIndex<T>> {
        let by_namespace = self.by_namespace.get_or_init(|| {
            let mut split: HashMap<&'m str, HostIndex<T>> = HashMap::new();
            for ((pattern, value), namespace) in self.all.entries().iter().zip(&self.namespaces) {
                split
                    .entry(namespace)
                    .or_default()
                    .push(pattern.clone(), *value);
            }
            split
        });
        by_namespace.get(namespace)
    }

    /// Every (entry, server host position, intersection) of a host of
    /// `accepted` with an entry it may bind to.
    fn intersections(&self, accepted: &Accepted<'_>) -> Vec<(T, usize, HostPattern)> {
        let mut out = Vec::new();
        for (position, host) in accepted.server.hosts.iter().enumerate() {
            let index = match host.split_once('/') {
                Some(("*", _)) | None => Some(&self.all),
                Some((".", _)) => self.in_namespace(&accepted.gateway.namespace),
                Some((namespace, _)) => self.in_namespace(namespace),
            };
            let Some(index) = index else {
                continue;
            };
            let pattern = HostPattern::from_server_host(host);
            for (entry, name) in index.intersecting(&pattern) {
                out.push((index.entries()[entry].1, position, name));
            }
        }
        out
    }
}
