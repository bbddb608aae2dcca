//! Pieces shared by the routing kinds: destinations, string matches,
//! `exportTo`, label maps, durations and Istio's host-name rules for them.
use std::collections::BTreeMap;

use super::{
    decode::{Decoder, field, join},
    rules,
    yaml::{Node, Value},
};
use crate::model::{Destination, DestinationHeaders, ExportTo, StringMatch};

/// Longest regular expression Istio accepts in a match.
const MAX_REGEX_LEN: usize = 1024;

/// `exportTo`: `*`, `.`, or namespace names.
pub(super) fn export_to(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> ExportTo {
    let Some(node) = field(entries, "exportTo") else {
        return ExportTo::default();
    };
    let list = d.string_list(entries, "exportTo", path);
    for (i, to) in list.iter().enumerate() {
        if to != "*" && to != "." && !rules::is_dns1123_label(to) {
            d.error(
                node,
                &format!("{}[{i}]", join(path, "exportTo")),
                format!("invalid exportTo value {to:?}: expected \"*\", \".\" or a namespace"),
            );
        }
    }
    ExportTo(list)
}

/// A map of string keys to string values (`labels`, `selector`).
pub(super) fn string_map(d: &mut Decoder<'_>, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => return map,
        _ => {
            d.error(
                node,
                path,
                format!("expected a mapping, found {}", node.type_name()),
            );
            return map;
        }
    };
    for (key, value) in entries {
        let Some(key) = d.string(key, path) else {
            continue;
        };
        // Kubernetes label values are strings; unquoted numbers and booleans
        // are turned back into text.
        let value = match &value.value {
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => d.string(value, &join(path, &key)),
        };
        if let Some(value) = value {
            map.insert(key, value);
        }
    }
    map
}

/// A `StringMatch` (`exact`, `prefix` or `regex`, exactly one).
pub(super) fn string_match(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<StringMatch> {
    let entries = d.mapping(node, path, &["exact", "prefix", "regex"])?;
    let exact = d.opt_string(entries, "exact", path);
    let prefix = field(entries, "prefix").and_then(|n| d.string(n, &join(path, "prefix")));
    let regex = d.opt_string(entries, "regex", path);
    let set = [exact.is_some(), prefix.is_some(), regex.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if set != 1 {
        d.error(
            node,
            path,
            "exactly one of exact, prefix or regex must be set",
        );
        return None;
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            d.error(
                node,
                &join(path, "prefix"),
                "prefix match must not be empty",
            );
            return None;
        }
        return Some(StringMatch::Prefix(prefix));
    }
    if let Some(regex) = regex {
        let at = field(entries, "regex").unwrap_or(node);
        if regex.len() > MAX_REGEX_LEN {
            d.error(
                at,
                &join(path, "regex"),
                format!(
                    "regex is {} characters, the limit is {MAX_REGEX_LEN}",
                    regex.len()
                ),
            );
            return None;
        }
        if let Err(err) = regex::Regex::new(&regex) {
            d.error(
                at,
                &join(path, "regex"),
                format!("invalid regex: {}", first_line(&err.to_string())),
            );
            return None;
        }
        return Some(StringMatch::Regex(regex));
    }
    exact.map(StringMatch::Exact)
}

fn first_line(text: &str) -> String {
    text.lines().last().unwrap_or(text).trim().to_string()
}

/// A port number in 1..65535.
pub(super) fn port_number(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<u16> {
    match d.integer(node, path)? {
        value @ 1..=65535 => u16::try_from(value).ok(),
        value => {
            d.error(
                node,
                path,
                format!("port number {value} must be in the range 1..65535"),
            );
            None
        }
    }
}

/// A non-negative 32-bit count.
pub(super) fn count(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    name: &str,
    path: &str,
) -> Option<u32> {
    let node = field(entries, name)?;
    let value = d.integer(node, &join(path, name))?;
    match u32::try_from(value) {
        Ok(v) => Some(v),
        Err(_) => {
            d.error(
                node,
                &join(path, name),
                format!("{value} must be between 0 and {}", u32::MAX),
            );
            None
        }
    }
}

/// A protobuf duration such as `5s`, `1.5s`, `100ms`, `1m`.
pub(super) fn duration(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    name: &str,
    path: &str,
) -> Option<std::time::Duration> {
    let node = field(entries, name)?;
    let text = d.string(node, &join(path, name))?;
    let Some(millis) = rules::duration_millis(&text) else {
        d.error(
            node,
            &join(path, name),
            format!(
                "invalid duration {text:?}: expected a number with a unit such as 5s, 100ms or 1m"
            ),
        );
        return None;
    };
    // Parsed once, here: what reads a duration gets a `Duration`.
    std::time::Duration::try_from_secs_f64(millis / 1000.0).ok()
}

/// One `route[]` / `destination` pair of an http, tls or tcp rule; only
/// an http rule's (`http: true`) may carry `headers`.
pub(super) fn destinations(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    http: bool,
) -> Vec<Destination> {
    let mut out = Vec::new();
    let known: &[&str] = if http {
        &["destination", "weight", "headers"]
    } else {
        &["destination", "weight"]
    };
    for (item_path, item) in d.items(entries, "route", path) {
        let Some(route) = d.mapping(item, &item_path, known) else {
            continue;
        };
        let headers = match (http, field(route, "headers")) {
            (true, Some(at)) => {
                let (request, response) =
                    super::headers::decode(d, at, &join(&item_path, "headers"));
                DestinationHeaders { request, response }
            }
            _ => DestinationHeaders::default(),
        };
        let weight = count(d, route, "weight", &item_path);
        let Some(dest) = field(route, "destination") else {
            d.error(
                item,
                &join(&item_path, "destination"),
                "destination is required",
            );
            continue;
        };
        let Some((host, subset, port)) = destination(d, dest, &join(&item_path, "destination"))
        else {
            continue;
        };
        out.push(Destination {
            host,
            subset,
            port,
            weight: weight.unwrap_or(0),
            headers,
        });
    }
    if let Some(at) = field(entries, "route") {
        if out.len() > 1 && out.iter().all(|dest| dest.weight == 0) {
            d.error(
                at,
                &join(path, "route"),
                "total destination weight is 0; give the destinations weights",
            );
        }
    }
    if out.len() == 1 {
        out[0].weight = 100;
    }
    out
}

/// One `destination` (host, subset, port), checked as Istio checks it;
/// `None` (with the error) when it has no host.
pub(super) fn destination(
    d: &mut Decoder<'_>,
    dest: &Node,
    dest_path: &str,
) -> Option<(String, Option<String>, Option<u16>)> {
    let dest_entries = d.mapping(dest, dest_path, &["host", "subset", "port"])?;
    let Some(host) = d.opt_string(dest_entries, "host", dest_path) else {
        d.error(
            dest,
            &join(dest_path, "host"),
            "destination.host is required",
        );
        return None;
    };
    let subset = d.opt_string(dest_entries, "subset", dest_path);
    if let Some(subset) = &subset {
        if !rules::is_dns1123_label(subset) {
            let at = field(dest_entries, "subset").unwrap_or(dest);
            d.error(
                at,
                &join(dest_path, "subset"),
                format!("subset name {subset:?} must be a DNS-1123 label"),
            );
        }
    }
    let port = match field(dest_entries, "port") {
        Some(port) => {
            let port_path = join(dest_path, "port");
            d.mapping(port, &port_path, &["number"])
                .and_then(|p| field(p, "number"))
                .and_then(|n| port_number(d, n, &join(&port_path, "number")))
        }
        None => None,
    };
    Some((host, subset, port))
}
