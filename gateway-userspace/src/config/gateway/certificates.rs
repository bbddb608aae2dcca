//! The certificate files a terminating server's `tls` block names (through
//! credentials, `tlsCertificates` or `serverCertificate`/`privateKey`):
//! recorded in [`ServerTls`] and, when loading with an environment,
//! checked to exist, parse and match.
use std::path::{Path, PathBuf};

use crate::{
    config::{
        certs::{self, Environment},
        decode::{Decoder, field, join},
        yaml::Node,
    },
    model::{CertificateFiles, ServerTls, TlsMode},
};

/// A file named in the configuration, where to report a problem with it
/// and the field path of that report.
struct Named<'n> {
    file: String,
    at: &'n Node,
    field_path: String,
}

/// The files one server's TLS settings name.
#[derive(Default)]
struct NamedFiles<'n> {
    /// (certificate, key) pairs, reported at the certificate.
    pairs: Vec<(Named<'n>, String)>,
    /// The client CA bundle, if one is named.
    ca: Option<Named<'n>>,
}

/// Fills `certificates` and `client_ca` for terminating modes and, when
/// loading with an environment, checks the files exist, parse and match.
pub(super) fn resolve_certificates(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    tls: &mut ServerTls,
) {
    if !matches!(
        tls.mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    ) {
        return;
    }
    let mutual = tls.mode != TlsMode::Simple;
    let errors_before = d.error_count();
    let named = if !tls.credential_names.is_empty() {
        let Some(env) = d.env else { return };
        from_credentials(d, env, node, entries, path, tls, mutual)
    } else if !tls.tls_certificates.is_empty() {
        from_tls_certificates(node, entries, path, tls)
    } else {
        from_server_certificate(node, entries, path, tls)
    };
    tls.certificates = named
        .pairs
        .iter()
        .map(|(cert, key)| CertificateFiles {
            certificate: cert.file.clone(),
            private_key: key.clone(),
        })
        .collect();
    tls.client_ca = if mutual {
        named.ca.as_ref().map(|ca| ca.file.clone())
    } else {
        None
    };
    tls.client_crl = match (mutual, &tls.ca_crl, d.env) {
        (false, _, _) => None,
        (true, Some(crl), _) => Some(crl.clone()),
        // A credential's own `ca.crl`, beside the `ca.crt` it gives.
        (true, None, Some(env)) => named
            .ca
            .as_ref()
            .map(|ca| Path::new(&ca.file).with_file_name("ca.crl"))
            .filter(|crl| env.files.read(crl).is_ok() && !tls.credential_names.is_empty())
            .map(|crl| crl.display().to_string()),
        (true, None, None) => None,
    };
    let Some(env) = d.env else { return };
    check_files(d, env, entries, path, tls, &named, mutual);
    if env.unreadable_credential_drops_server && !tls.credential_names.is_empty() {
        tls.unavailable = d.demote_errors_since(errors_before, "server");
    }
}

/// `credentialName`/`credentialNames`: `tls.crt` and `tls.key` in each
/// credential's directory, and for mutual modes its CA.
fn from_credentials<'n>(
    d: &mut Decoder<'_>,
    env: &Environment<'_>,
    node: &'n Node,
    entries: &'n [(Node, Node)],
    path: &str,
    tls: &ServerTls,
    mutual: bool,
) -> NamedFiles<'n> {
    let mut named = NamedFiles::default();
    let at = field(entries, "credentialName")
        .or_else(|| field(entries, "credentialNames"))
        .unwrap_or(node);
    let file = d.file();
    let field_path = join(path, "credentialName");
    for name in &tls.credential_names {
        match env.credential_dir(file, name) {
            Ok(dir) => {
                let (cert, key, _) = certs::credential_files(&dir, name);
                named.pairs.push((
                    Named {
                        file: cert.display().to_string(),
                        at,
                        field_path: field_path.clone(),
                    },
                    key.display().to_string(),
                ));
            }
            Err(message) => d.error(at, &field_path, message),
        }
    }
    if mutual {
        named.ca = credential_ca(d, env, at, field_path, tls);
    }
    named
}

