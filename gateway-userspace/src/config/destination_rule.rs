//! Decodes `DestinationRule` documents: subsets and traffic policy.
use std::{collections::HashSet, path::Path};

use super::{
    certs,
    common::{count, duration, export_to, string_map},
    decode::{Decoder, field, join},
    diagnostic::Severity,
    rules,
    yaml::{Node, Value},
};
use crate::model::{
    ClientTls, ClientTlsMode, ConnectionPool, DestinationRule, H2UpgradePolicy, HashKey,
    LoadBalancer, OutlierDetection, SimpleLb, Subset, TrafficPolicy,
};

const LB_SIMPLE: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];
/// `connectionPool.http.h2UpgradePolicy` values (case-sensitive enum).
const H2_UPGRADE_POLICIES: &[&str] = &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];
const CLIENT_TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

/// Decodes a DestinationRule whose identity is known; `None` on any error.
pub fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
) -> Option<DestinationRule> {
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(
        spec,
        "spec",
        &[
            "host",
            "trafficPolicy",
            "subsets",
            "exportTo",
            "workloadSelector",
        ],
    )?;
    let host = match d.opt_string(entries, "host", "spec") {
        Some(host) => {
            if let Err(message) = rules::service_host(&host) {
                d.error(field(entries, "host").unwrap_or(spec), "spec.host", message);
            }
            host
        }
        None => {
            d.error(spec, "spec.host", "destination rule must have a host");
            String::new()
        }
    };
    let traffic_policy = field(entries, "trafficPolicy")
        .and_then(|n| decode_traffic_policy(d, n, "spec.trafficPolicy"))
        .unwrap_or_default();
    let mut subsets: Vec<Subset> = Vec::new();
    let mut subset_names: HashSet<String> = HashSet::new();
    for (subset_path, item) in d.items(entries, "subsets", "spec") {
        let Some(s) = d.mapping(item, &subset_path, &["name", "labels", "trafficPolicy"]) else {
            continue;
        };
        let Some(subset_name) = d.opt_string(s, "name", &subset_path) else {
            d.error(item, &join(&subset_path, "name"), "subset name is required");
            continue;
        };
        let at = field(s, "name").unwrap_or(item);
        if !rules::is_dns1123_label(&subset_name) {
            d.error(
                at,
                &join(&subset_path, "name"),
                format!("subset name {subset_name:?} must be a DNS-1123 label"),
            );
        } else if !subset_names.insert(subset_name.clone()) {
            d.error(
                at,
                &join(&subset_path, "name"),
                format!("duplicate subset name {subset_name}"),
            );
        }
        subsets.push(Subset {
            name: subset_name,
            labels: field(s, "labels")
                .map(|n| string_map(d, n, &join(&subset_path, "labels")))
                .unwrap_or_default(),
            traffic_policy: field(s, "trafficPolicy")
                .and_then(|n| decode_traffic_policy(d, n, &join(&subset_path, "trafficPolicy"))),
        });
    }
    let export_to = export_to(d, entries, "spec");
    Some(DestinationRule {
        namespace,
        name,
        host,
        traffic_policy,
        subsets,
        export_to,
    })
}

