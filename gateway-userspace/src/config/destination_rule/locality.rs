//! `loadBalancer.localityLbSetting` and `zoneAwareLbSetting`, checked as
//! Istio's `ValidateLocalityLbSetting` and `ValidateZoneAwareLbSetting`
//! (pkg/config/validation/agent/validation.go) check them.
use std::collections::BTreeMap;

use crate::{
    config::{
        decode::{Decoder, field, join},
        yaml::{Node, Value},
    },
    model::{
        Distribute, Failover, LocalityLb, LocalitySetting, REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL,
        ZoneAwareLb,
    },
};

/// `localityLbSetting`; `None` when it has an error.
pub(super) fn locality_lb(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<LocalitySetting> {
    let entries = d.mapping(
        node,
        path,
        &["distribute", "failover", "failoverPriority", "enabled"],
    )?;
    let errors = d.error_count();
    let enabled = enabled(d, entries, path);
    let distribute = distribute(d, entries, path);
    let failover = failover(d, entries, path, "locality lb");
    let failover_priority = d.string_list(entries, "failoverPriority", path);
    if let (false, false, Some(at)) = (
        distribute.is_empty(),
        failover.is_empty(),
        field(entries, "failover"),
    ) {
        d.error(
            at,
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
    }
    if !failover.is_empty() {
        for label in &failover_priority {
            if [REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL].contains(&label.as_str()) {
                d.error(
                    node,
                    &join(path, "failoverPriority"),
                    format!(
                        "can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"
                    ),
                );
            }
        }
    }
    if d.error_count() > errors {
        return None;
    }
    Some(if enabled {
        LocalitySetting::Locality(LocalityLb {
            distribute,
            failover,
            failover_priority,
        })
    } else {
        LocalitySetting::Disabled
    })
}

/// `zoneAwareLbSetting`; `None` when it has an error.
pub(super) fn zone_aware_lb(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<LocalitySetting> {
    let entries = d.mapping(
        node,
        path,
        &["enabled", "failover", "failoverPriority", "minClusterSize"],
    )?;
    let errors = d.error_count();
    let enabled = enabled(d, entries, path);
    let failover = failover(d, entries, path, "zone aware lb");
    let failover_priority = d.string_list(entries, "failoverPriority", path);
    for label in &failover_priority {
        if [REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL].contains(&label.as_str()) {
            d.error(
                node,
                &join(path, "failoverPriority"),
                format!(
                    "'failover_priority' for zone aware lb must not use topology label '{label}'; region- and zone-level routing are handled automatically"
                ),
            );
        }
    }
    let min_cluster_size = field(entries, "minClusterSize").and_then(|n| {
        let value = d.integer(n, &join(path, "minClusterSize"))?;
        u64::try_from(value).ok().or_else(|| {
            d.error(n, &join(path, "minClusterSize"), "must not be negative");
            None
        })
    });
    if d.error_count() > errors {
        return None;
    }
    Some(if enabled {
        LocalitySetting::ZoneAware(ZoneAwareLb {
            failover,
            failover_priority,
            min_cluster_size,
        })
    } else {
        LocalitySetting::Disabled
    })
}

/// `enabled`, a BoolValue: on unless `false`.
fn enabled(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> bool {
    field(entries, "enabled")
        .and_then(|n| d.boolean(n, &join(path, "enabled")))
        .unwrap_or(true)
}

/// `distribute`: each rule's weights 1..=100 summing to 100, and no two
/// `from` (nor two `to` of a rule) overlapping.
fn distribute(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Vec<Distribute> {
    let mut rules = Vec::new();
    let mut sources = Vec::new();
    for (rule_path, node) in d.items(entries, "distribute", path) {
        let Some(rule) = d.mapping(node, &rule_path, &["from", "to"]) else {
            continue;
        };
        let from = d.opt_string(rule, "from", &rule_path).unwrap_or_default();
        let to_path = join(&rule_path, "to");
        let mut to = BTreeMap::new();
        if let Some(Value::Map(weights)) = field(rule, "to").map(|n| &n.value) {
            for (key, value) in weights {
                let Some(locality) = d.string(key, &to_path) else {
                    continue;
                };
                let weight = d.integer(value, &join(&to_path, &locality));
                match weight {
                    Some(w @ 1..=100) => {
                        to.insert(locality, w as u32);
                    }
                    Some(_) => d.error(
                        value,
                        &join(&to_path, &locality),
                        "locality weight must be in range [1, 100]",
                    ),
                    None => {}
                }
            }
        } else if let Some(at) = field(rule, "to") {
            d.error(at, &to_path, "expected a map of locality to weight");
        }
        let total: u32 = to.values().sum();
        if total != 100 {
            d.error(
                node,
                &to_path,
                format!("total locality weight {total} != 100"),
            );
        }
        let targets: Vec<&str> = to.keys().map(String::as_str).collect();
        if let Err(message) = check_localities(&targets) {
            d.error(node, &to_path, message);
        }
        sources.push((from.clone(), node.clone()));
        rules.push(Distribute { from, to });
    }
    let froms: Vec<&str> = sources.iter().map(|(from, _)| from.as_str()).collect();
    if let Err(message) = check_localities(&froms) {
        let at = sources.first().map(|(_, n)| n);
        if let Some(at) = at {
            d.error(at, &join(path, "distribute"), message);
        }
    }
    rules
}

/// `failover`: regions only, each rule from one region to another.
fn failover(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    path: &str,
    what: &str,
) -> Vec<Failover> {
    let mut rules = Vec::new();
    for (rule_path, node) in d.items(entries, "failover", path) {
        let Some(rule) = d.mapping(node, &rule_path, &["from", "to"]) else {
            continue;
        };
        let from = d.opt_string(rule, "from", &rule_path).unwrap_or_default();
        let to = d.opt_string(rule, "to", &rule_path).unwrap_or_default();
        if from == to {
            d.error(
                node,
                &rule_path,
                format!("{what} failover settings must specify different regions"),
            );
        }
        if from.contains('/') || to.contains('/') {
            d.error(
                node,
                &rule_path,
                format!("{what} failover only specify region"),
            );
        }
        if from.contains('*') || to.contains('*') {
            d.error(
                node,
                &rule_path,
                format!("{what} failover region should not contain '*' wildcard"),
            );
        }
        rules.push(Failover { from, to });
    }
    rules
}

/// Istio's `validateLocalities`: no empty part, one `*` at most and only
/// at the end, and no locality overlapping one before it. As in Istio, a
/// region `*` overlaps only a `*` before it, so `[us-east, "*"]` (a
/// specific rule, then a fallback) is valid and `["*", us-east]` is not;
/// Istio checks a `to` map in Go's random order, this in sorted order.
fn check_localities(localities: &[&str]) -> Result<(), String> {
    let mut seen: Vec<[String; 3]> = Vec::new();
    for locality in localities {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        // A left-out part or `*` covers every value of it.
        let mut key = [String::new(), "*".to_string(), "*".to_string()];
        for (i, part) in parts.iter().enumerate() {
            key[i] = part.to_string();
        }
        let covers = |a: &str, b: &str| a == "*" || b == "*" || a == b;
        let overlaps = |k: &[String; 3]| {
            (k[0] == "*" || k[0] == key[0]) && covers(&k[1], &key[1]) && covers(&k[2], &key[2])
        };
        if seen.iter().any(overlaps) {
            return Err(format!(
                "locality {locality} overlap with previous specified ones"
            ));
        }
        seen.push(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_localities;

    #[test]
    fn localities_overlap_when_one_covers_the_other() {
        assert!(check_localities(&["us-east/*", "us-west"]).is_ok());
        assert!(check_localities(&["us-east/1a", "us-east/1b/r1"]).is_ok());
        assert!(check_localities(&["us-east", "us-east/1a"]).is_err());
        assert!(check_localities(&["*", "us-east"]).is_err());
        assert!(check_localities(&["us-east", "*"]).is_ok());
        assert!(check_localities(&["us-east/1a", "us-east"]).is_err());
        assert!(check_localities(&["us-east/1a/r1", "us-east/1a/r1"]).is_err());
    }

    #[test]
    fn a_wildcard_is_one_star_at_the_end_and_no_part_is_empty() {
        assert!(check_localities(&["us-*/1a"]).is_err());
        assert!(check_localities(&["us/**"]).is_err());
        assert!(check_localities(&["us//r1"]).is_err());
        assert!(check_localities(&["us/1a/*"]).is_ok());
    }
}
