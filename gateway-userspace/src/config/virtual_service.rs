//! Decodes `VirtualService` documents, applying Istio's validation rules
//! (`ValidateVirtualService`) for what a gateway serves.
use std::collections::BTreeMap;

use super::{
    common::{destinations, duration, export_to, port_number, string_match},
    decode::{Decoder, field, join},
    diagnostic::Severity,
    headers, rules,
    yaml::{Node, Value},
};
use crate::model::{
    Destination, HostIndex, HostPattern, HttpAction, HttpMatch, HttpRedirect, HttpRoute,
    StringMatch, Subnet, TcpMatch, TcpRoute, TlsMatch, TlsRoute, VirtualService,
};

const SPEC_FIELDS: &[&str] = &["hosts", "gateways", "http", "tls", "tcp", "exportTo"];
const HTTP_FIELDS: &[&str] = &[
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "rewrite",
    "timeout",
    "headers",
];
/// Accepted, not applied yet: each gets a warning so nobody relies on it silently.
const NOT_APPLIED_YET: &[&str] = &[
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    // The deprecated field's other spelling, which the CRD also accepts.
    "mirror_percent",
    "corsPolicy",
    "delegate",
    "internalActiveRedirect",
];
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

/// Decodes a VirtualService whose identity is known; `None` on any error.
pub fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
    creation_timestamp: Option<String>,
) -> Option<VirtualService> {
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;

    let gateway_items = d.items(entries, "gateways", "spec");
    // Istio judges mesh binding by the names as written, valid or not: an
    // invalid gateway name is its own error, not a reason to treat the
    // VirtualService as bound to the mesh.
    let bound_to_mesh = gateway_items.is_empty()
        || gateway_items
            .iter()
            .any(|(_, item)| matches!(&item.value, Value::Str(name) if name == "mesh"));
    let mut gateways = Vec::new();
    for (item_path, item) in gateway_items {
        let Some(reference) = d.string(item, &item_path) else {
            continue;
        };
        match rules::gateway_reference(&reference, &namespace) {
            Ok((resolved, warning)) => {
                if let Some(warning) = warning {
                    d.report(Severity::Warning, item, &item_path, warning);
                }
                gateways.push(resolved);
            }
            Err(message) => d.error(item, &item_path, message),
        }
    }

    let mut hosts: Vec<String> = Vec::new();
    // The hosts kept so far, indexed: each host is checked against all the
    // earlier ones without comparing it with each (quadratic in the hosts).
    let mut kept: HostIndex<()> = HostIndex::default();
    let host_items = d.items(entries, "hosts", "spec");
    if host_items.is_empty() {
        delegate_rules(d, spec, entries);
    }
    for (item_path, item) in host_items {
        let Some(host) = d.string(item, &item_path) else {
            continue;
        };
        if host == "*" && bound_to_mesh {
            d.error(
                item,
                &item_path,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        } else if let Err(message) = rules::service_host(&host) {
            d.error(item, &item_path, message);
        } else if let Some(earlier) = kept
            // Istio's `host.Name.Matches`: `*.foo.com` and `*.com` overlap too.
            .intersecting(&HostPattern::from_server_host(&host))
            .first()
            .map(|&(at, _)| &hosts[at])
        {
            d.error(
                item,
                &item_path,
                format!("duplicate hosts in virtual service: {earlier} & {host}"),
            );
        } else {
            kept.push(HostPattern::from_server_host(&host), ());
            hosts.push(host);
        }
    }

    let http: Vec<HttpRoute> = d
        .items(entries, "http", "spec")
        .into_iter()
        .filter_map(|(path, item)| decode_http_route(d, item, &path, &namespace))
        .collect();
    let tls: Vec<TlsRoute> = d
        .items(entries, "tls", "spec")
        .into_iter()
        .filter_map(|(path, item)| decode_tls_route(d, item, &path, &kept, &namespace))
        .collect();
    let tcp: Vec<TcpRoute> = d
        .items(entries, "tcp", "spec")
        .into_iter()
        .filter_map(|(path, item)| decode_tcp_route(d, item, &path, &namespace))
        .collect();
    if ["http", "tls", "tcp"]
        .iter()
        .all(|k| field(entries, k).is_none())
    {
        d.error(
            spec,
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let export_to = export_to(d, entries, "spec");
    Some(VirtualService {
        namespace,
        name,
        creation_timestamp,
        hosts,
        gateways,
        export_to,
        http,
        tls,
        tcp,
    })
}

/// A VirtualService without hosts is a delegate: Istio allows it only as
/// the target of another VirtualService's `http[].delegate`, so with no
/// gateways and no tls or tcp rules. Delegation is not served yet: the
/// delegate is accepted (Istio accepts it) and said to serve nothing.
fn delegate_rules(d: &mut Decoder<'_>, spec: &Node, entries: &[(Node, Node)]) {
    for (name, message) in [
        (
            "gateways",
            "delegate virtual service must have no gateways specified",
        ),
        (
            "tls",
            "delegate virtual service must have no tls route specified",
        ),
        (
            "tcp",
            "delegate virtual service must have no tcp route specified",
        ),
    ] {
        let present = field(entries, name)
            .is_some_and(|n| !matches!(&n.value, Value::Null) && n.value != Value::Seq(Vec::new()));
        if present {
            let at = field(entries, name).unwrap_or(spec);
            d.error(at, &join("spec", name), message);
        }
    }
    d.report(
        Severity::Warning,
        spec,
        "spec.hosts",
        "no hosts: a delegate VirtualService, which only another VirtualService's http[].delegate can use, and delegation is not served by this gateway yet: it serves nothing".into(),
    );
}

/// `match[].gateways`, resolved against the VirtualService's namespace as
/// the top-level `gateways` are, so binding compares like with like.
fn match_gateways(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    namespace: &str,
) -> Vec<String> {
    let mut resolved = Vec::new();
    for (item_path, item) in d.items(entries, "gateways", path) {
        let Some(reference) = d.string(item, &item_path) else {
            continue;
        };
        match rules::gateway_reference(&reference, namespace) {
            Ok((gateway, warning)) => {
                if let Some(warning) = warning {
                    d.report(Severity::Warning, item, &item_path, warning);
                }
                resolved.push(gateway);
            }
            Err(message) => d.error(item, &item_path, message),
        }
    }
    resolved
}

/// `match[].destinationSubnets` of a tls or tcp rule, each an address or a
/// CIDR block (Istio's `ValidateIPSubnet`).
fn destination_subnets(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Vec<Subnet> {
    let mut subnets = Vec::new();
    for (item_path, item) in d.items(entries, "destinationSubnets", path) {
        let Some(text) = d.string(item, &item_path) else {
            continue;
        };
        match text.parse::<Subnet>() {
            Ok(subnet) => subnets.push(subnet),
            Err(err) => d.error(item, &item_path, err.to_string()),
        }
    }
    subnets
}

/// A tls or tcp rule's `route`, which must name at least one destination.
fn required_route(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    kind: &str,
) -> Vec<Destination> {
    let route = destinations(d, entries, path, false);
    if route.is_empty() {
        d.error(
            node,
            &join(path, "route"),
            format!("{kind} route must have at least one destination"),
        );
    }
    route
}

fn decode_http_route(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    namespace: &str,
) -> Option<HttpRoute> {
    let entries = d.mapping(node, path, &[HTTP_FIELDS, NOT_APPLIED_YET].concat())?;
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
    let has_route = field(entries, "route").is_some();
    let actions = [
        has_route,
        field(entries, "redirect").is_some(),
        field(entries, "directResponse").is_some(),
    ];
    let delegating = field(entries, "delegate").is_some();
    if delegating {
        // Istio's root-route rules; the rule itself cannot be served (the
        // warning for `delegate` says so, and without an action of its own
        // the error below refuses it).
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
    }
    match actions.iter().filter(|a| **a).count() {
        0 if delegating => d.error(
            node,
            path,
            "delegation is not served by this gateway yet, and this rule has no directResponse of its own to serve",
        ),
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
    // `0s` disables the timeout, as Envoy reads a zero route timeout.
    let timeout = duration(d, entries, "timeout", path).filter(|t| !t.is_zero());
    let action = match (redirect, direct) {
        (Some(redirect), _) => HttpAction::Redirect(redirect),
        (None, Some((status, body))) => HttpAction::DirectResponse { status, body },
        (None, None) => HttpAction::Route(route),
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
    })
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
    for name in ["sourceLabels", "sourceNamespace"] {
        if let Some(at) = field(entries, name) {
            d.report(
                Severity::Warning,
                at,
                &join(path, name),
                format!("{name} only applies to sidecars (mesh); ignored at a gateway"),
            );
        }
    }
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
        let empty = matches!(&value.value, super::yaml::Value::Map(m) if m.is_empty())
            || value.value == super::yaml::Value::Null;
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
    if let Some(at) = field(entries, "derivePort") {
        d.report(
            Severity::Warning,
            at,
            &join(path, "derivePort"),
            "derivePort is not applied by this gateway yet".into(),
        );
    }
    Some(HttpRedirect {
        uri,
        prefix_rewrite,
        authority: d.opt_string(entries, "authority", path),
        port: field(entries, "port").and_then(|n| port_number(d, n, &join(path, "port"))),
        scheme,
        code,
    })
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

fn decode_tls_route(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    vs_hosts: &HostIndex<()>,
    namespace: &str,
) -> Option<TlsRoute> {
    let entries = d.mapping(node, path, &["match", "route"])?;
    let errors_before = d.error_count();
    let match_items = d.items(entries, "match", path);
    if match_items.is_empty() {
        d.error(
            node,
            &join(path, "match"),
            "TLS route must have at least one match",
        );
    }
    let mut matches = Vec::new();
    for (match_path, item) in match_items {
        let Some(m) = d.mapping(
            item,
            &match_path,
            &[
                "sniHosts",
                "port",
                "gateways",
                "destinationSubnets",
                "sourceLabels",
                "sourceNamespace",
            ],
        ) else {
            continue;
        };
        let sni_hosts = d.string_list(m, "sniHosts", &match_path);
        if sni_hosts.is_empty() {
            d.error(
                item,
                &join(&match_path, "sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (i, sni) in sni_hosts.iter().enumerate() {
            if vs_hosts
                .covering(&HostPattern::from_server_host(sni))
                .is_empty()
            {
                let at = field(m, "sniHosts").unwrap_or(item);
                d.error(
                    at,
                    &format!("{}[{i}]", join(&match_path, "sniHosts")),
                    format!("the SNI host {sni} must match one of the virtual service hosts"),
                );
            }
        }
        matches.push(TlsMatch {
            sni_hosts,
            port: field(m, "port").and_then(|n| port_number(d, n, &join(&match_path, "port"))),
            gateways: match_gateways(d, m, &match_path, namespace),
            destination_subnets: destination_subnets(d, m, &match_path),
        });
    }
    let route = required_route(d, node, entries, path, "TLS");
    (d.error_count() == errors_before).then_some(TlsRoute { matches, route })
}

fn decode_tcp_route(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    namespace: &str,
) -> Option<TcpRoute> {
    let entries = d.mapping(node, path, &["match", "route"])?;
    let errors_before = d.error_count();
    let mut matches = Vec::new();
    for (match_path, item) in d.items(entries, "match", path) {
        let Some(m) = d.mapping(
            item,
            &match_path,
            &[
                "port",
                "gateways",
                "destinationSubnets",
                "sourceLabels",
                "sourceNamespace",
                "sourceSubnet",
            ],
        ) else {
            continue;
        };
        if let Some(at) = field(m, "sourceSubnet") {
            d.report(
                Severity::Warning,
                at,
                &join(&match_path, "sourceSubnet"),
                "sourceSubnet is applied neither by Istio (a hidden field it never reads) nor by this gateway; ignored".into(),
            );
        }
        matches.push(TcpMatch {
            port: field(m, "port").and_then(|n| port_number(d, n, &join(&match_path, "port"))),
            gateways: match_gateways(d, m, &match_path, namespace),
            destination_subnets: destination_subnets(d, m, &match_path),
        });
    }
    let route = required_route(d, node, entries, path, "TCP");
    (d.error_count() == errors_before).then_some(TcpRoute { matches, route })
}
