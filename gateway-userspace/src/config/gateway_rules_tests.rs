//! One test per Istio Gateway validation rule (istio/istio `pkg/config/validation`), named after it.
use std::path::PathBuf;

use super::*;
use crate::model::{Bind, TlsMode, TlsVersion};

/// A Gateway with the given servers (YAML list items, indented by 2).
fn gateway_with(servers: &str) -> Config {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n{servers}"
    );
    load_sources(&[(PathBuf::from("gw.yaml"), text)])
}

fn server(protocol: &str, extra: &str) -> String {
    format!(
        "  - port: {{number: 443, name: p, protocol: {protocol}}}\n    hosts: [a.example.com]\n{extra}"
    )
}

/// (severity, field, message) of every diagnostic.
fn found(config: &Config) -> Vec<(Severity, String, String)> {
    config
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.field.clone(), d.message.clone()))
        .collect()
}

fn assert_has(config: &Config, severity: Severity, field: &str, message: &str) {
    let all = found(config);
    assert!(
        all.iter()
            .any(|(s, f, m)| *s == severity && f == field && m == message),
        "missing {severity:?} {field}: {message}\nfound: {all:#?}"
    );
}

#[test]
fn gateway_name_must_be_a_dns1123_label() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: My.Gateway\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n";
    let config = load_sources(&[(PathBuf::from("gw.yaml"), text.to_string())]);
    assert_has(
        &config,
        Severity::Error,
        "metadata.name",
        "invalid gateway name: \"My.Gateway\"",
    );
    assert_eq!(config.diagnostics[0].line, 4);
}

#[test]
fn gateway_must_have_at_least_one_server() {
    let config = gateway_with("    []\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.servers",
        "gateway must have at least one server",
    );
}

#[test]
fn port_names_must_be_unique_across_servers() {
    let config = gateway_with(
        "  - port: {number: 80, name: web, protocol: HTTP}\n    hosts: [a.example.com]\n  - port: {number: 81, name: web, protocol: HTTP}\n    hosts: [b.example.com]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[1].port.name",
        "port names in servers must be unique: duplicate name web",
    );
}

#[test]
fn https_redirect_on_a_non_http_server_warns() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {httpsRedirect: true, mode: SIMPLE, credentialName: c}\n",
    ));
    assert_has(
        &config,
        Severity::Warning,
        "spec.servers[0].tls.httpsRedirect",
        "tls.httpsRedirect should only be used with http servers",
    );
    assert_eq!(
        config.model.gateways.len(),
        1,
        "a warning does not reject the Gateway"
    );
}

#[test]
fn server_must_have_at_least_one_host() {
    let config =
        gateway_with("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: []\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].hosts",
        "server config must contain at least one host",
    );
}

#[test]
fn every_host_is_validated() {
    let config = gateway_with(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com, \"*example.com\"]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].hosts[1]",
        "partial wildcard \"*example.com\" not allowed",
    );
}

#[test]
fn https_and_tls_servers_need_tls_settings() {
    for protocol in ["HTTPS", "TLS"] {
        let config = gateway_with(&server(protocol, "    tls:\n"));
        assert_has(
            &config,
            Severity::Error,
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols",
        );
    }
}

#[test]
fn https_redirect_false_is_read_as_false() {
    let config = gateway_with(&server("HTTP", "    tls: {httpsRedirect: false}\n"));
    assert!(config.diagnostics.is_empty(), "{:?}", found(&config));
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert!(!tls.https_redirect);
}

#[test]
fn plain_http_server_may_only_carry_redirect_or_passthrough_tls() {
    let ok = gateway_with(&server("HTTP", "    tls: {httpsRedirect: true}\n"));
    assert!(ok.diagnostics.is_empty(), "{:?}", found(&ok));
    for tls in [
        "{mode: SIMPLE, credentialName: c}",
        "{serverCertificate: /c.pem}",
        "{caCertificates: /ca.pem}",
    ] {
        let config = gateway_with(&server("HTTP", &format!("    tls: {tls}\n")));
        assert_has(
            &config,
            Severity::Error,
            "spec.servers[0].tls",
            "server cannot have TLS settings for plain text HTTP ports",
        );
    }
}

