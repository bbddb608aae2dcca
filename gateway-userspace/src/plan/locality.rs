//! Locality load balancing as Istio hands it to Envoy: each endpoint's
//! priority (Envoy tries priority 0 first and spills to the next as
//! endpoints are ejected) and, under `distribute`, its locality's weight.
//! A pure function of the gateway's locality and labels and the endpoints',
//! used by the compiler for a ServiceEntry's endpoints and by the proxy for
//! a Kubernetes Service's as they change. The arithmetic follows
//! `pilot/pkg/networking/core/loadbalancer/loadbalancer.go`.
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Failover, Instance, Locality, LocalitySetting, TrafficPolicy};

/// Istio's label naming a workload's network: a `failoverPriority` that
/// starts with it treats a different network as a lower tier, not a miss.
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// How a cluster orders and weights its endpoints by locality.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LocalityPlan {
    /// All endpoints at priority 0, unweighted by locality.
    #[default]
    Flat,
    /// Priorities by nearness to the gateway (failover).
    Failover(FailoverPlan),
    /// `distribute`: the matching rule's `to` shares; endpoints in no
    /// listed locality take no traffic.
    Distribute {
        to: BTreeMap<String, u32>,
        /// The gateway's region, for endpoints known by zone alone.
        gateway_region: String,
    },
}

/// What failover priorities are computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverPlan {
    pub gateway: Locality,
    /// The gateway's labels with its topology labels added.
    pub gateway_labels: BTreeMap<String, String>,
    pub failover: Vec<Failover>,
    pub failover_priority: Vec<String>,
    /// `zoneAwareLbSetting`: tiers by region only (Envoy balances the
    /// zones of the gateway's region together).
    pub zone_aware: bool,
}

/// Where one endpoint stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placement {
    /// 0 is tried first.
    pub priority: u32,
    /// Its locality's weight under `distribute`; 0 when localities are
    /// not weighted.
    pub locality_weight: u32,
}

/// An endpoint as placement sees it.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    pub locality: &'a Locality,
    pub labels: &'a BTreeMap<String, String>,
    pub weight: u32,
}

impl LocalityPlan {
    /// The plan for a cluster with `policy`, served by `instance` (Istio's
    /// `GetEffectiveLbSetting` with the mesh default, locality failover
    /// enabled, when the rule sets none).
    pub fn of(policy: &TrafficPolicy, instance: &Instance) -> Self {
        let outlier = policy.outlier_detection.is_some();
        let failover = |failover: &[Failover], priority: &[String], zone_aware: bool| {
            Self::Failover(FailoverPlan {
                gateway: instance.locality.clone(),
                gateway_labels: with_topology(&instance.labels, &instance.locality),
                failover: failover.to_vec(),
                failover_priority: priority.to_vec(),
                zone_aware,
            })
        };
        match &policy.locality {
            Some(LocalitySetting::Disabled) => Self::Flat,
            Some(LocalitySetting::ZoneAware(zone)) => {
                failover(&zone.failover, &zone.failover_priority, true)
            }
            Some(LocalitySetting::Locality(lb)) if !lb.distribute.is_empty() => lb
                .distribute
                .iter()
                .find(|rule| instance.locality.matches(&rule.from))
                .map_or(Self::Flat, |rule| Self::Distribute {
                    to: rule.to.clone(),
                    gateway_region: instance.locality.region.clone(),
                }),
            // Failover needs outlier detection: without it nothing is ever
            // ejected, so Istio leaves every endpoint at priority 0.
            Some(LocalitySetting::Locality(lb)) if outlier => {
                failover(&lb.failover, &lb.failover_priority, false)
            }
            None if outlier => failover(&[], &[], false),
            Some(LocalitySetting::Locality(_)) | None => Self::Flat,
        }
    }

    /// Whether endpoints are picked by locality weight first.
    pub fn weights_localities(&self) -> bool {
        matches!(self, Self::Distribute { .. })
    }

    /// The locality to place a Kubernetes endpoint known by its
    /// EndpointSlice `zone` alone at: in the gateway's region. Istio reads
    /// the region from the Node's labels, which are not watched here; a
    /// cluster's zones are its region's in every provider's naming, so
    /// this is that region unless one cluster spans regions.
    pub fn zone_in_gateway_region(&self, locality: &Locality) -> Locality {
        let region = match self {
            Self::Flat => return locality.clone(),
            Self::Failover(plan) => &plan.gateway.region,
            Self::Distribute { gateway_region, .. } => gateway_region,
        };
        if locality.region.is_empty() && !locality.zone.is_empty() {
            Locality {
                region: region.clone(),
                ..locality.clone()
            }
        } else {
            locality.clone()
        }
    }

