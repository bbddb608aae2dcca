//! `http[].corsPolicy`, with Istio's `validateCORSPolicy` rules and what
//! `TranslateCORSPolicy` makes of it (pilot/pkg/networking/core/route).
use super::fault::milliseconds;
use crate::{
    config::{
        common::string_match,
        decode::{Decoder, field, item, join},
        yaml::{Node, Value},
    },
    model::{CorsPolicy, StringMatch},
};

/// Go's `net/http` method names and `*` (Istio's `supportedCORSMethods`).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

const FIELDS: &[&str] = &[
    "allowOrigin",
    "allowOrigins",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
    "unmatchedPreflights",
];

/// `corsPolicy` (a VirtualService with any error is left out whole, so
/// what an invalid policy decodes to is never served).
pub(super) fn decode_cors(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<CorsPolicy> {
    let entries = d.mapping(node, path, FIELDS)?;
    let mut allow_origins: Vec<StringMatch> = d
        .items(entries, "allowOrigins", path)
        .into_iter()
        .filter_map(|(origin_path, n)| string_match(d, n, &origin_path))
        .collect();
    // The deprecated list counts only without `allowOrigins`.
    let deprecated = d.string_list(entries, "allowOrigin", path);
    if field(entries, "allowOrigins").is_none() {
        allow_origins = deprecated.into_iter().map(StringMatch::Exact).collect();
    }
    let allow_methods = d.string_list(entries, "allowMethods", path);
    for (i, method) in allow_methods.iter().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            let list_path = join(path, "allowMethods");
            d.error(
                list_node(entries, "allowMethods", i).unwrap_or(node),
                &item(&list_path, i),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    let allow_headers = header_names(d, entries, "allowHeaders", path, node);
    let expose_headers = header_names(d, entries, "exposeHeaders", path, node);
    let max_age_secs = field(entries, "maxAge").and_then(|n| {
        let age_path = join(path, "maxAge");
        let age = milliseconds(d, n, &age_path)?;
        if age.subsec_millis() != 0 {
            d.error(
                n,
                &age_path,
                "max_age duration is accurate only to seconds precision",
            );
            return None;
        }
        Some(age.as_secs())
    });
    let allow_credentials = d.flag(entries, "allowCredentials", path);
    let forward_unmatched_preflights = match field(entries, "unmatchedPreflights") {
        None => true,
        Some(n) => {
            let mode_path = join(path, "unmatchedPreflights");
            match d.string(n, &mode_path)?.as_str() {
                "UNSPECIFIED" | "FORWARD" => true,
                "IGNORE" => false,
                other => {
                    d.error(
                        n,
                        &mode_path,
                        format!(
                            "unknown unmatchedPreflights {other:?}: expected FORWARD, IGNORE or UNSPECIFIED"
                        ),
                    );
                    return None;
                }
            }
        }
    };
    Some(CorsPolicy {
        allow_origins,
        allow_methods: allow_methods.join(","),
        allow_headers: allow_headers.join(","),
        expose_headers: expose_headers.join(","),
        max_age_secs,
        allow_credentials,
        forward_unmatched_preflights,
    })
}

/// `allowHeaders` or `exposeHeaders`: `*` or header names (RFC 7230
/// token characters, Istio's `ValidateCORSHTTPHeaderName`).
fn header_names(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    name: &str,
    path: &str,
    node: &Node,
) -> Vec<String> {
    let names = d.string_list(entries, name, path);
    let list_path = join(path, name);
    for (i, header) in names.iter().enumerate() {
        let at = list_node(entries, name, i).unwrap_or(node);
        if header.is_empty() {
            d.error(at, &item(&list_path, i), "header name cannot be empty");
        } else if header != "*" && !header.bytes().all(is_token_char) {
            d.error(
                at,
                &item(&list_path, i),
                format!("header name {header} is not a valid header name"),
            );
        }
    }
    names
}

/// RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `index`th item of the list field `name`, to point at.
fn list_node<'n>(entries: &'n [(Node, Node)], name: &str, index: usize) -> Option<&'n Node> {
    match &field(entries, name)?.value {
        Value::Seq(items) => items.get(index),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
