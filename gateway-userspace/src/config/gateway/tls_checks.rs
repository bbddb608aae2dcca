//! Istio's checks of a server's `tls` block (istio/istio
//! `pkg/config/validation`), each rule a named step, plus the TLS versions
//! this gateway can offer. Rule numbers are labelled as in `rules.rs`.
use crate::{
    config::{
        decode::{Decoder, field, join},
        diagnostic::Severity,
        rules,
        yaml::Node,
    },
    model::{Protocol, ServerTls, TlsCertificate, TlsMode, TlsVersion},
};

/// TLS fields that name certificates (rules 10.5.4 and 10.5.5).
const CERTIFICATE_FIELDS: &[&str] = &[
    "serverCertificate",
    "privateKey",
    "caCertificates",
    "tlsCertificates",
    "credentialName",
    "credentialNames",
];

/// Where a server's certificates come from, as written (before
/// `credentialName` and `credentialNames` are merged).
pub(super) struct CertificateSources<'a> {
    pub has_credential_name: bool,
    pub credential_names: &'a [String],
    pub tls_certificates: &'a [TlsCertificate],
}

impl CertificateSources<'_> {
    /// `credentialName` or `credentialNames` is set.
    fn names_credentials(&self) -> bool {
        self.has_credential_name || !self.credential_names.is_empty()
    }
}

/// The `tls` mapping being checked and where its diagnostics point.
struct TlsBlock<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
    path: &'n str,
}

impl<'n> TlsBlock<'n> {
    /// The value of field `name`, or the block itself if it is absent.
    fn at(&self, name: &str) -> &'n Node {
        field(self.entries, name).unwrap_or(self.node)
    }

    fn has(&self, name: &str) -> bool {
        field(self.entries, name).is_some()
    }

    fn path_of(&self, name: &str) -> String {
        join(self.path, name)
    }
}