#[test]
fn non_http_plaintext_server_cannot_have_tls_settings_at_all() {
    let config = gateway_with(&server("TCP", "    tls: {httpsRedirect: true}\n"));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls",
        "server cannot have TLS settings for non HTTPS/TLS ports",
    );
}

#[test]
fn port_number_must_be_in_range() {
    let config = gateway_with(
        "  - port: {number: 70000, name: p, protocol: HTTP}\n    hosts: [a.example.com]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].port.number",
        "port number 70000 must be in the range 1..65535",
    );
}

#[test]
fn port_number_range_edges() {
    let config = gateway_with(
        "  - port: {number: 65536, name: a, protocol: HTTP}\n    hosts: [a.example.com]\n  - port: {number: 65535, name: b, protocol: HTTP}\n    hosts: [b.example.com]\n",
    );
    assert_eq!(
        found(&config),
        vec![(
            Severity::Error,
            "spec.servers[0].port.number".into(),
            "port number 65536 must be in the range 1..65535".into()
        )]
    );
}

#[test]
fn port_zero_is_rejected_on_an_ip_bind() {
    let config = gateway_with(
        "  - port: {number: 0, name: p, protocol: HTTP}\n    bind: 192.0.2.1\n    hosts: [a.example.com]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].port.number",
        "port number 0 must be in the range 1..65535",
    );
}

#[test]
fn creation_timestamp_is_read_from_metadata() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n";
    let config = load_sources(&[(PathBuf::from("gw.yaml"), text.to_string())]);
    assert_eq!(
        config.model.gateways[0].creation_timestamp.as_deref(),
        Some("2024-01-01T00:00:00Z")
    );
}

#[test]
fn a_server_with_errors_takes_no_port_name() {
    // Its errors are reported; a second "duplicate name" error would only repeat them.
    let config = gateway_with(
        "  - port: {number: 80, name: web, protocol: HTTP}\n    hosts: [\"*example.com\"]\n  - port: {number: 81, name: web, protocol: HTTP}\n    hosts: [b.example.com]\n",
    );
    let fields: Vec<String> = found(&config).into_iter().map(|(_, f, _)| f).collect();
    assert_eq!(fields, vec!["spec.servers[0].hosts[0]"]);
}

#[test]
fn target_port_zero_is_the_same_as_none() {
    let config = gateway_with(
        "  - port: {number: 80, name: p, protocol: HTTP, targetPort: 0}\n    hosts: [a.example.com]\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", found(&config));
}

#[test]
fn unspecified_bind_address_means_every_address() {
    for (bind, expected) in [
        ("0.0.0.0", Bind::Any),
        ("\"::\"", Bind::Any),
        ("192.0.2.1", Bind::Ip("192.0.2.1".parse().unwrap())),
    ] {
        let config = gateway_with(&format!(
            "  - port: {{number: 80, name: p, protocol: HTTP}}\n    bind: {bind}\n    hosts: [a.example.com]\n"
        ));
        assert_eq!(config.model.gateways[0].servers[0].bind, expected, "{bind}");
    }
}

#[test]
fn unix_socket_bind_requires_port_zero() {
    let bad = gateway_with(
        "  - port: {number: 80, name: p, protocol: HTTP}\n    bind: unix:///run/gw.sock\n    hosts: [a.example.com]\n",
    );
    assert_has(
        &bad,
        Severity::Error,
        "spec.servers[0].port.number",
        "port number 80 must be 0 for unix domain socket",
    );
    let good = gateway_with(
        "  - port: {number: 0, name: p, protocol: HTTP}\n    bind: unix:///run/gw.sock\n    hosts: [a.example.com]\n",
    );
    assert_eq!(
        good.model.gateways[0].servers[0].bind,
        Bind::Unix("/run/gw.sock".into())
    );
}

#[test]
fn target_port_has_no_impact_on_gateways() {
    let config = gateway_with(
        "  - port: {number: 80, name: p, protocol: HTTP, targetPort: 8080}\n    hosts: [a.example.com]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].port.targetPort",
        "targetPort has no impact on Gateways",
    );
}

