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

use hyper::header::HeaderName;
use regex::bytes::{Regex, RegexBuilder};

use super::RequestFacts;
use crate::plan::{HttpMatch, Route, StringMatch};

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
        Ok(Self { routes })
    }

    /// The first route that accepts `req`, in Istio's order.
    pub fn select(&self, req: &RequestFacts<'_>) -> Option<Selected> {
        first_accepting(self.routes.iter().map(Vec::as_slice), req)
    }
}

/// The first of `routes` (each given by its compiled matches) that accepts
/// `req`, in Istio's order.
pub(super) fn first_accepting<'m>(
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
pub(super) fn compile_matches(
    source: &str,
    matches: &[HttpMatch],
) -> Result<Vec<CompiledMatch>, RouteError> {
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

type CompileError = (String, regex::Error);

/// One `http[].match[]` entry; every rule must accept.
#[derive(Debug)]
pub(super) struct CompiledMatch {
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
        Ok(Self {
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
pub(super) enum Value {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Value {
    pub(super) fn new(m: &StringMatch) -> Result<Self, CompileError> {
        Ok(match m {
            StringMatch::Exact(s) => Self::Exact(s.clone()),
            StringMatch::Prefix(s) => Self::Prefix(s.clone()),
            StringMatch::Regex(re) => Self::Regex(
                RegexBuilder::new(&format!(r"\A(?:{re})\z"))
                    .build()
                    .map_err(|err| (re.clone(), err))?,
            ),
        })
    }

    pub(super) fn accepts(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(s) => value == s.as_bytes(),
            Self::Prefix(s) => value.starts_with(s.as_bytes()),
            Self::Regex(re) => re.is_match(value),
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
            ":method" => Self::Method,
            ":scheme" => Self::Scheme,
            ":authority" => Self::Authority,
            ":path" => Self::Path,
            _ => HeaderName::from_bytes(name.as_bytes()).map_or(Self::Never, Source::Header),
        }
    }

    /// The value Envoy would match: all values joined with `,`; `None` when absent.
    fn value<'r>(&self, req: &RequestFacts<'r>) -> Option<Cow<'r, [u8]>> {
        match self {
            Self::Method => Some(Cow::Borrowed(req.method.as_bytes())),
            Self::Scheme => Some(Cow::Borrowed(req.scheme.as_bytes())),
            Self::Authority => Some(Cow::Borrowed(req.authority.as_bytes())),
            Self::Path => Some(match req.query {
                Some(query) => Cow::Owned(format!("{}?{query}", req.path).into_bytes()),
                None => Cow::Borrowed(req.path.as_bytes()),
            }),
            Self::Header(name) => {
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
            Self::Never => None,
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
        Ok(Self {
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
mod tests;
