//! Certificate files named by TLS settings, checked at load with positions.
use std::path::{Path, PathBuf};

use super::{certs::test_pki::*, *};

fn load_with(text: &str, files: &MemoryFiles) -> Config {
    let env = Environment {
        files,
        credentials_dir: Some(Path::new("/creds")),
        unreadable_credential_drops_server: false,
    };
    load_sources_with(&[(PathBuf::from("gw.yaml"), text.to_string())], Some(&env))
}

fn https(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.example.com]\n    tls: {tls}\n"
    )
}

fn errors(config: &Config) -> Vec<String> {
    config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn certificate_files_that_match_are_resolved_into_the_model() {
    let fs = files(&[("/c.pem", CERT), ("/k.pem", KEY)]);
    let config = load_with(
        &https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"),
        &fs,
    );
    assert_eq!(errors(&config), Vec::<String>::new());
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].certificate, "/c.pem");
}

#[test]
fn missing_certificate_file_is_an_error_at_the_field() {
    let config = load_with(
        &https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"),
        &files(&[]),
    );
    assert_eq!(
        errors(&config),
        vec![
            "gw.yaml:8:44: error: Gateway default/gw: spec.servers[0].tls.serverCertificate: cannot read /c.pem: No such file or directory"
        ]
    );
}

#[test]
fn key_that_does_not_match_the_certificate_is_an_error() {
    let fs = files(&[("/c.pem", CERT), ("/k.pem", OTHER_KEY)]);
    let config = load_with(
        &https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"),
        &fs,
    );
    assert!(
        errors(&config)[0].ends_with("private key /k.pem does not match certificate /c.pem"),
        "{:?}",
        errors(&config)
    );
}

#[test]
fn credential_name_resolves_under_the_credentials_dir() {
    let fs = files(&[("/creds/web/tls.crt", CERT), ("/creds/web/tls.key", KEY)]);
    let config = load_with(&https("{mode: SIMPLE, credentialName: web}"), &fs);
    assert_eq!(errors(&config), Vec::<String>::new());
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].private_key, "/creds/web/tls.key");
}

#[test]
fn missing_credential_is_named_with_its_expected_path() {
    let config = load_with(&https("{mode: SIMPLE, credentialName: web}"), &files(&[]));
    assert!(
        errors(&config)[0].ends_with("spec.servers[0].tls.credentialName: cannot read /creds/web/tls.crt: No such file or directory"),
        "{:?}",
        errors(&config)
    );
}

/// Loads `text` as `/cfg/gw.yaml` with the default credential search.
fn load_without_dir(text: &str, files: &MemoryFiles) -> Config {
    let env = Environment {
        files,
        credentials_dir: None,
        unreadable_credential_drops_server: false,
    };
    load_sources_with(
        &[(PathBuf::from("/cfg/gw.yaml"), text.to_string())],
        Some(&env),
    )
}

fn first_certificate(config: &Config) -> String {
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    tls.certificates[0].certificate.clone()
}

#[test]
fn without_a_dir_credentials_beside_the_config_come_first() {
    let fs = files(&[
        ("/cfg/credentials/web/tls.crt", CERT),
        ("/cfg/credentials/web/tls.key", KEY),
        ("/etc/gateway/credentials/web/tls.crt", CERT),
        ("/etc/gateway/credentials/web/tls.key", KEY),
    ]);
    let config = load_without_dir(&https("{mode: SIMPLE, credentialName: web}"), &fs);
    assert_eq!(errors(&config), Vec::<String>::new());
    assert_eq!(first_certificate(&config), "/cfg/credentials/web/tls.crt");
}

#[test]
fn without_a_dir_the_system_directory_is_next() {
    let fs = files(&[
        ("/etc/gateway/credentials/web/tls.crt", CERT),
        ("/etc/gateway/credentials/web/tls.key", KEY),
    ]);
    let config = load_without_dir(&https("{mode: SIMPLE, credentialName: web}"), &fs);
    assert_eq!(errors(&config), Vec::<String>::new());
    assert_eq!(
        first_certificate(&config),
        "/etc/gateway/credentials/web/tls.crt"
    );
}

#[test]
fn without_a_dir_a_missing_credential_names_every_place_looked_once() {
    let config = load_without_dir(&https("{mode: MUTUAL, credentialName: web}"), &files(&[]));
    assert_eq!(
        errors(&config),
        vec![
            "/cfg/gw.yaml:8:41: error: Gateway default/gw: spec.servers[0].tls.credentialName: credential web not found: no /cfg/credentials/web nor /etc/gateway/credentials/web (--credentials-dir names another directory)"
        ]
    );
}

