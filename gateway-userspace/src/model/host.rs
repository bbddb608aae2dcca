//! Host patterns and host matching as Envoy does it for an Istio virtual
//! host or TLS server: exact names first, then `*.suffix` wildcards longest
//! first, then `*` (one rule, [`gateway_common::host_rank`]);
//! case-insensitive, port in the Host header ignored.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    ops::Bound,
};

use gateway_common::{HOST_ANY, HOST_EXACT, HOST_SUFFIX, HostRank, host_rank};

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
            Self::Any
        } else if let Some(suffix) = name.strip_prefix('*') {
            Self::Suffix(suffix.to_string())
        } else {
            Self::Exact(name)
        }
    }

    /// Whether this pattern serves `host` (lower-case, without port).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Self::Any => true,
        }
    }

    /// This pattern's place in Envoy's host precedence: exact before
    /// wildcard, longer wildcard before shorter, `*` last.
    pub fn rank(&self) -> HostRank {
        match self {
            Self::Exact(_) => host_rank(HOST_EXACT, 0),
            Self::Suffix(suffix) => host_rank(HOST_SUFFIX, suffix.len()),
            Self::Any => host_rank(HOST_ANY, 0),
        }
    }

    /// The rank with which this pattern serves `host`, if it does.
    pub fn rank_for(&self, host: &str) -> Option<HostRank> {
        self.matches(host).then(|| self.rank())
    }
}

/// The item whose patterns serve `host` best in Envoy's precedence (the
/// first item on a tie); `host` `None` (no SNI) is served by `*` alone.
/// HTTP `Host` routing, TLS server selection and cluster policy lookup all
/// choose with it.
pub fn best_match<'a, T, P>(
    items: impl IntoIterator<Item = &'a T>,
    patterns: impl Fn(&'a T) -> P,
    host: Option<&str>,
) -> Option<&'a T>
where
    T: 'a,
    P: IntoIterator<Item = &'a HostPattern>,
{
    let mut best: Option<(HostRank, &T)> = None;
    for item in items {
        for pattern in patterns(item) {
            let rank = match host {
                Some(host) => pattern.rank_for(host),
                None => (*pattern == HostPattern::Any).then(|| pattern.rank()),
            };
            if let Some(rank) = rank {
                if best.is_none_or(|(held, _)| rank < held) {
                    best = Some((rank, item));
                }
            }
        }
    }
    best.map(|(_, item)| item)
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Any => f.write_str("*"),
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
        Self {
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

/// The host name an authority (a Host header value or `:authority`) names,
/// as virtual hosts match it: port removed, lower-cased (copied only when
/// it has capitals: clients send lowercase names).
pub fn authority_host(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = strip_port(authority);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// `example.com:8080` -> `example.com`; `[2001:db8::1]:80` -> `[2001:db8::1]`.
pub fn strip_port(authority: &str) -> &str {
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
}
