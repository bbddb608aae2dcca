//! Host matching as Envoy does it for an Istio virtual host: exact names
//! first, then `*.suffix` wildcards longest first, then `*`; case-insensitive,
//! port in the Host header ignored.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    ops::Bound,
};

/// A server host with its `namespace/` prefix removed, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`; matches `a.example.com`
    /// and `a.b.example.com`, never `example.com`.
    Suffix(String),
    /// `*`
    Any,
}

impl HostPattern {
    /// Parses a Gateway server host (`[ns/]name`).
    pub fn from_server_host(host: &str) -> Self {
        let name = host.split_once('/').map_or(host, |(_, name)| name);
        let name = name.to_ascii_lowercase();
        if name == "*" {
            HostPattern::Any
        } else if let Some(suffix) = name.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_string())
        } else {
            HostPattern::Exact(name)
        }
    }

    /// Whether this pattern serves `host` (lower-case, without port).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::Any => true,
        }
    }

    /// Sort key: exact before wildcard, longer wildcard before shorter, `*` last.
    fn precedence(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostPattern::Exact(_) => (0, std::cmp::Reverse(0)),
            HostPattern::Suffix(suffix) => (1, std::cmp::Reverse(suffix.len())),
            HostPattern::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// Istio's host intersection (`host.Names.Intersection`): the more specific
/// of two patterns when one covers the other, else `None`.
/// `*.example.com` and `a.example.com` give `a.example.com`.
pub fn intersect(a: &HostPattern, b: &HostPattern) -> Option<HostPattern> {
    use HostPattern::{Any, Exact, Suffix};
    match (a, b) {
        (Any, other) | (other, Any) => Some(other.clone()),
        (Exact(x), Exact(y)) => (x == y).then(|| a.clone()),
        (Exact(name), pattern @ Suffix(_)) | (pattern @ Suffix(_), Exact(name)) => {
            pattern.matches(name).then(|| Exact(name.clone()))
        }
        (Suffix(x), Suffix(y)) => {
            if x.ends_with(y.as_str()) {
                Some(a.clone())
            } else if y.ends_with(x.as_str()) {
                Some(b.clone())
            } else {
                None
            }
        }
    }
}

/// Host patterns, each with a value, indexed so that the patterns that
/// intersect a given one, cover it or match a name are found by lookups and
/// at most two range reads instead of a scan: binding n hosts against n
/// hosts costs O(n log n) plus what matches, where comparing every pair
/// cost O(n²) (issue 19: 20,000 hosts took 25 s).
///
/// Every answer is checked with [`intersect`] or [`HostPattern::matches`]
/// themselves; the index only chooses which entries to check, and never
/// leaves out one they would accept.
#[derive(Clone, Debug)]
pub struct HostIndex<T> {
    entries: Vec<(HostPattern, T)>,
    /// Exact names, bytes reversed, to entry indices: the names a wildcard
    /// covers (names ending in its suffix) are one range of this map.
    exact: BTreeMap<Vec<u8>, Vec<usize>>,
    /// Wildcard suffixes (`.example.com`), bytes reversed, likewise.
    suffix: BTreeMap<Vec<u8>, Vec<usize>>,
    /// The lengths of the suffixes held: the suffixes of a name that may be
    /// held are looked up at these lengths only.
    suffix_lengths: BTreeSet<usize>,
    /// Entries whose pattern is `*`.
    any: Vec<usize>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            entries: Vec::new(),
            exact: BTreeMap::new(),
            suffix: BTreeMap::new(),
            suffix_lengths: BTreeSet::new(),
            any: Vec::new(),
        }
    }
}

fn reversed(text: &str) -> Vec<u8> {
    text.bytes().rev().collect()
}

impl<T> HostIndex<T> {
    /// Adds an entry; its index is the number of entries before it.
    pub fn push(&mut self, pattern: HostPattern, value: T) {
        let at = self.entries.len();
        match &pattern {
            HostPattern::Exact(name) => self.exact.entry(reversed(name)).or_default().push(at),
            HostPattern::Suffix(suffix) => {
                self.suffix_lengths.insert(suffix.len());
                self.suffix.entry(reversed(suffix)).or_default().push(at);
            }
            HostPattern::Any => self.any.push(at),
        }
        self.entries.push((pattern, value));
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[(HostPattern, T)] {
        &self.entries
    }

    /// Indices of the entries whose pattern intersects `query`, ascending,
    /// each with `intersect(query, its pattern)`.
    pub fn intersecting(&self, query: &HostPattern) -> Vec<(usize, HostPattern)> {
        let mut candidates = match query {
            HostPattern::Any => (0..self.entries.len()).collect(),
            HostPattern::Exact(name) => self.covering_candidates(name.as_bytes(), false),
            HostPattern::Suffix(suffix) => {
                let key = reversed(suffix);
                let mut found = self.covering_candidates(suffix.as_bytes(), true);
                // Names and longer (or equal) suffixes ending in this suffix.
                for map in [&self.exact, &self.suffix] {
                    found.extend(starting_with(map, &key).flatten().copied());
                }
                found
            }
        };
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|at| Some((at, intersect(query, &self.entries[at].0)?)))
            .collect()
    }