fn decode_traffic_policy(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<TrafficPolicy> {
    let entries = d.mapping(
        node,
        path,
        &[
            "loadBalancer",
            "connectionPool",
            "outlierDetection",
            "tls",
            "portLevelSettings",
            "tunnel",
            "proxyProtocol",
            "retryBudget",
        ],
    )?;
    not_applied_yet(
        d,
        entries,
        path,
        &[
            "outlierDetection",
            "portLevelSettings",
            "tunnel",
            "proxyProtocol",
            "retryBudget",
        ],
    );
    let tls = field(entries, "tls").and_then(|node| {
        let tls = client_tls(d, node, &join(path, "tls"))?;
        if tls.mode == ClientTlsMode::IstioMutual {
            // Istio would encrypt and authenticate with the mesh's workload
            // certificates; without them the only alternative is plaintext.
            let at = field(node_entries(node), "mode").unwrap_or(node);
            d.error(
                at,
                &join(path, "tls.mode"),
                "TLS origination with ISTIO_MUTUAL needs the mesh's workload certificates, which this gateway does not have: refused, never sent in plaintext (use SIMPLE or MUTUAL with certificates)",
            );
            return None;
        }
        if tls.insecure_skip_verify {
            d.report(
                Severity::Warning,
                node,
                &join(path, "tls"),
                "insecureSkipVerify is not applied: the server certificate is always verified"
                    .to_string(),
            );
        }
        Some(tls)
    });
    Some(TrafficPolicy {
        load_balancer: field(entries, "loadBalancer")
            .and_then(|n| load_balancer(d, n, &join(path, "loadBalancer"))),
        connection_pool: field(entries, "connectionPool")
            .and_then(|n| connection_pool(d, n, &join(path, "connectionPool")))
            .unwrap_or_default(),
        outlier_detection: field(entries, "outlierDetection")
            .and_then(|n| outlier_detection(d, n, &join(path, "outlierDetection"))),
        tls,
    })
}

fn load_balancer(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<LoadBalancer> {
    let entries = d.mapping(
        node,
        path,
        &[
            "simple",
            "consistentHash",
            "localityLbSetting",
            "zoneAwareLbSetting",
            "warmupDurationSecs",
            "warmup",
        ],
    )?;
    not_applied_yet(
        d,
        entries,
        path,
        &[
            "consistentHash",
            "localityLbSetting",
            "zoneAwareLbSetting",
            "warmupDurationSecs",
            "warmup",
        ],
    );
    if let (Some(_), Some(at)) = (
        field(entries, "localityLbSetting"),
        field(entries, "zoneAwareLbSetting"),
    ) {
        d.error(
            at,
            &join(path, "zoneAwareLbSetting"),
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    if let Some(node) = field(entries, "warmup") {
        warmup(d, node, &join(path, "warmup"));
    }
    match (field(entries, "simple"), field(entries, "consistentHash")) {
        (Some(simple), None) => {
            let text = d.string(simple, &join(path, "simple"))?;
            if text == "PASSTHROUGH" {
                d.report(
                    Severity::Warning,
                    simple,
                    &join(path, "simple"),
                    "PASSTHROUGH is not applied by this gateway yet: requests are balanced round robin".into(),
                );
            }
            let Some(simple_lb) = SimpleLb::parse(&text) else {
                d.error(
                    simple,
                    &join(path, "simple"),
                    format!(
                        "invalid load balancer {text:?}, supported values are {}",
                        LB_SIMPLE.join(", ")
                    ),
                );
                return None;
            };
            Some(LoadBalancer::Simple(simple_lb))
        }
        (None, Some(hash)) => {
            let hash_path = join(path, "consistentHash");
            let h = d.mapping(
                hash,
                &hash_path,
                &[
                    "httpHeaderName",
                    "httpCookie",
                    "useSourceIp",
                    "httpQueryParameterName",
                    "ringHash",
                    "maglev",
                    "minimumRingSize",
                ],
            )?;
            let mut keys = Vec::new();
            if let Some(name) = d.opt_string(h, "httpHeaderName", &hash_path) {
                keys.push(HashKey::Header(name.to_ascii_lowercase()));
            }
            if let Some(cookie) = field(h, "httpCookie") {
                let cookie_path = join(&hash_path, "httpCookie");
                if let Some(c) =
                    d.mapping(cookie, &cookie_path, &["name", "path", "ttl", "attributes"])
                {
                    match d.opt_string(c, "name", &cookie_path) {
                        Some(name) => keys.push(HashKey::Cookie {
                            name,
                            ttl: duration(d, c, "ttl", &cookie_path),
                        }),
                        None => d.error(
                            cookie,
                            &join(&cookie_path, "name"),
                            "cookie name is required",
                        ),
                    }
                }
            }
            if d.flag(h, "useSourceIp", &hash_path) {
                keys.push(HashKey::SourceIp);
            }
            if let Some(name) = d.opt_string(h, "httpQueryParameterName", &hash_path) {
                keys.push(HashKey::QueryParameter(name));
            }
            if keys.len() != 1 {
                d.error(hash, &hash_path, "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName");
                return None;
            }
            keys.pop().map(LoadBalancer::ConsistentHash)
        }
        (None, None) => None,
        (Some(_), Some(_)) => {
            d.error(
                node,
                path,
                "only one of simple and consistentHash may be set",
            );
            None
        }
    }
}

fn connection_pool(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ConnectionPool> {
    let entries = d.mapping(node, path, &["tcp", "http"])?;
    let mut pool = ConnectionPool::default();
    if let Some(tcp) = field(entries, "tcp") {
        let tcp_path = join(path, "tcp");
        let t = d
            .mapping(
                tcp,
                &tcp_path,
                &[
                    "maxConnections",
                    "connectTimeout",
                    "tcpKeepalive",
                    "maxConnectionDuration",
                    "idleTimeout",
                ],
            )
            .unwrap_or_default();
        pool.max_connections = positive(d, t, "maxConnections", &tcp_path);
        pool.connect_timeout = duration(d, t, "connectTimeout", &tcp_path);
        not_applied_yet(
            d,
            t,
            &tcp_path,
            &[
                "maxConnections",
                "tcpKeepalive",
                "maxConnectionDuration",
                "idleTimeout",
            ],
        );
    }
    if let Some(http) = field(entries, "http") {
        let http_path = join(path, "http");
        let h = d
            .mapping(
                http,
                &http_path,
                &[
                    "http1MaxPendingRequests",
                    "http2MaxRequests",
                    "maxRequestsPerConnection",
                    "maxRetries",
                    "idleTimeout",
                    "h2UpgradePolicy",
                    "useClientProtocol",
                    "maxConcurrentStreams",
                    "http2KeepAlive",
                ],
            )
            .unwrap_or_default();
        if let Some(node) = field(h, "http2KeepAlive") {
            http2_keep_alive(d, node, &join(&http_path, "http2KeepAlive"));
        }
        pool.http1_max_pending_requests = positive(d, h, "http1MaxPendingRequests", &http_path);
        pool.http2_max_requests = positive(d, h, "http2MaxRequests", &http_path);
        pool.max_requests_per_connection = count(d, h, "maxRequestsPerConnection", &http_path);
        pool.max_retries = count(d, h, "maxRetries", &http_path);
        pool.idle_timeout = duration(d, h, "idleTimeout", &http_path);
        if let Some(node) = field(h, "h2UpgradePolicy") {
            let policy_path = join(&http_path, "h2UpgradePolicy");
            if let Some(policy) = d.string(node, &policy_path) {
                if let Some(parsed) = H2UpgradePolicy::parse(&policy) {
                    pool.h2_upgrade_policy = Some(parsed);
                } else {
                    d.error(
                        node,
                        &policy_path,
                        format!(
                            "invalid h2UpgradePolicy {policy:?}, supported are {}",
                            H2_UPGRADE_POLICIES.join(", ")
                        ),
                    );
                }
            }
        }
        pool.use_client_protocol = d.flag(h, "useClientProtocol", &http_path);
        not_applied_yet(
            d,
            h,
            &http_path,
            &[
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
                "maxConcurrentStreams",
                "http2KeepAlive",
            ],
        );
    }
    Some(pool)
}

/// `loadBalancer.warmup`: checked as Istio checks it
/// (`validateLoadBalancer`: `duration` required, `minimumPercent` at most
/// 100, `aggression` above 0; the CRD also bounds `minimumPercent` below by
/// 0 and `duration` by 1ms). Warned as not applied by the caller.
fn warmup(d: &mut Decoder<'_>, node: &Node, path: &str) {
    let Some(entries) = d.mapping(node, path, &["duration", "minimumPercent", "aggression"]) else {
        return;
    };
    match field(entries, "duration") {
        None => d.error(node, &join(path, "duration"), "duration is required"),
        Some(_) => at_least_a_millisecond(d, entries, "duration", path),
    }
    if let Some((at, percent)) = number(d, entries, "minimumPercent", path) {
        if !(0.0..=100.0).contains(&percent) {
            d.error(
                at,
                &join(path, "minimumPercent"),
                format!("minimumPercent {percent} must be between 0 and 100"),
            );
        }
    }
    if let Some((at, aggression)) = number(d, entries, "aggression", path) {
        if aggression <= 0.0 || aggression.is_nan() {
            d.error(
                at,
                &join(path, "aggression"),
                format!("aggression {aggression} must be greater than 0"),
            );
        }
    }
}

/// `connectionPool.http.http2KeepAlive` (new in Istio 1.31): `interval` and
/// `timeout` are both required, each a duration of at least 1ms. Warned as
/// not applied by the caller.
fn http2_keep_alive(d: &mut Decoder<'_>, node: &Node, path: &str) {
    let Some(entries) = d.mapping(node, path, &["interval", "timeout"]) else {
        return;
    };
    for name in ["interval", "timeout"] {
        match field(entries, name) {
            None => d.error(
                node,
                &join(path, name),
                format!("http2 keepalive {name} is required"),
            ),
            Some(_) => at_least_a_millisecond(d, entries, name, path),
        }
    }
}

/// A duration field the CRD holds to at least 1ms.
fn at_least_a_millisecond(d: &mut Decoder<'_>, entries: &[(Node, Node)], name: &str, path: &str) {
    let value = duration(d, entries, name, path);
    if let (Some(value), Some(at)) = (value, field(entries, name)) {
        if value < std::time::Duration::from_millis(1) {
            d.error(
                at,
                &join(path, name),
                "must be a valid duration greater than 1ms",
            );
        }
    }
}

/// A number field (protobuf `double`), integer or not, with its node.
fn number<'n>(
    d: &mut Decoder<'_>,
    entries: &'n [(Node, Node)],
    name: &str,
    path: &str,
) -> Option<(&'n Node, f64)> {
    let node = field(entries, name)?;
    match node.value {
        Value::Int(i) => Some((node, i as f64)),
        Value::Float(f) => Some((node, f)),
        _ => {
            d.error(
                node,
                &join(path, name),
                format!("expected a number, found {}", node.type_name()),
            );
            None
        }
    }
}

/// The entries of a mapping node (none for anything else).
fn node_entries(node: &Node) -> &[(Node, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        _ => &[],
    }
}

/// Fields that are valid and decoded but not acted on by the proxy yet:
/// each present one gets a warning, so nobody relies on it silently.
fn not_applied_yet(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str, names: &[&str]) {
    for name in names {
        if let Some(node) = field(entries, name) {
            d.report(
                Severity::Warning,
                node,
                &join(path, name),
                format!("{name} is not applied by this gateway yet"),
            );
        }
    }
}

/// A count that must be at least 1 when set (a limit of 0 would block everything).
fn positive(d: &mut Decoder<'_>, entries: &[(Node, Node)], name: &str, path: &str) -> Option<u32> {
    let value = count(d, entries, name, path)?;
    if value == 0 {
        if let Some(at) = field(entries, name) {
            d.error(
                at,
                &join(path, name),
                format!("{name} must be greater than 0"),
            );
        }
        return None;
    }
    Some(value)
}

fn outlier_detection(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<OutlierDetection> {
    let entries = d.mapping(
        node,
        path,
        &[
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
            "consecutiveErrors",
            "outlierDetectionHttpErrorCodes",
        ],
    )?;
    for (item_path, item) in d.items(entries, "outlierDetectionHttpErrorCodes", path) {
        match d.integer(item, &item_path) {
            Some(100..=599) | None => {}
            Some(code) => d.error(
                item,
                &item_path,
                format!("{code} is not an HTTP status code (100..599)"),
            ),
        }
    }
    let max_ejection_percent = count(d, entries, "maxEjectionPercent", path);
    if let (Some(percent), Some(at)) = (max_ejection_percent, field(entries, "maxEjectionPercent"))
    {
        if percent > 100 {
            d.error(
                at,
                &join(path, "maxEjectionPercent"),
                format!("maxEjectionPercent {percent} must be between 0 and 100"),
            );
        }
    }
    Some(OutlierDetection {
        consecutive_5xx_errors: count(d, entries, "consecutive5xxErrors", path),
        interval: duration(d, entries, "interval", path),
        base_ejection_time: duration(d, entries, "baseEjectionTime", path),
        max_ejection_percent,
    })
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
    let dir = match env.credential_dir(d.file(), &name) {
        Ok(dir) => dir,
        Err(message) => return d.error(at, &field_path, message),
    };
    let (cert, key, ca) = certs::credential_files(&dir, &name);
    if tls.mode == ClientTlsMode::Mutual {
        if let Err(message) = certs::check_pair(env.files, &cert, &key) {
            return d.error(at, &field_path, message);
        }
        tls.client_certificate = Some(cert.display().to_string());
        tls.private_key = Some(key.display().to_string());
    }
    if env.files.read(&ca).is_ok() {
        if let Err(message) = certs::check_ca(env.files, &ca) {
            return d.error(at, &field_path, message);
        }
        tls.ca_certificates = Some(ca.display().to_string());
    }
}

fn client_tls(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ClientTls> {
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
        mode,
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
    Some(tls)
}
