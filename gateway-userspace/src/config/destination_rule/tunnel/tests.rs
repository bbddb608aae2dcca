//! `proxyProtocol` and `tunnel` as Istio validates them.
use std::path::PathBuf;

use crate::{
    config::{Config, Severity, load_sources},
    model::{ProxyProtocolVersion, TrafficPolicy, TunnelProtocol, TunnelSettings},
};

fn rule(policy: &str) -> Config {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: apps}}\nspec:\n  host: web\n{policy}"
    );
    load_sources(&[(PathBuf::from("r.yaml"), text)])
}

fn policy(config: &Config) -> &TrafficPolicy {
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    &config.model.destination_rules[0].traffic_policy
}

fn assert_error(config: &Config, field: &str, message: &str) {
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.field == field && d.message == message),
        "missing {field}: {message}\nfound: {:#?}",
        config.diagnostics
    );
}

#[test]
fn proxy_protocol_defaults_to_v1_and_reads_v2_by_name_or_number() {
    let v1 = rule("  trafficPolicy:\n    proxyProtocol: {}\n");
    assert_eq!(policy(&v1).proxy_protocol, Some(ProxyProtocolVersion::V1));
    let v2 = rule("  trafficPolicy:\n    proxyProtocol: {version: V2}\n");
    assert_eq!(policy(&v2).proxy_protocol, Some(ProxyProtocolVersion::V2));
    let one = rule("  trafficPolicy:\n    proxyProtocol: {version: 1}\n");
    assert_eq!(policy(&one).proxy_protocol, Some(ProxyProtocolVersion::V2));
}

#[test]
fn an_unknown_proxy_protocol_version_is_an_error() {
    assert_error(
        &rule("  trafficPolicy:\n    proxyProtocol: {version: V3}\n"),
        "spec.trafficPolicy.proxyProtocol.version",
        "invalid proxy protocol version \"V3\", supported versions are V1, V2",
    );
    assert_error(
        &rule("  trafficPolicy:\n    proxyProtocol: {version: 2}\n"),
        "spec.trafficPolicy.proxyProtocol.version",
        "proxy protocol version is invalid: 2",
    );
}

#[test]
fn a_tunnel_defaults_to_connect() {
    let config =
        rule("  trafficPolicy:\n    tunnel: {targetHost: db.example.test, targetPort: 5432}\n");
    assert_eq!(
        policy(&config).tunnel,
        Some(TunnelSettings {
            protocol: TunnelProtocol::Connect,
            target_host: "db.example.test".into(),
            target_port: 5432,
        })
    );
    let post = rule(
        "  trafficPolicy:\n    tunnel: {protocol: POST, targetHost: 192.0.2.9, targetPort: 80}\n",
    );
    assert_eq!(
        policy(&post).tunnel.as_ref().map(|t| t.protocol),
        Some(TunnelProtocol::Post)
    );
}

#[test]
fn a_tunnel_needs_a_known_protocol_a_host_or_address_and_a_port() {
    assert_error(
        &rule(
            "  trafficPolicy:\n    tunnel: {protocol: connect, targetHost: a.test, targetPort: 1}\n",
        ),
        "spec.trafficPolicy.tunnel.protocol",
        "tunnel protocol must be \"CONNECT\" or \"POST\"",
    );
    assert_error(
        &rule("  trafficPolicy:\n    tunnel: {targetPort: 443}\n"),
        "spec.trafficPolicy.tunnel.targetHost",
        "tunnel target host must be valid FQDN or IP address: targetHost is required",
    );
    assert_error(
        &rule("  trafficPolicy:\n    tunnel: {targetHost: 'bad_host.test', targetPort: 443}\n"),
        "spec.trafficPolicy.tunnel.targetHost",
        "tunnel target host must be valid FQDN or IP address: \"bad_host.test\" (a label has characters other than letters, digits and '-')",
    );
    assert_error(
        &rule("  trafficPolicy:\n    tunnel: {targetHost: a.test}\n"),
        "spec.trafficPolicy.tunnel.targetPort",
        "tunnel target port is invalid: port number 0 must be in the range 1..65535",
    );
    assert_error(
        &rule("  trafficPolicy:\n    tunnel: {targetHost: a.test, targetPort: 70000}\n"),
        "spec.trafficPolicy.tunnel.targetPort",
        "tunnel target port is invalid: port number 70000 must be in the range 1..65535",
    );
}

#[test]
fn tunnel_and_proxy_protocol_are_not_set_together() {
    assert_error(
        &rule(
            "  trafficPolicy:\n    proxyProtocol: {}\n    tunnel: {targetHost: a.test, targetPort: 1}\n",
        ),
        "spec.trafficPolicy",
        "tunnel and proxyProtocol must not be set together",
    );
}

#[test]
fn a_subset_has_its_own_and_port_level_settings_have_neither() {
    let config = rule(
        "  subsets:\n  - name: v1\n    trafficPolicy:\n      proxyProtocol: {version: V2}\n  - name: v2\n    trafficPolicy:\n      tunnel: {targetHost: a.test, targetPort: 8443}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let subsets = &config.model.destination_rules[0].subsets;
    let subset = |i: usize| subsets[i].traffic_policy.clone().unwrap_or_default();
    assert_eq!(subset(0).proxy_protocol, Some(ProxyProtocolVersion::V2));
    assert!(subset(1).tunnel.is_some());
    // Istio's PortTrafficPolicy has no such fields: an unknown field.
    let port_level = rule(
        "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      proxyProtocol: {}\n",
    );
    assert!(
        port_level
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning
                && d.field == "spec.trafficPolicy.portLevelSettings[0].proxyProtocol"
                && d.message == "unknown field, ignored"),
        "{:#?}",
        port_level.diagnostics
    );
}

#[test]
fn neither_is_warned_as_not_applied_any_more() {
    let config = rule("  trafficPolicy:\n    proxyProtocol: {version: V1}\n");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
}
