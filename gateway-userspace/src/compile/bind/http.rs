//! HTTP binding: a listener's virtual hosts, and each bound
//! VirtualService's `http` rules as routes.
use super::{Accepted, Binder, Layer};
use crate::{
    compile::{delegate, retry::retry_policy},
    model::{HostPattern, HttpAction, HttpMatch, HttpMirror, VirtualService},
    plan::{HostTable, Mirror, Route, RouteAction, Unresolved, VirtualHost},
};

impl<'m> Binder<'m> {
    /// The virtual hosts of an HTTP route table shared by `servers`.
    pub(crate) fn http_hosts(&mut self, servers: &[Accepted<'m>], port: u16) -> HostTable {
        let mut vhosts = Vec::new();
        for accepted in servers {
            // Only a plaintext server redirects: on one that terminates TLS
            // the request already came over HTTPS, and Istio routes it
            // (Istio's gateway simulation case "httpsRedirect on https").
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

    /// A VirtualService's rules that apply to `gateway` on `port` (a
    /// delegating rule replaced by its delegate's rules, merged), stopping
    /// after the first catch-all (`route.go::BuildHTTPRoutesForVirtualService`).
    /// A rule's mirrors, each resolved to its cluster (an unresolved one
    /// is a plan warning, and copies nothing).
    fn mirrors(&mut self, mirrors: &[HttpMirror], namespace: &str, source: &str) -> Vec<Mirror> {
        mirrors
            .iter()
            .map(|mirror| {
                let mirror_source = format!("{source} mirror");
                let resolved = self.forward(
                    std::slice::from_ref(&mirror.destination),
                    namespace,
                    &mirror_source,
                    Layer::Mirror,
                );
                Mirror {
                    target: resolved.0.into_iter().next().map_or_else(
                        || {
                            Err(Unresolved::NoServiceEntry {
                                host: mirror.destination.host.clone(),
                            })
                        },
                        |backend| backend.target,
                    ),
                    share: mirror.share,
                }
            })
            .collect()
    }

    fn http_routes(&mut self, vs: &'m VirtualService, gateway: &str, port: u16) -> Vec<Route> {
        let mut routes = Vec::new();
        for rule in delegate::http_rules(vs, &self.delegates, &mut self.warnings) {
            let delegate::Rule {
                route: rule,
                source,
                namespace,
            } = rule;
            let matches: Vec<HttpMatch> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .filter(|m| {
                    // Istio's `sourceMatchHTTP`: a match naming gateways
                    // takes this one if named; one naming none takes it
                    // when its `sourceLabels` are the workload's and its
                    // `sourceNamespace` the workload's namespace.
                    if m.gateways.is_empty() {
                        m.source_labels
                            .iter()
                            .all(|(k, v)| self.labels.get(k) == Some(v))
                            && m.source_namespace
                                .as_deref()
                                .is_none_or(|ns| ns == self.namespace)
                    } else {
                        m.gateways.iter().any(|g| g == gateway)
                    }
                })
                .cloned()
                .collect();
            if !rule.matches.is_empty() && matches.is_empty() {
                continue;
            }
            let action = match &rule.action {
                HttpAction::Route(destinations) => {
                    let backends = self.forward(destinations, namespace, &source, Layer::Http);
                    // Istio looks for a consistent hash only when the rule
                    // has one destination (`route.go::applyHTTPRouteDestination`).
                    let hashing = match backends.0.as_slice() {
                        [only] => only.target.as_ref().is_ok_and(|id| self.hashes(*id)),
                        _ => false,
                    };
                    RouteAction::Forward {
                        backends,
                        rewrite_uri: rule.rewrite_uri.clone(),
                        rewrite_uri_regex: rule.rewrite_uri_regex.clone(),
                        rewrite_authority: rule.rewrite_authority.clone(),
                        timeout: rule.timeout,
                        retry: retry_policy(rule.retries.as_ref(), hashing),
                        mirrors: self.mirrors(&rule.mirrors, namespace, &source),
                    }
                }
                HttpAction::Redirect(redirect) => {
                    let mut redirect = redirect.clone();
                    if redirect.derive_port_from_request {
                        redirect.port = Some(port);
                    }
                    RouteAction::Redirect(redirect)
                }
                HttpAction::DirectResponse { status, body } => RouteAction::DirectResponse {
                    status: *status,
                    body: body.clone(),
                },
                // Validation keeps delegation one level deep; a rule left
                // delegating serves nothing.
                HttpAction::Delegate { .. } => continue,
            };
            let forwards = matches!(action, RouteAction::Forward { .. });
            let catch_all = matches.is_empty() || matches.iter().any(HttpMatch::is_catch_all);
            routes.push(Route {
                source,
                matches,
                action,
                catch_all,
                request_headers: rule.request_headers.clone(),
                response_headers: rule.response_headers.clone(),
                fault: rule.fault.clone(),
                cors: rule.cors.clone().filter(|_| forwards),
            });
            if catch_all {
                break;
            }
        }
        routes
    }
}
