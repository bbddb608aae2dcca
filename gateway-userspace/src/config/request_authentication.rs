//! Decodes `security.istio.io` RequestAuthentication documents with
//! Istio's `ValidateRequestAuthentication` / `validateJwtRule` checks and
//! messages (`pkg/config/validation/validation.go`).
use std::{sync::Arc, time::Duration};

use super::{
    common::string_map,
    decode::{Decoder, field, item, join},
    diagnostic::Severity,
    yaml::{Node, Value},
};
use crate::model::{
    ClaimToHeader, DEFAULT_JWKS_TIMEOUT, Jwks, JwksSource, JwtHeader, JwtRule, PolicyTarget,
    RequestAuthentication,
};

const SPEC_FIELDS: &[&str] = &["selector", "targetRef", "targetRefs", "jwtRules"];
const RULE_FIELDS: &[&str] = &[
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "forwardOriginalToken",
    "outputClaimToHeaders",
    "timeout",
    "spaceDelimitedClaims",
];
const TARGET_REF_FIELDS: &[&str] = &["group", "kind", "name", "namespace"];

/// Decodes a RequestAuthentication whose identity is known; `None` when
/// the caller will find errors reported.
pub(super) fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
) -> Option<RequestAuthentication> {
    let spec = doc.get("spec")?;
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let target = policy_target(d, spec, entries);
    let mut jwt_rules = Vec::new();
    for (path, node) in d.items(entries, "jwtRules", "spec") {
        if let Some(rule) = jwt_rule(d, node, &path) {
            jwt_rules.push(rule);
        }
    }
    Some(RequestAuthentication {
        namespace,
        name,
        target,
        jwt_rules,
    })
}

