//! A traffic policy's `loadBalancer`: a simple policy or a consistent
//! hash on one key, warmup (slow start), and the locality or zone-aware
//! setting (`locality.rs`).
use super::{at_least_a_millisecond, locality, number};
use crate::{
    config::{
        common::duration,
        decode::{Decoder, field, join},
        diagnostic::Severity,
        yaml::Node,
    },
    model::{ConsistentHash, HashKey, HashTable, LoadBalancer, LocalitySetting, SimpleLb, Warmup},
};

const LB_SIMPLE: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

/// `trafficPolicy.loadBalancer` as decoded: each part `None` when unset
/// or in error.
#[derive(Default)]
pub(super) struct LoadBalancerBlock {
    pub policy: Option<LoadBalancer>,
    pub warmup: Option<Warmup>,
    pub locality: Option<LocalitySetting>,
}

/// `trafficPolicy.loadBalancer`: its policy, its warmup and its locality
/// setting.
pub(super) fn load_balancer(d: &mut Decoder<'_>, node: &Node, path: &str) -> LoadBalancerBlock {
    let Some(entries) = d.mapping(
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
    ) else {
        return LoadBalancerBlock::default();
    };
    let warmup = match (
        field(entries, "warmup"),
        field(entries, "warmupDurationSecs"),
    ) {
        (Some(node), _) => warmup(d, node, &join(path, "warmup")),
        (None, Some(_)) => duration(d, entries, "warmupDurationSecs", path).map(|window| Warmup {
            window,
            minimum_percent: DEFAULT_WARMUP_MINIMUM_PERCENT,
            aggression: 1.0,
        }),
        (None, None) => None,
    };
    let locality = match (
        field(entries, "localityLbSetting"),
        field(entries, "zoneAwareLbSetting"),
    ) {
        (Some(_), Some(at)) => {
            d.error(
                at,
                &join(path, "zoneAwareLbSetting"),
                "only one of localityLbSetting and zoneAwareLbSetting can be set",
            );
            None
        }
        (Some(n), None) => locality::locality_lb(d, n, &join(path, "localityLbSetting")),
        (None, Some(n)) => locality::zone_aware_lb(d, n, &join(path, "zoneAwareLbSetting")),
        (None, None) => None,
    };
    LoadBalancerBlock {
        policy: policy(d, node, entries, path),
        warmup,
        locality,
    }
}

/// Envoy's `min_weight_percent` default, which Istio keeps.
const DEFAULT_WARMUP_MINIMUM_PERCENT: f64 = 10.0;

fn policy(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
) -> Option<LoadBalancer> {
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
            Severity::Note,
            simple,
            &join(path, "simple"),
            "PASSTHROUGH sends each connection to its original destination (Envoy's ORIGINAL_DST): only connections captured from workloads (an egress instance's --egress-from) have one; on a gateway's own addresses requests get 503 UH and connections are closed"
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

/// Envoy's default ring size, Istio's when nothing names one.
const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's largest ring (`maximum_ring_size`).
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Istio's bound on a Maglev table (exclusive).
const MAX_MAGLEV_TABLE: u64 = 5_000_011;

/// `loadBalancer.consistentHash`: exactly one hash key, and the table
/// (`ringHash`, `maglev`, or the deprecated `minimumRingSize`), checked as
/// Istio's `validateLoadBalancer` checks them.
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
        keys.extend(http_cookie(d, cookie, &join(&hash_path, "httpCookie")));
    }
    if d.flag(h, "useSourceIp", &hash_path) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(name) = d.opt_string(h, "httpQueryParameterName", &hash_path) {
        keys.push(HashKey::QueryParameter(name));
    }
    let table = hash_table(d, h, &hash_path);
    if keys.len() != 1 {
        d.error(hash, &hash_path, "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName");
        return None;
    }
    let key = keys.pop()?;
    Some(LoadBalancer::ConsistentHash(ConsistentHash {
        key,
        table: table?,
    }))
}

/// `httpCookie`: a name is required; attribute names unique and not empty.
fn http_cookie(d: &mut Decoder<'_>, cookie: &Node, path: &str) -> Option<HashKey> {
    let c = d.mapping(cookie, path, &["name", "path", "ttl", "attributes"])?;
    let mut attributes: Vec<(String, String)> = Vec::new();
    for (item_path, item) in d.items(c, "attributes", path) {
        let Some(entries) = d.mapping(item, &item_path, &["name", "value"]) else {
            continue;
        };
        let name = d
            .opt_string(entries, "name", &item_path)
            .unwrap_or_default();
        let value = d
            .opt_string(entries, "value", &item_path)
            .unwrap_or_default();
        if name.is_empty() {
            d.error(item, &item_path, "cookie attribute name cannot be empty");
        } else if attributes.iter().any(|(seen, _)| *seen == name) {
            d.error(
                item,
                &item_path,
                format!("duplicate cookie attribute name: {name}"),
            );
        } else {
            attributes.push((name, value));
        }
    }
    let Some(name) = d.opt_string(c, "name", path) else {
        d.error(cookie, &join(path, "name"), "name required for HttpCookie");
        return None;
    };
    Some(HashKey::Cookie {
        name,
        ttl: duration(d, c, "ttl", path),
        path: d.opt_string(c, "path", path),
        attributes,
    })
}

