//! `http[].headers`: request and response header operations, checked with
//! Istio's rules (`validateHTTPRoute` header manipulation).
use super::{
    decode::{Decoder, field, join},
    yaml::{Node, Value},
};
use crate::model::HeaderOperations;

/// Which operation a header name is used in: Istio lets request `set` and
/// `add` rewrite the authority, nothing else touch `host` or a pseudo-header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    RequestWrite,
    Other,
}

/// `headers.request` and `headers.response`.
pub(super) fn decode(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> (HeaderOperations, HeaderOperations) {
    let Some(entries) = d.mapping(node, path, &["request", "response"]) else {
        return Default::default();
    };
    let mut operations = |name: &str, write: Use| match field(entries, name) {
        Some(node) => decode_operations(d, node, &join(path, name), write),
        None => HeaderOperations::default(),
    };
    let request = operations("request", Use::RequestWrite);
    let response = operations("response", Use::Other);
    (request, response)
}

fn decode_operations(d: &mut Decoder<'_>, node: &Node, path: &str, write: Use) -> HeaderOperations {
    let Some(entries) = d.mapping(node, path, &["set", "add", "remove"]) else {
        return HeaderOperations::default();
    };
    let mut out = HeaderOperations::default();
    for (name, slot) in [("set", &mut out.set), ("add", &mut out.add)] {
        let Some(map) = field(entries, name) else {
            continue;
        };
        *slot = name_values(d, map, &join(path, name), write);
    }
    for (item_path, item) in d.items(entries, "remove", path) {
        let Some(name) = d.string(item, &item_path) else {
            continue;
        };
        match header_name(&name, Use::Other) {
            Ok(name) => out.remove.push(name),
            Err(message) => d.error(item, &item_path, message),
        }
    }
    out
}

/// A `set` or `add` map: header name -> value, names lower-cased.
fn name_values(d: &mut Decoder<'_>, node: &Node, path: &str, write: Use) -> Vec<(String, String)> {
    let Value::Map(entries) = &node.value else {
        if node.value != Value::Null {
            d.error(
                node,
                path,
                format!("expected a mapping, found {}", node.type_name()),
            );
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let Some(name) = d.string(key, path) else {
            continue;
        };
        let key_path = join(path, &name);
        let name = match header_name(&name, write) {
            Ok(name) => name,
            Err(message) => {
                d.error(key, &key_path, message);
                continue;
            }
        };
        let Some(value) = d.string(value, &key_path) else {
            continue;
        };
        match header_value(&value) {
            Ok(()) => out.push((name, value)),
            Err(message) => d.error(key, &key_path, message),
        }
    }
    out
}

/// A header name an operation may use, lower-cased (names are
/// case-insensitive; the proxy compares them lower-case).
fn header_name(name: &str, write: Use) -> Result<String, String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let lower = name.to_ascii_lowercase();
    let authority = lower == ":authority" || lower == "host";
    if lower == "host" && write != Use::RequestWrite {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if lower.starts_with(':') && !(authority && write == Use::RequestWrite) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    let token = lower
        .strip_prefix(':')
        .unwrap_or(&lower)
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("header name {name:?} is not a valid header name"));
    }
    Ok(lower)
}

/// Istio's `ValidateHTTPHeaderValue` plus what HTTP forbids in a value.
fn header_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("header value must not contain control characters".into());
    }
    if !value.matches('%').count().is_multiple_of(2) {
        return Err("single % not allowed. Escape by doubling to %% or encase Envoy variable name in pair of %".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_tokens() {
        assert_eq!(
            header_name("X-Request-Id", Use::Other),
            Ok("x-request-id".into())
        );
        assert_eq!(
            header_name("bad name", Use::Other),
            Err("header name \"bad name\" is not a valid header name".into())
        );
        assert_eq!(
            header_name("", Use::Other),
            Err("header name cannot be empty".into())
        );
    }

    #[test]
    fn pseudo_headers_and_host_are_off_limits_except_authority_on_request_writes() {
        assert!(header_name(":path", Use::RequestWrite).is_err());
        assert!(header_name(":path", Use::Other).is_err());
        assert_eq!(
            header_name("Host", Use::Other),
            Err("invalid header \"Host\": cannot set Host header".into())
        );
        assert_eq!(
            header_name(":authority", Use::Other),
            Err("invalid header \":authority\": header cannot have \":\" prefix".into())
        );
        assert_eq!(
            header_name(":authority", Use::RequestWrite),
            Ok(":authority".into())
        );
        assert_eq!(header_name("host", Use::RequestWrite), Ok("host".into()));
    }

    #[test]
    fn values_need_paired_percent_signs_and_no_control_characters() {
        assert_eq!(header_value("100%% sure %HOSTNAME%"), Ok(()));
        assert!(header_value("abc%123").is_err());
        assert!(header_value("a\r\nb: c").is_err());
        assert_eq!(header_value("tab\tok"), Ok(()));
    }
}
