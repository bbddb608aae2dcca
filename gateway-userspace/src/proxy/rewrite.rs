//! What the proxy does to a request's URI around routing, as Envoy does it
//! for an Istio gateway: path normalization before routing, then after a
//! route matched its `rewrite.uri` (Envoy `prefix_rewrite`),
//! `uriRegexRewrite` (Envoy `regex_rewrite`) or `redirect` (Envoy
//! `RedirectAction`, built by Istio's `ApplyRedirect`).
use regex::Regex;

use crate::plan::{HttpRedirect, StringMatch};

/// A path the proxy must answer with 400 instead of routing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A NUL byte, raw or as `%00`: Envoy's canonicalizer refuses it.
    #[error("path contains a NUL byte")]
    Nul,
}

/// Envoy's `normalize_path: true` (Istio's default `PATH_NORMALIZATION=BASE`:
/// no `merge_slashes`), which runs `PathUtil::canonicalPath`, i.e. the
/// Chromium URL library's `CanonicalizePath` on the part before `?`; the
/// query is kept verbatim. That canonicalizer:
/// - resolves `.` and `..` segments (`%2e` counts as a dot), never above
///   the root (`/../a` is `/a`);
/// - turns `\` into `/`;
/// - decodes escapes of unreserved characters (`%41` is `A`, `%7E` is `~`)
///   and keeps every other valid escape as sent, hex case included (it does
///   not upper-case, unlike RFC 3986 §6.2.2.1, in case the backend cares);
/// - passes a `%` that starts no valid escape through unchanged;
/// - escapes bytes that cannot appear in a path (controls, space, `"`, `#`,
///   `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, DEL, non-ASCII) as upper-case `%XX`;
/// - keeps repeated slashes, and prepends `/` to a path without one.
///
/// Errors only on NUL, which Envoy answers with 400.
pub fn normalize_path(path_and_query: &str) -> Result<String, PathError> {
    let (path, query) = match path_and_query.find('?') {
        Some(at) => path_and_query.split_at(at),
        None => (path_and_query, ""),
    };
    let input = path.as_bytes();
    let mut out = String::with_capacity(path_and_query.len() + 1);
    if !input.first().is_some_and(|&b| is_slash(b)) {
        out.push('/');
    }
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if let Some(dot) = dot_at(input, i) {
            if out.ends_with('/') {
                match after_dot(input, i + dot) {
                    AfterDot::Name => {
                        out.push('.');
                        i += dot;
                    }
                    AfterDot::Current(consumed) => i += dot + consumed,
                    AfterDot::Parent(consumed) => {
                        up_one_segment(&mut out);
                        i += dot + consumed;
                    }
                }
            } else {
                out.push('.');
                i += dot;
            }
        } else if b == b'\\' {
            out.push('/');
            i += 1;
        } else if b == b'%' {
            match escape_at(input, i) {
                Some(0) => return Err(PathError::Nul),
                Some(decoded) if is_unreserved(decoded) => out.push(char::from(decoded)),
                // Kept as sent: `%` and the two hex digits `escape_at` checked.
                Some(_) => out.push_str(path.get(i..i + 3).unwrap_or_default()),
                None => {
                    out.push('%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else if b == 0 {
            return Err(PathError::Nul);
        } else if must_escape(b) {
            push_escaped(&mut out, b);
            i += 1;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    out.push_str(query);
    Ok(out)
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// RFC 3986 unreserved, the escapes the canonicalizer decodes.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes the canonicalizer escapes (its table's `ESCAPE` entries; `%` and
/// `\` are handled before this is asked).
fn must_escape(b: u8) -> bool {
    b <= b' '
        || b >= 0x7f
        || matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'?' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// The byte a valid `%XX` at `at` stands for.
fn escape_at(input: &[u8], at: usize) -> Option<u8> {
    let hex = input.get(at + 1..at + 3)?;
    let hex = std::str::from_utf8(hex).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Length of the dot at `at`: 1 for `.`, 3 for `%2e`/`%2E`.
fn dot_at(input: &[u8], at: usize) -> Option<usize> {
    match input.get(at..)? {
        [b'.', ..] => Some(1),
        [b'%', b'2', b'e' | b'E', ..] => Some(3),
        _ => None,
    }
}

enum AfterDot {
    /// The dot starts a name (`.hidden`, `..x`).
    Name,
    /// `.` segment: skip it and this many bytes after the dot.
    Current(usize),
    /// `..` segment: drop one output segment, skip this many bytes after the first dot.
    Parent(usize),
}

/// What follows a dot that starts a segment.
fn after_dot(input: &[u8], at: usize) -> AfterDot {
    match input.get(at) {
        None => return AfterDot::Current(0),
        Some(&b) if is_slash(b) => return AfterDot::Current(1),
        Some(_) => {}
    }
    if let Some(second) = dot_at(input, at) {
        match input.get(at + second) {
            None => return AfterDot::Parent(second),
            Some(&b) if is_slash(b) => return AfterDot::Parent(second + 1),
            Some(_) => {}
        }
    }
    AfterDot::Name
}

/// Drops the last segment of `out` (which ends with `/`), never the root.
fn up_one_segment(out: &mut String) {
    let without_slash = out.len().saturating_sub(1);
    let keep = out
        .get(..without_slash)
        .and_then(|head| head.rfind('/'))
        .map_or(1, |slash| slash + 1);
    out.truncate(keep);
}

/// Istio's `rewrite.uri`, which it always emits as Envoy `prefix_rewrite`:
/// the part of the path the route matched is replaced, the rest (query
/// included) is kept. What was matched depends on the match's `uri`:
/// a prefix match matched its prefix (compared ASCII case-insensitively,
/// as for `ignoreUriCase`); an exact or regex match matched the whole path
/// without the query; no `uri` is Istio's default prefix `/`. So `rewrite:
/// /v2` on `prefix: /v1` turns `/v1/x?q` into `/v2/x?q`, and `rewrite: /`
/// on `prefix: /api` turns `/api/x` into `//x`, as Envoy does.
///
/// An empty `rewrite` is no rewrite (Istio sets none), and a path that does
/// not start with the matched prefix is left alone (Envoy refuses it).
pub fn rewrite_uri(path_and_query: &str, matched: Option<&StringMatch>, rewrite: &str) -> String {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    let replaced = match matched {
        Some(StringMatch::Prefix(prefix)) => prefix.as_str(),
        Some(StringMatch::Exact(_) | StringMatch::Regex(_)) => path,
        None => "/",
    };
    let head = path_and_query.get(..replaced.len());
    let tail = path_and_query.get(replaced.len()..);
    match (head, tail) {
        (Some(head), Some(tail)) if !rewrite.is_empty() && head.eq_ignore_ascii_case(replaced) => {
            format!("{rewrite}{tail}")
        }
        _ => path_and_query.to_string(),
    }
}

/// A `uriRegexRewrite` whose pattern or substitution is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The pattern is not a valid regex.
    #[error("regex {0:?} does not compile")]
    Regex(String, #[source] regex::Error),
    /// The substitution has an escape RE2 refuses or names a missing group.
    #[error("substitution {substitution:?}: {reason}")]
    Substitution {
        substitution: String,
        reason: &'static str,
    },
}

/// Istio's `uriRegexRewrite` (Envoy `regex_rewrite`), compiled once:
/// every match of the (unanchored) pattern in the path, query excluded,
/// is replaced. The substitution uses RE2's syntax: `\0`..`\9` for groups,
/// `\\` for a backslash.
#[derive(Clone, Debug)]
pub struct RegexRewrite {
    regex: Regex,
    /// The substitution in the regex crate's syntax (`${1}`, `$$`).
    replacement: String,
}

impl RegexRewrite {
    /// Compiles `pattern` and checks `substitution` as RE2's
    /// `CheckRewriteString` does (valid escapes, groups that exist).
    pub fn new(pattern: &str, substitution: &str) -> Result<Self, RewriteError> {
        let regex = Regex::new(pattern).map_err(|err| RewriteError::Regex(pattern.into(), err))?;
        let invalid = |reason| RewriteError::Substitution {
            substitution: substitution.into(),
            reason,
        };
        let mut replacement = String::with_capacity(substitution.len());
        let mut chars = substitution.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => replacement.push('\\'),
                    Some(digit) if digit.is_ascii_digit() => {
                        let group = digit.to_digit(10).map_or(0, |d| d as usize);
                        if group >= regex.captures_len() {
                            return Err(invalid("refers to a group the pattern does not have"));
                        }
                        replacement.push_str(&format!("${{{group}}}"));
                    }
                    _ => return Err(invalid("a backslash must be followed by a digit or \\")),
                },
                '$' => replacement.push_str("$$"),
                c => replacement.push(c),
            }
        }
        Ok(Self { regex, replacement })
    }

    /// The rewritten `path_and_query`; unchanged when the rewrite would
    /// leave an empty path (Envoy treats that as a failed rewrite).
    pub fn apply(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        let rewritten = self.regex.replace_all(path, self.replacement.as_str());
        if rewritten.is_empty() {
            return path_and_query.to_string();
        }
        format!("{rewritten}{query}")
    }
}

/// The request facts a redirect is built from.
#[derive(Clone, Copy, Debug)]
pub struct RedirectRequest<'a> {
    /// `http` or `https`, as the request arrived (Envoy's `:scheme`, which
    /// at an edge gateway is also `x-forwarded-proto`).
    pub scheme: &'a str,
    /// `:authority` or `Host`, as sent (port included).
    pub authority: &'a str,
    /// `:path`, query included.
    pub path_and_query: &'a str,
    /// The `uri` of the match that selected the route: what
    /// `prefixRewrite` replaces.
    pub matched_uri: Option<&'a StringMatch>,
}

/// The status of a redirect: `redirectCode`, 301 when unset.
pub fn redirect_status(redirect: &HttpRedirect) -> u16 {
    match redirect.code {
        0 => 301,
        code => code,
    }
}

/// The `Location` of a VirtualService `redirect`, as Istio's `ApplyRedirect`
/// configures Envoy and Envoy's `Utility::newUri` builds it:
/// - scheme: `scheme`, else the request's;
/// - port: `port`, except that Istio drops 80 for http and 443 for https,
///   judging the scheme by `scheme` or else by the listener (`listener_tls`);
/// - host: `authority` verbatim, else the request's host; the request's port
///   is dropped when a port is set, or when the scheme changes and the port
///   was the old scheme's default (`http://a:80` to `https://a`);
/// - path: `uri`, keeping the request's query unless `uri` has its own;
///   or the request's path and query with `prefixRewrite` in place of
///   what the route's match matched ([`rewrite_uri`], as Envoy applies its
///   `prefix_rewrite` to a redirect's path); else the request's path and
///   query; always starting with `/`.
pub fn redirect_location(
    redirect: &HttpRedirect,
    req: RedirectRequest<'_>,
    listener_tls: bool,
) -> String {
    let scheme = non_empty(&redirect.scheme).unwrap_or(req.scheme);
    let istio_scheme =
        non_empty(&redirect.scheme).unwrap_or(if listener_tls { "https" } else { "http" });
    let port = redirect
        .port
        .filter(|&port| !matches!((port, istio_scheme), (80, "http") | (443, "https")))
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    let host = match non_empty(&redirect.authority) {
        Some(authority) => authority,
        None => request_host(req, scheme, !port.is_empty()),
    };
    let path = match (
        non_empty(&redirect.uri),
        non_empty(&redirect.prefix_rewrite),
    ) {
        (Some(uri), _) if uri.contains('?') => uri.to_string(),
        (Some(uri), _) => match req.path_and_query.find('?') {
            Some(at) => format!("{uri}{}", req.path_and_query.get(at..).unwrap_or_default()),
            None => uri.to_string(),
        },
        (None, Some(prefix)) => rewrite_uri(req.path_and_query, req.matched_uri, prefix),
        (None, None) => req.path_and_query.to_string(),
    };
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}{port}{slash}{path}")
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Envoy's `processRequestHost`: the request's authority, without its port
/// when a new port replaces it or when the scheme changes away from a
/// request on its default port.
fn request_host<'a>(req: RedirectRequest<'a>, new_scheme: &str, new_port: bool) -> &'a str {
    let host = req.authority;
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|at| at + 1)
    } else {
        host.rfind(':')
    };
    let Some(port_at) = port_at else {
        return host;
    };
    let (name, port) = host.split_at(port_at);
    let default_port = (req.scheme.eq_ignore_ascii_case("https") && port == ":443")
        || (req.scheme.eq_ignore_ascii_case("http") && port == ":80");
    if new_port || (new_scheme != req.scheme && default_port) {
        name
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(path: &str) -> String {
        normalize_path(path).expect("normalizes")
    }

    #[test]
    fn dot_segments_are_resolved_never_above_the_root() {
        for (input, expected) in [
            ("/a/b/../c", "/a/c"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../", "/"),
            ("/./", "/"),
            ("/.", "/"),
            ("/abc/../../..", "/"),
            ("/../a", "/a"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(normalized(input), expected, "{input}");
        }
    }

    #[test]
    fn dots_inside_names_are_not_segments() {
        for (input, expected) in [
            ("/.hidden", "/.hidden"),
            ("/..a", "/..a"),
            ("/a..", "/a.."),
            ("/a/...", "/a/..."),
            ("/a.b/../c", "/c"),
        ] {
            assert_eq!(normalized(input), expected, "{input}");
        }
    }

    #[test]
    fn encoded_dots_count_as_dots() {
        assert_eq!(normalized("/a/%2e%2E/b"), "/b");
        assert_eq!(normalized("/a/%2e/b"), "/a/b");
        assert_eq!(normalized("/a/.%2e/b"), "/b");
        assert_eq!(normalized("/x%2ey"), "/x.y");
    }

    #[test]
    fn backslashes_are_slashes() {
        assert_eq!(normalized("/a\\b"), "/a/b");
        assert_eq!(normalized("\\a\\..\\b"), "/b");
        assert_eq!(normalized("/a/.\\b"), "/a/b");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_as_sent() {
        assert_eq!(normalized("/%41%62%2D%5f%7E%30"), "/Ab-_~0");
        // Reserved and other escapes stay, hex case untouched.
        assert_eq!(normalized("/a%2Fb%2fc%20d%3F"), "/a%2Fb%2fc%20d%3F");
        assert_eq!(normalized("/%c0%af"), "/%c0%af");
    }

    #[test]
    fn invalid_escapes_pass_through() {
        assert_eq!(normalized("/%"), "/%");
        assert_eq!(normalized("/%zz"), "/%zz");
        assert_eq!(normalized("/%4"), "/%4");
        assert_eq!(normalized("/%%41"), "/%A");
    }

    #[test]
    fn bytes_that_cannot_be_in_a_path_are_escaped_upper_case() {
        assert_eq!(
            normalized("/a b\"<>^`{|}#"),
            "/a%20b%22%3C%3E%5E%60%7B%7C%7D%23"
        );
        assert_eq!(normalized("/é"), "/%C3%A9");
        assert_eq!(normalized("/\u{7f}\t"), "/%7F%09");
        // What needs no escape is kept: sub-delims, `:`, `@`, `[`, `]`.
        assert_eq!(normalized("/!$&'()*+,;=:@[]"), "/!$&'()*+,;=:@[]");
    }

    #[test]
    fn repeated_slashes_are_kept_and_a_missing_root_is_added() {
        assert_eq!(normalized("//a///b"), "//a///b");
        assert_eq!(normalized("a/b"), "/a/b");
        assert_eq!(normalized(""), "/");
    }

    #[test]
    fn the_query_is_kept_verbatim() {
        assert_eq!(normalized("/a/../b?x=/../%41"), "/b?x=/../%41");
        assert_eq!(normalized("/a/..?"), "/?");
    }

    #[test]
    fn nul_is_an_error() {
        assert_eq!(normalize_path("/a%00b"), Err(PathError::Nul));
        assert_eq!(normalize_path("/a\0b"), Err(PathError::Nul));
        assert_eq!(normalized("/a?%00"), "/a?%00");
    }

    fn prefix(s: &str) -> StringMatch {
        StringMatch::Prefix(s.into())
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let m = prefix("/v1");
        assert_eq!(
            rewrite_uri("/v1/users?id=1", Some(&m), "/v2"),
            "/v2/users?id=1"
        );
        assert_eq!(rewrite_uri("/v1", Some(&m), "/v2"), "/v2");
        // Compared case-insensitively, as ignoreUriCase lets it match.
        assert_eq!(rewrite_uri("/V1/x", Some(&m), "/v2"), "/v2/x");
    }

    #[test]
    fn rewrite_to_slash_keeps_what_followed_the_prefix() {
        assert_eq!(rewrite_uri("/api/x", Some(&prefix("/api")), "/"), "//x");
        assert_eq!(rewrite_uri("/api/x", Some(&prefix("/api/")), "/"), "/x");
    }

    #[test]
    fn exact_and_regex_matches_rewrite_the_whole_path() {
        let exact = StringMatch::Exact("/login".into());
        assert_eq!(
            rewrite_uri("/login?next=/", Some(&exact), "/auth/login"),
            "/auth/login?next=/"
        );
        let regex = StringMatch::Regex("/v1/.*".into());
        assert_eq!(rewrite_uri("/v1/a/b?q", Some(&regex), "/v2"), "/v2?q");
    }

    #[test]
    fn no_uri_match_is_the_default_slash_prefix() {
        assert_eq!(rewrite_uri("/foo?q", None, "/v2/"), "/v2/foo?q");
        assert_eq!(rewrite_uri("/foo", None, "/v2"), "/v2foo");
    }

    #[test]
    fn empty_rewrite_or_foreign_path_is_left_alone() {
        assert_eq!(rewrite_uri("/v1/x", Some(&prefix("/v1")), ""), "/v1/x");
        assert_eq!(rewrite_uri("/v3/x", Some(&prefix("/v1")), "/v2"), "/v3/x");
        assert_eq!(rewrite_uri("/é", Some(&prefix("/e")), "/v2"), "/é");
    }

    fn regex_rewrite(pattern: &str, substitution: &str, path: &str) -> String {
        RegexRewrite::new(pattern, substitution)
            .expect("valid rewrite")
            .apply(path)
    }

    #[test]
    fn regex_rewrite_follows_envoys_documented_examples() {
        assert_eq!(
            regex_rewrite(
                r"^/service/([^/]+)(/.*)$",
                r"\2/instance/\1",
                "/service/foo/v1/api"
            ),
            "/v1/api/instance/foo"
        );
        assert_eq!(
            regex_rewrite("one", "two", "/xxx/one/yyy/one/zzz"),
            "/xxx/two/yyy/two/zzz"
        );
        assert_eq!(
            regex_rewrite(r"^(.*?)one(.*)$", r"\1two\2", "/xxx/one/yyy/one/zzz"),
            "/xxx/two/yyy/one/zzz"
        );
        assert_eq!(
            regex_rewrite("(?i)/xxx/", "/yyy/", "/aaa/XxX/bbb"),
            "/aaa/yyy/bbb"
        );
    }

    #[test]
    fn regex_rewrite_leaves_the_query_alone() {
        assert_eq!(regex_rewrite("one", "two", "/one?one=1"), "/two?one=1");
    }

    #[test]
    fn regex_rewrite_substitution_uses_re2_escapes() {
        assert_eq!(regex_rewrite("(a)", r"\0-\1-\\-$1", "/a"), "/a-a-\\-$1");
    }

    #[test]
    fn regex_rewrite_to_nothing_is_no_rewrite() {
        assert_eq!(regex_rewrite(".*", "", "/a?q"), "/a?q");
    }

    #[test]
    fn bad_regex_rewrites_are_refused() {
        assert!(matches!(
            RegexRewrite::new("(", "x"),
            Err(RewriteError::Regex(..))
        ));
        for substitution in [r"\2", r"\x", "\\"] {
            assert!(
                matches!(
                    RegexRewrite::new("(a)", substitution),
                    Err(RewriteError::Substitution { .. })
                ),
                "{substitution}"
            );
        }
    }

    fn request(
        scheme: &'static str,
        authority: &'static str,
        path: &'static str,
    ) -> RedirectRequest<'static> {
        RedirectRequest {
            scheme,
            authority,
            path_and_query: path,
            matched_uri: None,
        }
    }

    #[test]
    fn redirect_prefix_rewrite_replaces_the_matched_prefix_as_envoy_does() {
        let prefix = |p: &str| StringMatch::Prefix(p.into());
        let redirect = HttpRedirect {
            authority: Some("foo.example.com".into()),
            prefix_rewrite: Some("/".into()),
            ..HttpRedirect::default()
        };
        let foo = prefix("/foo/");
        let req = RedirectRequest {
            matched_uri: Some(&foo),
            ..request("http", "example.com", "/foo/bar?q=1")
        };
        // istio/api's example: /foo/bar on example.com to foo.example.com/bar.
        assert_eq!(location(redirect, req), "http://foo.example.com/bar?q=1");
        // Its other examples: `/bar` for prefix `/foo`, and `/` leaving `//baz`.
        let to = |rewrite: &str| HttpRedirect {
            prefix_rewrite: Some(rewrite.into()),
            ..HttpRedirect::default()
        };
        let foo = prefix("/foo");
        let req = RedirectRequest {
            matched_uri: Some(&foo),
            ..request("https", "a.com", "/foo/baz")
        };
        assert_eq!(location(to("/bar"), req), "https://a.com/bar/baz");
        assert_eq!(location(to("/"), req), "https://a.com//baz");
        // No uri match is Istio's default prefix `/`.
        let req = request("http", "a.com", "/x");
        assert_eq!(location(to("/v2/"), req), "http://a.com/v2/x");
    }

    fn location(redirect: HttpRedirect, req: RedirectRequest<'_>) -> String {
        redirect_location(&redirect, req, false)
    }

    #[test]
    fn redirect_uri_replaces_the_path_and_keeps_the_query_unless_it_has_one() {
        let req = request("http", "example.com", "/old?x=1");
        let to = |uri: &str| HttpRedirect {
            uri: Some(uri.into()),
            ..HttpRedirect::default()
        };
        assert_eq!(location(to("/new"), req), "http://example.com/new?x=1");
        assert_eq!(location(to("/new?y=2"), req), "http://example.com/new?y=2");
        assert_eq!(location(to("new"), req), "http://example.com/new?x=1");
        assert_eq!(
            location(HttpRedirect::default(), req),
            "http://example.com/old?x=1"
        );
    }

    #[test]
    fn redirect_authority_replaces_the_host_and_its_port() {
        let redirect = HttpRedirect {
            authority: Some("other.com".into()),
            ..HttpRedirect::default()
        };
        let req = request("http", "example.com:8080", "/p");
        assert_eq!(location(redirect.clone(), req), "http://other.com/p");
        let with_port = HttpRedirect {
            port: Some(9000),
            ..redirect
        };
        assert_eq!(location(with_port, req), "http://other.com:9000/p");
    }

    #[test]
    fn redirect_scheme_drops_only_the_old_schemes_default_port() {
        let https = HttpRedirect {
            scheme: Some("https".into()),
            ..HttpRedirect::default()
        };
        assert_eq!(
            location(https.clone(), request("http", "a.com:80", "/p")),
            "https://a.com/p"
        );
        assert_eq!(
            location(https.clone(), request("http", "a.com:8080", "/p")),
            "https://a.com:8080/p"
        );
        assert_eq!(
            location(https, request("http", "a.com", "/p")),
            "https://a.com/p"
        );
        let http = HttpRedirect {
            scheme: Some("http".into()),
            ..HttpRedirect::default()
        };
        assert_eq!(
            location(http.clone(), request("https", "a.com:443", "/p")),
            "http://a.com/p"
        );
        // A port is default only for its own scheme.
        assert_eq!(
            location(http.clone(), request("https", "a.com:8443", "/p")),
            "http://a.com:8443/p"
        );
        assert_eq!(
            location(http.clone(), request("https", "a.com:80", "/p")),
            "http://a.com:80/p"
        );
        let to_https = HttpRedirect {
            scheme: Some("https".into()),
            ..HttpRedirect::default()
        };
        assert_eq!(
            location(to_https, request("http", "a.com:443", "/p")),
            "https://a.com:443/p"
        );
        // Same scheme: the port stays, default or not.
        assert_eq!(
            location(http, request("http", "a.com:80", "/p")),
            "http://a.com:80/p"
        );
    }

    #[test]
    fn redirect_port_replaces_the_request_port() {
        let redirect = HttpRedirect {
            port: Some(8443),
            ..HttpRedirect::default()
        };
        assert_eq!(
            location(redirect.clone(), request("http", "a.com:8080", "/p")),
            "http://a.com:8443/p"
        );
        assert_eq!(
            location(redirect.clone(), request("http", "[::1]:8080", "/p")),
            "http://[::1]:8443/p"
        );
        assert_eq!(
            location(redirect, request("http", "[::1]", "/p")),
            "http://[::1]:8443/p"
        );
    }

    #[test]
    fn istio_drops_a_default_port_judged_by_the_listener() {
        let port_443 = HttpRedirect {
            port: Some(443),
            ..HttpRedirect::default()
        };
        let req = request("https", "a.com", "/p");
        assert_eq!(redirect_location(&port_443, req, true), "https://a.com/p");
        assert_eq!(
            redirect_location(&port_443, req, false),
            "https://a.com:443/p"
        );
        // With the port dropped the request's own port is no longer replaced.
        let port_80 = HttpRedirect {
            port: Some(80),
            ..HttpRedirect::default()
        };
        assert_eq!(
            redirect_location(&port_80, request("http", "a.com:8080", "/p"), false),
            "http://a.com:8080/p"
        );
        // An explicit scheme decides instead of the listener.
        let to_https_443 = HttpRedirect {
            scheme: Some("https".into()),
            port: Some(443),
            ..HttpRedirect::default()
        };
        assert_eq!(
            redirect_location(&to_https_443, request("http", "a.com:80", "/p"), false),
            "https://a.com/p"
        );
    }

    #[test]
    fn redirect_status_defaults_to_301() {
        assert_eq!(redirect_status(&HttpRedirect::default()), 301);
        let temporary = HttpRedirect {
            code: 307,
            ..HttpRedirect::default()
        };
        assert_eq!(redirect_status(&temporary), 307);
    }
}
