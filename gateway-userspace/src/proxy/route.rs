//! Which HTTP route of a virtual host a request takes: a VirtualService's
//! `http[].match` as Istio translates it (`TranslateRouteMatch`) and Envoy
//! evaluates it. Built once per route table; regexes compiled up front.
//!
//! The rules, each from Istio/Envoy:
//! - Routes are tried in list order; the first whose matches accept wins.
//!   A route without matches accepts every request; several matches are OR'ed
//!   (Istio emits one Envoy route per match, in order).
//! - `uri` is matched against the path without the query: `exact` and
//!   `prefix` are ASCII case-insensitive with `ignoreUriCase`; `regex` never
//!   is (Envoy ignores `case_sensitive` for `safe_regex`).
//! - Every regex must match the whole value (Envoy's `safe_regex` is a full
//!   match), so it is compiled as `\A(?:re)\z`.
//! - `method`, `scheme`, `authority` are header matches on `:method`,
//!   `:scheme` and `:authority` (the authority as sent, port included).
//! - `headers`: the header must be present and its value (all values joined
//!   with `,`, as Envoy's `getAllOfHeaderAsString`) must match; an empty
//!   match (or Istio's regex `*`) means presence only.
//! - `withoutHeaders`: Envoy's `invert_match`; a missing header counts as
//!   the empty string (`treat_missing_header_as_empty`), except for a
//!   presence-only entry, which accepts exactly when the header is absent.
//! - `queryParams`: the first value of the parameter (`a=1&a=2` is `1`, a
//!   parameter without `=` has the value "") matched exactly, by prefix or by
//!   regex; absent parameters never match. The query is split on `&` and the
//!   first `=` and **not** percent-decoded: Envoy's route matcher uses
//!   `QueryParamsMulti::parseQueryString`, which does not decode.
//! - `port` and `gateways` were applied when the route table was compiled.
use std::borrow::Cow;

use hyper::header::{HeaderMap, HeaderName};
use regex::bytes::{Regex, RegexBuilder};

use super::rewrite::{RegexRewrite, RewriteError};
use crate::plan::{
    HostPattern, HostTable, HttpMatch, Route, RouteAction, StringMatch, authority_host,
};

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

/// The route a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Index into the `&[Route]` the table was built from.
    pub route: usize,
    /// Index of the first of the route's matches that accepted the request
    /// (its `uri` decides what `rewrite.uri` replaces); `None` for a route
    /// without matches.
    pub matched: Option<usize>,
}

/// A route table whose regexes failed to compile.
#[derive(Debug, thiserror::Error)]
#[error("{route}: regex {pattern:?} does not compile")]
pub struct RouteError {
    /// `VirtualService ns/name spec.http[i]`.
    pub route: String,
    /// The regex as written.
    pub pattern: String,
    /// Why it does not compile.
    #[source]
    pub source: regex::Error,
}

/// The routes of one virtual host, ready to match requests.
#[derive(Debug)]
pub struct CompiledRoutes {
    /// One entry per route, in order: its compiled matches.
    routes: Vec<Vec<CompiledMatch>>,
}

impl CompiledRoutes {
    /// Compiles every match of `routes`; fails on the first bad regex.
    pub fn new(routes: &[Route]) -> Result<Self, RouteError> {
        Self::from_matches(
            routes
                .iter()
                .map(|route| (route.source.as_str(), route.matches.as_slice())),
        )
    }

    /// [`CompiledRoutes::new`] from each route's source and matches alone.
    pub fn from_matches<'r>(
        routes: impl IntoIterator<Item = (&'r str, &'r [HttpMatch])>,
    ) -> Result<Self, RouteError> {
        let routes = routes
            .into_iter()
            .map(|(source, matches)| compile_matches(source, matches))
            .collect::<Result<_, _>>()?;
        Ok(CompiledRoutes { routes })
    }

    /// The first route that accepts `req`, in Istio's order.
    pub fn select(&self, req: &RequestFacts<'_>) -> Option<Selected> {
        first_accepting(self.routes.iter().map(Vec::as_slice), req)
    }
}