#[test]
fn a_given_dir_is_the_only_place_looked() {
    let fs = files(&[
        ("/cfg/credentials/web/tls.crt", CERT),
        ("/cfg/credentials/web/tls.key", KEY),
    ]);
    let config = load_with(&https("{mode: SIMPLE, credentialName: web}"), &fs);
    assert!(
        errors(&config)[0].ends_with("cannot read /creds/web/tls.crt: No such file or directory"),
        "{:?}",
        errors(&config)
    );
}

#[test]
fn mutual_credential_needs_a_ca_in_the_secret_or_a_cacert_secret() {
    let base = [("/creds/web/tls.crt", CERT), ("/creds/web/tls.key", KEY)];
    let without = load_with(&https("{mode: MUTUAL, credentialName: web}"), &files(&base));
    assert!(
        errors(&without)[0].ends_with("cannot read /creds/web/ca.crt: No such file or directory"),
        "{:?}",
        errors(&without)
    );
    let mut with_cacert = base.to_vec();
    with_cacert.push(("/creds/web-cacert/ca.crt", CERT));
    let config = load_with(
        &https("{mode: MUTUAL, credentialName: web}"),
        &files(&with_cacert),
    );
    assert_eq!(errors(&config), Vec::<String>::new());
    let tls = config.model.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.client_ca.as_deref(), Some("/creds/web-cacert/ca.crt"));
}

#[test]
fn passthrough_servers_read_no_certificate_files() {
    let config = load_with(&https("{mode: PASSTHROUGH}"), &files(&[]));
    assert_eq!(errors(&config), Vec::<String>::new());
}

#[test]
fn destination_rule_client_certificates_are_checked() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: web\n  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}\n";
    let config = load_with(text, &files(&[("/c.pem", CERT), ("/k.pem", KEY)]));
    assert_eq!(
        errors(&config),
        vec![
            "gw.yaml:7:88: error: DestinationRule default/d: spec.trafficPolicy.tls.caCertificates: cannot read /ca.pem: No such file or directory"
        ]
    );
}

fn origination(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: web\n  trafficPolicy:\n    tls: {tls}\n"
    )
}

#[test]
fn origination_takes_its_client_certificate_and_ca_from_a_credential() {
    let fs = files(&[
        ("/creds/client/tls.crt", CERT),
        ("/creds/client/tls.key", KEY),
        ("/creds/client/ca.crt", CERT),
    ]);
    let config = load_with(&origination("{mode: MUTUAL, credentialName: client}"), &fs);
    assert_eq!(errors(&config), Vec::<String>::new());
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let tls = config.model.destination_rules[0]
        .traffic_policy
        .tls
        .as_ref()
        .unwrap();
    assert_eq!(
        tls.client_certificate.as_deref(),
        Some("/creds/client/tls.crt")
    );
    assert_eq!(tls.private_key.as_deref(), Some("/creds/client/tls.key"));
    assert_eq!(tls.ca_certificates.as_deref(), Some("/creds/client/ca.crt"));
    // SIMPLE takes only the CA; without a ca.crt the system roots verify.
    let fs = files(&[
        ("/creds/client/tls.crt", CERT),
        ("/creds/client/tls.key", KEY),
    ]);
    let config = load_with(&origination("{mode: SIMPLE, credentialName: client}"), &fs);
    let tls = config.model.destination_rules[0]
        .traffic_policy
        .tls
        .as_ref()
        .unwrap();
    assert_eq!(tls.client_certificate, None);
    assert_eq!(tls.ca_certificates, None);
}

#[test]
fn an_origination_credential_is_found_or_named_and_never_mixed_with_files() {
    let config = load_with(
        &origination("{mode: MUTUAL, credentialName: gone}"),
        &files(&[]),
    );
    assert!(
        errors(&config)[0].ends_with("spec.trafficPolicy.tls.credentialName: cannot read /creds/gone/tls.crt: No such file or directory"),
        "{:?}",
        errors(&config)
    );
    let config = load_with(
        &origination("{mode: SIMPLE, credentialName: client, caCertificates: /ca.pem}"),
        &files(&[]),
    );
    assert!(
        errors(&config)[0].ends_with("spec.trafficPolicy.tls.credentialName: cannot specify client certificates or CA certificate if credentialName is set"),
        "{:?}",
        errors(&config)
    );
}

