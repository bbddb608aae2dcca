//! Localities (`region/zone/subzone`) and the DestinationRule settings
//! that prefer or weight endpoints by them (`localityLbSetting`,
//! `zoneAwareLbSetting`), as Istio's `pilot/pkg/networking/core/loadbalancer`
//! reads them.
use std::collections::BTreeMap;

/// Where a workload runs: Istio's `region/zone/subzone`, each part
/// possibly empty (unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// Istio's topology labels, which `failoverPriority` may name: an
/// endpoint and the gateway carry them from their localities.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Istio's workload label giving its locality as `region.zone.subzone`.
pub const LOCALITY_LABEL: &str = "istio-locality";

impl Locality {
    /// `region/zone/subzone` (Istio's `ConvertLocality`: missing parts
    /// are empty, a fourth `/` stays in the subzone).
    pub fn parse(text: &str) -> Self {
        let mut parts = text.splitn(3, '/');
        let mut next = || parts.next().unwrap_or_default().to_string();
        Self {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// Istio's Pod label `istio-locality`, `region.zone.subzone`.
    pub fn from_label(text: &str) -> Self {
        Self::parse(&text.replace('.', "/"))
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Whether a rule's locality (`region`, `region/zone`,
    /// `region/zone/subzone`, any part `*`) covers this one (Istio's
    /// `util.LocalityMatch`).
    pub fn matches(&self, rule: &str) -> bool {
        let rule = Self::parse(rule);
        let part = |rule: &str, ours: &str, optional: bool| {
            rule == "*" || (optional && rule.is_empty()) || rule == ours
        };
        part(&rule.region, &self.region, false)
            && part(&rule.zone, &self.zone, true)
            && part(&rule.subzone, &self.subzone, true)
    }

    /// How far `other` is from this locality: 0 same subzone, 1 same
    /// zone, 2 same region, 3 elsewhere (Istio's `util.LbPriority`).
    pub fn distance(&self, other: &Self) -> u32 {
        if self.region != other.region {
            3
        } else if self.zone != other.zone {
            2
        } else if self.subzone != other.subzone {
            1
        } else {
            0
        }
    }

    /// The topology labels this locality gives a workload (the parts
    /// that are known).
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (REGION_LABEL, self.region.as_str()),
            (ZONE_LABEL, self.zone.as_str()),
            (SUBZONE_LABEL, self.subzone.as_str()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Istio's `LocalityToString`: trailing empty parts left out.
        f.write_str(&self.region)?;
        if !self.zone.is_empty() {
            write!(f, "/{}", self.zone)?;
            if !self.subzone.is_empty() {
                write!(f, "/{}", self.subzone)?;
            }
        }
        Ok(())
    }
}

/// `loadBalancer.localityLbSetting` or `zoneAwareLbSetting`, as set on a
/// DestinationRule (`None` on the policy: Istio's mesh default, locality
/// failover on, which only acts with outlier detection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalitySetting {
    /// `enabled: false` on either: no locality preference at all, not
    /// even the mesh default's.
    Disabled,
    Locality(LocalityLb),
    ZoneAware(ZoneAwareLb),
}

impl LocalitySetting {
    /// Whether it names `failover` or `failoverPriority` rules (Istio
    /// warns when those come without outlier detection).
    pub fn fails_over_by_rule(&self) -> bool {
        match self {
            Self::Disabled => false,
            Self::Locality(l) => !l.failover.is_empty() || !l.failover_priority.is_empty(),
            Self::ZoneAware(z) => !z.failover.is_empty() || !z.failover_priority.is_empty(),
        }
    }
}

/// `localityLbSetting` (enabled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalityLb {
    /// `distribute`: for gateways in `from`, each `to` locality's share.
    pub distribute: Vec<Distribute>,
    /// `failover`: region `from` fails over to region `to` first.
    pub failover: Vec<Failover>,
    /// `failoverPriority`: labels (`key` or `key=value`) an endpoint must
    /// share with the gateway, in order of importance.
    pub failover_priority: Vec<String>,
}

/// One `distribute` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribute {
    pub from: String,
    /// Locality pattern to its weight (1..=100, summing to 100).
    pub to: BTreeMap<String, u32>,
}

/// One `failover` rule (regions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    pub to: String,
}

/// `zoneAwareLbSetting` (enabled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneAwareLb {
    pub failover: Vec<Failover>,
    pub failover_priority: Vec<String>,
    pub min_cluster_size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locality_parses_from_slashes_and_from_istio_locality_dots() {
        let full = Locality::parse("us-east/us-east-1a/rack1");
        assert_eq!(
            (
                full.region.as_str(),
                full.zone.as_str(),
                full.subzone.as_str()
            ),
            ("us-east", "us-east-1a", "rack1")
        );
        assert_eq!(Locality::from_label("us-east.us-east-1a.rack1"), full);
        assert_eq!(Locality::parse("eu").zone, "");
        assert_eq!(full.to_string(), "us-east/us-east-1a/rack1");
        assert_eq!(Locality::parse("eu").to_string(), "eu");
    }

    #[test]
    fn a_rule_locality_matches_by_parts_with_star_and_left_out_parts_as_any() {
        let ours = Locality::parse("us-east/1a/r1");
        assert!(ours.matches("us-east"));
        assert!(ours.matches("us-east/*"));
        assert!(ours.matches("us-east/1a/*"));
        assert!(ours.matches("*"));
        assert!(ours.matches("us-east/1a/r1"));
        assert!(!ours.matches("us-east/1b"));
        assert!(!ours.matches("us-west/*"));
    }

    #[test]
    fn distance_is_istio_lb_priority_zero_to_three() {
        let here = Locality::parse("r/z/s");
        assert_eq!(here.distance(&Locality::parse("r/z/s")), 0);
        assert_eq!(here.distance(&Locality::parse("r/z/t")), 1);
        assert_eq!(here.distance(&Locality::parse("r/y/s")), 2);
        assert_eq!(here.distance(&Locality::parse("q/z/s")), 3);
        // Unknown localities are equal to each other.
        assert_eq!(Locality::default().distance(&Locality::default()), 0);
    }
}
