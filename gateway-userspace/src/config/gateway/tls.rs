//! A server's `tls` block: its fields decoded into [`ServerTls`], cipher
//! suites filtered and resolved to rustls suites, then checked
//! ([`super::tls_checks`]) and its certificates resolved
//! ([`super::certificates`]).
use super::{
    certificates::resolve_certificates,
    tls_checks::{CertificateSources, check_tls_options, check_versions_offered},
};
use crate::{
    config::{
        cipher_suites,
        decode::{Decoder, field, join},
        diagnostic::Severity,
        rules,
        yaml::Node,
    },
    model::{ServerTls, TlsCertificate, TlsMode, TlsVersion},
};

const TLS_FIELDS: &[&str] = &[
    "httpsRedirect",
    "mode",
    "serverCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "credentialName",
    "credentialNames",
    "caCertCredentialName",
    "tlsCertificates",
    "subjectAltNames",
    "verifyCertificateSpki",
    "verifyCertificateHash",
    "minProtocolVersion",
    "maxProtocolVersion",
    "cipherSuites",
    "insecureSkipVerify",
    "ecdhCurves",
];
const TLS_CERTIFICATE_FIELDS: &[&str] = &["serverCertificate", "privateKey", "caCertificates"];

pub(super) fn decode_tls(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ServerTls> {
    let entries = d.mapping(node, path, TLS_FIELDS)?;
    let errors_before = d.error_count();
    let https_redirect = field(entries, "httpsRedirect")
        .and_then(|b| d.boolean(b, &join(path, "httpsRedirect")))
        .unwrap_or(false);
    let mode = match field(entries, "mode") {
        Some(m) => {
            let text = d.string(m, &join(path, "mode"))?;
            match TlsMode::parse(&text) {
                Some(mode) => mode,
                None => {
                    d.error(
                        m,
                        &join(path, "mode"),
                        format!("invalid TLS mode {text:?}, supported modes are PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL"),
                    );
                    return None;
                }
            }
        }
        None => TlsMode::Passthrough,
    };
    let mut tls = ServerTls {
        https_redirect,
        mode,
        server_certificate: d.opt_string(entries, "serverCertificate", path),
        private_key: d.opt_string(entries, "privateKey", path),
        ca_certificates: d.opt_string(entries, "caCertificates", path),
        ca_crl: d.opt_string(entries, "caCrl", path),
        credential_names: Vec::new(),
        ca_cert_credential_name: d.opt_string(entries, "caCertCredentialName", path),
        tls_certificates: Vec::new(),
        subject_alt_names: d.string_list(entries, "subjectAltNames", path),
        verify_certificate_spki: d.string_list(entries, "verifyCertificateSpki", path),
        verify_certificate_hash: d.string_list(entries, "verifyCertificateHash", path),
        min_protocol_version: tls_version(d, entries, "minProtocolVersion", path),
        max_protocol_version: tls_version(d, entries, "maxProtocolVersion", path),
        cipher_suites: d.string_list(entries, "cipherSuites", path),
        cipher_suites_resolved: Vec::new(),
        certificates: Vec::new(),
        client_ca: None,
        client_crl: None,
        unavailable: None,
    };
    let credential_name = d.opt_string(entries, "credentialName", path);
    let credential_names = d.string_list(entries, "credentialNames", path);
    let tls_certificates = decode_tls_certificates(d, entries, path);
    let sources = CertificateSources {
        has_credential_name: credential_name.is_some(),
        credential_names: &credential_names,
        tls_certificates: &tls_certificates,
    };
    check_tls_options(d, node, entries, path, &tls, &sources);
    tls.credential_names = credential_name
        .into_iter()
        .chain(credential_names)
        .collect();
    tls.tls_certificates = tls_certificates;
    // Istio drops unknown and duplicate cipher suites after warning about them.
    let mut kept: Vec<String> = Vec::new();
    for suite in tls.cipher_suites.drain(..) {
        if rules::cipher_suite_warnings(&[suite.as_str()]).is_empty() && !kept.contains(&suite) {
            kept.push(suite);
        }
    }
    tls.cipher_suites = kept;
    check_versions_offered(d, node, entries, path, &tls);
    tls.cipher_suites_resolved = resolve_cipher_suites(d, node, entries, path, &tls.cipher_suites);
    if d.error_count() == errors_before {
        resolve_certificates(d, node, entries, path, &mut tls);
    }
    (d.error_count() == errors_before).then_some(tls)
}

/// `minProtocolVersion` / `maxProtocolVersion`: one of Istio's enum names.
fn tls_version(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    name: &str,
    path: &str,
) -> Option<TlsVersion> {
    let text = d.opt_string(entries, name, path)?;
    let version = TlsVersion::parse(&text);
    if version.is_none() {
        let names: Vec<&str> = TlsVersion::ALL.iter().map(|v| v.name()).collect();
        d.error(
            field(entries, name)?,
            &join(path, name),
            format!(
                "invalid TLS version {text:?}, supported versions are {}",
                names.join(", ")
            ),
        );
    }
    version
}

/// `cipherSuites` (already filtered as Istio does) as rustls suites: a
/// warning for each one rustls does not offer, an error if none is.
fn resolve_cipher_suites(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    suites: &[String],
) -> Vec<rustls::CipherSuite> {
    let at = field(entries, "cipherSuites").unwrap_or(node);
    let suites_path = join(path, "cipherSuites");
    let mut resolved = Vec::new();
    for entry in suites {
        let (offered, unsupported) = cipher_suites::resolve_entry(entry);
        for name in unsupported {
            d.report(
                Severity::Warning,
                at,
                &suites_path,
                format!(
                    "cipher suite {name} is not offered by this gateway's TLS library; it is ignored"
                ),
            );
        }
        for suite in offered {
            if !resolved.contains(&suite) {
                resolved.push(suite);
            }
        }
    }
    if !suites.is_empty() && resolved.is_empty() {
        d.error(
            at,
            &suites_path,
            "none of the cipherSuites is offered by this gateway's TLS library (rustls offers ECDHE-ECDSA/ECDHE-RSA with AES128-GCM-SHA256, AES256-GCM-SHA384 or CHACHA20-POLY1305)",
        );
    }
    resolved
}

fn decode_tls_certificates(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
) -> Vec<TlsCertificate> {
    let Some(node) = field(entries, "tlsCertificates") else {
        return Vec::new();
    };
    let list_path = join(path, "tlsCertificates");
    let mut certs = Vec::new();
    for (i, item) in d
        .sequence(node, &list_path)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let item_path = format!("{list_path}[{i}]");
        let Some(cert) = d.mapping(item, &item_path, TLS_CERTIFICATE_FIELDS) else {
            continue;
        };
        certs.push(TlsCertificate {
            server_certificate: d.opt_string(cert, "serverCertificate", &item_path),
            private_key: d.opt_string(cert, "privateKey", &item_path),
            ca_certificates: d.opt_string(cert, "caCertificates", &item_path),
        });
    }
    certs
}
