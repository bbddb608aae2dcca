//! A rule's `from[].source` and `to[].operation`, with Istio's per-rule
//! checks (`ValidateAuthorizationPolicy`) in its words.
use super::{Strings, checks, mesh_identity_refused, strings};
use crate::{
    config::{
        decode::{Decoder, field, item, join},
        yaml::{Node, Value},
    },
    model::{Operation, PathMatch, RequestPrincipal, Source, Subnet, ValueMatch},
};

/// `source` fields: (YAML name, Go field name Istio's messages use).
const SOURCE_FIELDS: &[(&str, &str)] = &[
    ("principals", "Principals"),
    ("notPrincipals", "NotPrincipals"),
    ("requestPrincipals", "RequestPrincipals"),
    ("notRequestPrincipals", "NotRequestPrincipals"),
    ("namespaces", "Namespaces"),
    ("notNamespaces", "NotNamespaces"),
    ("ipBlocks", "IpBlocks"),
    ("notIpBlocks", "NotIpBlocks"),
    ("remoteIpBlocks", "RemoteIpBlocks"),
    ("notRemoteIpBlocks", "NotRemoteIpBlocks"),
    ("serviceAccounts", "ServiceAccounts"),
    ("notServiceAccounts", "NotServiceAccounts"),
    ("trustDomains", "TrustDomains"),
    ("notTrustDomains", "NotTrustDomains"),
];

/// The `source` fields that need the client's mesh identity.
const MESH_IDENTITY_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];

/// The `source` fields Istio refuses with CUSTOM (its ext_authz runs
/// before JWT validation, and identities are left to the provider).
const CUSTOM_REFUSED_FIELDS: &[&str] = &[
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
];

/// The `source` fields a TCP connection can be judged by (Istio's
/// `tcpRulesInFrom`; it leaves out `trustDomains`).
const TCP_SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "ipBlocks",
    "notIpBlocks",
    "namespaces",
    "notNamespaces",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
];

const OPERATION_FIELDS: &[(&str, &str)] = &[
    ("hosts", "Hosts"),
    ("notHosts", "NotHosts"),
    ("ports", "Ports"),
    ("notPorts", "NotPorts"),
    ("methods", "Methods"),
    ("notMethods", "NotMethods"),
    ("paths", "Paths"),
    ("notPaths", "NotPaths"),
];

/// A rule's `from` or `to` as decoded, with what Istio's DENY warning
/// needs to know about it.
pub(super) struct Side<T> {
    /// `None` when absent (or null, or an empty list, which is an error).
    pub value: Option<Vec<T>>,
    /// Some entry has a non-null `source` (`operation`).
    pub exists: bool,
    /// Some entry uses a field a TCP connection has.
    pub tcp: bool,
}

/// The entries of list field `name` of a rule, with Istio's checks that
/// the list and its entries are not empty or nil. `None` when absent.
fn entries_of<'n>(
    d: &mut Decoder<'_>,
    entries: &'n [(Node, Node)],
    name: &str,
    path: &str,
    index: usize,
) -> Option<Vec<(String, &'n Node)>> {
    let node = field(entries, name).filter(|n| n.value != Value::Null)?;
    let list_path = join(path, name);
    let list = d.sequence(node, &list_path)?;
    if list.is_empty() {
        d.error(
            node,
            &list_path,
            format!("`{name}` must not be empty, found at rule {index}"),
        );
    }
    Some(
        list.iter()
            .enumerate()
            .map(|(i, n)| (item(&list_path, i), n))
            .collect(),
    )
}

