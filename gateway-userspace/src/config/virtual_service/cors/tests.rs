//! `http[].corsPolicy`: one test per rule of Istio's validation and
//! translation.
use std::path::PathBuf;

use crate::{
    config::{Config, diagnostic::Severity, load_sources},
    model::{CorsPolicy, StringMatch},
};

fn with_cors(cors: &str) -> Config {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: apps\nspec:\n  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: web}}\n    corsPolicy:\n{cors}"
    );
    load_sources(&[(PathBuf::from("r.yaml"), text)])
}

fn cors_of(config: &Config) -> Option<CorsPolicy> {
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    config.model.virtual_services[0].http[0].cors.clone()
}

fn error(config: &Config, field: &str, message: &str) {
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.field == field && d.message == message),
        "missing {field}: {message}\n{:#?}",
        config.diagnostics
    );
}

#[test]
fn a_policy_is_decoded_with_its_lists_joined_as_envoy_sends_them() {
    let config = with_cors(
        "      allowOrigins: [{exact: https://a.example}, {prefix: https://b.}, {regex: 'https://.*\\.c\\.example'}]\n      allowMethods: [GET, POST]\n      allowHeaders: [x-a, x-b]\n      exposeHeaders: [x-c]\n      maxAge: 24h\n      allowCredentials: true\n      unmatchedPreflights: IGNORE\n",
    );
    assert_eq!(
        cors_of(&config),
        Some(CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://a.example".into()),
                StringMatch::Prefix("https://b.".into()),
                StringMatch::Regex(r"https://.*\.c\.example".into()),
            ],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-a,x-b".into(),
            expose_headers: "x-c".into(),
            max_age_secs: Some(86_400),
            allow_credentials: true,
            forward_unmatched_preflights: false,
        })
    );
}

#[test]
fn unmatched_preflights_are_forwarded_unless_ignore() {
    for (mode, forward) in [
        ("", true),
        ("FORWARD", true),
        ("UNSPECIFIED", true),
        ("IGNORE", false),
    ] {
        let line = if mode.is_empty() {
            String::new()
        } else {
            format!("      unmatchedPreflights: {mode}\n")
        };
        let config = with_cors(&format!("      allowOrigins: [{{exact: o}}]\n{line}"));
        assert_eq!(
            cors_of(&config).map(|c| c.forward_unmatched_preflights),
            Some(forward),
            "{mode}"
        );
    }
    error(
        &with_cors("      unmatchedPreflights: DROP\n"),
        "spec.http[0].corsPolicy.unmatchedPreflights",
        "unknown unmatchedPreflights \"DROP\": expected FORWARD, IGNORE or UNSPECIFIED",
    );
}

#[test]
fn the_deprecated_allow_origin_is_exact_and_only_without_allow_origins() {
    let old = with_cors("      allowOrigin: ['*', https://a.example]\n");
    assert_eq!(
        cors_of(&old).map(|c| c.allow_origins),
        Some(vec![
            StringMatch::Exact("*".into()),
            StringMatch::Exact("https://a.example".into())
        ])
    );
    let both =
        with_cors("      allowOrigin: [https://old]\n      allowOrigins: [{exact: https://new}]\n");
    assert_eq!(
        cors_of(&both).map(|c| c.allow_origins),
        Some(vec![StringMatch::Exact("https://new".into())])
    );
}

#[test]
fn allow_origins_need_a_non_empty_valid_match() {
    let config = with_cors("      allowOrigins: [{prefix: ''}, {regex: '('}]\n");
    error(
        &config,
        "spec.http[0].corsPolicy.allowOrigins[0].prefix",
        "prefix match must not be empty",
    );
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.field == "spec.http[0].corsPolicy.allowOrigins[1].regex"),
        "{:#?}",
        config.diagnostics
    );
    assert_eq!(config.model.virtual_services.len(), 0);
}

#[test]
fn allow_methods_are_gos_method_names_or_a_star() {
    error(
        &with_cors("      allowMethods: [GET, get, PURGE]\n"),
        "spec.http[0].corsPolicy.allowMethods[1]",
        "\"get\" is not a supported HTTP method",
    );
    assert!(cors_of(&with_cors("      allowMethods: ['*', TRACE]\n")).is_some());
}

#[test]
fn allow_and_expose_headers_are_tokens_or_a_star() {
    let config = with_cors("      allowHeaders: ['x a', '*']\n      exposeHeaders: ['']\n");
    error(
        &config,
        "spec.http[0].corsPolicy.allowHeaders[0]",
        "header name x a is not a valid header name",
    );
    error(
        &config,
        "spec.http[0].corsPolicy.exposeHeaders[0]",
        "header name cannot be empty",
    );
}

#[test]
fn max_age_is_whole_seconds() {
    error(
        &with_cors("      maxAge: 1500ms\n"),
        "spec.http[0].corsPolicy.maxAge",
        "max_age duration is accurate only to seconds precision",
    );
    error(
        &with_cors("      maxAge: 0s\n"),
        "spec.http[0].corsPolicy.maxAge",
        "duration must be greater than 1ms",
    );
}

#[test]
fn cors_policy_is_no_longer_said_not_applied() {
    let config = with_cors("      allowOrigins: [{exact: https://a.example}]\n");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
}

#[test]
fn a_bad_list_item_is_pointed_at_where_it_is_written() {
    let config = with_cors(
        "      allowMethods:\n      - GET\n      - get\n      exposeHeaders:\n      - 'x y'\n",
    );
    let line_of = |field: &str| {
        config
            .diagnostics
            .iter()
            .find(|d| d.field == field)
            .map(|d| d.line)
    };
    assert_eq!(line_of("spec.http[0].corsPolicy.allowMethods[1]"), Some(15));
    assert_eq!(
        line_of("spec.http[0].corsPolicy.exposeHeaders[0]"),
        Some(17)
    );
}
