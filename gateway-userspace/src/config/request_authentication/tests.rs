//! RequestAuthentication decoding, one Istio rule per test.
use std::path::PathBuf;

use crate::{
    config::{Config, load_sources},
    model::{
        JwksSource, PolicyTarget, RequestAuthentication,
        test_keys::{TestKey, jwks},
    },
};

fn load(spec: &str) -> Config {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: istio-system}}\nspec:\n{spec}"
    );
    load_sources(&[(PathBuf::from("ra.yaml"), text)])
}

fn errors(spec: &str) -> Vec<String> {
    load(spec)
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

fn decoded(spec: &str) -> RequestAuthentication {
    let config = load(spec);
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    config.model.request_authentications[0].clone()
}

#[test]
fn both_security_versions_are_served() {
    for version in ["v1", "v1beta1"] {
        let text = format!(
            "apiVersion: security.istio.io/{version}\nkind: RequestAuthentication\nmetadata: {{name: a}}\nspec:\n  jwtRules: [{{issuer: x}}]\n"
        );
        let config = load_sources(&[(PathBuf::from("a.yaml"), text)]);
        assert!(!config.has_errors(), "{:?}", config.diagnostics);
        assert_eq!(config.model.request_authentications.len(), 1);
    }
}

#[test]
fn a_rule_reads_every_field() {
    let ra = decoded(
        "  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: https://issuer.example
    audiences: [a, b]
    jwksUri: https://issuer.example/keys
    fromHeaders: [{name: X-Jwt, prefix: 'Token '}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 2s
    spaceDelimitedClaims: [roles]
",
    );
    assert!(matches!(ra.target, PolicyTarget::Selector(ref l) if l["istio"] == "ingressgateway"));
    let rule = &ra.jwt_rules[0];
    assert_eq!(rule.issuer, "https://issuer.example");
    assert_eq!(rule.audiences, ["a", "b"]);
    assert_eq!(
        rule.jwks,
        JwksSource::Uri("https://issuer.example/keys".into())
    );
    assert_eq!(rule.from_headers[0].name, "x-jwt");
    assert_eq!(rule.from_headers[0].prefix, "Token ");
    assert_eq!(rule.from_params, ["token"]);
    assert_eq!(rule.from_cookies, ["session"]);
    assert_eq!(rule.output_payload_to_header.as_deref(), Some("x-payload"));
    assert!(rule.forward_original_token);
    assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
    assert_eq!(rule.timeout, std::time::Duration::from_secs(2));
    assert_eq!(rule.space_delimited_claims, ["roles"]);
}

#[test]
fn only_an_issuer_means_discovery_and_the_default_timeout() {
    let rule = &decoded("  jwtRules: [{issuer: https://a.example}]\n").jwt_rules[0];
    assert_eq!(rule.jwks, JwksSource::Discovery);
    assert_eq!(rule.timeout, std::time::Duration::from_secs(5));
}

#[test]
fn inline_jwks_is_parsed_when_read() {
    let key = TestKey::rsa("k");
    let spec = format!(
        "  jwtRules:\n  - issuer: a\n    jwks: '{}'\n",
        jwks(&[&key])
    );
    let JwksSource::Inline(set) = &decoded(&spec).jwt_rules[0].jwks else {
        panic!("not inline")
    };
    assert_eq!(set.keys[0].kid.as_deref(), Some("k"));
}

#[test]
fn a_bad_inline_jwks_is_istios_parse_error() {
    assert_eq!(
        errors("  jwtRules: [{issuer: a, jwks: 'not json'}]\n"),
        ["spec.jwtRules[0].jwks: jwks parse error: Jwks is an invalid JSON"]
    );
}

#[test]
fn private_key_material_is_warned() {
    let key = TestKey::hmac("k", b"secret");
    let spec = format!(
        "  jwtRules:\n  - issuer: a\n    jwks: '{}'\n",
        jwks(&[&key])
    );
    let config = load(&spec);
    assert!(!config.has_errors());
    assert_eq!(
        config.diagnostics[0].message,
        "jwks key at index 0 contains private key material; only public keys are used for verification"
    );
}

#[test]
fn istios_rule_messages() {
    for (spec, expected) in [
        (
            "  jwtRules: [{audiences: ['']}]\n",
            vec![
                "spec.jwtRules[0].audiences: audience must be non-empty string",
                "spec.jwtRules[0]: issuer or jwksUri must be non-empty string",
            ],
        ),
        (
            "  jwtRules: [{jwksUri: 'ftp://a/keys'}]\n",
            vec!["spec.jwtRules[0].jwksUri: URI scheme \"ftp\" is not supported"],
        ),
        (
            "  jwtRules: [{issuer: a, fromHeaders: [null, {name: ''}]}]\n",
            vec![
                "spec.jwtRules[0].fromHeaders[0]: location header name must be non-null",
                "spec.jwtRules[0].fromHeaders[1].name: location header name must be non-empty string",
            ],
        ),
        (
            "  jwtRules: [{issuer: a, fromParams: [''], fromCookies: ['']}]\n",
            vec![
                "spec.jwtRules[0].fromParams: location query must be non-empty string",
                "spec.jwtRules[0].fromCookies: cookie name must be non-empty string",
            ],
        ),
        (
            "  jwtRules: [{issuer: a, outputClaimToHeaders: [null, {header: x}, {header: 'a b', claim: c}]}]\n",
            vec![
                "spec.jwtRules[0].outputClaimToHeaders[0]: outputClaimToHeaders must not be null",
                "spec.jwtRules[0].outputClaimToHeaders[1]: outputClaimToHeaders header and claim value must be non-empty string",
                "spec.jwtRules[0].outputClaimToHeaders[2].header: header name a b is not a valid header name",
            ],
        ),
        (
            "  jwtRules: [{issuer: a, timeout: 0.5ms}]\n",
            vec!["spec.jwtRules[0].timeout: duration must be greater than 1ms"],
        ),
        (
            "  jwtRules: [{issuer: a, timeout: 1.5ms}]\n",
            vec!["spec.jwtRules[0].timeout: only durations to ms precision are supported"],
        ),
    ] {
        assert_eq!(errors(spec), expected, "{spec}");
    }
}

#[test]
fn selector_and_target_ref_checks() {
    assert_eq!(
        errors("  selector: {matchLabels: {'': a, b: '*'}}\n"),
        [
            "spec.selector.matchLabels: empty key is not supported in selector: \"=a\"",
            "spec.selector.matchLabels: wildcard is not supported in selector: \"b=*\"",
        ]
    );
    assert_eq!(
        errors("  selector: {}\n"),
        ["spec.selector: workload selector specified without labels"]
    );
    assert_eq!(
        errors(
            "  selector: {matchLabels: {a: b}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}\n"
        ),
        ["spec: only one of targetRefs or workloadSelector can be set"]
    );
    assert_eq!(
        errors("  targetRefs: [{kind: Gateway, group: networking.istio.io, namespace: x}]\n"),
        [
            "spec.targetRefs[0]: targetRef name must be set",
            "spec.targetRefs[0]: targetRef namespace must not be set; cross namespace referencing is not supported",
            "spec.targetRefs[0]: targetRef must be to one of [core/v1/Service networking.istio.io/v1/ServiceEntry gateway.networking.k8s.io/v1/Gateway gateway.networking.k8s.io/v1/GatewayClass] but was networking.istio.io/Gateway",
        ]
    );
    let ra =
        decoded("  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]\n");
    assert_eq!(ra.target, PolicyTarget::TargetRefs);
    assert_eq!(decoded("  jwtRules: []\n").target, PolicyTarget::Namespace);
}
