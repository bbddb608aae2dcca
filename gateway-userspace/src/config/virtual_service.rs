//! Decodes `VirtualService` documents, applying Istio's validation rules
//! (`ValidateVirtualService`) for what a gateway serves. The `http` rules
//! are decoded in `http_route`.
mod cors;
mod fault;
mod http_route;
mod mirror;
mod retries;

use std::path::PathBuf;

use super::{
    common::{destinations, export_to, port_number},
    decode::{Decoder, field, item, join},
    diagnostic::{Diagnostic, Severity},
    rules,
    yaml::{Node, Value},
};
use crate::model::{
    DelegateRef, Delegates, Destination, HostIndex, HostPattern, HttpAction, HttpRoute, Model,
    Subnet, TcpMatch, TcpRoute, TlsMatch, TlsRoute, VirtualService,
};

const SPEC_FIELDS: &[&str] = &["hosts", "gateways", "http", "tls", "tcp", "exportTo"];

/// Decodes a VirtualService whose identity is known; `None` on any error.
pub(super) fn decode(
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
    let (gateways, bound_to_mesh) = decode_gateways(d, entries, &namespace);
    let (hosts, kept, is_delegate) = decode_hosts(d, spec, entries, bound_to_mesh);
    let http: Vec<HttpRoute> = d
        .items(entries, "http", "spec")
        .into_iter()
        .filter_map(|(path, item)| {
            http_route::decode_http_route(d, item, &path, &namespace, is_delegate)
        })
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

/// `gateways`, each resolved against the VirtualService's namespace, and
/// whether the VirtualService is bound to the mesh.
fn decode_gateways(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    namespace: &str,
) -> (Vec<String>, bool) {
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
        match rules::gateway_reference(&reference, namespace) {
            Ok((resolved, warning)) => {
                if let Some(warning) = warning {
                    d.report(Severity::Warning, item, &item_path, warning);
                }
                gateways.push(resolved);
            }
            Err(message) => d.error(item, &item_path, message),
        }
    }
    (gateways, bound_to_mesh)
}

/// Where a root rule's `delegate` was written, so that a delegate not
/// found once every document is read is reported there.
pub(super) struct DelegateSite {
    file: PathBuf,
    line: usize,
    col: usize,
    resource: String,
    field: String,
    root_namespace: String,
    to: DelegateRef,
}

/// The `delegate` of each of `vs`'s rules, where `doc` wrote it (`vs`
/// decoded from `doc` without errors, so its rules are the document's, in
/// order).
pub(super) fn delegate_sites(
    d: &Decoder<'_>,
    doc: &Node,
    vs: &VirtualService,
) -> Vec<DelegateSite> {
    let rules = doc.get("spec").and_then(|spec| spec.get("http"));
    let Some(Value::Seq(items)) = rules.map(|n| &n.value) else {
        return Vec::new();
    };
    let mut sites = Vec::new();
    for (index, (rule, node)) in vs.http.iter().zip(items).enumerate() {
        if let (HttpAction::Delegate { to, .. }, Some(at)) = (&rule.action, node.get("delegate")) {
            sites.push(DelegateSite {
                file: d.file().to_path_buf(),
                line: at.line,
                col: at.col,
                resource: format!("VirtualService {}/{}", vs.namespace, vs.name),
                field: join(&item("spec.http", index), "delegate"),
                root_namespace: vs.namespace.clone(),
                to: to.clone(),
            });
        }
    }
    sites
}

/// A warning at each site whose delegate `model` does not hold (or holds
/// as a root, or does not export to the root's namespace): Istio accepts
/// the root and drops only that rule, so its matches fall through to the
/// root's later rules, and a request no rule matches gets 404.
pub(super) fn check_delegates(model: &Model, sites: &[DelegateSite]) -> Vec<Diagnostic> {
    let delegates = Delegates::new(&model.virtual_services);
    sites
        .iter()
        .filter_map(|site| {
            let missing = delegates.find(&site.to, &site.root_namespace).err()?;
            Some(Diagnostic {
                severity: Severity::Warning,
                file: site.file.clone(),
                line: site.line,
                col: site.col,
                resource: site.resource.clone(),
                field: site.field.clone(),
                message: format!(
                    "{missing}: as in Istio, this rule is dropped, so the requests it matches go to the rules after it (404 if none matches)"
                ),
            })
        })
        .collect()
}

/// `hosts`, none overlapping another (Istio's duplicate check), the
/// index of them that TLS routes' SNI hosts are checked against, and
/// whether none is written (a delegate).
fn decode_hosts(
    d: &mut Decoder<'_>,
    spec: &Node,
    entries: &[(Node, Node)],
    bound_to_mesh: bool,
) -> (Vec<String>, HostIndex<()>, bool) {
    let mut hosts: Vec<String> = Vec::new();
    // The hosts kept so far, indexed: each host is checked against all the
    // earlier ones without comparing it with each (quadratic in the hosts).
    let mut kept: HostIndex<()> = HostIndex::default();
    let host_items = d.items(entries, "hosts", "spec");
    let is_delegate = host_items.is_empty();
    if is_delegate {
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
    (hosts, kept, is_delegate)
}

/// A VirtualService without hosts is a delegate: Istio allows it only as
/// the target of another VirtualService's `http[].delegate`, so with no
/// gateways and no tls or tcp rules (`ValidateVirtualService`).
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

/// A `Percent` message (`{value: 12.5}`): its `value` node, path and
/// number; `Some(None)` when it has no value (0), `None` after an error.
fn percent_value<'n>(
    d: &mut Decoder<'_>,
    node: &'n Node,
    path: &str,
) -> Option<Option<(&'n Node, String, f64)>> {
    let entries = d.mapping(node, path, &["value"])?;
    let Some(at) = field(entries, "value") else {
        return Some(None);
    };
    let value_path = join(path, "value");
    let value = match at.value {
        Value::Int(i) => i as f64,
        Value::Float(f) => f,
        _ => {
            d.error(
                at,
                &value_path,
                format!("expected a number, found {}", at.type_name()),
            );
            return None;
        }
    };
    Some(Some((at, value_path, value)))
}