/// The first of `routes` (each given by its compiled matches) that accepts
/// `req`, in Istio's order.
fn first_accepting<'m>(
    routes: impl IntoIterator<Item = &'m [CompiledMatch]>,
    req: &RequestFacts<'_>,
) -> Option<Selected> {
    let query = Query::parse(req.query);
    routes.into_iter().enumerate().find_map(|(route, matches)| {
        if matches.is_empty() {
            return Some(Selected {
                route,
                matched: None,
            });
        }
        let matched = matches.iter().position(|m| m.accepts(req, &query))?;
        Some(Selected {
            route,
            matched: Some(matched),
        })
    })
}

/// Compiles `matches` of the route `source`.
fn compile_matches(source: &str, matches: &[HttpMatch]) -> Result<Vec<CompiledMatch>, RouteError> {
    matches
        .iter()
        .map(|m| {
            CompiledMatch::new(m).map_err(|(pattern, error)| RouteError {
                route: source.to_string(),
                pattern,
                source: error,
            })
        })
        .collect()
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
}

/// The route a request takes within a virtual host, and what its rewrites need.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    pub route: &'a Route,
    /// The `uri` of the match that selected the route (what `rewrite.uri` replaces).
    pub matched_uri: Option<&'a StringMatch>,
    pub regex_rewrite: Option<&'a RegexRewrite>,
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
        Ok(VirtualHosts { hosts, redirects })
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
        Ok(ServedRoute {
            route,
            matches,
            regex_rewrite,
        })
    }
}

type CompileError = (String, regex::Error);

/// One `http[].match[]` entry; every rule must accept.
#[derive(Debug)]
struct CompiledMatch {
    uri: Option<UriRule>,
    headers: Vec<HeaderRule>,
    query: Vec<QueryRule>,
}

impl CompiledMatch {
    fn new(m: &HttpMatch) -> Result<Self, CompileError> {
        let uri = m
            .uri
            .as_ref()
            .map(|uri| {
                Ok::<_, CompileError>(UriRule {
                    value: Value::new(uri)?,
                    ignore_case: m.ignore_uri_case,
                })
            })
            .transpose()?;
        let mut headers = Vec::new();
        for (source, matcher) in [
            (Source::Method, &m.method),
            (Source::Scheme, &m.scheme),
            (Source::Authority, &m.authority),
        ] {
            if let Some(matcher) = matcher {
                headers.push(HeaderRule::new(source, Some(matcher), false)?);
            }
        }
        for (names, invert) in [(&m.headers, false), (&m.without_headers, true)] {
            for (name, matcher) in names {
                headers.push(HeaderRule::new(
                    Source::named(name),
                    matcher.as_ref(),
                    invert,
                )?);
            }
        }
        let query = m
            .query_params
            .iter()
            .map(|(name, matcher)| {
                Ok(QueryRule {
                    name: name.clone(),
                    value: presence_or(matcher.as_ref())?,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        Ok(CompiledMatch {
            uri,
            headers,
            query,
        })
    }

    fn accepts(&self, req: &RequestFacts<'_>, query: &Query<'_>) -> bool {
        self.uri.as_ref().is_none_or(|uri| uri.accepts(req.path))
            && self.headers.iter().all(|rule| rule.accepts(req))
            && self.query.iter().all(|rule| rule.accepts(query))
    }
}

/// A compiled `StringMatch`.
#[derive(Debug)]
enum Value {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Value {
    fn new(m: &StringMatch) -> Result<Self, CompileError> {
        Ok(match m {
            StringMatch::Exact(s) => Value::Exact(s.clone()),
            StringMatch::Prefix(s) => Value::Prefix(s.clone()),
            StringMatch::Regex(re) => Value::Regex(
                RegexBuilder::new(&format!(r"\A(?:{re})\z"))
                    .build()
                    .map_err(|err| (re.clone(), err))?,
            ),
        })
    }

    fn accepts(&self, value: &[u8]) -> bool {
        match self {
            Value::Exact(s) => value == s.as_bytes(),
            Value::Prefix(s) => value.starts_with(s.as_bytes()),
            Value::Regex(re) => re.is_match(value),
        }
    }
}

/// `None` for presence-only: an empty match, or Istio's regex `*`, which
/// `canBeConvertedToPresentMatch` turns into `present_match`.
fn presence_or(m: Option<&StringMatch>) -> Result<Option<Value>, CompileError> {
    match m {
        None => Ok(None),
        Some(StringMatch::Regex(re)) if re == "*" => Ok(None),
        Some(m) => Value::new(m).map(Some),
    }
}

#[derive(Debug)]
struct UriRule {
    value: Value,
    ignore_case: bool,
}

impl UriRule {
    fn accepts(&self, path: &str) -> bool {
        let path = path.as_bytes();
        match (&self.value, self.ignore_case) {
            (Value::Exact(s), true) => path.eq_ignore_ascii_case(s.as_bytes()),
            (Value::Prefix(s), true) => path
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s.as_bytes())),
            (value, _) => value.accepts(path),
        }
    }
}

/// Where a header-like rule reads its value.
#[derive(Debug)]
enum Source {
    Method,
    Scheme,
    Authority,
    /// `:path`, query included.
    Path,
    Header(HeaderName),
    /// A name no request can carry (not a valid header name).
    Never,
}

impl Source {
    fn named(name: &str) -> Self {
        match name {
            ":method" => Source::Method,
            ":scheme" => Source::Scheme,
            ":authority" => Source::Authority,
            ":path" => Source::Path,
            _ => HeaderName::from_bytes(name.as_bytes()).map_or(Source::Never, Source::Header),
        }
    }

    /// The value Envoy would match: all values joined with `,`; `None` when absent.
    fn value<'r>(&self, req: &RequestFacts<'r>) -> Option<Cow<'r, [u8]>> {
        match self {
            Source::Method => Some(Cow::Borrowed(req.method.as_bytes())),
            Source::Scheme => Some(Cow::Borrowed(req.scheme.as_bytes())),
            Source::Authority => Some(Cow::Borrowed(req.authority.as_bytes())),
            Source::Path => Some(match req.query {
                Some(query) => Cow::Owned(format!("{}?{query}", req.path).into_bytes()),
                None => Cow::Borrowed(req.path.as_bytes()),
            }),
            Source::Header(name) => {
                let mut values = req.headers.get_all(name).iter();
                let first = values.next()?;
                let mut joined = Cow::Borrowed(first.as_bytes());
                for next in values {
                    let joined = joined.to_mut();
                    joined.push(b',');
                    joined.extend_from_slice(next.as_bytes());
                }
                Some(joined)
            }
            Source::Never => None,
        }
    }
}

/// Envoy's `HeaderMatcher` as Istio emits it.
#[derive(Debug)]
struct HeaderRule {
    source: Source,
    /// `None`: `present_match`.
    value: Option<Value>,
    /// `withoutHeaders`: `invert_match`, with a missing header read as ""
    /// unless presence-only.
    invert: bool,
}

impl HeaderRule {
    fn new(source: Source, m: Option<&StringMatch>, invert: bool) -> Result<Self, CompileError> {
        Ok(HeaderRule {
            source,
            value: presence_or(m)?,
            invert,
        })
    }