    /// Each endpoint's placement, `None` for one that takes no traffic.
    pub fn place(&self, endpoints: &[Placed<'_>]) -> Vec<Option<Placement>> {
        match self {
            Self::Flat => vec![Some(Placement::default()); endpoints.len()],
            Self::Failover(plan) => plan.place(endpoints),
            Self::Distribute { to, .. } => distribute(to, endpoints),
        }
    }
}

impl FailoverPlan {
    fn place(&self, endpoints: &[Placed<'_>]) -> Vec<Option<Placement>> {
        let labelled = !self.failover_priority.is_empty();
        // Istio skips label priorities when the gateway has no labels.
        let by_labels = labelled && !self.gateway_labels.is_empty();
        let mut raw: Vec<u32> = endpoints
            .iter()
            .map(|ep| {
                if by_labels {
                    self.label_priority(ep)
                } else {
                    0
                }
            })
            .collect();
        if self.zone_aware {
            for (priority, ep) in raw.iter_mut().zip(endpoints) {
                *priority = *priority * 3 + self.region_tier(ep.locality);
            }
        } else if !labelled || !self.failover.is_empty() {
            // Locality tiers, unless `failoverPriority` alone orders them.
            for (priority, ep) in raw.iter_mut().zip(endpoints) {
                *priority = *priority * 5 + self.locality_tier(ep.locality);
            }
        }
        // Contiguous from 0, as Envoy requires of priorities.
        let levels: BTreeSet<u32> = raw.iter().copied().collect();
        raw.iter()
            .map(|p| {
                let priority = levels.range(..*p).count() as u32;
                Some(Placement {
                    priority,
                    locality_weight: 0,
                })
            })
            .collect()
    }

    /// 0 for the gateway's subzone, 1 its zone, 2 its region, 3 elsewhere,
    /// 4 for a region a `failover` rule of the gateway's region passes over
    /// (Istio's `applyLocalityFailover`).
    fn locality_tier(&self, locality: &Locality) -> u32 {
        let tier = self.gateway.distance(locality);
        if tier != 3 {
            return tier;
        }
        match self.failover.iter().find(|f| f.from == self.gateway.region) {
            Some(rule) if locality.region != rule.to => 4,
            _ => tier,
        }
    }

    /// 0 the gateway's region, 1 the region its `failover` rule names, 2
    /// any other (Istio's `applyZoneAwareRegionalFailover`).
    fn region_tier(&self, locality: &Locality) -> u32 {
        if locality.region == self.gateway.region {
            return 0;
        }
        match self.failover.iter().find(|f| f.from == self.gateway.region) {
            Some(rule) if locality.region == rule.to => 1,
            _ => 2,
        }
    }

    /// Istio's `applyFailoverPriorityPerLocality`: the first label (of n)
    /// whose value differs from the gateway's puts the endpoint at
    /// `n - index`; a different network (when listed first) adds n.
    fn label_priority(&self, ep: &Placed<'_>) -> u32 {
        let n = self.failover_priority.len() as u32;
        let includes_network = self
            .failover_priority
            .first()
            .is_some_and(|l| l == NETWORK_LABEL);
        let mut priority = 0;
        let mut adjust = 0;
        for (j, entry) in self.failover_priority.iter().enumerate() {
            let (label, wanted) = match entry.split_once('=') {
                Some((label, value)) => (label, Some(value)),
                None => (entry.as_str(), None),
            };
            let wanted = wanted.or_else(|| self.gateway_labels.get(label).map(String::as_str));
            let theirs = ep
                .labels
                .get(label)
                .map(String::as_str)
                .or_else(|| topology_label(ep.locality, label));
            // A label either side lacks reads as empty, as in Go's maps.
            if wanted.unwrap_or_default() != theirs.unwrap_or_default() {
                if j == 0 && includes_network {
                    adjust = n;
                    continue;
                }
                priority = n - j as u32;
                break;
            }
        }
        priority + adjust
    }
}

/// Istio's `applyLocalityWeights` for the rule that matched: each `to`
/// pattern's weight shared by the localities it covers in proportion to
/// their endpoints' weights (rounded up); the other localities dropped.
fn distribute(to: &BTreeMap<String, u32>, endpoints: &[Placed<'_>]) -> Vec<Option<Placement>> {
    // Each locality's own weight: its endpoints' sum, as Istio sets it.
    let mut own: BTreeMap<&Locality, u64> = BTreeMap::new();
    for ep in endpoints {
        *own.entry(ep.locality).or_default() += u64::from(ep.weight.max(1));
    }
    let mut weights: BTreeMap<&Locality, u32> = BTreeMap::new();
    for (pattern, share) in to {
        let covered: Vec<(&Locality, u64)> = own
            .iter()
            .filter(|(locality, _)| !weights.contains_key(*locality) && locality.matches(pattern))
            .map(|(locality, weight)| (*locality, *weight))
            .collect();
        let total: u64 = covered.iter().map(|(_, w)| w).sum();
        for (locality, weight) in covered {
            let value = (weight * u64::from(*share)).div_ceil(total.max(1));
            weights.insert(locality, u32::try_from(value).unwrap_or(u32::MAX));
        }
    }
    endpoints
        .iter()
        .map(|ep| {
            weights.get(ep.locality).map(|w| Placement {
                priority: 0,
                locality_weight: *w,
            })
        })
        .collect()
}

/// `labels` with the topology labels of `locality` added (Istio's
/// `AugmentLabels`), those already set kept.
pub fn with_topology(
    labels: &BTreeMap<String, String>,
    locality: &Locality,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for (key, value) in locality.labels() {
        out.entry(key.to_string())
            .or_insert_with(|| value.to_string());
    }
    out
}

/// The value a topology label takes from `locality`.
fn topology_label<'a>(locality: &'a Locality, label: &str) -> Option<&'a str> {
    locality
        .labels()
        .find(|(key, _)| *key == label)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests;