/// `from`: each entry's `source`.
pub(super) fn decode_from(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    index: usize,
    custom: bool,
) -> Side<Source> {
    let mut side = Side {
        value: None,
        exists: false,
        tcp: false,
    };
    let Some(list) = entries_of(d, entries, "from", path, index) else {
        return side;
    };
    let mut sources = Vec::new();
    for (from_path, node) in list {
        let source = match &node.value {
            Value::Null => None,
            _ => d
                .mapping(node, &from_path, &["source"])
                .and_then(|e| field(e, "source"))
                .filter(|n| n.value != Value::Null),
        };
        let Some(source) = source else {
            let message = if node.value == Value::Null {
                format!("`from` must not be nil, found at rule {index}")
            } else {
                format!("`from.source` must not be nil, found at rule {index}")
            };
            d.error(node, &from_path, message);
            continue;
        };
        side.exists = true;
        let source_path = join(&from_path, "source");
        if let Some((value, tcp)) = decode_source(d, source, &source_path, index, custom) {
            side.tcp |= tcp;
            sources.push(value);
        }
    }
    side.value = Some(sources);
    side
}

/// One `source`, and whether it uses a field a TCP connection has.
fn decode_source(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    index: usize,
    custom: bool,
) -> Option<(Source, bool)> {
    let known: Vec<&str> = SOURCE_FIELDS.iter().map(|(name, _)| *name).collect();
    let entries = d.mapping(node, path, &known)?;
    let lists: Vec<(&str, &str, Option<Strings<'_>>)> = SOURCE_FIELDS
        .iter()
        .map(|(name, go)| (*name, *go, strings(d, entries, name, path)))
        .collect();
    let get = |name: &str| {
        lists
            .iter()
            .find(|(n, _, _)| *n == name)
            .and_then(|(_, _, list)| list.as_ref())
    };
    if lists.iter().all(|(_, _, list)| list.is_none()) {
        d.error(
            node,
            path,
            format!("`from.source` must not be empty, found at rule {index}"),
        );
    }
    let set = |names: &[&str]| names.iter().any(|n| get(n).is_some());
    if set(&["principals", "notPrincipals", "namespaces", "notNamespaces"])
        && set(&["serviceAccounts", "notServiceAccounts"])
    {
        d.error(
            node,
            path,
            format!(
                "cannot set serviceAccounts with namespaces or principals, found at rule {index}"
            ),
        );
    }
    for (name, go, list) in &lists {
        let Some(list) = list else { continue };
        let values = list.values();
        match *name {
            "serviceAccounts" | "notServiceAccounts" => {
                if let Err(message) = checks::service_accounts(go, &values) {
                    d.error(list.node, &list.path, message);
                }
            }
            "trustDomains" | "notTrustDomains" => {
                if let Err(message) = checks::trust_domains(go, &values) {
                    d.error(list.node, &list.path, message);
                }
            }
            _ => {
                if let Some((i, message)) = checks::empty_value(go, &values) {
                    let (_, at, at_path) = &list.items[i];
                    d.error(at, at_path, message);
                }
            }
        }
        if MESH_IDENTITY_FIELDS.contains(name) {
            d.error(list.node, &list.path, mesh_identity_refused(name));
        }
        if custom && CUSTOM_REFUSED_FIELDS.contains(name) {
            d.error(
                list.node,
                &list.path,
                format!("From.{go} is currently not supported with CUSTOM action"),
            );
        }
    }
    let mut ips = |name: &str| -> Vec<Subnet> {
        let Some(list) = get(name) else {
            return Vec::new();
        };
        let mut subnets = Vec::new();
        for (text, at, at_path) in &list.items {
            match checks::ip_value(text) {
                Ok(subnet) => subnets.push(subnet),
                Err(message) => d.error(at, at_path, message),
            }
        }
        subnets
    };
    let ip_blocks = ips("ipBlocks");
    let not_ip_blocks = ips("notIpBlocks");
    let remote_ip_blocks = ips("remoteIpBlocks");
    let not_remote_ip_blocks = ips("notRemoteIpBlocks");
    let principals = |name: &str| -> Vec<RequestPrincipal> {
        get(name)
            .map(|list| {
                list.items
                    .iter()
                    .map(|(text, _, _)| RequestPrincipal::parse(text))
                    .collect()
            })
            .unwrap_or_default()
    };
    let source = Source {
        ip_blocks,
        not_ip_blocks,
        remote_ip_blocks,
        not_remote_ip_blocks,
        request_principals: principals("requestPrincipals"),
        not_request_principals: principals("notRequestPrincipals"),
    };
    Some((source, set(TCP_SOURCE_FIELDS)))
}

/// `to`: each entry's `operation`.
pub(super) fn decode_to(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    index: usize,
) -> Side<Operation> {
    let mut side = Side {
        value: None,
        exists: false,
        tcp: false,
    };
    let Some(list) = entries_of(d, entries, "to", path, index) else {
        return side;
    };
    let mut operations = Vec::new();
    for (to_path, node) in list {
        let operation = match &node.value {
            Value::Null => None,
            _ => d
                .mapping(node, &to_path, &["operation"])
                .and_then(|e| field(e, "operation"))
                .filter(|n| n.value != Value::Null),
        };
        let Some(operation) = operation else {
            let message = if node.value == Value::Null {
                format!("`to` must not be nil, found at rule {index}")
            } else {
                format!("`to.operation` must not be nil, found at rule {index}")
            };
            d.error(node, &to_path, message);
            continue;
        };
        side.exists = true;
        let operation_path = join(&to_path, "operation");
        if let Some((value, tcp)) = decode_operation(d, operation, &operation_path, index) {
            side.tcp |= tcp;
            operations.push(value);
        }
    }
    side.value = Some(operations);
    side
}

/// One `operation`, and whether it names ports (Istio's `tcpRulesInTo`).
fn decode_operation(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    index: usize,
) -> Option<(Operation, bool)> {
    let known: Vec<&str> = OPERATION_FIELDS.iter().map(|(name, _)| *name).collect();
    let entries = d.mapping(node, path, &known)?;
    let lists: Vec<(&str, &str, Option<Strings<'_>>)> = OPERATION_FIELDS
        .iter()
        .map(|(name, go)| (*name, *go, strings(d, entries, name, path)))
        .collect();
    if lists.iter().all(|(_, _, list)| list.is_none()) {
        d.error(
            node,
            path,
            format!("`to.operation` must not be empty, found at rule {index}"),
        );
    }
    let mut operation = Operation::default();
    for (name, go, list) in &lists {
        let Some(list) = list else { continue };
        if let Some((i, message)) = checks::empty_value(go, &list.values()) {
            let (_, at, at_path) = &list.items[i];
            d.error(at, at_path, message);
        }
        for (text, at, at_path) in &list.items {
            match *name {
                "ports" | "notPorts" => match checks::port_value(text) {
                    Ok(port) if *name == "ports" => operation.ports.push(port),
                    Ok(port) => operation.not_ports.push(port),
                    Err(message) => d.error(at, at_path, message),
                },
                "paths" | "notPaths" => match checks::path_value(go, text) {
                    Ok(path) => paths_of(&mut operation, name).push(path),
                    Err(message) => d.error(at, at_path, message),
                },
                _ => values_of(&mut operation, name).push(ValueMatch::parse(text)),
            }
        }
    }
    let tcp = lists
        .iter()
        .any(|(name, _, list)| matches!(*name, "ports" | "notPorts") && list.is_some());
    Some((operation, tcp))
}

fn paths_of<'o>(operation: &'o mut Operation, name: &str) -> &'o mut Vec<PathMatch> {
    if name == "paths" {
        &mut operation.paths
    } else {
        &mut operation.not_paths
    }
}

fn values_of<'o>(operation: &'o mut Operation, name: &str) -> &'o mut Vec<ValueMatch> {
    match name {
        "hosts" => &mut operation.hosts,
        "notHosts" => &mut operation.not_hosts,
        "methods" => &mut operation.methods,
        _ => &mut operation.not_methods,
    }
}
