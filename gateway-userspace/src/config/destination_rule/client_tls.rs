//! A traffic policy's `tls`: how the gateway originates TLS to the
//! destination, with its credential files found and checked as a
//! Gateway's are.
use std::path::Path;

use crate::{
    config::{
        certs::{self, Environment},
        decode::{Decoder, field, join},
        yaml::Node,
    },
    model::{ClientTls, ClientTlsMode},
};

const CLIENT_TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

pub(super) fn client_tls(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ClientTls> {
    let entries = d.mapping(
        node,
        path,
        &[
            "mode",
            "clientCertificate",
            "privateKey",
            "caCertificates",
            "credentialName",
            "subjectAltNames",
            "sni",
            "insecureSkipVerify",
            "caCrl",
        ],
    )?;
    let mode_text = d
        .opt_string(entries, "mode", path)
        .unwrap_or_else(|| "DISABLE".into());
    let Some(mode) = ClientTlsMode::parse(&mode_text) else {
        let at = field(entries, "mode").unwrap_or(node);
        d.error(
            at,
            &join(path, "mode"),
            format!(
                "invalid TLS mode {mode_text:?}, supported modes are {}",
                CLIENT_TLS_MODES.join(", ")
            ),
        );
        return None;
    };
    let mut tls = ClientTls {
        client_certificate: d.opt_string(entries, "clientCertificate", path),
        private_key: d.opt_string(entries, "privateKey", path),
        ca_certificates: d.opt_string(entries, "caCertificates", path),
        credential_name: d.opt_string(entries, "credentialName", path),
        sni: d.opt_string(entries, "sni", path),
        subject_alt_names: d.string_list(entries, "subjectAltNames", path),
        insecure_skip_verify: d.flag(entries, "insecureSkipVerify", path),
        ca_crl: d.opt_string(entries, "caCrl", path),
        mode,
        unavailable: None,
    };
    if tls.mode == ClientTlsMode::Mutual && tls.credential_name.is_none() {
        if tls.client_certificate.is_none() {
            d.error(
                node,
                &join(path, "clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if tls.private_key.is_none() {
            d.error(
                node,
                &join(path, "privateKey"),
                "private key required for mutual tls",
            );
        }
    }
    insecure_skip_verify_alone(d, node, path, &tls);
    if tls.credential_name.is_some() {
        credential_files(d, node, entries, path, &mut tls);
    } else if let Some(env) = d.env {
        if let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) {
            if let Err(message) = certs::check_pair(env.files, Path::new(cert), Path::new(key)) {
                let at = field(entries, "clientCertificate").unwrap_or(node);
                d.error(at, &join(path, "clientCertificate"), message);
            }
        }
        if let Some(ca) = &tls.ca_certificates {
            if let Err(message) = certs::check_ca(env.files, Path::new(ca)) {
                let at = field(entries, "caCertificates").unwrap_or(node);
                d.error(at, &join(path, "caCertificates"), message);
            }
        }
    }
    if let (Some(env), Some(crl), Some(at)) = (d.env, &tls.ca_crl, field(entries, "caCrl")) {
        if let Err(message) = certs::check_crl(env.files, Path::new(crl)) {
            d.error(at, &join(path, "caCrl"), message);
        }
    }
    Some(tls)
}

/// Istio's rule: skipping verification leaves nothing to verify with, so
/// naming a CA, a credential (SIMPLE) or SANs beside it is an error.
fn insecure_skip_verify_alone(d: &mut Decoder<'_>, node: &Node, path: &str, tls: &ClientTls) {
    if !tls.insecure_skip_verify {
        return;
    }
    let sans = !tls.subject_alt_names.is_empty();
    let at = &join(path, "insecureSkipVerify");
    match tls.mode {
        ClientTlsMode::Simple
            if tls.ca_certificates.is_some() || tls.credential_name.is_some() || sans =>
        {
            d.error(
                node,
                at,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        ClientTlsMode::Mutual if tls.ca_certificates.is_some() || sans => {
            d.error(
                node,
                at,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        _ => {}
    }
}

/// `credentialName: X` for origination: the client certificate and key
/// (MUTUAL) and the CA that verifies the server (`ca.crt`, when the
/// credential has one; else the system roots) from the credential's
/// files, found as a Gateway's are. Istio takes them from the secret
/// alone: naming files as well is an error.
fn credential_files(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    tls: &mut ClientTls,
) {
    let at = field(entries, "credentialName").unwrap_or(node);
    let field_path = join(path, "credentialName");
    if tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some()
    {
        d.error(
            at,
            &field_path,
            "cannot specify client certificates or CA certificate if credentialName is set",
        );
        return;
    }
    let (Some(env), Some(name)) = (d.env, tls.credential_name.clone()) else {
        return;
    };
    let before = d.error_count();
    read_credential(d, env, at, &field_path, &name, tls);
    if env.unreadable_credential_drops_server {
        tls.unavailable = d.demote_errors_since(before, "TLS origination");
    }
}

/// The credential's files, checked, into `tls`.
fn read_credential(
    d: &mut Decoder<'_>,
    env: &Environment<'_>,
    at: &Node,
    field_path: &str,
    name: &str,
    tls: &mut ClientTls,
) {
    let dir = match env.credential_dir(d.file(), name) {
        Ok(dir) => dir,
        Err(message) => return d.error(at, field_path, message),
    };
    let (cert, key, ca) = certs::credential_files(&dir, name);
    if tls.mode == ClientTlsMode::Mutual {
        if let Err(message) = certs::check_pair(env.files, &cert, &key) {
            return d.error(at, field_path, message);
        }
        tls.client_certificate = Some(cert.display().to_string());
        tls.private_key = Some(key.display().to_string());
    }
    if env.files.read(&ca).is_ok() && !tls.insecure_skip_verify {
        if let Err(message) = certs::check_ca(env.files, &ca) {
            return d.error(at, field_path, message);
        }
        tls.ca_certificates = Some(ca.display().to_string());
    }
    let crl = certs::credential_crl(&dir, name);
    if env.files.read(&crl).is_ok() && tls.ca_crl.is_none() {
        if let Err(message) = certs::check_crl(env.files, &crl) {
            return d.error(at, field_path, message);
        }
        tls.ca_crl = Some(crl.display().to_string());
    }
}
