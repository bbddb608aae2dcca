//! Binding VirtualServices to the servers that survived the merge, and
//! building what each listener does with a request or connection
//! (semantics doc §5, §9).
use std::{
    cell::OnceCell,
    collections::{BTreeSet, HashMap, HashSet},
};

use super::{auto_passthrough, clusters::Clusters};
use crate::{
    model::{
        Destination, Gateway, HostIndex, HostPattern, HttpAction, HttpMatch, Instance, Model,
        Protocol, Server, Subnet, TcpMatch, TlsMode, VirtualService,
    },
    plan::{
        Backend, Cluster, ClusterId, Forward, HostTable, Route, RouteAction, SniRoute, TlsServer,
        TlsServerKind, VirtualHost,
    },
};

/// A server that survived the merge.
pub struct Accepted<'m> {
    pub gateway: &'m Gateway,
    pub index: usize,
    pub server: &'m Server,
}

impl Accepted<'_> {
    /// `namespace/name` of the Gateway, as VirtualServices reference it.
    pub fn gateway_ref(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
    }
}

/// Where a forward's unresolvable share fails: an HTTP route can answer
/// 503, a TCP or TLS forward can only close the connection.
#[derive(Clone, Copy)]
enum Layer {
    Http,
    Connection,
}

/// Binds VirtualServices and resolves their destinations.
pub struct Binder<'m> {
    /// Visible VirtualServices by the gateway (`namespace/name`) they name.
    by_gateway: HashMap<&'m str, Bound<'m>>,
    model: &'m Model,
    /// The gateway workload's namespace, which resources must be exported to.
    namespace: &'m str,
    clusters: Clusters<'m>,
    warnings: Vec<String>,
}

impl<'m> Binder<'m> {
    pub fn new(model: &'m Model, instance: &'m Instance) -> Self {
        let mut visible: Vec<&VirtualService> = model
            .virtual_services
            .iter()
            .filter(|vs| {
                vs.export_to
                    .visible_from(&vs.namespace, &instance.namespace)
            })
            .collect();
        visible.sort_by(|a, b| a.merge_order().cmp(&b.merge_order()));
        let mut by_gateway: HashMap<&str, Bound<'_>> = HashMap::new();
        for vs in visible {
            for gateway in &vs.gateways {
                let bound = by_gateway.entry(gateway.as_str()).or_default();
                // A VirtualService naming the same gateway twice binds once.
                if !bound
                    .services
                    .last()
                    .is_some_and(|last| std::ptr::eq(*last, vs))
                {
                    bound.services.push(vs);
                }
            }
        }
        Binder {
            by_gateway,
            model,
            namespace: &instance.namespace,
            clusters: Clusters::new(model, &instance.namespace),
            warnings: Vec::new(),
        }
    }

    /// The clusters built and the warnings collected, each once in the
    /// order first found (a VirtualService bound through two Gateways that
    /// merge into one listener is bound twice).
    pub fn finish(self) -> (Vec<Cluster>, Vec<ClusterId>, Vec<String>) {
        let mut seen = HashSet::new();
        let warnings = self
            .warnings
            .into_iter()
            .filter(|warning| seen.insert(warning.clone()))
            .collect();
        let (clusters, renumbered) = self.clusters.into_clusters();
        (clusters, renumbered, warnings)
    }

    /// The VirtualServices bound to `gateway` that bind to the server
    /// `accepted`, in Istio's order, each with its virtual host names.
    fn bindings(
        &self,
        gateway: &str,
        accepted: &Accepted<'_>,
    ) -> Vec<(&'m VirtualService, Vec<HostPattern>)> {
        self.by_gateway
            .get(gateway)
            .map(|bound| bound.bindings(accepted))
            .unwrap_or_default()
    }

    /// The virtual hosts of an HTTP route table shared by `servers`.
    pub fn http_hosts(&mut self, servers: &[Accepted<'m>], port: u16) -> HostTable {
        let mut vhosts = Vec::new();
        for accepted in servers {
            // Only a plaintext server redirects: on one that terminates TLS
            // the request already came over HTTPS, and Istio routes it
            // (semantics doc §6, simulation "httpsRedirect on https").
            let https_redirect = accepted.server.port.protocol.is_http_family()
                && accepted
                    .server
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.https_redirect);
            // The server's own hosts: redirect-only, or 404 (no routes), when nothing binds.
            vhosts.extend(accepted.server.hosts.iter().map(|host| VirtualHost {
                pattern: HostPattern::from_server_host(host),
                https_redirect,
                routes: Vec::new(),
            }));
            let gateway = accepted.gateway_ref();
            for (vs, names) in self.bindings(&gateway, accepted) {
                let routes = self.http_routes(vs, &gateway, port);
                for pattern in names {
                    vhosts.push(VirtualHost {
                        pattern,
                        https_redirect,
                        routes: routes.clone(),
                    });
                }
            }
        }
        HostTable::new(vhosts)
    }