/// `selector`, `targetRef`, `targetRefs` with Istio's checks
/// (`validateOneOfSelectorType`, `validateWorkloadSelector`,
/// `validatePolicyTargetReference`).
pub(super) fn policy_target(
    d: &mut Decoder<'_>,
    spec: &Node,
    entries: &[(Node, Node)],
) -> PolicyTarget {
    let selector = field(entries, "selector");
    let target_ref = field(entries, "targetRef").filter(|n| !is_null(n));
    let target_refs = field(entries, "targetRefs")
        .and_then(|n| d.sequence(n, "spec.targetRefs"))
        .unwrap_or_default();
    let set = usize::from(selector.is_some_and(|n| !is_null(n)))
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        d.error(
            spec,
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    if let Some(node) = target_ref {
        target_reference(d, node, "spec.targetRef");
    }
    for (i, node) in target_refs.iter().enumerate() {
        target_reference(d, node, &item("spec.targetRefs", i));
    }
    if target_ref.is_some() || !target_refs.is_empty() {
        return PolicyTarget::TargetRefs;
    }
    let Some(selector) = selector.filter(|n| !is_null(n)) else {
        return PolicyTarget::Namespace;
    };
    let labels = d
        .mapping(selector, "spec.selector", &["matchLabels"])
        .and_then(|e| field(e, "matchLabels"))
        .map(|n| string_map(d, n, "spec.selector.matchLabels"))
        .unwrap_or_default();
    for (key, value) in &labels {
        if key.is_empty() {
            d.error(
                selector,
                "spec.selector.matchLabels",
                format!("empty key is not supported in selector: \"{key}={value}\""),
            );
        }
        if key.contains('*') || value.contains('*') {
            d.error(
                selector,
                "spec.selector.matchLabels",
                format!("wildcard is not supported in selector: \"{key}={value}\""),
            );
        }
    }
    if labels.is_empty() {
        d.report(
            Severity::Warning,
            selector,
            "spec.selector",
            "workload selector specified without labels".into(),
        );
    }
    PolicyTarget::Selector(labels)
}

/// Istio's allowed targetRef kinds (`allowedTargetRefs`), canonical group first.
const ALLOWED_TARGET_REFS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

fn target_reference(d: &mut Decoder<'_>, node: &Node, path: &str) {
    let Some(entries) = d.mapping(node, path, TARGET_REF_FIELDS) else {
        return;
    };
    let text = |d: &mut Decoder<'_>, name: &str| {
        field(entries, name)
            .and_then(|n| d.string(n, &join(path, name)))
            .unwrap_or_default()
    };
    let (group, kind, name, namespace) = (
        text(d, "group"),
        text(d, "kind"),
        text(d, "name"),
        text(d, "namespace"),
    );
    if name.is_empty() {
        d.error(node, path, "targetRef name must be set");
    }
    if !namespace.is_empty() {
        d.error(
            node,
            path,
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let canonical = if group.is_empty() { "core" } else { &group };
    if !ALLOWED_TARGET_REFS.contains(&(canonical, kind.as_str())) {
        // Go prints the GroupVersionKind list with `%v`.
        d.error(
            node,
            path,
            format!(
                "targetRef must be to one of [core/v1/Service networking.istio.io/v1/ServiceEntry gateway.networking.k8s.io/v1/Gateway gateway.networking.k8s.io/v1/GatewayClass] but was {group}/{kind}"
            ),
        );
    }
}

fn jwt_rule(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<JwtRule> {
    let entries = d.mapping(node, path, RULE_FIELDS)?;
    let text = |d: &mut Decoder<'_>, name: &str| {
        field(entries, name)
            .and_then(|n| d.string(n, &join(path, name)))
            .unwrap_or_default()
    };
    let issuer = text(d, "issuer");
    let audiences = d.string_list(entries, "audiences", path);
    if audiences.iter().any(String::is_empty) {
        d.error(
            node,
            &join(path, "audiences"),
            "audience must be non-empty string",
        );
    }
    let jwks_uri = text(d, "jwksUri");
    if issuer.is_empty() && jwks_uri.is_empty() {
        d.error(node, path, "issuer or jwksUri must be non-empty string");
    }
    if !jwks_uri.is_empty() {
        if let Err(why) = parse_jwks_uri(&jwks_uri) {
            d.error(node, &join(path, "jwksUri"), why);
        }
    }
    let jwks_text = text(d, "jwks");
    let mut inline = None;
    if !jwks_text.is_empty() {
        match Jwks::parse(&jwks_text) {
            Ok((jwks, problems)) if problems.is_empty() => inline = Some(jwks),
            Ok((_, problems)) => {
                for problem in problems {
                    d.error(
                        node,
                        &join(path, "jwks"),
                        format!("jwks parse error: {problem}"),
                    );
                }
            }
            Err(problem) => {
                d.error(
                    node,
                    &join(path, "jwks"),
                    format!("jwks parse error: {problem}"),
                );
            }
        }
        for (i, key) in inline.iter().flat_map(|j| j.keys.iter()).enumerate() {
            if key.private {
                d.report(
                    Severity::Warning,
                    node,
                    &join(path, "jwks"),
                    format!("jwks key at index {i} contains private key material; only public keys are used for verification"),
                );
            }
        }
    }
    let from_headers = from_headers(d, entries, path);
    let from_params = d.string_list(entries, "fromParams", path);
    if from_params.iter().any(String::is_empty) {
        d.error(
            node,
            &join(path, "fromParams"),
            "location query must be non-empty string",
        );
    }
    let from_cookies = d.string_list(entries, "fromCookies", path);
    if from_cookies.iter().any(String::is_empty) {
        d.error(
            node,
            &join(path, "fromCookies"),
            "cookie name must be non-empty string",
        );
    }
    let output_payload_to_header = d.opt_string(entries, "outputPayloadToHeader", path);
    if let Some(header) = &output_payload_to_header {
        // Not an Istio check: Envoy refuses the config instead.
        if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            d.error(
                node,
                &join(path, "outputPayloadToHeader"),
                format!("header name {header} is not a valid header name"),
            );
        }
    }
    let forward_original_token = d.flag(entries, "forwardOriginalToken", path);
    let output_claim_to_headers = claim_to_headers(d, entries, path);
    let timeout = timeout(d, entries, path);
    let space_delimited_claims = d.string_list(entries, "spaceDelimitedClaims", path);
    let jwks = match (inline, jwks_uri.is_empty()) {
        (Some(jwks), _) => JwksSource::Inline(Arc::new(jwks)),
        (None, false) => JwksSource::Uri(jwks_uri),
        (None, true) => JwksSource::Discovery,
    };
    Some(JwtRule {
        issuer,
        audiences,
        jwks,
        from_headers,
        from_params,
        from_cookies,
        output_payload_to_header,
        forward_original_token,
        output_claim_to_headers,
        timeout: timeout.unwrap_or(DEFAULT_JWKS_TIMEOUT),
        space_delimited_claims,
    })
}

/// `security.ParseJwksURI`: http or https, a numeric port if any.
pub(super) fn parse_jwks_uri(uri: &str) -> Result<hyper::Uri, String> {
    let parsed: hyper::Uri = uri.parse().map_err(|e| format!("parse {uri:?}: {e}"))?;
    let scheme = parsed.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(format!("URI scheme {scheme:?} is not supported"));
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("parse {uri:?}: missing host"));
    }
    Ok(parsed)
}