    fn accepts(&self, req: &RequestFacts<'_>) -> bool {
        match (self.source.value(req), &self.value) {
            (None, None) => self.invert,
            (None, Some(value)) => self.invert && !value.accepts(b""),
            (Some(_), None) => !self.invert,
            (Some(actual), Some(value)) => value.accepts(&actual) != self.invert,
        }
    }
}

/// Envoy's `QueryParameterMatcher`.
#[derive(Debug)]
struct QueryRule {
    name: String,
    /// `None`: `present_match`.
    value: Option<Value>,
}

impl QueryRule {
    fn accepts(&self, query: &Query<'_>) -> bool {
        match (query.first(&self.name), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(actual), Some(value)) => value.accepts(actual.as_bytes()),
        }
    }
}

/// The query's `(name, value)` pairs in order, undecoded.
struct Query<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Query<'a> {
    /// Envoy's `parseParameters` loop: an empty segment between two `&`
    /// is a parameter named "", a trailing `&` adds nothing.
    fn parse(query: Option<&'a str>) -> Self {
        let mut pairs = Vec::new();
        let mut rest = query.unwrap_or_default();
        while !rest.is_empty() {
            let (pair, tail) = rest.split_once('&').unwrap_or((rest, ""));
            pairs.push(pair.split_once('=').unwrap_or((pair, "")));
            rest = tail;
        }
        Query(pairs)
    }

    fn first(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hyper::header::HeaderValue;

    use super::*;

    fn exact(s: &str) -> StringMatch {
        StringMatch::Exact(s.into())
    }
    fn prefix(s: &str) -> StringMatch {
        StringMatch::Prefix(s.into())
    }
    fn regex(s: &str) -> StringMatch {
        StringMatch::Regex(s.into())
    }

    /// A request `GET http://example.com/` without headers, to adjust.
    struct Req {
        method: &'static str,
        scheme: &'static str,
        authority: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        headers: HeaderMap,
    }

    fn get(path_and_query: &'static str) -> Req {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        Req {
            method: "GET",
            scheme: "http",
            authority: "example.com",
            path,
            query,
            headers: HeaderMap::new(),
        }
    }

    impl Req {
        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.append(name, HeaderValue::from_static(value));
            self
        }

        fn facts(&self) -> RequestFacts<'_> {
            RequestFacts {
                method: self.method,
                scheme: self.scheme,
                authority: self.authority,
                path: self.path,
                query: self.query,
                headers: &self.headers,
                port: 80,
            }
        }
    }

    /// Does a table holding the single match `m` accept `req`?
    fn accepts(m: HttpMatch, req: &Req) -> bool {
        let matches = [m];
        let table = CompiledRoutes::from_matches([("test", &matches[..])]).expect("compiles");
        table.select(&req.facts()).is_some()
    }

    fn uri(m: StringMatch) -> HttpMatch {
        HttpMatch {
            uri: Some(m),
            ..HttpMatch::default()
        }
    }

    fn keyed(entries: &[(&str, Option<StringMatch>)]) -> BTreeMap<String, Option<StringMatch>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn uri_exact_matches_the_whole_path_without_the_query() {
        assert!(accepts(uri(exact("/a")), &get("/a?x=1")));
        assert!(!accepts(uri(exact("/a")), &get("/a/")));
        assert!(!accepts(uri(exact("/a")), &get("/A")));
    }

    #[test]
    fn uri_prefix_is_a_plain_string_prefix() {
        assert!(accepts(uri(prefix("/api")), &get("/api/v1")));
        // Istio VirtualService prefixes are not path-separated.
        assert!(accepts(uri(prefix("/api")), &get("/apix")));
        assert!(!accepts(uri(prefix("/api")), &get("/ap")));
        assert!(!accepts(uri(prefix("/api")), &get("/Api")));
    }

    #[test]
    fn uri_regex_must_match_the_whole_path() {
        assert!(accepts(uri(regex("/v[0-9]+/.*")), &get("/v2/x?y")));
        assert!(!accepts(uri(regex("/v[0-9]+")), &get("/v2/x")));
        assert!(!accepts(uri(regex("v[0-9]+")), &get("/v2")));
        // An alternation is anchored as a whole, not only its last branch.
        assert!(!accepts(uri(regex("/a|/b")), &get("/ab")));
    }

    #[test]
    fn ignore_uri_case_applies_to_exact_and_prefix_not_regex() {
        let mut m = uri(exact("/Login"));
        m.ignore_uri_case = true;
        assert!(accepts(m.clone(), &get("/LOGIN")));
        assert!(!accepts(m, &get("/LOGIN/x")));
        let mut m = uri(prefix("/Api"));
        m.ignore_uri_case = true;
        assert!(accepts(m.clone(), &get("/aPI/v1")));
        assert!(!accepts(m, &get("/ap")));
        let mut m = uri(regex("/api"));
        m.ignore_uri_case = true;
        assert!(!accepts(m, &get("/API")));
    }

    #[test]
    fn method_scheme_and_authority_are_header_matches() {
        let m = HttpMatch {
            method: Some(exact("POST")),
            ..HttpMatch::default()
        };
        let mut post = get("/");
        post.method = "POST";
        assert!(accepts(m.clone(), &post));
        assert!(!accepts(m, &get("/")));

        let m = HttpMatch {
            scheme: Some(exact("https")),
            ..HttpMatch::default()
        };
        let mut https = get("/");
        https.scheme = "https";
        assert!(accepts(m.clone(), &https));
        assert!(!accepts(m, &get("/")));

        // The authority as sent, port included: a prefix still matches.
        let m = HttpMatch {
            authority: Some(prefix("example.com")),
            ..HttpMatch::default()
        };
        let mut with_port = get("/");
        with_port.authority = "example.com:8080";
        assert!(accepts(m.clone(), &with_port));
        let mut other = get("/");
        other.authority = "other.com";
        assert!(!accepts(m, &other));
        let exact_host = HttpMatch {
            authority: Some(exact("example.com")),
            ..HttpMatch::default()
        };
        assert!(!accepts(exact_host, &with_port));
    }

    #[test]
    fn headers_must_be_present_and_match() {
        let m = HttpMatch {
            headers: keyed(&[("x-env", Some(exact("prod")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/").header("x-env", "prod")));
        assert!(!accepts(m.clone(), &get("/").header("x-env", "dev")));
        assert!(!accepts(m, &get("/")));
    }

    #[test]
    fn header_presence_only_needs_the_header() {
        for presence in [None, Some(regex("*"))] {
            let m = HttpMatch {
                headers: keyed(&[("x-debug", presence)]),
                ..HttpMatch::default()
            };
            assert!(accepts(m.clone(), &get("/").header("x-debug", "")));
            assert!(!accepts(m, &get("/")));
        }
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let m = HttpMatch {
            headers: keyed(&[("x-tag", Some(exact("a,b")))]),
            ..HttpMatch::default()
        };
        let both = get("/").header("x-tag", "a").header("x-tag", "b");
        assert!(accepts(m.clone(), &both));
        assert!(!accepts(m, &get("/").header("x-tag", "a")));
        let m = HttpMatch {
            headers: keyed(&[("x-tag", Some(regex("a,.*")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &both));
    }

    #[test]
    fn header_regex_is_a_full_match() {
        let m = HttpMatch {
            headers: keyed(&[("user-agent", Some(regex(".*Mobile.*")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &get("/").header("user-agent", "X Mobile Y")));
        let m = HttpMatch {
            headers: keyed(&[("user-agent", Some(regex("Mobile")))]),
            ..HttpMatch::default()
        };
        assert!(!accepts(m, &get("/").header("user-agent", "X Mobile Y")));
    }

    #[test]
    fn without_headers_accepts_when_the_header_does_not_match() {
        let m = HttpMatch {
            without_headers: keyed(&[("x-env", Some(exact("prod")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/").header("x-env", "dev")));
        assert!(!accepts(m.clone(), &get("/").header("x-env", "prod")));
        // Missing counts as "": it does not equal "prod".
        assert!(accepts(m, &get("/")));
    }

    #[test]
    fn without_headers_reads_a_missing_header_as_empty() {
        // `.*` matches "", so even a request without the header is refused.
        let m = HttpMatch {
            without_headers: keyed(&[("x-env", Some(regex(".*")))]),
            ..HttpMatch::default()
        };
        assert!(!accepts(m.clone(), &get("/")));
        assert!(!accepts(m, &get("/").header("x-env", "x")));
    }

    #[test]
    fn without_headers_presence_only_needs_the_header_absent() {
        for presence in [None, Some(regex("*"))] {
            let m = HttpMatch {
                without_headers: keyed(&[("x-debug", presence)]),
                ..HttpMatch::default()
            };
            assert!(accepts(m.clone(), &get("/")));
            assert!(!accepts(m, &get("/").header("x-debug", "1")));
        }
    }

    #[test]
    fn pseudo_header_names_read_the_request_line() {
        let m = HttpMatch {
            headers: keyed(&[(":path", Some(exact("/a?b=1")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/a?b=1")));
        assert!(!accepts(m, &get("/a")));
        let m = HttpMatch {
            headers: keyed(&[(":method", Some(exact("GET")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &get("/")));
        let m = HttpMatch {
            headers: keyed(&[(":scheme", Some(exact("http")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &get("/")));
        let m = HttpMatch {
            headers: keyed(&[(":authority", Some(exact("example.com")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &get("/")));
    }

    #[test]
    fn invalid_header_names_are_never_present() {
        let m = HttpMatch {
            headers: keyed(&[("bad name", None)]),
            ..HttpMatch::default()
        };
        assert!(!accepts(m, &get("/")));
        let m = HttpMatch {
            without_headers: keyed(&[("bad name", None)]),
            ..HttpMatch::default()
        };
        assert!(accepts(m, &get("/")));
    }

    #[test]
    fn query_params_match_the_first_value_undecoded() {
        let m = HttpMatch {
            query_params: keyed(&[("v", Some(exact("1")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/?a=x&v=1")));
        assert!(accepts(m.clone(), &get("/?v=1&v=2")));
        assert!(!accepts(m.clone(), &get("/?v=2&v=1")));
        assert!(!accepts(m.clone(), &get("/?v=2")));
        assert!(!accepts(m.clone(), &get("/")));
        // Not percent-decoded, as Envoy's route matcher reads it.
        assert!(!accepts(m, &get("/?v=%31")));
        let encoded = HttpMatch {
            query_params: keyed(&[("v", Some(exact("a%20b")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(encoded, &get("/?v=a%20b")));
    }

    #[test]
    fn query_params_by_prefix_and_regex() {
        let m = HttpMatch {
            query_params: keyed(&[("id", Some(prefix("ab")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/?id=abc")));
        assert!(!accepts(m, &get("/?id=xab")));
        let m = HttpMatch {
            query_params: keyed(&[("id", Some(regex("[0-9]+")))]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/?id=42")));
        assert!(!accepts(m, &get("/?id=42x")));
    }

    #[test]
    fn query_param_presence_only_needs_the_name() {
        for presence in [None, Some(regex("*"))] {
            let m = HttpMatch {
                query_params: keyed(&[("debug", presence)]),
                ..HttpMatch::default()
            };
            assert!(accepts(m.clone(), &get("/?debug")));
            assert!(accepts(m.clone(), &get("/?x=1&debug=")));
            assert!(!accepts(m.clone(), &get("/?debugx=1")));
            assert!(!accepts(m, &get("/")));
        }
    }

    #[test]
    fn query_parsing_follows_envoy_parse_parameters() {
        let pairs = |q| Query::parse(Some(q)).0;
        assert_eq!(pairs("a=1&b"), vec![("a", "1"), ("b", "")]);
        assert_eq!(pairs("a=1=2"), vec![("a", "1=2")]);
        assert_eq!(pairs("a&&b"), vec![("a", ""), ("", ""), ("b", "")]);
        assert_eq!(pairs("&a"), vec![("", ""), ("a", "")]);
        assert_eq!(pairs("a&"), vec![("a", "")]);
        assert!(pairs("").is_empty());
        assert!(Query::parse(None).0.is_empty());
    }

    #[test]
    fn all_fields_of_a_match_must_accept() {
        let m = HttpMatch {
            uri: Some(prefix("/api")),
            method: Some(exact("GET")),
            headers: keyed(&[("x-env", Some(exact("prod")))]),
            query_params: keyed(&[("v", None)]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/api?v").header("x-env", "prod")));
        assert!(!accepts(m.clone(), &get("/api?v").header("x-env", "dev")));
        assert!(!accepts(m.clone(), &get("/api").header("x-env", "prod")));
        assert!(!accepts(m, &get("/web?v").header("x-env", "prod")));
    }

    #[test]
    fn first_route_in_order_wins_and_matches_are_ored() {
        let admin = [uri(prefix("/admin")), uri(exact("/login"))];
        let api = [uri(prefix("/api"))];
        let api_v2 = [uri(prefix("/api/v2"))];
        let all: [HttpMatch; 0] = [];
        let table = CompiledRoutes::from_matches([
            ("admin", &admin[..]),
            ("api", &api[..]),
            ("api-v2 (shadowed)", &api_v2[..]),
            ("catch-all", &all[..]),
        ])
        .expect("compiles");
        let select = |path| table.select(&get(path).facts());
        let at = |route, matched| {
            Some(Selected {
                route,
                matched: Some(matched),
            })
        };
        assert_eq!(select("/admin/x"), at(0, 0));
        assert_eq!(select("/login"), at(0, 1));
        assert_eq!(select("/api/v2/x"), at(1, 0));
        assert_eq!(
            select("/other"),
            Some(Selected {
                route: 3,
                matched: None
            })
        );
    }

    #[test]
    fn no_route_matches_gives_none() {
        let api = [uri(prefix("/api"))];
        let table = CompiledRoutes::from_matches([("api", &api[..])]).expect("compiles");
        assert_eq!(table.select(&get("/web").facts()), None);
        let empty = CompiledRoutes::from_matches([]).expect("compiles");
        assert_eq!(empty.select(&get("/").facts()), None);
    }

    #[test]
    fn a_bad_regex_names_its_route() {
        let bad = [uri(regex("(unclosed"))];
        let err = CompiledRoutes::from_matches([("VirtualService ns/vs spec.http[0]", &bad[..])])
            .expect_err("does not compile");
        assert_eq!(err.route, "VirtualService ns/vs spec.http[0]");
        assert_eq!(err.pattern, "(unclosed");
    }
}