    /// A VirtualService's rules that apply to `gateway` on `port`, stopping
    /// after the first catch-all (`route.go::BuildHTTPRoutesForVirtualService`).
    fn http_routes(&mut self, vs: &VirtualService, gateway: &str, port: u16) -> Vec<Route> {
        let mut routes = Vec::new();
        for (index, rule) in vs.http.iter().enumerate() {
            let matches: Vec<HttpMatch> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .filter(|m| m.gateways.is_empty() || m.gateways.iter().any(|g| g == gateway))
                .cloned()
                .collect();
            if !rule.matches.is_empty() && matches.is_empty() {
                continue;
            }
            let source = format!(
                "VirtualService {}/{} spec.http[{index}]",
                vs.namespace, vs.name
            );
            let action = match &rule.action {
                HttpAction::Route(destinations) => RouteAction::Forward {
                    backends: self.forward(destinations, &vs.namespace, &source, Layer::Http),
                    rewrite_uri: rule.rewrite_uri.clone(),
                    rewrite_uri_regex: rule.rewrite_uri_regex.clone(),
                    rewrite_authority: rule.rewrite_authority.clone(),
                    timeout: rule.timeout,
                },
                HttpAction::Redirect(redirect) => RouteAction::Redirect(redirect.clone()),
                HttpAction::DirectResponse { status, body } => RouteAction::DirectResponse {
                    status: *status,
                    body: body.clone(),
                },
            };
            let catch_all = matches.is_empty() || matches.iter().any(HttpMatch::is_catch_all);
            routes.push(Route {
                source,
                matches,
                action,
                catch_all,
                request_headers: rule.request_headers.clone(),
                response_headers: rule.response_headers.clone(),
            });
            if catch_all {
                break;
            }
        }
        routes
    }

    fn forward(
        &mut self,
        destinations: &[Destination],
        namespace: &str,
        source: &str,
        layer: Layer,
    ) -> Forward {
        let backends = destinations
            .iter()
            .map(|dest| {
                let target = self.clusters.resolve(dest, namespace);
                if let Err(reason) = &target {
                    let outcome = match layer {
                        Layer::Http => "requests routed there get 503",
                        Layer::Connection => "connections routed there are closed",
                    };
                    self.warnings.push(format!("{source}: {reason}; {outcome}"));
                }
                Backend {
                    weight: dest.weight,
                    target,
                }
            })
            .collect();
        Forward(backends)
    }

