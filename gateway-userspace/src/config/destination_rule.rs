//! Decodes `DestinationRule` documents: subsets and traffic policy. The
//! policy's load balancer, connection pool and client TLS are decoded in
//! `load_balancer`, `connection_pool` and `client_tls`; its `proxyProtocol`
//! and `tunnel` in `tunnel`.
mod client_tls;
mod connection_pool;
mod load_balancer;
mod locality;
mod tunnel;

use std::collections::HashSet;

use super::{
    common::{count, duration, export_to, port_number, string_map},
    decode::{Decoder, field, join},
    diagnostic::Severity,
    rules,
    yaml::{Node, Value},
};
use crate::model::{
    ClientTls, ClientTlsMode, ConnectionPool, DestinationRule, LoadBalancer, LocalitySetting,
    OutlierDetection, PortTrafficPolicy, RetryBudget, Subset, TrafficPolicy, Warmup,
};

/// Decodes a DestinationRule whose identity is known; `None` on any error.
pub(super) fn decode(
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
    let workload_selector = field(entries, "workloadSelector").and_then(|n| {
        let selector = d.mapping(n, "spec.workloadSelector", &["matchLabels"])?;
        Some(
            field(selector, "matchLabels")
                .map(|m| string_map(d, m, "spec.workloadSelector.matchLabels"))
                .unwrap_or_default(),
        )
    });
    Some(DestinationRule {
        namespace,
        name,
        host,
        traffic_policy,
        subsets,
        export_to,
        workload_selector,
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
    let proxy_protocol = field(entries, "proxyProtocol")
        .and_then(|n| tunnel::proxy_protocol(d, n, &join(path, "proxyProtocol")));
    let tunnel = field(entries, "tunnel").and_then(|n| tunnel::tunnel(d, n, &join(path, "tunnel")));
    if proxy_protocol.is_some() && tunnel.is_some() {
        d.error(
            node,
            path,
            "tunnel and proxyProtocol must not be set together",
        );
    }
    // `trafficPolicy:` with nothing is null, which Istio reads as unset.
    if entries.is_empty() && !matches!(node.value, Value::Null) {
        d.error(node, path, "traffic policy must have at least one field");
    }
    let mut port_level: Vec<PortTrafficPolicy> = Vec::new();
    for (item_path, item) in d.items(entries, "portLevelSettings", path) {
        let Some(level) = decode_port_policy(d, item, &item_path) else {
            continue;
        };
        // Istio takes the first entry for a port; a second one is dead.
        if port_level.iter().any(|p| p.port == level.port) {
            d.report(
                Severity::Warning,
                item,
                &item_path,
                format!(
                    "port {} already has port level settings: these are never used",
                    level.port
                ),
            );
            continue;
        }
        port_level.push(level);
    }
    let fields = decode_policy_fields(d, entries, path);
    let retry_budget =
        field(entries, "retryBudget").and_then(|n| retry_budget(d, n, &join(path, "retryBudget")));
    Some(TrafficPolicy {
        load_balancer: fields.load_balancer,
        warmup: fields.warmup,
        locality: fields.locality,
        connection_pool: fields.connection_pool,
        outlier_detection: fields.outlier_detection,
        tls: fields.tls,
        port_level,
        retry_budget,
        proxy_protocol,
        tunnel,
    })
}

/// `retryBudget`: `percent` (0..100, Istio's default 20) and
/// `minRetryConcurrency` (default 3, as Istio's `applyRetryBudget`) and
/// `budgetInterval` (default 0s: the requests in flight count), which
/// Istio passes to Envoy unvalidated beyond being a duration.
fn retry_budget(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RetryBudget> {
    let entries = d.mapping(
        node,
        path,
        &["percent", "minRetryConcurrency", "budgetInterval"],
    )?;
    let budget_interval = duration(d, entries, "budgetInterval", path).unwrap_or_default();
    let percent = match number(d, entries, "percent", path) {
        Some((at, value)) if !(0.0..=100.0).contains(&value) => {
            d.error(
                at,
                &join(path, "percent"),
                format!("percent {value} must be between 0 and 100"),
            );
            return None;
        }
        Some((_, value)) => value,
        None => 20.0,
    };
    Some(RetryBudget {
        percent,
        min_retry_concurrency: count(d, entries, "minRetryConcurrency", path)
            .filter(|n| *n > 0)
            .unwrap_or(3),
        budget_interval,
    })
}

/// One `portLevelSettings` entry: a port and at least one of the four
/// fields (Istio's `validatePortTrafficPolicies`).
fn decode_port_policy(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<PortTrafficPolicy> {
    let entries = d.mapping(
        node,
        path,
        &[
            "port",
            "loadBalancer",
            "connectionPool",
            "outlierDetection",
            "tls",
        ],
    )?;
    let port = match field(entries, "port") {
        Some(port) => {
            let port_path = join(path, "port");
            let numbers = d.mapping(port, &port_path, &["number"]).unwrap_or_default();
            field(numbers, "number").and_then(|n| port_number(d, n, &join(&port_path, "number")))
        }
        None => {
            d.error(node, path, "portTrafficPolicy must have valid port");
            None
        }
    };
    if entries
        .iter()
        .all(|(key, _)| matches!(&key.value, Value::Str(k) if k == "port"))
    {
        d.error(
            node,
            path,
            "port traffic policy must have at least one field",
        );
    }
    let fields = decode_policy_fields(d, entries, path);
    Some(PortTrafficPolicy {
        port: port?,
        load_balancer: fields.load_balancer,
        warmup: fields.warmup,
        locality: fields.locality,
        connection_pool: fields.connection_pool,
        outlier_detection: fields.outlier_detection,
        tls: fields.tls,
    })
}

/// The four fields a traffic policy and a port-level entry share.
struct PolicyFields {
    load_balancer: Option<LoadBalancer>,
    warmup: Option<Warmup>,
    locality: Option<LocalitySetting>,
    connection_pool: Option<ConnectionPool>,
    outlier_detection: Option<OutlierDetection>,
    tls: Option<ClientTls>,
}

fn decode_policy_fields(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> PolicyFields {
    let balancer = field(entries, "loadBalancer")
        .map(|n| load_balancer::load_balancer(d, n, &join(path, "loadBalancer")))
        .unwrap_or_default();
    let tls = field(entries, "tls").and_then(|node| {
        let tls = client_tls::client_tls(d, node, &join(path, "tls"))?;
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
        Some(tls)
    });
    let outlier = field(entries, "outlierDetection");
    if let (Some(setting), None, Some(at)) =
        (&balancer.locality, outlier, field(entries, "loadBalancer"))
    {
        if setting.fails_over_by_rule() {
            // Istio's warning: without ejections nothing ever fails over.
            d.report(
                Severity::Warning,
                at,
                &join(path, "loadBalancer"),
                "outlier detection policy must be provided for failover".to_string(),
            );
        }
    }
    PolicyFields {
        load_balancer: balancer.policy,
        warmup: balancer.warmup,
        locality: balancer.locality,
        connection_pool: field(entries, "connectionPool")
            .and_then(|n| connection_pool::connection_pool(d, n, &join(path, "connectionPool"))),
        outlier_detection: outlier
            .and_then(|n| outlier_detection(d, n, &join(path, "outlierDetection"))),
        tls,
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

/// `trafficPolicy.outlierDetection`, checked as Istio's
/// `validateOutlierDetection` checks it.
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
    let mut error_codes = Vec::new();
    for (item_path, item) in d.items(entries, "outlierDetectionHttpErrorCodes", path) {
        match d.integer(item, &item_path) {
            Some(code @ 100..=599) => error_codes.extend(u16::try_from(code).ok()),
            None => {}
            Some(code) => d.error(
                item,
                &item_path,
                format!("{code} is not an HTTP status code (100..599)"),
            ),
        }
    }
    if let Some(at) = field(entries, "consecutiveErrors") {
        if d.integer(at, &join(path, "consecutiveErrors")) != Some(0) {
            d.report(
                Severity::Warning,
                at,
                &join(path, "consecutiveErrors"),
                "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead (Istio gives it no effect)".into(),
            );
        }
    }
    let percent = |d: &mut Decoder<'_>, name: &str| {
        let value = count(d, entries, name, path);
        if let (Some(percent), Some(at)) = (value, field(entries, name)) {
            if percent > 100 {
                d.error(
                    at,
                    &join(path, name),
                    format!("{name} {percent} must be between 0 and 100"),
                );
                return None;
            }
        }
        value
    };
    let max_ejection_percent = percent(d, "maxEjectionPercent");
    let min_health_percent = percent(d, "minHealthPercent");
    let split_external_local_origin_errors =
        d.flag(entries, "splitExternalLocalOriginErrors", path);
    let consecutive_local_origin_failures =
        count(d, entries, "consecutiveLocalOriginFailures", path);
    if !split_external_local_origin_errors
        && consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        d.error(
            node,
            path,
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    for name in ["interval", "baseEjectionTime"] {
        if field(entries, name).is_some() {
            at_least_a_millisecond(d, entries, name, path);
        }
    }
    Some(OutlierDetection {
        consecutive_5xx_errors: count(d, entries, "consecutive5xxErrors", path),
        consecutive_gateway_errors: count(d, entries, "consecutiveGatewayErrors", path),
        consecutive_local_origin_failures,
        split_external_local_origin_errors,
        interval: duration(d, entries, "interval", path),
        base_ejection_time: duration(d, entries, "baseEjectionTime", path),
        max_ejection_percent,
        min_health_percent,
        error_codes,
    })
}
