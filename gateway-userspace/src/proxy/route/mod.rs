//! Routing a request within one route table: the virtual host its
//! authority names ([`VirtualHosts::lookup`], Envoy's host precedence), then
//! the first route of that host whose matches accept it
//! ([`ServedHost::route`], the rules in `matcher.rs`), with what the route's
//! rewrites need. Everything is compiled once per route table.
mod matcher;

use hyper::header::HeaderMap;

use self::matcher::{CompiledMatch, Value, compile_matches, first_accepting};
pub use self::matcher::{CompiledRoutes, RouteError, Selected};
use super::rewrite::{RegexRewrite, RewriteError};
use crate::plan::{HostPattern, HostTable, Route, RouteAction, StringMatch, authority_host};

/// The request facts routing depends on.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// `GET`, `POST`, ... as sent.
    pub method: &'a str,
    /// `http` or `https`, as the request arrived.
    pub scheme: &'a str,
    /// `:authority` or `Host`, as sent (port included).
    pub authority: &'a str,
    /// The path without the query (normalized first if the caller does).
    pub path: &'a str,
    /// What follows the first `?`, if there is one.
    pub query: Option<&'a str>,
    /// The request's headers, as hyper parsed them.
    pub headers: &'a HeaderMap,
    /// Listener port (already used to pick the route table).
    pub port: u16,
}

/// A route table whose regexes do not compile (validation at load makes
/// this unreachable unless the two regex dialects disagree).
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error(transparent)]
    Match(#[from] RouteError),
    #[error("{route}: uriRegexRewrite")]
    Rewrite {
        route: String,
        #[source]
        source: RewriteError,
    },
}

/// The virtual hosts of one route table (an HTTP listener, a terminating
/// TLS server, the plaintext servers of a TLS port), each ready to route.
#[derive(Debug)]
pub struct VirtualHosts {
    /// In the plan's precedence order.
    hosts: Vec<ServedHost>,
    /// Some virtual host redirects to HTTPS (the lean path is worth trying).
    pub redirects: bool,
}

/// One virtual host ready to route: its routes, each with its compiled
/// matches and rewrite.
#[derive(Debug)]
pub struct ServedHost {
    pub pattern: HostPattern,
    /// Answer every request with a 301 to `https://` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// In evaluation order; empty answers 404.
    pub routes: Vec<ServedRoute>,
}

/// One route of a virtual host with what matching and rewriting it needs,
/// compiled once.
#[derive(Debug)]
pub struct ServedRoute {
    pub route: Route,
    matches: Vec<CompiledMatch>,
    /// The compiled `uriRegexRewrite`, if the route forwards with one.
    regex_rewrite: Option<RegexRewrite>,
    /// The compiled `corsPolicy.allowOrigins`, if the route has a policy.
    cors_origins: StringMatches,
}

/// Compiled string matches (a CORS policy's origins), each as the
/// route matches' own (`matcher.rs`: a regex matches the whole value).
#[derive(Debug, Default)]
pub struct StringMatches(Vec<Value>);

impl StringMatches {
    /// Whether any of the matches accepts `value`.
    pub fn any_accepts(&self, value: &[u8]) -> bool {
        self.0.iter().any(|m| m.accepts(value))
    }
}

/// The route a request takes within a virtual host, and what its rewrites need.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    pub route: &'a Route,
    /// The `uri` of the match that selected the route (what `rewrite.uri` replaces).
    pub matched_uri: Option<&'a StringMatch>,
    pub regex_rewrite: Option<&'a RegexRewrite>,
    /// The route's CORS origins (empty without a policy).
    pub cors_origins: &'a StringMatches,
}

impl VirtualHosts {
    /// Compiles every virtual host's routes.
    pub fn new(table: HostTable) -> Result<Self, RoutesError> {
        let hosts = table
            .into_hosts()
            .into_iter()
            .map(|host| {
                let routes = host
                    .routes
                    .into_iter()
                    .map(ServedRoute::new)
                    .collect::<Result<_, _>>()?;
                Ok(ServedHost {
                    pattern: host.pattern,
                    https_redirect: host.https_redirect,
                    routes,
                })
            })
            .collect::<Result<Vec<_>, RoutesError>>()?;
        let redirects = hosts.iter().any(|host| host.https_redirect);
        Ok(Self { hosts, redirects })
    }

    /// Virtual hosts in precedence order.
    pub fn hosts(&self) -> &[ServedHost] {
        &self.hosts
    }

    /// The index in [`VirtualHosts::hosts`] of the virtual host serving
    /// `authority` (a Host header value or `:authority`, port ignored).
    pub fn position(&self, authority: &str) -> Option<usize> {
        let host = authority_host(authority);
        self.hosts.iter().position(|vh| vh.pattern.matches(&host))
    }

    /// The virtual host serving `authority`.
    pub fn lookup(&self, authority: &str) -> Option<&ServedHost> {
        self.position(authority).and_then(|at| self.hosts.get(at))
    }
}

impl ServedHost {
    /// The first route that accepts `req`, in Istio's order, with the
    /// match that accepted it and the route's compiled regex rewrite.
    pub fn route(&self, req: &RequestFacts<'_>) -> Option<Routed<'_>> {
        let selected = first_accepting(self.routes.iter().map(|r| r.matches.as_slice()), req)?;
        let served = self.routes.get(selected.route)?;
        let matched_uri = selected
            .matched
            .and_then(|i| served.route.matches.get(i))
            .and_then(|m| m.uri.as_ref());
        Some(Routed {
            route: &served.route,
            matched_uri,
            regex_rewrite: served.regex_rewrite.as_ref(),
            cors_origins: &served.cors_origins,
        })
    }
}

impl ServedRoute {
    fn new(route: Route) -> Result<Self, RoutesError> {
        let matches = compile_matches(&route.source, &route.matches)?;
        let regex_rewrite = match &route.action {
            RouteAction::Forward {
                rewrite_uri_regex: Some((pattern, substitution)),
                ..
            } => Some(RegexRewrite::new(pattern, substitution).map_err(|source| {
                RoutesError::Rewrite {
                    route: route.source.clone(),
                    source,
                }
            })?),
            _ => None,
        };
        let cors_origins = route
            .cors
            .iter()
            .flat_map(|cors| &cors.allow_origins)
            .map(Value::new)
            .collect::<Result<_, _>>()
            .map(StringMatches)
            .map_err(|(pattern, source)| RouteError {
                route: route.source.clone(),
                pattern,
                source,
            })?;
        Ok(Self {
            route,
            matches,
            regex_rewrite,
            cors_origins,
        })
    }
}