#[test]
fn certificate_files_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, CERT).unwrap();
    std::fs::write(&key, KEY).unwrap();
    let env = Environment {
        files: &Disk,
        credentials_dir: Some(Path::new("/nonexistent")),
        unreadable_credential_drops_server: false,
    };
    let tls = format!(
        "{{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}",
        cert.display(),
        key.display()
    );
    let config = load_sources_with(&[(PathBuf::from("gw.yaml"), https(&tls))], Some(&env));
    assert_eq!(errors(&config), Vec::<String>::new());
}

#[test]
fn files_are_not_checked_after_a_tls_settings_error() {
    let config = load_with(
        &https(
            "{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, minProtocolVersion: TLSV9}",
        ),
        &files(&[]),
    );
    let errors = errors(&config);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("minProtocolVersion"), "{errors:#?}");
}

#[test]
fn a_separate_ca_credential_found_nowhere_is_an_error_of_its_own() {
    let fs = files(&[
        ("/cfg/credentials/web/tls.crt", CERT),
        ("/cfg/credentials/web/tls.key", KEY),
    ]);
    let config = load_without_dir(
        &https("{mode: MUTUAL, credentialName: web, caCertCredentialName: other-ca}"),
        &fs,
    );
    let errors = errors(&config);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("other-ca"), "{errors:?}");
}

/// Loads `text` as Kubernetes mode does: credentials under `/creds`, and
/// one that cannot be read disables only what names it.
fn load_dropping(text: &str, files: &MemoryFiles) -> Config {
    let env = Environment {
        files,
        credentials_dir: Some(Path::new("/creds")),
        unreadable_credential_drops_server: true,
    };
    load_sources_with(&[(PathBuf::from("gw.yaml"), text.to_string())], Some(&env))
}

fn warnings(config: &Config) -> Vec<String> {
    config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn in_kubernetes_mode_a_missing_or_bad_credential_disables_only_its_server() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: a, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: good}\n  - port: {number: 443, name: b, protocol: HTTPS}\n    hosts: [b.example.com]\n    tls: {mode: SIMPLE, credentialName: missing}\n  - port: {number: 443, name: c, protocol: HTTPS}\n    hosts: [c.example.com]\n    tls: {mode: SIMPLE, credentialName: mismatched}\n";
    let fs = files(&[
        ("/creds/good/tls.crt", CERT),
        ("/creds/good/tls.key", KEY),
        ("/creds/mismatched/tls.crt", CERT),
        ("/creds/mismatched/tls.key", OTHER_KEY),
    ]);
    let config = load_dropping(text, &fs);
    assert_eq!(errors(&config), Vec::<String>::new());
    assert_eq!(
        warnings(&config),
        [
            "gw.yaml:11:41: warning: Gateway default/gw: spec.servers[1].tls.credentialName: server not served: cannot read /creds/missing/tls.crt: No such file or directory",
            "gw.yaml:14:41: warning: Gateway default/gw: spec.servers[2].tls.credentialName: server not served: private key /creds/mismatched/tls.key does not match certificate /creds/mismatched/tls.crt",
        ]
    );
    let unavailable: Vec<Option<&str>> = config.model.gateways[0]
        .servers
        .iter()
        .map(|s| s.tls.as_ref().and_then(|t| t.unavailable.as_deref()))
        .collect();
    assert_eq!(unavailable[0], None);
    assert!(unavailable[1].is_some_and(|r| r.contains("/creds/missing/tls.crt")));
    assert!(unavailable[2].is_some_and(|r| r.contains("does not match")));
    // A settings error is still an error of the resource.
    let bad_mode = load_dropping(
        &https("{mode: SIMPLE, credentialName: good, minProtocolVersion: TLSV9}"),
        &fs,
    );
    assert_eq!(errors(&bad_mode).len(), 1, "{:?}", errors(&bad_mode));
}

#[test]
fn in_kubernetes_mode_a_missing_origination_credential_disables_the_origination_not_the_rule() {
    let config = load_dropping(
        &origination("{mode: MUTUAL, credentialName: gone}"),
        &files(&[]),
    );
    assert_eq!(errors(&config), Vec::<String>::new());
    let tls = config.model.destination_rules[0]
        .traffic_policy
        .tls
        .as_ref()
        .expect("tls");
    assert!(
        tls.unavailable.as_deref().is_some_and(
            |r| r.starts_with("TLS origination not served: cannot read /creds/gone/tls.crt")
        ),
        "{tls:?}"
    );
    // Files named beside the credential are still a mistake in the rule.
    let both = load_dropping(
        &origination("{mode: SIMPLE, credentialName: client, caCertificates: /ca.pem}"),
        &files(&[]),
    );
    assert_eq!(errors(&both).len(), 1, "{:?}", errors(&both));
}