#[test]
fn bind_must_be_an_ip_or_a_unix_socket() {
    let config = gateway_with(
        "  - port: {number: 80, name: p, protocol: HTTP}\n    bind: gw.example.com\n    hosts: [a.example.com]\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].bind",
        "gw.example.com is not a valid IP",
    );
}

#[test]
fn tls_minimum_below_1_2_warns_it_is_not_offered() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}\n",
    ));
    assert_eq!(
        found(&config),
        vec![(
            Severity::Warning,
            "spec.servers[0].tls.minProtocolVersion".to_string(),
            "TLSV1_0 is not offered by this gateway's TLS library (TLS 1.2 and 1.3 only); clients need TLS 1.2 or later".to_string()
        )]
    );
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_protocol_version, Some(TlsVersion::V1_0));
    assert_eq!(tls.max_protocol_version, None);
}

#[test]
fn tls_maximum_below_minimum_is_an_error() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.maxProtocolVersion",
        "maxProtocolVersion TLSV1_2 is below minProtocolVersion TLSV1_3",
    );
}

#[test]
fn tls_range_without_an_offered_version_is_an_error() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, maxProtocolVersion: TLSV1_1}\n",
    ));
    assert_eq!(
        found(&config),
        vec![(
            Severity::Error,
            "spec.servers[0].tls.maxProtocolVersion".to_string(),
            "maxProtocolVersion TLSV1_1 leaves no TLS version this gateway offers (TLSV1_2, TLSV1_3)".to_string()
        )]
    );
    let auto = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLS_AUTO}\n",
    ));
    assert_eq!(found(&auto), vec![]);
}

#[test]
fn cipher_suites_resolve_to_rustls_suites_and_unsupported_ones_warn() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, cipherSuites: [AES128-SHA, ECDHE-RSA-AES128-GCM-SHA256, \"[ECDHE-ECDSA-AES256-GCM-SHA384|ECDHE-ECDSA-AES128-SHA]\"]}\n",
    ));
    assert_eq!(
        found(&config),
        vec![
            (
                Severity::Warning,
                "spec.servers[0].tls.cipherSuites".to_string(),
                "cipher suite AES128-SHA is not offered by this gateway's TLS library; it is ignored".to_string()
            ),
            (
                Severity::Warning,
                "spec.servers[0].tls.cipherSuites".to_string(),
                "cipher suite ECDHE-ECDSA-AES128-SHA is not offered by this gateway's TLS library; it is ignored".to_string()
            ),
        ]
    );
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.cipher_suites_resolved,
        vec![
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        ]
    );
}

#[test]
fn cipher_suites_none_of_which_is_offered_are_an_error() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, cipherSuites: [AES128-SHA]}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.cipherSuites",
        "none of the cipherSuites is offered by this gateway's TLS library (rustls offers ECDHE-ECDSA/ECDHE-RSA with AES128-GCM-SHA256, AES256-GCM-SHA384 or CHACHA20-POLY1305)",
    );
    assert!(config.model.gateways.is_empty());
}

#[test]
fn unknown_tls_version_is_an_error() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, maxProtocolVersion: TLSv1.3}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.maxProtocolVersion",
        "invalid TLS version \"TLSv1.3\", supported versions are TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3",
    );
}

#[test]
fn invalid_and_duplicate_cipher_suites_warn_and_are_dropped() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, cipherSuites: [AES128-SHA, BOGUS, AES128-SHA, ECDHE-RSA-AES128-GCM-SHA256]}\n",
    ));
    assert_has(
        &config,
        Severity::Warning,
        "spec.servers[0].tls.cipherSuites",
        "ignoring invalid cipher suite \"BOGUS\"",
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.servers[0].tls.cipherSuites",
        "ignoring duplicate cipher suite \"AES128-SHA\"",
    );
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.cipher_suites,
        vec![
            "AES128-SHA".to_string(),
            "ECDHE-RSA-AES128-GCM-SHA256".to_string()
        ]
    );
}

#[test]
fn istio_mutual_cannot_have_certificates() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: ISTIO_MUTUAL, credentialName: c}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.credentialName",
        "ISTIO_MUTUAL TLS cannot have associated credentialName",
    );
}