    /// Indices of the entries whose pattern covers `query` (their
    /// intersection with it is `query` itself), ascending.
    pub fn covering(&self, query: &HostPattern) -> Vec<usize> {
        let mut candidates = match query {
            HostPattern::Any => self.any.clone(),
            HostPattern::Exact(name) => self.covering_candidates(name.as_bytes(), false),
            HostPattern::Suffix(suffix) => self.covering_candidates(suffix.as_bytes(), true),
        };
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|&at| intersect(&self.entries[at].0, query).as_ref() == Some(query));
        candidates
    }

    /// Indices of the entries whose pattern matches the name `host`
    /// ([`HostPattern::matches`]), ascending.
    pub fn matching(&self, host: &str) -> Vec<usize> {
        let mut candidates = self.covering_candidates(host.as_bytes(), false);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|&at| self.entries[at].0.matches(host));
        candidates
    }

    /// Unordered: `*`, the exact name `text` (unless it is a suffix), and
    /// the suffixes held that end `text`, shorter than it, or as long too
    /// when `text` is itself a suffix.
    fn covering_candidates(&self, text: &[u8], text_is_suffix: bool) -> Vec<usize> {
        let key: Vec<u8> = text.iter().rev().copied().collect();
        let mut found = self.any.clone();
        if !text_is_suffix {
            found.extend(self.exact.get(&key).into_iter().flatten().copied());
        }
        let longest = if text_is_suffix {
            Bound::Included(key.len())
        } else {
            Bound::Excluded(key.len())
        };
        for &length in self.suffix_lengths.range((Bound::Unbounded, longest)) {
            found.extend(
                self.suffix
                    .get(&key[..length])
                    .into_iter()
                    .flatten()
                    .copied(),
            );
        }
        found
    }
}

/// The values of `map` whose key starts with `prefix`.
fn starting_with<'a>(
    map: &'a BTreeMap<Vec<u8>, Vec<usize>>,
    prefix: &'a [u8],
) -> impl Iterator<Item = &'a Vec<usize>> + 'a {
    map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
        .map(|(_, at)| at)
}

/// What the proxy does for requests to one virtual host.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    pub pattern: HostPattern,
    /// Answer every request with a 301 to `https://` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// In evaluation order, catch-alls last; empty answers 404.
    pub routes: Vec<crate::compile::Route>,
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
                .precedence()
                .cmp(&b.pattern.precedence())
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        HostTable { hosts: merged }
    }

    /// The virtual host serving a Host header value (or :authority).
    pub fn lookup(&self, authority: &str) -> Option<&VirtualHost> {
        self.position(authority).and_then(|at| self.hosts.get(at))
    }

    /// The index in [`HostTable::hosts`] of the virtual host serving `authority`.
    pub fn position(&self, authority: &str) -> Option<usize> {
        let host = strip_port(authority);
        // Copied only when it has capitals: clients send lowercase names.
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        self.hosts.iter().position(|vh| vh.pattern.matches(&host))
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
fn positions_by_source(routes: &[crate::compile::Route]) -> HashMap<String, Vec<usize>> {
    let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
    for (position, route) in routes.iter().enumerate() {
        by_source
            .entry(route.source.clone())
            .or_default()
            .push(position);
    }
    by_source
}

/// `example.com:8080` -> `example.com`; `[2001:db8::1]:80` -> `[2001:db8::1]`.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
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

    fn pattern(text: &str) -> HostPattern {
        HostPattern::from_server_host(text)
    }

    #[test]
    fn intersection_takes_the_more_specific_host() {
        let i = |a, b| intersect(&pattern(a), &pattern(b)).map(|p| p.to_string());
        assert_eq!(
            i("*.example.com", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            i("a.example.com", "*.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(i("*", "a.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(
            i("*.example.com", "*.a.example.com").as_deref(),
            Some("*.a.example.com")
        );
        assert_eq!(i("*.example.com", "example.com"), None);
        assert_eq!(i("a.example.com", "b.example.com"), None);
    }

    /// Patterns over a tiny alphabet, so that many share suffixes; the
    /// strings are free-form (a suffix without its dot, an empty one), as
    /// the index must hold whatever a pattern holds.
    fn any_pattern() -> impl proptest::strategy::Strategy<Value = HostPattern> {
        use proptest::prelude::*;
        ("[ab.]{0,5}", 0..3u8).prop_map(|(text, kind)| match kind {
            0 => HostPattern::Exact(text),
            1 => HostPattern::Suffix(text),
            _ => HostPattern::Any,
        })
    }

    proptest::proptest! {
        /// The index answers as comparing every entry would.
        #[test]
        fn index_finds_what_a_scan_finds(
            stored in proptest::collection::vec(any_pattern(), 0..40),
            query in any_pattern(),
            name in "[ab.]{0,6}",
        ) {
            let mut index = HostIndex::default();
            for pattern in &stored {
                index.push(pattern.clone(), ());
            }
            let scan: Vec<(usize, HostPattern)> = stored
                .iter()
                .enumerate()
                .filter_map(|(at, p)| Some((at, intersect(&query, p)?)))
                .collect();
            proptest::prop_assert_eq!(index.intersecting(&query), scan);
            let covering: Vec<usize> = stored
                .iter()
                .enumerate()
                .filter(|(_, p)| intersect(p, &query).as_ref() == Some(&query))
                .map(|(at, _)| at)
                .collect();
            proptest::prop_assert_eq!(index.covering(&query), covering);
            let matching: Vec<usize> = stored
                .iter()
                .enumerate()
                .filter(|(_, p)| p.matches(&name))
                .map(|(at, _)| at)
                .collect();
            proptest::prop_assert_eq!(index.matching(&name), matching);
        }
    }

    #[test]
    fn ipv6_literal_authority_keeps_brackets() {
        assert_eq!(strip_port("[2001:db8::1]:80"), "[2001:db8::1]");
        assert_eq!(strip_port("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(strip_port("example.com"), "example.com");
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

    fn route(source: &str, status: u16) -> crate::compile::Route {
        crate::compile::Route {
            source: source.to_string(),
            matches: Vec::new(),
            action: crate::compile::RouteAction::DirectResponse { status, body: None },
            catch_all: false,
            request_headers: Default::default(),
            response_headers: Default::default(),
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