/// The client CA of a mutual server with credentials: `ca.crt` of
/// `caCertCredentialName` (else the first credential), or of its
/// `<name>-cacert` credential when only that one is readable.
fn credential_ca<'n>(
    d: &mut Decoder<'_>,
    env: &Environment<'_>,
    at: &'n Node,
    field_path: String,
    tls: &ServerTls,
) -> Option<Named<'n>> {
    let file = d.file();
    let ca_name = tls
        .ca_cert_credential_name
        .clone()
        .unwrap_or_else(|| tls.credential_names[0].clone());
    let ca_file = |name: &str| {
        env.credential_dir(file, name)
            .map(|dir| certs::credential_files(&dir, name).2)
    };
    let readable =
        |ca: &Result<PathBuf, String>| ca.as_ref().is_ok_and(|ca| env.files.read(ca).is_ok());
    let own_ca = ca_file(&ca_name);
    let separate_ca = ca_file(&format!("{ca_name}-cacert"));
    // Istio also takes the CA from a `<name>-cacert` secret.
    let chosen = if !readable(&own_ca) && readable(&separate_ca) {
        separate_ca
    } else {
        own_ca
    };
    match chosen {
        Ok(chosen) => Some(Named {
            file: chosen.display().to_string(),
            at,
            field_path,
        }),
        // A missing certificate credential was reported by the caller.
        Err(message) if !tls.credential_names.contains(&ca_name) => {
            d.error(at, &field_path, message);
            None
        }
        Err(_) => None,
    }
}

/// `tlsCertificates`: each complete pair, and the first CA among them
/// (else the block's `caCertificates`).
fn from_tls_certificates<'n>(
    node: &'n Node,
    entries: &'n [(Node, Node)],
    path: &str,
    tls: &ServerTls,
) -> NamedFiles<'n> {
    let mut named = NamedFiles::default();
    let at = field(entries, "tlsCertificates").unwrap_or(node);
    for (i, cert) in tls.tls_certificates.iter().enumerate() {
        if let (Some(c), Some(k)) = (&cert.server_certificate, &cert.private_key) {
            named.pairs.push((
                Named {
                    file: c.clone(),
                    at,
                    field_path: format!("{}[{i}]", join(path, "tlsCertificates")),
                },
                k.clone(),
            ));
        }
    }
    if let Some(c) = tls
        .tls_certificates
        .iter()
        .find_map(|c| c.ca_certificates.clone())
        .or_else(|| tls.ca_certificates.clone())
    {
        named.ca = Some(Named {
            file: c,
            at: field(entries, "caCertificates").unwrap_or(at),
            field_path: join(path, "caCertificates"),
        });
    }
    named
}

/// `serverCertificate`/`privateKey` and `caCertificates`.
fn from_server_certificate<'n>(
    node: &'n Node,
    entries: &'n [(Node, Node)],
    path: &str,
    tls: &ServerTls,
) -> NamedFiles<'n> {
    let mut named = NamedFiles::default();
    let (Some(c), Some(k)) = (&tls.server_certificate, &tls.private_key) else {
        return named;
    };
    let at = field(entries, "serverCertificate").unwrap_or(node);
    named.pairs.push((
        Named {
            file: c.clone(),
            at,
            field_path: join(path, "serverCertificate"),
        },
        k.clone(),
    ));
    if let Some(c) = &tls.ca_certificates {
        named.ca = Some(Named {
            file: c.clone(),
            at: field(entries, "caCertificates").unwrap_or(node),
            field_path: join(path, "caCertificates"),
        });
    }
    named
}

/// Each pair exists, parses and matches; a mutual server's CA and any CRL
/// parse.
fn check_files(
    d: &mut Decoder<'_>,
    env: &Environment<'_>,
    entries: &[(Node, Node)],
    path: &str,
    tls: &ServerTls,
    named: &NamedFiles<'_>,
    mutual: bool,
) {
    for (cert, key) in &named.pairs {
        if let Err(message) = certs::check_pair(env.files, Path::new(&cert.file), Path::new(key)) {
            d.error(cert.at, &cert.field_path, message);
        }
    }
    if let (true, Some(ca)) = (mutual, &named.ca) {
        if let Err(message) = certs::check_ca(env.files, Path::new(&ca.file)) {
            d.error(ca.at, &ca.field_path, message);
        }
    }
    if let (Some(crl), Some(at)) = (&tls.ca_crl, field(entries, "caCrl")) {
        if let Err(message) = certs::check_crl(env.files, Path::new(crl)) {
            d.error(at, &join(path, "caCrl"), message);
        }
    }
    let credential_crl = tls
        .client_crl
        .as_ref()
        .filter(|crl| tls.ca_crl.as_ref() != Some(*crl));
    if let (Some(crl), Some(ca)) = (credential_crl, &named.ca) {
        if let Err(message) = certs::check_crl(env.files, Path::new(crl)) {
            d.error(ca.at, &ca.field_path, message);
        }
    }
}
