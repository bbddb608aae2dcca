//! A VirtualService's `http` rules: matches, the one action (route,
//! redirect or direct response), rewrite, timeout and headers, with
//! Istio's `validateHTTPRoute` rules.
use std::{collections::BTreeMap, time::Duration};

use super::{cors::decode_cors, fault::decode_fault, match_gateways, mirror, retries};
use crate::{
    config::{
        common::{destinations, duration, port_number, string_match},
        decode::{Decoder, field, join},
        diagnostic::Severity,
        headers,
        yaml::{Node, Value},
    },
    model::{DelegateRef, HttpAction, HttpMatch, HttpRedirect, HttpRoute, StringMatch, Written},
};

const HTTP_FIELDS: &[&str] = &[
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "rewrite",
    "timeout",
    "headers",
    "retries",
    "delegate",
    "fault",
    "corsPolicy",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    // The deprecated field's other spelling, which the CRD also accepts.
    "mirror_percent",
];
/// Accepted, not applied yet: each gets a warning so nobody relies on it silently.
const NOT_APPLIED_YET: &[&str] = &["internalActiveRedirect"];
const HTTP_MATCH_FIELDS: &[&str] = &[
    "name",
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "withoutHeaders",
    "queryParams",
    "ignoreUriCase",
    "port",
    "gateways",
    "sourceLabels",
    "sourceNamespace",
    "statPrefix",
];
const REDIRECT_CODES: &[i64] = &[301, 302, 303, 307, 308];

/// One `http[]` rule of a VirtualService in `namespace`; `in_delegate`:
/// the VirtualService is a delegate (it has no hosts).
pub(super) fn decode_http_route(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    namespace: &str,
    in_delegate: bool,
) -> Option<HttpRoute> {
    let entries = d.mapping(node, path, &[HTTP_FIELDS, NOT_APPLIED_YET].concat())?;
    warn_not_applied_yet(d, entries, path);
    let matches: Vec<HttpMatch> = d
        .items(entries, "match", path)
        .into_iter()
        .filter_map(|(match_path, item)| decode_http_match(d, item, &match_path, namespace))
        .collect();
    let route = destinations(d, entries, path, true);
    let redirect = field(entries, "redirect")
        .and_then(|n| decode_redirect(d, n, &join(path, "redirect"), &matches));
    let direct = field(entries, "directResponse")
        .and_then(|n| decode_direct_response(d, n, &join(path, "directResponse")));
    let rewrite = field(entries, "rewrite")
        .map(|n| decode_rewrite(d, n, &join(path, "rewrite")))
        .unwrap_or_default();
    let (request_headers, response_headers) = field(entries, "headers")
        .map(|n| headers::decode(d, n, &join(path, "headers")))
        .unwrap_or_default();
    let delegate = set(entries, "delegate")
        .and_then(|n| decode_delegate(d, n, &join(path, "delegate"), namespace));
    let fault = set(entries, "fault").and_then(|n| decode_fault(d, n, &join(path, "fault")));
    let cors =
        set(entries, "corsPolicy").and_then(|n| decode_cors(d, n, &join(path, "corsPolicy")));
    check_one_action(d, node, entries, path, in_delegate);
    let mirrors = mirror::decode_mirrors(d, node, entries, path);
    let timeout = route_timeout(d, entries, path);
    let retries =
        set(entries, "retries").and_then(|n| retries::decode_retries(d, n, &join(path, "retries")));
    let action = match (redirect, direct, delegate) {
        (Some(redirect), _, _) => HttpAction::Redirect(redirect),
        (None, direct, Some(to)) => HttpAction::Delegate {
            to,
            direct_response: direct,
        },
        (None, Some((status, body)), None) => HttpAction::DirectResponse { status, body },
        (None, None, None) => HttpAction::Route(route),
    };
    let written = Written {
        rewrite: set(entries, "rewrite").is_some(),
        timeout: set(entries, "timeout").is_some(),
        headers: set(entries, "headers").is_some(),
    };
    Some(HttpRoute {
        name: d.opt_string(entries, "name", path),
        matches,
        action,
        rewrite_uri: rewrite.uri,
        rewrite_uri_regex: rewrite.uri_regex,
        rewrite_authority: rewrite.authority,
        timeout,
        request_headers,
        response_headers,
        retries,
        fault,
        cors,
        mirrors,
        written,
    })
}