/// Rules 10.2.3 and 10.2.4, and the httpsRedirect warning (10.1.5).
pub(super) fn check_tls_fits_protocol(
    d: &mut Decoder<'_>,
    server: &Node,
    tls_node: Option<&Node>,
    tls: Option<&ServerTls>,
    protocol: Protocol,
    path: &str,
) {
    let tls_path = join(path, "tls");
    let Some(tls_node) = tls_node else {
        if matches!(protocol, Protocol::Https | Protocol::Tls) {
            let at = server.key("tls").unwrap_or(server);
            d.error(
                at,
                &tls_path,
                "server must have TLS settings for HTTPS/TLS protocols",
            );
        }
        return;
    };
    let Some(tls) = tls else { return };
    if tls.https_redirect && !protocol.is_http_family() {
        let at = tls_node.get("httpsRedirect").unwrap_or(tls_node);
        d.report(
            Severity::Warning,
            at,
            &join(&tls_path, "httpsRedirect"),
            "tls.httpsRedirect should only be used with http servers".into(),
        );
    }
    if matches!(protocol, Protocol::Https | Protocol::Tls) {
        return;
    }
    if protocol.is_http_family() {
        let passthrough = matches!(tls.mode, TlsMode::Passthrough | TlsMode::AutoPassthrough);
        let has_certs = tls.server_certificate.is_some()
            || tls.private_key.is_some()
            || tls.ca_certificates.is_some();
        if !passthrough || has_certs {
            d.error(
                tls_node,
                &tls_path,
                "server cannot have TLS settings for plain text HTTP ports",
            );
        }
    } else {
        d.error(
            tls_node,
            &tls_path,
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }
}

/// The version range against what rustls speaks (TLS 1.2 and 1.3): a
/// range below it is an error, a minimum below it a warning.
pub(super) fn check_versions_offered(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    tls: &ServerTls,
) {
    let at = |name: &str| field(entries, name).unwrap_or(node);
    let explicit = |v: Option<TlsVersion>| v.filter(|v| *v != TlsVersion::Auto);
    let (min, max) = (
        explicit(tls.min_protocol_version),
        explicit(tls.max_protocol_version),
    );
    if let (Some(min), Some(max)) = (min, max) {
        if max < min {
            d.error(
                at("maxProtocolVersion"),
                &join(path, "maxProtocolVersion"),
                format!(
                    "maxProtocolVersion {} is below minProtocolVersion {}",
                    max.name(),
                    min.name()
                ),
            );
            return;
        }
    }
    if let Some(max) = max.filter(|v| *v < TlsVersion::LOWEST_OFFERED) {
        d.error(
            at("maxProtocolVersion"),
            &join(path, "maxProtocolVersion"),
            format!(
                "maxProtocolVersion {} leaves no TLS version this gateway offers (TLSV1_2, TLSV1_3)",
                max.name()
            ),
        );
        return;
    }
    if let Some(min) = min.filter(|v| *v < TlsVersion::LOWEST_OFFERED) {
        d.report(
            Severity::Warning,
            at("minProtocolVersion"),
            &join(path, "minProtocolVersion"),
            format!(
                "{} is not offered by this gateway's TLS library (TLS 1.2 and 1.3 only); clients need TLS 1.2 or later",
                min.name()
            ),
        );
    }
}

/// §10.5 rules 2 to 9, in Istio's order.
pub(super) fn check_tls_options(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    tls: &ServerTls,
    sources: &CertificateSources<'_>,
) {
    let block = TlsBlock {
        node,
        entries,
        path,
    };
    // Rule 2 (a minimum below TLSV1_2 needs cipherSuites) is replaced by
    // `check_versions_offered`: this gateway offers nothing below TLS 1.2.
    warn_cipher_suites(d, &block, tls);
    check_list_lengths(d, &block, sources);
    if tls.mode == TlsMode::IstioMutual {
        check_istio_mutual_has_no_certificates(d, &block);
        return;
    }
    warn_passthrough_ignores_certificates(d, &block, tls);
    check_one_certificate_source(d, &block, tls, sources);
    check_crl_with_credential_name(d, &block, tls, sources);
    let terminating = matches!(
        tls.mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    );
    // Rule 7: credentials are checked when they are read, not here.
    if !terminating || sources.names_credentials() {
        return;
    }
    check_terminating_certificates(d, &block, tls, sources.tls_certificates);
}

/// Rule 3: unknown and duplicate cipher suites are warned about.
fn warn_cipher_suites(d: &mut Decoder<'_>, block: &TlsBlock<'_>, tls: &ServerTls) {
    let suites: Vec<&str> = tls.cipher_suites.iter().map(String::as_str).collect();
    for warning in rules::cipher_suite_warnings(&suites) {
        d.report(
            Severity::Warning,
            block.at("cipherSuites"),
            &block.path_of("cipherSuites"),
            warning,
        );
    }
}

/// The CRD's limits on the list fields: one or two entries.
fn check_list_lengths(d: &mut Decoder<'_>, block: &TlsBlock<'_>, sources: &CertificateSources<'_>) {
    for (name, len) in [
        ("credentialNames", sources.credential_names.len()),
        ("tlsCertificates", sources.tls_certificates.len()),
    ] {
        if block.has(name) && !(1..=2).contains(&len) {
            d.error(
                block.at(name),
                &block.path_of(name),
                format!("{name} must have 1 or 2 entries, found {len}"),
            );
        }
    }
}

/// Rule 4: ISTIO_MUTUAL uses Istio's own certificates.
fn check_istio_mutual_has_no_certificates(d: &mut Decoder<'_>, block: &TlsBlock<'_>) {
    for name in CERTIFICATE_FIELDS {
        if block.has(name) {
            d.error(
                block.at(name),
                &block.path_of(name),
                format!("ISTIO_MUTUAL TLS cannot have associated {name}"),
            );
        }
    }
}

/// Rule 5: passthrough modes never read certificates (one warning).
fn warn_passthrough_ignores_certificates(
    d: &mut Decoder<'_>,
    block: &TlsBlock<'_>,
    tls: &ServerTls,
) {
    if !matches!(tls.mode, TlsMode::Passthrough | TlsMode::AutoPassthrough) {
        return;
    }
    if let Some(name) = std::iter::once(&"caCrl")
        .chain(CERTIFICATE_FIELDS)
        .find(|name| block.has(name))
    {
        let mode = tls.mode.name();
        d.report(
            Severity::Warning,
            block.at(name),
            &block.path_of(name),
            format!("{mode} mode does not use certificates, they will be ignored"),
        );
    }
}

/// Rule 6: one certificate source.
fn check_one_certificate_source(
    d: &mut Decoder<'_>,
    block: &TlsBlock<'_>,
    tls: &ServerTls,
    sources: &CertificateSources<'_>,
) {
    let given = [
        tls.server_certificate.is_some() && tls.private_key.is_some(),
        sources.has_credential_name,
        !sources.credential_names.is_empty(),
        !sources.tls_certificates.is_empty(),
    ];
    if given.iter().filter(|s| **s).count() > 1 {
        d.error(block.node, block.path, "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified");
    }
}

/// Rule 9, credentialName half (only reachable for passthrough modes, as
/// rule 7 stops terminating modes first).
fn check_crl_with_credential_name(
    d: &mut Decoder<'_>,
    block: &TlsBlock<'_>,
    tls: &ServerTls,
    sources: &CertificateSources<'_>,
) {
    if tls.ca_crl.is_some()
        && sources.names_credentials()
        && !matches!(
            tls.mode,
            TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
        )
    {
        d.error(
            block.at("caCrl"),
            &block.path_of("caCrl"),
            "CRL is not supported with credentialName",
        );
    }
}

/// Rule 8 and the rest of rule 9 for a terminating mode that names its
/// files: a client CA for mutual modes, a certificate and key for each
/// pair, and no CRL for SIMPLE.
fn check_terminating_certificates(
    d: &mut Decoder<'_>,
    block: &TlsBlock<'_>,
    tls: &ServerTls,
    tls_certificates: &[TlsCertificate],
) {
    if matches!(tls.mode, TlsMode::Mutual | TlsMode::OptionalMutual)
        && tls.ca_certificates.is_none()
        && tls_certificates.iter().all(|c| c.ca_certificates.is_none())
    {
        d.error(
            block.node,
            &block.path_of("caCertificates"),
            "MUTUAL TLS requires a client CA bundle",
        );
    }
    let label = if tls.mode == TlsMode::Simple {
        "SIMPLE"
    } else {
        "MUTUAL"
    };
    if tls_certificates.is_empty() {
        if tls.server_certificate.is_none() {
            d.error(
                block.node,
                &block.path_of("serverCertificate"),
                format!("{label} TLS requires a server certificate"),
            );
        }
        if tls.private_key.is_none() {
            d.error(
                block.node,
                &block.path_of("privateKey"),
                format!("{label} TLS requires a private key"),
            );
        }
    }
    for (i, cert) in tls_certificates.iter().enumerate() {
        let item_path = format!("{}[{i}]", block.path_of("tlsCertificates"));
        if cert.server_certificate.is_none() {
            d.error(
                block.at("tlsCertificates"),
                &join(&item_path, "serverCertificate"),
                format!("{label} TLS requires a server certificate"),
            );
        }
        if cert.private_key.is_none() {
            d.error(
                block.at("tlsCertificates"),
                &join(&item_path, "privateKey"),
                format!("{label} TLS requires a private key"),
            );
        }
    }
    if tls.mode == TlsMode::Simple && tls.ca_crl.is_some() {
        d.error(
            block.at("caCrl"),
            &block.path_of("caCrl"),
            "CRL is not supported with SIMPLE TLS",
        );
    }
}