fn from_headers(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Vec<JwtHeader> {
    let mut headers = Vec::new();
    for (at, node) in d.items(entries, "fromHeaders", path) {
        if is_null(node) {
            d.error(node, &at, "location header name must be non-null");
            continue;
        }
        let Some(e) = d.mapping(node, &at, &["name", "prefix"]) else {
            continue;
        };
        let name = d.opt_string(e, "name", &at).unwrap_or_default();
        let prefix = d.opt_string(e, "prefix", &at).unwrap_or_default();
        if name.is_empty() {
            d.error(
                node,
                &join(&at, "name"),
                "location header name must be non-empty string",
            );
            continue;
        }
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            d.error(
                node,
                &join(&at, "name"),
                format!("header name {name} is not a valid header name"),
            );
            continue;
        }
        headers.push(JwtHeader {
            name: name.to_ascii_lowercase(),
            prefix,
        });
    }
    headers
}

fn claim_to_headers(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
) -> Vec<ClaimToHeader> {
    let mut out = Vec::new();
    for (at, node) in d.items(entries, "outputClaimToHeaders", path) {
        if is_null(node) {
            d.error(node, &at, "outputClaimToHeaders must not be null");
            continue;
        }
        let Some(e) = d.mapping(node, &at, &["header", "claim"]) else {
            continue;
        };
        let header = d.opt_string(e, "header", &at).unwrap_or_default();
        let claim = d.opt_string(e, "claim", &at).unwrap_or_default();
        if header.is_empty() || claim.is_empty() {
            d.error(
                node,
                &at,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
            continue;
        }
        // `ValidateStrictHTTPHeaderName`: ^[-_A-Za-z0-9]+$
        if !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            d.error(
                node,
                &join(&at, "header"),
                format!("header name {header} is not a valid header name"),
            );
            continue;
        }
        out.push(ClaimToHeader { header, claim });
    }
    out
}

/// `timeout` with `agent.ValidateDuration`'s checks.
fn timeout(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Option<Duration> {
    let node = field(entries, "timeout")?;
    let at = join(path, "timeout");
    let text = d.string(node, &at)?;
    let Some(millis) = super::rules::duration_millis(&text) else {
        d.error(
            node,
            &at,
            format!(
                "invalid duration {text:?}: expected a number with a unit such as 5s, 100ms or 1m"
            ),
        );
        return None;
    };
    if millis < 1.0 {
        d.error(node, &at, "duration must be greater than 1ms");
        return None;
    }
    if millis.fract() != 0.0 {
        d.error(node, &at, "only durations to ms precision are supported");
        return None;
    }
    Duration::try_from_secs_f64(millis / 1000.0).ok()
}

fn is_null(node: &Node) -> bool {
    node.value == Value::Null
}

#[cfg(test)]
mod tests;