    /// The servers of a TLS listener, with passthrough SNI routes unique
    /// across the listener.
    pub fn tls_servers(&mut self, servers: &[Accepted<'m>], port: u16) -> Vec<TlsServer> {
        let mut seen_sni: BTreeSet<HostPattern> = BTreeSet::new();
        let mut out = Vec::new();
        for accepted in servers {
            let Some(tls) = accepted.server.tls.clone() else {
                continue;
            };
            let source = format!(
                "Gateway {} spec.servers[{}]",
                accepted.gateway_ref(),
                accepted.index
            );
            let kind = match (tls.mode, accepted.server.port.protocol) {
                (TlsMode::Passthrough, _) => TlsServerKind::Passthrough {
                    routes: self.sni_routes(accepted, port, &mut seen_sni),
                },
                (TlsMode::AutoPassthrough, _) => {
                    let hosts: Vec<HostPattern> = accepted
                        .server
                        .hosts
                        .iter()
                        .map(|h| HostPattern::from_server_host(h))
                        .collect();
                    let (clusters, warnings) = auto_passthrough::reachable(
                        self.model,
                        self.namespace,
                        &mut self.clusters,
                        &hosts,
                        &source,
                    );
                    self.warnings.extend(warnings);
                    TlsServerKind::AutoPassthrough { clusters }
                }
                (_, Protocol::Tls) => TlsServerKind::TerminateTcp {
                    route: self.tcp_route(std::slice::from_ref(accepted), port),
                    tls,
                },
                _ => TlsServerKind::TerminateHttp {
                    hosts: self.http_hosts(std::slice::from_ref(accepted), port),
                    tls,
                },
            };
            out.push(TlsServer {
                source,
                hosts: accepted
                    .server
                    .hosts
                    .iter()
                    .map(|h| HostPattern::from_server_host(h))
                    .collect(),
                kind,
            });
        }
        out
    }

    fn sni_routes(
        &mut self,
        accepted: &Accepted<'m>,
        port: u16,
        seen: &mut BTreeSet<HostPattern>,
    ) -> Vec<SniRoute> {
        let gateway = accepted.gateway_ref();
        let (services, names) = match self.by_gateway.get(gateway.as_str()) {
            Some(bound) => bound.sni_names(accepted),
            None => return Vec::new(),
        };
        let mut routes = Vec::new();
        for (at, vs) in services {
            for (index, rule) in vs.tls.iter().enumerate() {
                let source = format!(
                    "VirtualService {}/{} spec.tls[{index}]",
                    vs.namespace, vs.name
                );
                for (match_index, m) in rule.matches.iter().enumerate() {
                    if m.port.is_some_and(|p| p != port)
                        || !(m.gateways.is_empty() || m.gateways.contains(&gateway))
                    {
                        continue;
                    }
                    if !m.destination_subnets.is_empty() {
                        self.warnings
                            .push(subnets_not_applied(&source, &m.destination_subnets));
                    }
                    for sni_index in 0..m.sni_hosts.len() {
                        let Some(name) = names.get(&(at, index, match_index, sni_index)).cloned()
                        else {
                            continue;
                        };
                        if !seen.insert(name.clone()) {
                            self.warnings.push(format!("{source}: duplicate SNI host {name} on port {port}; the earlier route wins"));
                            continue;
                        }
                        let forward =
                            self.forward(&rule.route, &vs.namespace, &source, Layer::Connection);
                        routes.push(SniRoute {
                            sni: name,
                            source: source.clone(),
                            forward,
                        });
                    }
                }
            }
        }
        routes
    }

    /// The first VirtualService `tcp` rule that binds one of `servers` on `port`.
    pub fn tcp_route(&mut self, servers: &[Accepted<'m>], port: u16) -> Option<(Forward, String)> {
        for accepted in servers {
            let gateway = accepted.gateway_ref();
            for (vs, _) in self.bindings(&gateway, accepted) {
                for (index, rule) in vs.tcp.iter().enumerate() {
                    let matching: Vec<&TcpMatch> = rule
                        .matches
                        .iter()
                        .filter(|m| {
                            m.port.is_none_or(|p| p == port)
                                && (m.gateways.is_empty() || m.gateways.contains(&gateway))
                        })
                        .collect();
                    if rule.matches.is_empty() || !matching.is_empty() {
                        let source = format!(
                            "VirtualService {}/{} spec.tcp[{index}]",
                            vs.namespace, vs.name
                        );
                        let subnets: Vec<Subnet> = matching
                            .iter()
                            .flat_map(|m| m.destination_subnets.iter().copied())
                            .collect();
                        if !subnets.is_empty() {
                            self.warnings.push(subnets_not_applied(&source, &subnets));
                        }
                        let forward =
                            self.forward(&rule.route, &vs.namespace, &source, Layer::Connection);
                        return Some((forward, source));
                    }
                }
            }
        }
        None
    }
}

/// The warning for a bound rule whose match names destination subnets:
/// Istio's gateway listeners match tls and tcp rules by SNI, port and
/// gateway only (`gateway.go::l4SingleMatch`), so the subnets change nothing.
fn subnets_not_applied(source: &str, subnets: &[Subnet]) -> String {
    let list: Vec<String> = subnets.iter().map(ToString::to_string).collect();
    format!(
        "{source}: destinationSubnets {} not applied: as in Istio, a gateway matches tls and tcp rules by SNI, port and gateway only, so the rule takes connections to any address",
        list.join(", ")
    )
}

/// A tls match's SNI host: (service, rule, match, SNI) positions.
type SniAt = (usize, usize, usize, usize);

/// The VirtualServices that name one Gateway, with their hosts indexed so
/// that a server finds the ones it binds without comparing each of its
/// hosts with each of theirs (quadratic: issue 19). The indexes are built
/// on first use: a Gateway this instance does not serve needs none.
#[derive(Default)]
struct Bound<'m> {
    /// In Istio's order.
    services: Vec<&'m VirtualService>,
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
    fn bindings(&self, accepted: &Accepted<'_>) -> Vec<(&'m VirtualService, Vec<HostPattern>)> {
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
    fn sni_names(
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
