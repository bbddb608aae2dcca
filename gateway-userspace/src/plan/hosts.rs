//! The virtual hosts of an HTTP listener, in Envoy's host precedence.
use std::collections::HashMap;

use super::Route;
use crate::model::{HostPattern, authority_host};

/// What the proxy does for requests to one virtual host.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    pub pattern: HostPattern,
    /// Answer every request with a 301 to `https://` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// In evaluation order, catch-alls last; empty answers 404.
    pub routes: Vec<Route>,
}

/// The virtual hosts of one plaintext HTTP listener, in match precedence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostTable {
    hosts: Vec<VirtualHost>,
}

impl HostTable {
    /// Builds a table. The same pattern from several servers or
    /// VirtualServices becomes one virtual host: it redirects if any of them
    /// asks to (Istio: sticky), its routes are appended in order, and then
    /// catch-all routes move to the end (`SortVHostRoutes`).
    pub fn new(hosts: impl IntoIterator<Item = VirtualHost>) -> Self {
        let mut merged: Vec<VirtualHost> = Vec::new();
        let mut index: HashMap<HostPattern, usize> = HashMap::new();
        // The route positions by source of a host with many routes, so a
        // route bound again is looked for among those with its source only
        // (a scan of every route was quadratic in the VirtualServices
        // naming one host); built when the host first outgrows a scan.
        let mut sources: HashMap<usize, HashMap<String, Vec<usize>>> = HashMap::new();
        for host in hosts {
            match index.get(&host.pattern) {
                Some(&at) => {
                    let existing = &mut merged[at];
                    existing.https_redirect |= host.https_redirect;
                    for route in host.routes {
                        if existing.routes.len() <= SCANNED_ROUTES {
                            if !existing.routes.contains(&route) {
                                existing.routes.push(route);
                            }
                            continue;
                        }
                        let by_source = sources
                            .entry(at)
                            .or_insert_with(|| positions_by_source(&existing.routes));
                        let same = by_source.entry(route.source.clone()).or_default();
                        if !same.iter().any(|&at| existing.routes[at] == route) {
                            same.push(existing.routes.len());
                            existing.routes.push(route);
                        }
                    }
                }
                None => {
                    index.insert(host.pattern.clone(), merged.len());
                    merged.push(host);
                }
            }
        }
        for host in &mut merged {
            // Stable: relative order within each group is kept.
            host.routes.sort_by_key(|route| route.catch_all);
        }
        merged.sort_by(|a, b| {
            a.pattern
                .rank()
                .cmp(&b.pattern.rank())
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        Self { hosts: merged }
    }

    /// The virtual host serving a Host header value (or :authority).
    pub fn lookup(&self, authority: &str) -> Option<&VirtualHost> {
        self.position(authority).and_then(|at| self.hosts.get(at))
    }

    /// The index in [`HostTable::hosts`] of the virtual host serving `authority`.
    pub fn position(&self, authority: &str) -> Option<usize> {
        let host = authority_host(authority);
        self.hosts.iter().position(|vh| vh.pattern.matches(&host))
    }

    /// The virtual hosts, in precedence order, for a reader to take over.
    pub fn into_hosts(self) -> Vec<VirtualHost> {
        self.hosts
    }

    /// Virtual hosts in precedence order, for compile to finish them.
    pub(crate) fn hosts_mut(&mut self) -> &mut [VirtualHost] {
        &mut self.hosts
    }

    /// Virtual hosts in precedence order.
    pub fn hosts(&self) -> &[VirtualHost] {
        &self.hosts
    }
}

/// Up to this many routes, a host's routes are scanned for one bound
/// again; past it, they are indexed by source.
const SCANNED_ROUTES: usize = 8;

/// The positions of `routes` by source.
fn positions_by_source(routes: &[Route]) -> HashMap<String, Vec<usize>> {
    let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
    for (position, route) in routes.iter().enumerate() {
        by_source
            .entry(route.source.clone())
            .or_default()
            .push(position);
    }
    by_source
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(hosts: &[(&str, bool)]) -> HostTable {
        HostTable::new(hosts.iter().map(|(h, r)| VirtualHost {
            pattern: HostPattern::from_server_host(h),
            https_redirect: *r,
            routes: Vec::new(),
        }))
    }

    fn matched(table: &HostTable, host: &str) -> Option<String> {
        table.lookup(host).map(|vh| vh.pattern.to_string())
    }

    #[test]
    fn exact_host_beats_wildcard() {
        let t = table(&[("*.example.com", false), ("a.example.com", true)]);
        assert_eq!(
            matched(&t, "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            matched(&t, "b.example.com").as_deref(),
            Some("*.example.com")
        );
    }

    #[test]
    fn longest_wildcard_suffix_wins() {
        let t = table(&[("*.com", false), ("*.example.com", false)]);
        assert_eq!(
            matched(&t, "a.example.com").as_deref(),
            Some("*.example.com")
        );
        assert_eq!(matched(&t, "a.other.com").as_deref(), Some("*.com"));
    }

    #[test]
    fn wildcard_never_matches_the_bare_domain() {
        let t = table(&[("*.example.com", false)]);
        assert_eq!(matched(&t, "example.com"), None);
        assert_eq!(matched(&t, ".example.com"), None, "`*` is never empty");
    }

    #[test]
    fn wildcard_matches_only_names_ending_in_its_suffix() {
        let t = table(&[("*.example.com", false)]);
        assert_eq!(matched(&t, "a-much-longer-name.example.org"), None);
    }

    #[test]
    fn star_matches_everything_last() {
        let t = table(&[("*", false), ("a.example.com", false)]);
        assert_eq!(matched(&t, "zzz").as_deref(), Some("*"));
        assert_eq!(
            matched(&t, "a.example.com").as_deref(),
            Some("a.example.com")
        );
    }

    #[test]
    fn matching_ignores_case_and_port() {
        let t = table(&[("DataEngine.com", true)]);
        assert_eq!(
            matched(&t, "dataengine.COM:31380").as_deref(),
            Some("dataengine.com")
        );
    }

    #[test]
    fn namespace_prefix_is_not_part_of_the_host() {
        let t = table(&[
            ("istio-system/a.example.com", false),
            ("./b.example.com", false),
        ]);
        assert!(t.lookup("a.example.com").is_some());
        assert!(t.lookup("b.example.com").is_some());
    }

    #[test]
    fn only_a_numeric_port_is_stripped() {
        let t = table(&[("a.example.com", false)]);
        assert_eq!(matched(&t, "a.example.com:http"), None);
    }

    #[test]
    fn redirect_is_sticky_across_servers_with_the_same_host() {
        let t = table(&[("a.example.com", false), ("a.example.com", true)]);
        assert_eq!(t.hosts().len(), 1);
        assert!(t.lookup("a.example.com").unwrap().https_redirect);
    }

    fn route(source: &str, status: u16) -> Route {
        Route {
            source: source.to_string(),
            matches: Vec::new(),
            action: crate::plan::RouteAction::DirectResponse { status, body: None },
            catch_all: false,
            request_headers: Default::default(),
            response_headers: Default::default(),
            fault: None,
            cors: None,
        }
    }

    #[test]
    fn a_route_bound_again_is_kept_once_however_many_routes_the_host_has() {
        // Below and past the number of routes scanned for a duplicate.
        for count in [3, SCANNED_ROUTES * 3] {
            let routes: Vec<_> = (0..count).map(|i| route(&format!("r{i}"), 200)).collect();
            // The same source with another action is another route.
            let other = route("r0", 404);
            let mut again = routes.clone();
            again.push(other.clone());
            let host = |routes| VirtualHost {
                pattern: HostPattern::from_server_host("a.example.com"),
                https_redirect: false,
                routes,
            };
            let table = HostTable::new([host(routes.clone()), host(again.clone()), host(again)]);
            let mut expected = routes;
            expected.push(other);
            assert_eq!(table.hosts()[0].routes, expected, "{count} routes");
        }
    }

    #[test]
    fn a_later_server_without_redirect_keeps_the_redirect() {
        let t = table(&[("a.example.com", true), ("a.example.com", false)]);
        assert_eq!(t.hosts().len(), 1);
        assert!(t.lookup("a.example.com").unwrap().https_redirect);
    }
}
