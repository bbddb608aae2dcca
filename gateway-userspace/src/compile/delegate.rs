//! Delegation: a root VirtualService's `http[]` rule with `delegate` is
//! replaced by the delegate's rules, each merged with it, as Istio merges
//! them before it builds any route (`pilot/pkg/model/virtualservice.go`:
//! `MergeHTTPRoutes`, `mergeHTTPRoute`, `mergeHTTPMatchRequests`,
//! `mergeHTTPMatchRequest`, `hasConflict`, `stringMatchConflict`; the
//! lookup in `virtualservice_controller.go::mergeVirtualServices`). Pure:
//! the binder asks for a bound VirtualService's rules here.
use std::borrow::Cow;

use crate::model::{Delegates, HttpAction, HttpMatch, HttpRoute, StringMatch, VirtualService};

/// One `http[]` rule as a gateway serves it: the VirtualService's own, or
/// a delegate's merged with the root rule that names it.
pub(super) struct Rule<'m> {
    pub(super) route: Cow<'m, HttpRoute>,
    /// `VirtualService ns/name spec.http[i]`, followed by ` -> ns/delegate
    /// spec.http[j]` for a delegate's rule.
    pub(super) source: String,
    /// Where its destinations' short names resolve: the namespace of the
    /// VirtualService that wrote them (Istio resolves a delegate's in its
    /// own namespace, `delegateVirtualServices`).
    pub(super) namespace: &'m str,
}

/// `vs`'s rules in order, each rule with `delegate` replaced by the
/// delegate's rules merged with it. A delegate that cannot be found drops
/// the rule (`config` reports it where it is written); a delegate rule
/// whose match conflicts with the root rule's is dropped and said in
/// `warnings`.
pub(super) fn http_rules<'m>(
    vs: &'m VirtualService,
    delegates: &Delegates<'m>,
    warnings: &mut Vec<String>,
) -> Vec<Rule<'m>> {
    let mut rules = Vec::with_capacity(vs.http.len());
    for (index, root) in vs.http.iter().enumerate() {
        let source = format!(
            "VirtualService {}/{} spec.http[{index}]",
            vs.namespace, vs.name
        );
        let HttpAction::Delegate {
            to,
            direct_response,
        } = &root.action
        else {
            rules.push(Rule {
                route: Cow::Borrowed(root),
                source,
                namespace: &vs.namespace,
            });
            continue;
        };
        let Ok(delegate) = delegates.find(to, &vs.namespace) else {
            continue;
        };
        for (at, rule) in delegate.http.iter().enumerate() {
            let source = format!("{source} -> {to} spec.http[{at}]");
            match merge_route(root, direct_response.as_ref(), rule) {
                Ok(route) => rules.push(Rule {
                    route: Cow::Owned(route),
                    source,
                    namespace: &delegate.namespace,
                }),
                Err(conflict) => warnings.push(format!(
                    "{source}: match[{conflict}] conflicts with every match of the root rule; as in Istio, this delegate rule is dropped"
                )),
            }
        }
    }
    rules
}

/// `mergeHTTPRoute`: the delegate's rule with the merged matches, and
/// each inheritable field the delegate left unset taken from the root
/// rule; `Err(k)`: the delegate's `match[k]` conflicts with every match
/// of the root (the rule is dropped).
fn merge_route(
    root: &HttpRoute,
    root_direct_response: Option<&(u16, Option<String>)>,
    delegate: &HttpRoute,
) -> Result<HttpRoute, usize> {
    let mut out = delegate.clone();
    out.matches = merge_matches(&root.matches, &delegate.matches)?;
    let root_name = root.name.as_deref().unwrap_or("");
    let name = delegate.name.as_deref().unwrap_or("");
    if name.is_empty() {
        out.name.clone_from(&root.name);
    } else if !root_name.is_empty() {
        out.name = Some(format!("{root_name}-{name}"));
    }
    if !delegate.written.rewrite {
        out.rewrite_uri.clone_from(&root.rewrite_uri);
        out.rewrite_uri_regex.clone_from(&root.rewrite_uri_regex);
        out.rewrite_authority.clone_from(&root.rewrite_authority);
        out.written.rewrite = root.written.rewrite;
    }
    if !delegate.written.timeout {
        out.timeout = root.timeout;
        out.written.timeout = root.written.timeout;
    }
    // `retries` unset (or null) is `None`: the root's, as Istio's
    // `mergeHTTPRoute` gives a delegate without retries.
    if delegate.retries.is_none() {
        out.retries.clone_from(&root.retries);
    }
    // Likewise `fault` and `corsPolicy` (`mergeHTTPRoute`).
    if delegate.fault.is_none() {
        out.fault.clone_from(&root.fault);
    }
    if delegate.cors.is_none() {
        out.cors.clone_from(&root.cors);
    }
    if delegate.mirrors.is_empty() {
        out.mirrors.clone_from(&root.mirrors);
    }
    if !delegate.written.headers {
        out.request_headers = root.request_headers.clone();
        out.response_headers = root.response_headers.clone();
        out.written.headers = root.written.headers;
    }
    // A direct response (the root's when the delegate's rule has none)
    // wins over a route, and a redirect over both (`route.go::TranslateRoute`).
    if let (HttpAction::Route(_), Some((status, body))) = (&delegate.action, root_direct_response) {
        out.action = HttpAction::DirectResponse {
            status: *status,
            body: body.clone(),
        };
    }
    Ok(out)
}