/// The table: `maglev` (a prime `tableSize` below 5000011), `ringHash`
/// (`minimumRingSize`, Envoy's 1024 when 0), or the deprecated top-level
/// `minimumRingSize` (a warning, as in Istio).
fn hash_table(d: &mut Decoder<'_>, h: &[(Node, Node)], path: &str) -> Option<HashTable> {
    let deprecated = field(h, "minimumRingSize")
        .and_then(|n| d.integer(n, &join(path, "minimumRingSize")))
        .filter(|n| *n != 0);
    if let (Some(_), Some(at)) = (deprecated, field(h, "minimumRingSize")) {
        d.report(
            Severity::Warning,
            at,
            &join(path, "minimumRingSize"),
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead".into(),
        );
        if field(h, "maglev").is_some() || field(h, "ringHash").is_some() {
            d.error(
                at,
                path,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
    }
    let ring_size = |d: &mut Decoder<'_>, at: &Node, size: i64, at_path: &str| match u64::try_from(
        size,
    ) {
        Ok(0) => Some(DEFAULT_RING_SIZE),
        Ok(size) if size <= MAX_RING_SIZE => Some(size),
        _ => {
            d.error(
                    at,
                    at_path,
                    format!("minimumRingSize {size} must be between 0 and {MAX_RING_SIZE} (Envoy's largest ring)"),
                );
            None
        }
    };
    if let Some(maglev) = field(h, "maglev") {
        let maglev_path = join(path, "maglev");
        let m = d.mapping(maglev, &maglev_path, &["tableSize"])?;
        let size_path = join(&maglev_path, "tableSize");
        let size = field(m, "tableSize")
            .and_then(|n| d.integer(n, &size_path))
            .unwrap_or(0);
        let size = u64::try_from(size).unwrap_or(0);
        if size == 0 {
            d.error(maglev, &size_path, "tableSize must be set for maglev");
            return None;
        }
        if size >= MAX_MAGLEV_TABLE {
            d.error(
                maglev,
                &size_path,
                "tableSize must be less than 5000011 for maglev",
            );
            return None;
        }
        if !is_prime(size) {
            d.error(
                maglev,
                &size_path,
                "tableSize must be a prime number for maglev",
            );
            return None;
        }
        return Some(HashTable::Maglev { table_size: size });
    }
    if let Some(ring) = field(h, "ringHash") {
        let ring_path = join(path, "ringHash");
        let r = d.mapping(ring, &ring_path, &["minimumRingSize"])?;
        let size_path = join(&ring_path, "minimumRingSize");
        let size = field(r, "minimumRingSize")
            .and_then(|n| d.integer(n, &size_path))
            .unwrap_or(0);
        return ring_size(d, ring, size, &size_path)
            .map(|minimum_size| HashTable::Ring { minimum_size });
    }
    let minimum_size = match (deprecated, field(h, "minimumRingSize")) {
        (Some(size), Some(at)) => ring_size(d, at, size, &join(path, "minimumRingSize"))?,
        _ => DEFAULT_RING_SIZE,
    };
    Some(HashTable::Ring { minimum_size })
}

/// Trial division: table sizes are below 5000011.
fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// `loadBalancer.warmup`: checked as Istio checks it
/// (`validateLoadBalancer`: `duration` required, `minimumPercent` at most
/// 100, `aggression` above 0; the CRD also bounds `minimumPercent` below by
/// 0 and `duration` by 1ms). Warned as not applied by the caller.
fn warmup(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Warmup> {
    let entries = d.mapping(node, path, &["duration", "minimumPercent", "aggression"])?;
    match field(entries, "duration") {
        None => d.error(node, &join(path, "duration"), "duration is required"),
        Some(_) => at_least_a_millisecond(d, entries, "duration", path),
    }
    let mut minimum_percent = DEFAULT_WARMUP_MINIMUM_PERCENT;
    if let Some((at, percent)) = number(d, entries, "minimumPercent", path) {
        if !(0.0..=100.0).contains(&percent) {
            d.error(
                at,
                &join(path, "minimumPercent"),
                format!("minimumPercent {percent} must be between 0 and 100"),
            );
        }
        minimum_percent = percent;
    }
    let mut aggression = 1.0;
    if let Some((at, value)) = number(d, entries, "aggression", path) {
        if value <= 0.0 || value.is_nan() {
            d.error(
                at,
                &join(path, "aggression"),
                format!("aggression {value} must be greater than 0"),
            );
        }
        aggression = value;
    }
    Some(Warmup {
        window: duration(d, entries, "duration", path)?,
        minimum_percent,
        aggression,
    })
}
