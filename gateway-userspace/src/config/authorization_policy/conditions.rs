//! A rule's `when` conditions: the keys an ingress gateway can decide on,
//! Istio's `ValidateAttribute` for every key, and a refusal naming the
//! key for those it cannot (mesh identity, Envoy filter metadata).
use super::{Strings, checks, mesh_identity_refused, strings};
use crate::{
    config::{
        decode::{Decoder, field, join},
        yaml::{Node, Value},
    },
    model::{Condition, RequestPrincipal, Subnet, ValueMatch, Values},
};

const HEADERS: &str = "request.headers";
const CLAIMS: &str = "request.auth.claims";
const ENVOY_FILTERS: &str = "experimental.envoy.filters.";
/// `when` keys that need the client's mesh identity.
const MESH_IDENTITY_KEYS: &[&str] = &[
    "source.principal",
    "source.namespace",
    "source.serviceAccount",
    "source.trustDomain",
];

/// What a key is, as `ValidateAttribute` sorts it (prefix checks in its
/// order), with what its values become.
enum Key {
    Header(String),
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    RequestPrincipal,
    Audiences,
    Presenter,
    Claim(Vec<String>),
    Sni,
    /// Valid to Istio; refused here with this message.
    Refused(String),
}

/// One `when` entry; `None` if it has errors (reported on `d`).
pub(super) fn decode(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    custom: bool,
) -> Option<Condition> {
    // Go decodes a null entry as an empty condition (no key).
    let entries: &[(Node, Node)] = match &node.value {
        Value::Null => &[],
        _ => d.mapping(node, path, &["key", "values", "notValues"])?,
    };
    let key_node = field(entries, "key").unwrap_or(node);
    let key_path = join(path, "key");
    let key = match field(entries, "key") {
        Some(n) if n.value != Value::Null => d.string(n, &key_path)?,
        _ => String::new(),
    };
    if key.is_empty() {
        d.error(key_node, &key_path, "`key` must not be empty");
        return None;
    }
    let values = strings(d, entries, "values", path);
    let not_values = strings(d, entries, "notValues", path);
    if values.is_none() && not_values.is_none() {
        d.error(
            node,
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return None;
    }
    if custom && (MESH_IDENTITY_KEYS.contains(&key.as_str()) || key.starts_with("request.auth.")) {
        d.error(
            key_node,
            &key_path,
            format!("{key} is currently not supported with CUSTOM action"),
        );
    }
    let errors_before = d.error_count();
    let kind = classify(d, &key, key_node, &key_path, [&values, &not_values]);
    let kind = match kind {
        Some(Key::Refused(message)) => {
            d.error(key_node, &key_path, message);
            None
        }
        other => other,
    };
    let kind = kind?;
    if d.error_count() > errors_before {
        return None;
    }
    let (values, not_values) = (texts_of(&values), texts_of(&not_values));
    let matches = |texts: &[String]| texts.iter().map(|t| ValueMatch::parse(t)).collect();
    let subnets = |texts: &[String]| -> Vec<Subnet> {
        texts
            .iter()
            .filter_map(|t| checks::ip_value(t).ok())
            .collect()
    };
    let ports = |texts: &[String]| -> Vec<u16> {
        texts
            .iter()
            .filter_map(|t| checks::port_value(t).ok())
            .collect()
    };
    let value_matches = |texts: &[String]| Values {
        values: matches(texts),
        not_values: matches(&not_values),
    };
    let ips = || Values {
        values: subnets(&values),
        not_values: subnets(&not_values),
    };
    Some(match kind {
        Key::Header(name) => Condition::RequestHeader {
            name,
            values: value_matches(&values),
        },
        Key::SourceIp => Condition::SourceIp(ips()),
        Key::RemoteIp => Condition::RemoteIp(ips()),
        Key::DestinationIp => Condition::DestinationIp(ips()),
        Key::DestinationPort => Condition::DestinationPort(Values {
            values: ports(&values),
            not_values: ports(&not_values),
        }),
        Key::RequestPrincipal => Condition::RequestPrincipal(Values {
            values: values.iter().map(|t| RequestPrincipal::parse(t)).collect(),
            not_values: not_values
                .iter()
                .map(|t| RequestPrincipal::parse(t))
                .collect(),
        }),
        Key::Audiences => Condition::Audiences(value_matches(&values)),
        Key::Presenter => Condition::Presenter(value_matches(&values)),
        Key::Claim(path) => Condition::Claim {
            path,
            values: value_matches(&values),
        },
        Key::Sni => Condition::ConnectionSni(value_matches(&values)),
        Key::Refused(_) => return None,
    })
}

fn texts_of(strings: &Option<Strings<'_>>) -> Vec<String> {
    strings.as_ref().map(Strings::values).unwrap_or_default()
}

/// `ValidateAttribute(key, values)` and `(key, notValues)`, each error
/// reported as Istio words it; then what the key is, or `None` when
/// Istio refuses it.
fn classify(
    d: &mut Decoder<'_>,
    key: &str,
    key_node: &Node,
    key_path: &str,
    lists: [&Option<Strings<'_>>; 2],
) -> Option<Key> {
    let mut valid = true;
    for (list, which) in lists.into_iter().zip(["value", "notValue"]) {
        let report = |d: &mut Decoder<'_>, at: &Node, at_path: &str, err: String| {
            d.error(
                at,
                at_path,
                format!("invalid `{which}` for `key` {key}: {err}"),
            );
        };
        let values = texts_of(list);
        // `CheckEmptyValues` comes first and hides the rest.
        if let Some((i, message)) = checks::empty_value(key, &values) {
            let Some(list) = list else { continue };
            let (_, at, at_path) = &list.items[i];
            report(d, at, at_path, message);
            valid = false;
            continue;
        }
        let each = |d: &mut Decoder<'_>, check: fn(&str) -> Result<(), String>| {
            let mut ok = true;
            for (text, at, at_path) in list.iter().flat_map(|l| l.items.iter()) {
                if let Err(err) = check(text) {
                    report(d, at, at_path, err);
                    ok = false;
                }
            }
            ok
        };
        let key_error = match key {
            k if k.starts_with(HEADERS)
                || k.starts_with(CLAIMS)
                || k.starts_with(ENVOY_FILTERS) =>
            {
                checks::map_key(k).err()
            }
            "source.ip" | "remote.ip" | "destination.ip" => {
                valid &= each(d, |t| checks::ip_value(t).map(drop));
                None
            }
            "destination.port" => {
                valid &= each(d, |t| checks::port_value(t).map(drop));
                None
            }
            "source.serviceAccount" => checks::service_accounts(key, &values).err(),
            "source.trustDomain" => checks::wildcard_values(key, &values).err(),
            "source.namespace"
            | "source.principal"
            | "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter"
            | "connection.sni" => None,
            "destination.namespace" => Some(format!(
                "attribute {key} is replaced by the metadata.namespace"
            )),
            k if k.starts_with("destination.labels") => Some(format!(
                "attribute {key} is replaced by the workload selector"
            )),
            "destination.name" | "destination.user" => Some(format!(
                "deprecated attribute {key}: only supported in v1alpha1"
            )),
            _ => Some(format!("unknown attribute: {key}")),
        };
        if let Some(err) = key_error {
            let at = list.as_ref().map_or(key_node, |l| l.node);
            let at_path = list.as_ref().map_or(key_path, |l| l.path.as_str());
            report(d, at, at_path, err);
            valid = false;
        }
    }
    if !valid {
        return None;
    }
    Some(match key {
        k if k.starts_with(HEADERS) => match checks::name_in_brackets(&k[HEADERS.len()..]) {
            Ok(name) => Key::Header(name),
            Err(err) => Key::Refused(generator_refuses(key, &err)),
        },
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "destination.ip" => Key::DestinationIp,
        "destination.port" => Key::DestinationPort,
        "request.auth.principal" => Key::RequestPrincipal,
        "request.auth.audiences" => Key::Audiences,
        "request.auth.presenter" => Key::Presenter,
        k if k.starts_with(CLAIMS) => match checks::names_in_nested_brackets(&k[CLAIMS.len()..]) {
            Ok(path) => Key::Claim(path),
            Err(err) => Key::Refused(generator_refuses(key, &err)),
        },
        "connection.sni" => Key::Sni,
        k if MESH_IDENTITY_KEYS.contains(&k) => Key::Refused(mesh_identity_refused(k)),
        _ => Key::Refused(format!(
            "{key} is not supported by this gateway: it matches Envoy filter metadata, which this gateway does not have"
        )),
    })
}

/// A key Istio's validation admits but its RBAC generator refuses (the
/// rule is then skipped, or for DENY only that condition dropped).
fn generator_refuses(key: &str, err: &str) -> String {
    format!(
        "bad key ({key}): {err}; Istio admits it but drops the condition when building Envoy's RBAC, so the gateway refuses it"
    )
}
