//! Decodes `networking.istio.io` `Gateway` documents into [`model::Gateway`],
//! applying Istio's validation rules (istio/istio `pkg/config/validation`)
//! with positions.
use std::collections::{BTreeMap, HashSet};

use std::path::{Path, PathBuf};

use super::{
    certs, cipher_suites,
    common::string_map,
    decode::{self, Decoder, field, join},
    diagnostic::Severity,
    rules,
    yaml::{Node, Value},
};
use crate::model::{
    Bind, CertificateFiles, Gateway, Port, Protocol, Server, ServerTls, TlsCertificate, TlsMode,
    TlsVersion,
};

const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "uid",
    "resourceVersion",
    "generation",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];
const SPEC_FIELDS: &[&str] = &["servers", "selector"];
const SERVER_FIELDS: &[&str] = &["port", "hosts", "bind", "tls", "name", "defaultEndpoint"];
const PORT_FIELDS: &[&str] = &["number", "protocol", "name", "targetPort"];
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
/// TLS fields that name certificates (rules 10.5.4 and 10.5.5).
const CERTIFICATE_FIELDS: &[&str] = &[
    "serverCertificate",
    "privateKey",
    "caCertificates",
    "tlsCertificates",
    "credentialName",
    "credentialNames",
];

/// The namespace of a resource whose `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `metadata.creationTimestamp`, if present and a string.
pub fn creation_timestamp(d: &mut Decoder<'_>, doc: &Node) -> Option<String> {
    let node = doc.get("metadata")?.get("creationTimestamp")?;
    d.string(node, "metadata.creationTimestamp")
}

/// Reads `metadata.name` and `metadata.namespace` so diagnostics can name
/// the resource before the rest is decoded.
pub fn identity(d: &mut Decoder<'_>, doc: &Node) -> Option<(String, String)> {
    let Some(meta) = doc.get("metadata") else {
        d.error(doc, "metadata", "missing metadata");
        return None;
    };
    let entries = d.mapping(meta, "metadata", METADATA_FIELDS)?;
    let namespace = match field(entries, "namespace") {
        Some(node) => d.string(node, "metadata.namespace")?,
        None => DEFAULT_NAMESPACE.to_string(),
    };
    let Some(name_node) = field(entries, "name") else {
        d.error(meta, "metadata.name", "missing name");
        return None;
    };
    let name = d.string(name_node, "metadata.name")?;
    Some((namespace, name))
}

/// Decodes a Gateway document whose identity is already known. Returns
/// `None` if any error was reported for it.
pub fn decode(d: &mut Decoder<'_>, doc: &Node, namespace: String, name: String) -> Option<Gateway> {
    if let (Err(message), Some(name_node)) = (
        rules::gateway_name(&name),
        doc.get("metadata").and_then(|m| m.get("name")),
    ) {
        d.error(name_node, "metadata.name", message);
    }
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let selector = match field(entries, "selector") {
        Some(node) => string_map(d, node, "spec.selector"),
        None => BTreeMap::new(),
    };
    let mut servers = Vec::new();
    match field(entries, "servers") {
        Some(node) => {
            let items = d.sequence(node, "spec.servers").unwrap_or_default();
            if items.is_empty() {
                d.error(
                    node,
                    "spec.servers",
                    "gateway must have at least one server",
                );
            }
            let mut port_names: HashSet<String> = HashSet::new();
            for (index, item) in items.iter().enumerate() {
                let path = format!("spec.servers[{index}]");
                if let Some(server) = decode_server(d, item, &path) {
                    check_port_name_unique(d, item, &path, &server.port.name, &mut port_names);
                    servers.push(server);
                }
            }
        }
        None => d.error(
            spec,
            "spec.servers",
            "gateway must have at least one server",
        ),
    }
    if d.has_errors() {
        return None;
    }
    Some(Gateway {
        defined_at: Some(d.position(doc)),
        creation_timestamp: creation_timestamp(d, doc),
        namespace,
        name,
        selector,
        servers,
    })
}

/// Rule 10.1.4: port names are unique across a Gateway's servers.
fn check_port_name_unique(
    d: &mut Decoder<'_>,
    server: &Node,
    path: &str,
    name: &str,
    seen: &mut HashSet<String>,
) {
    if seen.contains(name) {
        let node = server
            .get("port")
            .and_then(|p| p.get("name"))
            .unwrap_or(server);
        d.error(
            node,
            &format!("{path}.port.name"),
            format!("port names in servers must be unique: duplicate name {name}"),
        );
    } else {
        seen.insert(name.to_string());
    }
}

