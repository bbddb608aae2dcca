use super::*;
use crate::model::{Distribute, LocalityLb, OutlierDetection, ZoneAwareLb};

fn instance(locality: &str) -> Instance {
    Instance {
        locality: Locality::parse(locality),
        ..Instance::default()
    }
}

fn policy(locality: Option<LocalitySetting>, outlier: bool) -> TrafficPolicy {
    TrafficPolicy {
        locality,
        outlier_detection: outlier.then(OutlierDetection::default),
        ..TrafficPolicy::default()
    }
}

/// Priorities of endpoints at `localities` (no labels, weight 1).
fn priorities(plan: &LocalityPlan, localities: &[&str]) -> Vec<Option<u32>> {
    placements(plan, localities, &[])
        .into_iter()
        .map(|p| p.map(|p| p.priority))
        .collect()
}

fn placements(
    plan: &LocalityPlan,
    localities: &[&str],
    labels: &[BTreeMap<String, String>],
) -> Vec<Option<Placement>> {
    let localities: Vec<Locality> = localities.iter().map(|l| Locality::parse(l)).collect();
    let none = BTreeMap::new();
    let placed: Vec<Placed<'_>> = localities
        .iter()
        .enumerate()
        .map(|(i, locality)| Placed {
            locality,
            labels: labels.get(i).unwrap_or(&none),
            weight: 1,
        })
        .collect();
    plan.place(&placed)
}

fn failover_rule(from: &str, to: &str) -> Failover {
    Failover {
        from: from.into(),
        to: to.into(),
    }
}

#[test]
fn without_outlier_detection_the_mesh_default_leaves_every_endpoint_at_priority_0() {
    let plan = LocalityPlan::of(&policy(None, false), &instance("us/1a/r1"));
    assert_eq!(plan, LocalityPlan::Flat);
    let explicit = policy(
        Some(LocalitySetting::Locality(LocalityLb::default())),
        false,
    );
    assert_eq!(
        LocalityPlan::of(&explicit, &instance("us/1a")),
        LocalityPlan::Flat
    );
}

#[test]
fn with_outlier_detection_the_mesh_default_orders_subzone_zone_region_elsewhere() {
    let plan = LocalityPlan::of(&policy(None, true), &instance("us/1a/r1"));
    assert_eq!(
        priorities(&plan, &["eu/1a/r1", "us/1b/r1", "us/1a/r2", "us/1a/r1"]),
        [Some(3), Some(2), Some(1), Some(0)]
    );
    // Levels are contiguous: no endpoint in the gateway's subzone.
    assert_eq!(priorities(&plan, &["eu/x", "us/1b"]), [Some(1), Some(0)]);
}

#[test]
fn enabled_false_turns_off_even_the_mesh_default() {
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::Disabled), true),
        &instance("us/1a"),
    );
    assert_eq!(plan, LocalityPlan::Flat);
}

#[test]
fn a_failover_rule_puts_its_region_before_the_other_remote_regions() {
    let lb = LocalityLb {
        failover: vec![failover_rule("us", "eu")],
        ..LocalityLb::default()
    };
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::Locality(lb)), true),
        &instance("us/1a"),
    );
    // us/1a: 0; eu: 3 (the rule's); ap: 4; contiguous: 0, 1, 2.
    assert_eq!(
        priorities(&plan, &["ap/x", "eu/y", "us/1a"]),
        [Some(2), Some(1), Some(0)]
    );
}

#[test]
fn failover_priority_orders_by_the_first_label_that_differs_from_the_gateway() {
    let lb = LocalityLb {
        failover_priority: vec!["topology.istio.io/network".into(), "rack".into()],
        ..LocalityLb::default()
    };
    let mut gateway = instance("us/1a");
    gateway.labels = BTreeMap::from([
        ("topology.istio.io/network".into(), "n1".into()),
        ("rack".into(), "r1".into()),
    ]);
    let plan = LocalityPlan::of(&policy(Some(LocalitySetting::Locality(lb)), true), &gateway);
    let labels = |network: &str, rack: &str| {
        BTreeMap::from([
            ("topology.istio.io/network".to_string(), network.to_string()),
            ("rack".to_string(), rack.to_string()),
        ])
    };
    let got = placements(
        &plan,
        &["eu", "eu", "eu", "eu"],
        &[
            labels("n1", "r1"),
            labels("n1", "r2"),
            labels("n2", "r1"),
            labels("n2", "r2"),
        ],
    );
    // Raw: 0, 1 (rack differs: n - 1), 2 (network differs: adjust n),
    // 3 (both); the locality is not looked at without failover rules.
    let got: Vec<u32> = got
        .into_iter()
        .map(|p| p.map_or(99, |p| p.priority))
        .collect();
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn failover_priority_value_overrides_and_topology_labels_come_from_localities() {
    let lb = LocalityLb {
        failover_priority: vec!["topology.kubernetes.io/zone".into(), "tier=gold".into()],
        ..LocalityLb::default()
    };
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::Locality(lb)), true),
        &instance("us/1a"),
    );
    let gold = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
    let none = BTreeMap::new();
    let got = placements(
        &plan,
        &["us/1a", "us/1a", "us/1b"],
        &[gold.clone(), none, gold],
    );
    let got: Vec<u32> = got
        .into_iter()
        .map(|p| p.map_or(99, |p| p.priority))
        .collect();
    // Same zone and gold: 0; same zone, not gold: 1; other zone: 2.
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn zone_aware_tiers_by_region_only_and_applies_without_outlier_detection() {
    let zone = ZoneAwareLb {
        failover: vec![failover_rule("us", "eu")],
        ..ZoneAwareLb::default()
    };
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::ZoneAware(zone)), false),
        &instance("us/1a"),
    );
    assert_eq!(
        priorities(&plan, &["us/1b", "us/1a", "eu/1", "ap/1"]),
        [Some(0), Some(0), Some(1), Some(2)]
    );
}

#[test]
fn distribute_shares_each_weight_among_the_localities_it_covers_and_drops_the_rest() {
    let lb = LocalityLb {
        distribute: vec![
            Distribute {
                from: "eu/*".into(),
                to: BTreeMap::from([("eu/*".into(), 100)]),
            },
            Distribute {
                from: "us/*".into(),
                to: BTreeMap::from([("us/1a".into(), 80), ("eu/*".into(), 20)]),
            },
        ],
        ..LocalityLb::default()
    };
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::Locality(lb)), false),
        &instance("us/1a"),
    );
    assert!(plan.weights_localities());
    let got = placements(&plan, &["us/1a", "eu/x", "eu/y", "eu/y", "ap/z"], &[]);
    let weights: Vec<Option<u32>> = got.iter().map(|p| p.map(|p| p.locality_weight)).collect();
    // eu/x has 1 of eu's 3 endpoints: ceil(20 / 3) = 7; eu/y ceil(40 / 3) = 14.
    assert_eq!(weights, [Some(80), Some(7), Some(14), Some(14), None]);
}

#[test]
fn distribute_with_no_rule_for_the_gateway_changes_nothing() {
    let lb = LocalityLb {
        distribute: vec![Distribute {
            from: "eu/*".into(),
            to: BTreeMap::from([("eu/*".into(), 100)]),
        }],
        ..LocalityLb::default()
    };
    let plan = LocalityPlan::of(
        &policy(Some(LocalitySetting::Locality(lb)), false),
        &instance("us/1a"),
    );
    assert_eq!(plan, LocalityPlan::Flat);
}