/// `mergeHTTPMatchRequests`: with no matches on one side, the other's;
/// otherwise each delegate match merged with every root match it does not
/// conflict with, in that order; `Err(k)`: the delegate's `match[k]`
/// conflicts with them all.
fn merge_matches(root: &[HttpMatch], delegate: &[HttpMatch]) -> Result<Vec<HttpMatch>, usize> {
    if root.is_empty() {
        return Ok(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Ok(root.to_vec());
    }
    let mut out = Vec::new();
    for (at, leaf) in delegate.iter().enumerate() {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !has_conflict(r, leaf))
                .map(|r| merge_match(r, leaf)),
        );
        if out.len() == before {
            return Err(at);
        }
    }
    Ok(out)
}

/// `mergeHTTPMatchRequest`: the delegate's match, with what it leaves
/// unset taken from the root's; keyed matches (headers, withoutHeaders,
/// queryParams, sourceLabels) are the root's with the delegate's keys
/// replacing them.
fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let mut out = leaf.clone();
    for (slot, inherited) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if slot.is_none() {
            slot.clone_from(inherited);
        }
    }
    for (slot, inherited) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        let mut merged = inherited.clone();
        merged.append(slot);
        *slot = merged;
    }
    let mut labels = root.source_labels.clone();
    labels.append(&mut out.source_labels);
    out.source_labels = labels;
    if out.port.is_none() {
        out.port = root.port;
    }
    if out.source_namespace.as_deref().unwrap_or("").is_empty() {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    out
}

/// `hasConflict`: whether no request could satisfy both the root's match
/// and the delegate's as Istio judges it (the delegate must narrow the
/// root: see [`string_match_conflict`]).
fn has_conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .into_iter()
        .any(|(r, l)| string_match_conflict(r.as_ref().map(Some), l.as_ref().map(Some)))
    {
        return true;
    }
    for (roots, leaves) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        // A key the root does not match on never conflicts; a key matched
        // by presence only (`{}`) is a match without a value in Istio.
        let conflict = leaves.iter().any(|(key, l)| {
            string_match_conflict(roots.get(key).map(Option::as_ref), Some(l.as_ref()))
        });
        if conflict {
            return true;
        }
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port) {
        if r != l {
            return true;
        }
    }
    let root_namespace = root.source_namespace.as_deref().unwrap_or("");
    if !root_namespace.is_empty()
        && leaf.source_namespace.as_deref().unwrap_or("") != root_namespace
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(key, value)| root.source_labels.get(key).is_some_and(|r| r != value))
    {
        return true;
    }
    // The root's gateways must include the delegate's.
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// `stringMatchConflict`, on Istio's terms: `None` is a field not set (no
/// conflict), `Some(None)` a match with no value (presence). A regex on
/// either side conflicts with any other match; a root exact match admits
/// only the same exact match; a root prefix admits a longer prefix or an
/// exact value under it; anything else conflicts. Empty strings count as
/// unset, as Go's getters read them.
fn string_match_conflict(
    root: Option<Option<&StringMatch>>,
    leaf: Option<Option<&StringMatch>>,
) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    // Istio first answers "conflict" for a regex on either side facing any
    // other match; the rules below give that same answer (a regex is
    // neither exact nor prefix, so it ends in the last line), so the
    // regex itself is never read.
    let (root_exact, root_prefix) = parts(root);
    let (leaf_exact, leaf_prefix) = parts(leaf);
    if !root_exact.is_empty() {
        return !leaf_prefix.is_empty() || leaf_exact != root_exact;
    }
    if !root_prefix.is_empty() {
        if !leaf_prefix.is_empty() {
            return !leaf_prefix.starts_with(root_prefix);
        }
        if !leaf_exact.is_empty() {
            return !leaf_exact.starts_with(root_prefix);
        }
    }
    true
}

/// (exact, prefix) of a match, each `""` when it is not that kind: Go's
/// `GetExact`, `GetPrefix`.
fn parts(m: Option<&StringMatch>) -> (&str, &str) {
    match m {
        Some(StringMatch::Exact(s)) => (s, ""),
        Some(StringMatch::Prefix(s)) => ("", s),
        Some(StringMatch::Regex(_)) | None => ("", ""),
    }
}

#[cfg(test)]
mod tests;