fn decode_server(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Server> {
    let entries = d.mapping(node, path, SERVER_FIELDS)?;
    let errors_before = d.error_count();
    let bind = match field(entries, "bind") {
        Some(bind) => decode_bind(d, bind, &join(path, "bind")),
        None => Bind::Any,
    };
    let port = match field(entries, "port") {
        Some(port) => decode_port(d, port, &join(path, "port"), &bind),
        None => {
            d.error(node, &join(path, "port"), "port is required");
            None
        }
    };
    let hosts = decode_hosts(d, node, entries, path);
    // `tls:` with nothing under it is YAML null, which Istio reads as no TLS settings.
    let tls_node = field(entries, "tls").filter(|tls| tls.value != Value::Null);
    let tls = tls_node.and_then(|tls| decode_tls(d, tls, &join(path, "tls")));
    if let Some(port) = &port {
        check_tls_fits_protocol(d, node, tls_node, tls.as_ref(), port.protocol, path);
    }
    if d.error_count() > errors_before {
        return None;
    }
    Some(Server {
        port: port?,
        hosts,
        bind,
        tls,
    })
}

/// Rules 10.2.3 and 10.2.4, and the httpsRedirect warning (10.1.5).
fn check_tls_fits_protocol(
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

fn decode_port(d: &mut Decoder<'_>, node: &Node, path: &str, bind: &Bind) -> Option<Port> {
    let entries = d.mapping(node, path, PORT_FIELDS)?;
    let number_path = join(path, "number");
    let number = match field(entries, "number") {
        Some(n) => match (d.integer(n, &number_path), bind) {
            (Some(0), Bind::Unix(_)) => Some(0),
            (Some(value), Bind::Unix(_)) => {
                d.error(
                    n,
                    &number_path,
                    format!("port number {value} must be 0 for unix domain socket"),
                );
                None
            }
            (Some(value @ 1..=65535), _) => u16::try_from(value).ok(),
            (Some(value), _) => {
                d.error(
                    n,
                    &number_path,
                    format!("port number {value} must be in the range 1..65535"),
                );
                None
            }
            (None, _) => None,
        },
        None => {
            d.error(node, &number_path, "port number is required");
            None
        }
    };
    if let Some(target) = field(entries, "targetPort") {
        if d.integer(target, &join(path, "targetPort"))
            .is_some_and(|t| t > 0)
        {
            d.error(
                target,
                &join(path, "targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
    }
    // `protocol:` and `name:` with nothing after them are YAML null: unset,
    // reported once as missing rather than also as a type error.
    let protocol = match field(entries, "protocol").filter(|p| p.value != Value::Null) {
        Some(p) => d.string(p, &join(path, "protocol")).and_then(|text| {
            let parsed = Protocol::parse(&text);
            if parsed.is_none() {
                d.error(
                    p,
                    &join(path, "protocol"),
                    format!("invalid protocol {text:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UDP"),
                );
            }
            parsed
        }),
        None => {
            let at = node.key("protocol").unwrap_or(node);
            d.error(at, &join(path, "protocol"), "port protocol is required");
            None
        }
    };
    let name = match field(entries, "name").filter(|n| n.value != Value::Null) {
        Some(n) => {
            let name = d.string(n, &join(path, "name")).unwrap_or_default();
            if name.is_empty() && matches!(n.value, Value::Str(_)) {
                d.error(n, &join(path, "name"), "port name must be set");
            }
            name
        }
        None => {
            let at = node.key("name").unwrap_or(node);
            d.error(at, &join(path, "name"), "port name must be set");
            String::new()
        }
    };
    Some(Port {
        number: number?,
        name,
        protocol: protocol?,
    })
}

fn decode_hosts(
    d: &mut Decoder<'_>,
    server: &Node,
    entries: &[(Node, Node)],
    path: &str,
) -> Vec<String> {
    let hosts_path = join(path, "hosts");
    let Some(node) = field(entries, "hosts") else {
        d.error(
            server,
            &hosts_path,
            "server config must contain at least one host",
        );
        return Vec::new();
    };
    let items = d.sequence(node, &hosts_path).unwrap_or_default();
    if items.is_empty() && matches!(node.value, Value::Seq(_) | Value::Null) {
        d.error(
            node,
            &hosts_path,
            "server config must contain at least one host",
        );
    }
    let mut hosts = Vec::new();
    for (index, host) in items.iter().enumerate() {
        let host_path = decode::item(&hosts_path, index);
        let Some(text) = d.string(host, &host_path) else {
            continue;
        };
        match rules::server_host(&text) {
            Ok(()) => hosts.push(text),
            Err(message) => d.error(host, &host_path, message),
        }
    }
    hosts
}

fn decode_bind(d: &mut Decoder<'_>, node: &Node, path: &str) -> Bind {
    let Some(text) = d.string(node, path) else {
        return Bind::Any;
    };
    if text.is_empty() {
        return Bind::Any;
    }
    match rules::bind(&text) {
        Ok(rules::Bind::Ip(ip)) if ip.is_unspecified() => Bind::Any,
        Ok(rules::Bind::Ip(ip)) => Bind::Ip(ip),
        Ok(rules::Bind::Unix(path)) => Bind::Unix(path),
        Err(message) => {
            d.error(node, path, message);
            Bind::Any
        }
    }
}

fn decode_tls(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ServerTls> {
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
    };
    let credential_name = d.opt_string(entries, "credentialName", path);
    let credential_names = d.string_list(entries, "credentialNames", path);
    let tls_certificates = decode_tls_certificates(d, entries, path);
    check_tls_options(
        d,
        node,
        entries,
        path,
        &tls,
        credential_name.is_some(),
        &credential_names,
        &tls_certificates,
    );
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

/// Fills `certificates` and `client_ca` for terminating modes and, when
/// loading with an environment, checks the files exist, parse and match.
fn resolve_certificates(
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
    // (certificate, key, where to report, field path)
    let mut pairs: Vec<(String, String, &Node, String)> = Vec::new();
    let mut ca: Option<(String, &Node, String)> = None;
    if !tls.credential_names.is_empty() {
        let Some(env) = d.env else { return };
        let at = field(entries, "credentialName")
            .or_else(|| field(entries, "credentialNames"))
            .unwrap_or(node);
        let file = d.file();
        let field_path = join(path, "credentialName");
        for name in &tls.credential_names {
            match env.credential_dir(file, name) {
                Ok(dir) => {
                    let (cert, key, _) = certs::credential_files(&dir, name);
                    pairs.push((
                        cert.display().to_string(),
                        key.display().to_string(),
                        at,
                        field_path.clone(),
                    ));
                }
                Err(message) => d.error(at, &field_path, message),
            }
        }
        if mutual {
            let ca_name = tls
                .ca_cert_credential_name
                .clone()
                .unwrap_or_else(|| tls.credential_names[0].clone());
            let ca_file = |name: &str| {
                env.credential_dir(file, name)
                    .map(|dir| certs::credential_files(&dir, name).2)
            };
            let readable = |ca: &Result<PathBuf, String>| {
                ca.as_ref().is_ok_and(|ca| env.files.read(ca).is_ok())
            };
            let own_ca = ca_file(&ca_name);
            let separate_ca = ca_file(&format!("{ca_name}-cacert"));
            // Istio also takes the CA from a `<name>-cacert` secret.
            let chosen = if !readable(&own_ca) && readable(&separate_ca) {
                separate_ca
            } else {
                own_ca
            };
            match chosen {
                Ok(chosen) => ca = Some((chosen.display().to_string(), at, field_path)),
                // A missing certificate credential was reported just above.
                Err(message) if !tls.credential_names.contains(&ca_name) => {
                    d.error(at, &field_path, message);
                }
                Err(_) => {}
            }
        }
    } else if !tls.tls_certificates.is_empty() {
        let at = field(entries, "tlsCertificates").unwrap_or(node);
        for (i, cert) in tls.tls_certificates.iter().enumerate() {
            if let (Some(c), Some(k)) = (&cert.server_certificate, &cert.private_key) {
                pairs.push((
                    c.clone(),
                    k.clone(),
                    at,
                    format!("{}[{i}]", join(path, "tlsCertificates")),
                ));
            }
        }
        if let Some(c) = tls
            .tls_certificates
            .iter()
            .find_map(|c| c.ca_certificates.clone())
            .or_else(|| tls.ca_certificates.clone())
        {
            ca = Some((
                c,
                field(entries, "caCertificates").unwrap_or(at),
                join(path, "caCertificates"),
            ));
        }
    } else if let (Some(c), Some(k)) = (&tls.server_certificate, &tls.private_key) {
        let at = field(entries, "serverCertificate").unwrap_or(node);
        pairs.push((c.clone(), k.clone(), at, join(path, "serverCertificate")));
        if let Some(c) = &tls.ca_certificates {
            ca = Some((
                c.clone(),
                field(entries, "caCertificates").unwrap_or(node),
                join(path, "caCertificates"),
            ));
        }
    }
    tls.certificates = pairs
        .iter()
        .map(|(c, k, _, _)| CertificateFiles {
            certificate: c.clone(),
            private_key: k.clone(),
        })
        .collect();
    tls.client_ca = if mutual {
        ca.as_ref().map(|(c, _, _)| c.clone())
    } else {
        None
    };
    let Some(env) = d.env else { return };
    for (cert, key, at, field_path) in &pairs {
        if let Err(message) = certs::check_pair(env.files, Path::new(cert), Path::new(key)) {
            d.error(at, field_path, message);
        }
    }
    if let (true, Some((ca_path, at, field_path))) = (mutual, &ca) {
        if let Err(message) = certs::check_ca(env.files, Path::new(ca_path)) {
            d.error(at, field_path, message);
        }
    }
    if let (Some(crl), Some(at)) = (&tls.ca_crl, field(entries, "caCrl")) {
        if let Err(message) = certs::check_crl(env.files, Path::new(crl)) {
            d.error(at, &join(path, "caCrl"), message);
        }
    }
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

/// The version range against what rustls speaks (TLS 1.2 and 1.3): a
/// range below it is an error, a minimum below it a warning.
fn check_versions_offered(
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

/// §10.5 rules 2 to 9, in Istio's order.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the values are the rule's inputs"
)]
fn check_tls_options(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
    tls: &ServerTls,
    has_credential_name: bool,
    credential_names: &[String],
    tls_certificates: &[TlsCertificate],
) {
    let at = |name: &str| field(entries, name).unwrap_or(node);
    let path_of = |name: &str| join(path, name);
    // Rule 2 (a minimum below TLSV1_2 needs cipherSuites) is replaced by
    // `check_versions_offered`: this gateway offers nothing below TLS 1.2.
    // Rule 3.
    let suites: Vec<&str> = tls.cipher_suites.iter().map(String::as_str).collect();
    for warning in rules::cipher_suite_warnings(&suites) {
        d.report(
            Severity::Warning,
            at("cipherSuites"),
            &path_of("cipherSuites"),
            warning,
        );
    }
    // CRD limits on the list fields.
    for (name, len) in [
        ("credentialNames", credential_names.len()),
        ("tlsCertificates", tls_certificates.len()),
    ] {
        if field(entries, name).is_some() && !(1..=2).contains(&len) {
            d.error(
                at(name),
                &path_of(name),
                format!("{name} must have 1 or 2 entries, found {len}"),
            );
        }
    }
    let mode = tls.mode.name();
    // Rule 4: ISTIO_MUTUAL uses Istio's own certificates.
    if tls.mode == TlsMode::IstioMutual {
        for name in CERTIFICATE_FIELDS {
            if field(entries, name).is_some() {
                d.error(
                    at(name),
                    &path_of(name),
                    format!("ISTIO_MUTUAL TLS cannot have associated {name}"),
                );
            }
        }
        return;
    }
    // Rule 5.
    if matches!(tls.mode, TlsMode::Passthrough | TlsMode::AutoPassthrough) {
        if let Some(name) = std::iter::once(&"caCrl")
            .chain(CERTIFICATE_FIELDS)
            .find(|name| field(entries, name).is_some())
        {
            d.report(
                Severity::Warning,
                at(name),
                &path_of(name),
                format!("{mode} mode does not use certificates, they will be ignored"),
            );
        }
    }
    // Rule 6: one certificate source.
    let sources = [
        tls.server_certificate.is_some() && tls.private_key.is_some(),
        has_credential_name,
        !credential_names.is_empty(),
        !tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        d.error(node, path, "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified");
    }
    // Rule 9 (the credentialName half is only reachable for passthrough modes,
    // as rule 7 stops terminating modes first).
    if tls.ca_crl.is_some()
        && (has_credential_name || !credential_names.is_empty())
        && !matches!(
            tls.mode,
            TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
        )
    {
        d.error(
            at("caCrl"),
            &path_of("caCrl"),
            "CRL is not supported with credentialName",
        );
    }
    let terminating = matches!(
        tls.mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    );
    // Rule 7.
    if !terminating || has_credential_name || !credential_names.is_empty() {
        return;
    }
    // Rule 8.
    if matches!(tls.mode, TlsMode::Mutual | TlsMode::OptionalMutual)
        && tls.ca_certificates.is_none()
        && tls_certificates.iter().all(|c| c.ca_certificates.is_none())
    {
        d.error(
            node,
            &path_of("caCertificates"),
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
                node,
                &path_of("serverCertificate"),
                format!("{label} TLS requires a server certificate"),
            );
        }
        if tls.private_key.is_none() {
            d.error(
                node,
                &path_of("privateKey"),
                format!("{label} TLS requires a private key"),
            );
        }
    }
    for (i, cert) in tls_certificates.iter().enumerate() {
        let item_path = format!("{}[{i}]", path_of("tlsCertificates"));
        if cert.server_certificate.is_none() {
            d.error(
                at("tlsCertificates"),
                &join(&item_path, "serverCertificate"),
                format!("{label} TLS requires a server certificate"),
            );
        }
        if cert.private_key.is_none() {
            d.error(
                at("tlsCertificates"),
                &join(&item_path, "privateKey"),
                format!("{label} TLS requires a private key"),
            );
        }
    }
    // Rule 9, SIMPLE half.
    if tls.mode == TlsMode::Simple && tls.ca_crl.is_some() {
        d.error(
            at("caCrl"),
            &path_of("caCrl"),
            "CRL is not supported with SIMPLE TLS",
        );
    }
}