#[test]
fn passthrough_with_certificates_warns_they_are_ignored() {
    let config = gateway_with(&server(
        "TLS",
        "    tls: {mode: PASSTHROUGH, serverCertificate: /c.pem}\n",
    ));
    assert_has(
        &config,
        Severity::Warning,
        "spec.servers[0].tls.serverCertificate",
        "PASSTHROUGH mode does not use certificates, they will be ignored",
    );
    assert_eq!(config.model.gateways.len(), 1);
}

#[test]
fn only_one_certificate_source_is_allowed() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, serverCertificate: /c.pem, privateKey: /k.pem}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls",
        "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified",
    );
}

#[test]
fn credential_name_is_enough_for_terminating_modes() {
    for mode in ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"] {
        let config = gateway_with(&server(
            "HTTPS",
            &format!("    tls: {{mode: {mode}, credentialName: c}}\n"),
        ));
        assert!(
            config.diagnostics.is_empty(),
            "{mode}: {:?}",
            found(&config)
        );
        let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
        assert_eq!(tls.credential_names, vec!["c".to_string()]);
    }
}

#[test]
fn mutual_tls_requires_a_client_ca_bundle() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.caCertificates",
        "MUTUAL TLS requires a client CA bundle",
    );
}

#[test]
fn simple_tls_requires_a_certificate_and_a_key() {
    let config = gateway_with(&server("HTTPS", "    tls: {mode: SIMPLE}\n"));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.serverCertificate",
        "SIMPLE TLS requires a server certificate",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.privateKey",
        "SIMPLE TLS requires a private key",
    );
}

#[test]
fn every_tls_certificates_entry_needs_a_certificate_and_a_key() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls:\n      mode: SIMPLE\n      tlsCertificates:\n      - {serverCertificate: /c.pem}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.tlsCertificates[0].privateKey",
        "SIMPLE TLS requires a private key",
    );
}

#[test]
fn at_most_two_tls_certificates() {
    let certs = "      - {serverCertificate: /a.pem, privateKey: /a.key}\n".repeat(3);
    let config = gateway_with(&server(
        "HTTPS",
        &format!("    tls:\n      mode: SIMPLE\n      tlsCertificates:\n{certs}"),
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.tlsCertificates",
        "tlsCertificates must have 1 or 2 entries, found 3",
    );
}

#[test]
fn crl_is_not_supported_with_simple_tls() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}\n",
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.servers[0].tls.caCrl",
        "CRL is not supported with SIMPLE TLS",
    );
}

#[test]
fn tls_mode_defaults_to_passthrough() {
    let config = gateway_with(&server("TLS", "    tls: {}\n"));
    assert_eq!(
        config.model.gateways[0].servers[0]
            .tls
            .as_ref()
            .unwrap()
            .mode,
        TlsMode::Passthrough
    );
}

#[test]
fn crl_is_not_supported_with_credential_names() {
    let crl_error = |tls: &str| {
        let config = gateway_with(&server("TLS", &format!("    tls: {tls}\n")));
        found(&config)
            .iter()
            .any(|(_, _, m)| m == "CRL is not supported with credentialName")
    };
    assert!(crl_error(
        "{mode: PASSTHROUGH, credentialName: c, caCrl: /crl.pem}"
    ));
    assert!(crl_error(
        "{mode: PASSTHROUGH, credentialNames: [c], caCrl: /crl.pem}"
    ));
    assert!(!crl_error("{mode: PASSTHROUGH, credentialName: c}"));
    assert!(!crl_error("{mode: PASSTHROUGH, caCrl: /crl.pem}"));
}

#[test]
fn a_certificate_without_its_key_is_not_a_second_source() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, serverCertificate: /c.pem}\n",
    ));
    assert!(
        !found(&config)
            .iter()
            .any(|(_, _, m)| m.starts_with("only one of")),
        "{:#?}",
        found(&config)
    );
}

#[test]
fn a_range_of_exactly_tls_1_2_is_offered_and_valid() {
    let config = gateway_with(&server(
        "HTTPS",
        "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_2, maxProtocolVersion: TLSV1_2}\n",
    ));
    assert_eq!(found(&config), Vec::new());
}
