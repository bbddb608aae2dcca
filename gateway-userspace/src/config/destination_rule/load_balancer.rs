//! A traffic policy's `loadBalancer`: a simple policy or a consistent
//! hash on one key; locality, zone-aware and warmup settings are checked
//! and warned as not applied.
use super::{at_least_a_millisecond, not_applied_yet, number};
use crate::{
    config::{
        common::duration,
        decode::{Decoder, field, join},
        diagnostic::Severity,
        yaml::Node,
    },
    model::{HashKey, LoadBalancer, SimpleLb},
};

const LB_SIMPLE: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

/// `trafficPolicy.loadBalancer`; `None` when it sets no policy or has an
/// error.
pub(super) fn load_balancer(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<LoadBalancer> {
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
        (Some(simple), None) => simple_load_balancer(d, simple, path),
        (None, Some(hash)) => consistent_hash(d, hash, path),
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

/// `loadBalancer.simple`: one of Istio's policy names.
fn simple_load_balancer(d: &mut Decoder<'_>, simple: &Node, path: &str) -> Option<LoadBalancer> {
    let text = d.string(simple, &join(path, "simple"))?;
    if text == "PASSTHROUGH" {
        d.report(
            Severity::Warning,
            simple,
            &join(path, "simple"),
            "PASSTHROUGH is not applied by this gateway yet: requests are balanced round robin"
                .into(),
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

/// `loadBalancer.consistentHash`: exactly one hash key.
fn consistent_hash(d: &mut Decoder<'_>, hash: &Node, path: &str) -> Option<LoadBalancer> {
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
        if let Some(c) = d.mapping(cookie, &cookie_path, &["name", "path", "ttl", "attributes"]) {
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