/// A field written with a value: `null` is unset, as Istio reads it (a nil
/// message), which matters for what a delegate rule inherits.
fn set<'n>(entries: &'n [(Node, Node)], name: &str) -> Option<&'n Node> {
    field(entries, name).filter(|n| n.value != Value::Null)
}

/// `http[].delegate`: `name`, and `namespace` (the VirtualService's own
/// when not written). Istio validates neither: a name that finds no
/// delegate is reported once every VirtualService is read.
fn decode_delegate(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    namespace: &str,
) -> Option<DelegateRef> {
    let entries = d.mapping(node, path, &["name", "namespace"])?;
    Some(DelegateRef {
        name: d.opt_string(entries, "name", path).unwrap_or_default(),
        namespace: d
            .opt_string(entries, "namespace", path)
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| namespace.to_string()),
    })
}

/// A warning for each field accepted but not applied yet, so nobody relies
/// on it silently.
fn warn_not_applied_yet(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) {
    for name in NOT_APPLIED_YET {
        if let Some(at) = field(entries, name) {
            d.report(
                Severity::Warning,
                at,
                &join(path, name),
                format!("{name} is not applied by this gateway yet"),
            );
        }
    }
}

/// Exactly one of route, redirect and directResponse, and no rewrite with
/// a redirect; Istio's `validateHTTPRouteConflict`: a root rule (one with
/// `delegate`) may set neither route nor redirect and is checked for
/// nothing else (its directResponse, if any, goes to the delegate rules
/// that set none); a delegate's rule may not delegate again, so no chain
/// or cycle of delegation can form.
fn check_one_action(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    in_delegate: bool,
) {
    if let Some(at) = set(entries, "delegate") {
        if in_delegate {
            d.error(
                at,
                &join(path, "delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        } else {
            for (name, message) in [
                (
                    "route",
                    "a root HTTP route with delegate must not specify route",
                ),
                (
                    "redirect",
                    "a root HTTP route with delegate must not specify redirect",
                ),
            ] {
                if let Some(at) = field(entries, name) {
                    d.error(at, &join(path, name), message);
                }
            }
            return;
        }
    }
    let actions = ["route", "redirect", "directResponse"]
        .iter()
        .filter(|name| field(entries, name).is_some())
        .count();
    match actions {
        0 => d.error(
            node,
            path,
            "HTTP route, redirect or direct response is required",
        ),
        1 => {}
        _ => d.error(
            node,
            path,
            "only one of route, redirect and directResponse may be set",
        ),
    }
    if field(entries, "redirect").is_some() && field(entries, "rewrite").is_some() {
        d.error(node, path, "rewrite and redirect cannot be used together");
    }
}

/// `timeout`; `0s` disables the timeout, as Envoy reads a zero route
/// timeout.
fn route_timeout(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Option<Duration> {
    duration(d, entries, "timeout", path).filter(|t| !t.is_zero())
}

/// `http[].rewrite`.
#[derive(Default)]
struct Rewrite {
    uri: Option<String>,
    /// `uriRegexRewrite`: (RE2 match, substitution with `\1` groups).
    uri_regex: Option<(String, String)>,
    authority: Option<String>,
}

fn decode_rewrite(d: &mut Decoder<'_>, node: &Node, path: &str) -> Rewrite {
    let Some(entries) = d.mapping(node, path, &["uri", "authority", "uriRegexRewrite"]) else {
        return Rewrite::default();
    };
    let uri = d.opt_string(entries, "uri", path);
    let uri_regex = field(entries, "uriRegexRewrite").and_then(|n| {
        let regex_path = join(path, "uriRegexRewrite");
        let re = d.mapping(n, &regex_path, &["match", "rewrite"])?;
        let pattern = d.opt_string(re, "match", &regex_path);
        let substitution = d.opt_string(re, "rewrite", &regex_path);
        if uri.is_some() {
            d.error(
                n,
                &regex_path,
                "rewrite may only contain one of uri or uriRegexRewrite",
            );
        }
        let (Some(pattern), Some(substitution)) = (pattern, substitution) else {
            d.error(
                n,
                &regex_path,
                "uriRegexRewrite requires both match and rewrite",
            );
            return None;
        };
        let at = field(re, "match").unwrap_or(n);
        match regex::Regex::new(&pattern) {
            Ok(_) => Some((pattern, substitution)),
            Err(err) => {
                let message = err.to_string();
                let last = message.lines().last().unwrap_or(&message).trim();
                d.error(
                    at,
                    &join(&regex_path, "match"),
                    format!("invalid regex: {last}"),
                );
                None
            }
        }
    });
    Rewrite {
        uri,
        uri_regex,
        authority: d.opt_string(entries, "authority", path),
    }
}

fn decode_http_match(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    namespace: &str,
) -> Option<HttpMatch> {
    let entries = d.mapping(node, path, HTTP_MATCH_FIELDS)?;
    let mut m = HttpMatch::default();
    for (name, slot) in [
        ("uri", &mut m.uri),
        ("scheme", &mut m.scheme),
        ("method", &mut m.method),
        ("authority", &mut m.authority),
    ] {
        if let Some(n) = field(entries, name) {
            *slot = string_match(d, n, &join(path, name));
        }
    }
    for (name, slot) in [
        ("headers", &mut m.headers),
        ("withoutHeaders", &mut m.without_headers),
        ("queryParams", &mut m.query_params),
    ] {
        if let Some(n) = field(entries, name) {
            *slot = decode_keyed_matches(d, n, &join(path, name), name != "queryParams");
        }
    }
    m.ignore_uri_case = d.flag(entries, "ignoreUriCase", path);
    m.port = field(entries, "port").and_then(|n| port_number(d, n, &join(path, "port")));
    m.gateways = match_gateways(d, entries, path, namespace);
    // Istio matches these against the gateway workload's own labels and
    // namespace (`route.go::sourceMatchHTTP`): the binder does the same.
    if let Some(Value::Map(labels)) = field(entries, "sourceLabels").map(|n| &n.value) {
        for (key, value) in labels {
            if let (Value::Str(k), Value::Str(v)) = (&key.value, &value.value) {
                m.source_labels.insert(k.clone(), v.clone());
            }
        }
    }
    m.source_namespace = d.opt_string(entries, "sourceNamespace", path);
    Some(m)
}

/// `headers` / `withoutHeaders` / `queryParams`: name -> StringMatch (empty = presence).
fn decode_keyed_matches(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    lower_case_keys: bool,
) -> BTreeMap<String, Option<StringMatch>> {
    let mut out = BTreeMap::new();
    let Some(entries) = d.mapping(node, path, &[]) else {
        return out;
    };
    // Every key is a header or parameter name, so `mapping`'s unknown-field
    // warnings do not apply here.
    d.diagnostics
        .retain(|diag| !(diag.field.starts_with(path) && diag.message == "unknown field, ignored"));
    for (key, value) in entries {
        let Some(name) = d.string(key, path) else {
            continue;
        };
        let key_path = join(path, &name);
        if lower_case_keys && name.bytes().any(|b| b.is_ascii_uppercase()) {
            d.error(key, &key_path, "header match key must be lowercase");
            continue;
        }
        let empty =
            matches!(&value.value, Value::Map(m) if m.is_empty()) || value.value == Value::Null;
        let matcher = if empty {
            None
        } else {
            string_match(d, value, &key_path)
        };
        out.insert(name, matcher);
    }
    out
}

/// `http[].redirect`, with Istio's `validateHTTPRedirect` rules; `matches`
/// are the rule's, which `prefixRewrite` needs to be prefix matches.
fn decode_redirect(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    matches: &[HttpMatch],
) -> Option<HttpRedirect> {
    let entries = d.mapping(
        node,
        path,
        &[
            "uri",
            "prefixRewrite",
            "authority",
            "port",
            "scheme",
            "redirectCode",
            "derivePort",
        ],
    )?;
    let (uri, prefix_rewrite) = redirect_path(d, entries, path, matches)?;
    let scheme = redirect_scheme(d, entries, path)?;
    let targets = [
        "uri",
        "prefixRewrite",
        "authority",
        "scheme",
        "port",
        "derivePort",
    ];
    if !targets.iter().any(|name| field(entries, name).is_some()) {
        d.error(
            node,
            path,
            "redirect must specify uri, prefixRewrite, authority, scheme, or port",
        );
        return None;
    }
    let code = redirect_code(d, entries, path)?;
    // `port` and `derivePort` are one oneof: FROM_PROTOCOL_DEFAULT is
    // Envoy's default (no port), FROM_REQUEST_PORT the server's port
    // (`route.go::ApplyRedirect`).
    let derive_port_from_request = match field(entries, "derivePort") {
        None => false,
        Some(at) => {
            let at_path = join(path, "derivePort");
            if field(entries, "port").is_some() {
                d.error(at, &at_path, "only one of port and derivePort may be set");
            }
            match d.string(at, &at_path).as_deref() {
                Some("FROM_REQUEST_PORT") => true,
                Some("FROM_PROTOCOL_DEFAULT") | None => false,
                Some(other) => {
                    d.error(
                        at,
                        &at_path,
                        format!(
                            "invalid derivePort {other:?}, supported are FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT"
                        ),
                    );
                    false
                }
            }
        }
    };
    Some(HttpRedirect {
        uri,
        prefix_rewrite,
        authority: d.opt_string(entries, "authority", path),
        port: field(entries, "port").and_then(|n| port_number(d, n, &join(path, "port"))),
        derive_port_from_request,
        scheme,
        code,
    })
}

/// A redirect's `uri` or `prefixRewrite` (not both); `prefixRewrite` needs
/// every URI match of the rule to be a prefix match.
fn redirect_path(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    matches: &[HttpMatch],
) -> Option<(Option<String>, Option<String>)> {
    let uri = d.opt_string(entries, "uri", path);
    let prefix_rewrite = d.opt_string(entries, "prefixRewrite", path);
    if let (Some(_), Some(at)) = (&uri, field(entries, "prefixRewrite")) {
        if prefix_rewrite.is_some() {
            d.error(
                at,
                &join(path, "prefixRewrite"),
                "redirect may only specify one of uri or prefixRewrite",
            );
            return None;
        }
    }
    if let (Some(_), Some(at)) = (&prefix_rewrite, field(entries, "prefixRewrite")) {
        let all_prefix = matches
            .iter()
            .all(|m| matches!(m.uri, None | Some(StringMatch::Prefix(_))));
        if !all_prefix {
            d.error(
                at,
                &join(path, "prefixRewrite"),
                "redirect prefixRewrite requires all URI matches to use prefix match type",
            );
            return None;
        }
    }
    Some((uri, prefix_rewrite))
}

/// A redirect's `scheme`: `http` or `https` if set (`Some(None)` if not).
fn redirect_scheme(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
) -> Option<Option<String>> {
    let scheme = d.opt_string(entries, "scheme", path);
    if let (Some(scheme), Some(at)) = (&scheme, field(entries, "scheme")) {
        if scheme != "http" && scheme != "https" {
            d.error(
                at,
                &join(path, "scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
            return None;
        }
    }
    Some(scheme)
}

/// A redirect's `redirectCode`, 301 by default.
fn redirect_code(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Option<u16> {
    let code = match field(entries, "redirectCode") {
        Some(n) => match d.integer(n, &join(path, "redirectCode")) {
            Some(code) if REDIRECT_CODES.contains(&code) => u16::try_from(code).ok()?,
            Some(code) => {
                d.error(
                    n,
                    &join(path, "redirectCode"),
                    format!("redirect code {code} must be one of 301, 302, 303, 307, 308"),
                );
                return None;
            }
            None => return None,
        },
        None => 301,
    };
    Some(code)
}

fn decode_direct_response(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<(u16, Option<String>)> {
    let entries = d.mapping(node, path, &["status", "body"])?;
    let status_node = field(entries, "status").or_else(|| {
        d.error(
            node,
            &join(path, "status"),
            "directResponse.status is required",
        );
        None
    })?;
    let status = d.integer(status_node, &join(path, "status"))?;
    if !(200..=599).contains(&status) {
        d.error(
            status_node,
            &join(path, "status"),
            format!("status {status} must be between 200 and 599"),
        );
        return None;
    }
    let body = match field(entries, "body") {
        Some(body) => {
            let body_path = join(path, "body");
            let b = d
                .mapping(body, &body_path, &["string", "bytes"])
                .unwrap_or_default();
            d.opt_string(b, "string", &body_path)
                .or_else(|| d.opt_string(b, "bytes", &body_path))
        }
        None => None,
    };
    Some((u16::try_from(status).ok()?, body))
}
