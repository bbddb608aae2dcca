//! Destinations -> clusters: a route's `host`/`port`/`subset` resolved
//! through ServiceEntries and DestinationRules to concrete endpoints.
use std::collections::{BTreeMap, HashMap};

use crate::{
    model::{
        Destination, DestinationRule, EndpointAddress, HostIndex, HostPattern, Instance,
        KubeService, KubeServicePort, LoadBalancer, Model, Protocol, Resolution, ServiceEntry,
        ServicePort, SimpleLb, TrafficPolicy,
    },
    plan::{
        Cluster, ClusterId, DiscoveredEndpoints, Endpoint, LocalityPlan, OriginalDestination,
        Placed, Unresolved,
    },
};

/// Istio's root configuration namespace (`meshConfig.rootNamespace`'s
/// default), whose exported DestinationRules apply mesh-wide.
const ROOT_NAMESPACE: &str = "istio-system";

/// Resolves destinations, building each cluster once.
pub(super) struct Clusters<'m> {
    model: &'m Model,
    namespace: &'m str,
    /// The gateway workload's labels, for a rule's `workloadSelector`.
    labels: &'m BTreeMap<String, String>,
    /// The gateway workload, for locality load balancing.
    instance: &'m Instance,
    built: BTreeMap<String, Cluster>,
    /// The clusters' ids while binding, in the order they were built
    /// ([`Clusters::into_clusters`] renumbers them in name order).
    ids: HashMap<String, ClusterId>,
    /// The names of those ids, by id.
    names: Vec<String>,
    /// ServiceEntry hosts, qualified, to the entry's index: the entries
    /// covering a destination are looked up, not scanned for (quadratic
    /// in ServiceEntries when each route has its own).
    entry_hosts: HostIndex<usize>,
    /// DestinationRule hosts, likewise.
    rule_hosts: HostIndex<usize>,
    /// Destinations already resolved, by (host as written, port, subset,
    /// namespace of the resource): routes name the same few backends
    /// over and over, and each answer depends on nothing else.
    resolved: HashMap<ResolveKey, Result<ClusterId, Unresolved>>,
}

type ResolveKey = (String, Option<u16>, Option<String>, String);

/// `name` -> `name.<namespace>.svc.<domain>` (Istio's
/// `ResolveShortnameToFQDN`); names with a dot stay.
pub(super) fn qualify(host: &str, namespace: &str, domain: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{namespace}.svc.{domain}", host.to_ascii_lowercase())
    }
}

/// How specific a matching host pattern is: smaller is more specific
/// (Envoy's host precedence, [`HostPattern::rank`]).
type Rank = gateway_common::HostRank;

/// How specifically `pattern` covers `host`, if it does: exact, then
/// longest wildcard, then `*`.
fn specificity(pattern: &HostPattern, host: &str) -> Option<Rank> {
    pattern.rank_for(host)
}

/// The hosts of resources (`hosts` of each, written in its `namespace`),
/// qualified, indexed to the resource's position.
fn index_hosts<'a>(
    resources: impl Iterator<Item = (&'a [String], &'a str)>,
    domain: &str,
) -> HostIndex<usize> {
    let mut index = HostIndex::default();
    for (at, (hosts, namespace)) in resources.enumerate() {
        for host in hosts {
            index.push(
                HostPattern::from_server_host(&qualify(host, namespace, domain)),
                at,
            );
        }
    }
    index
}

/// `namespace/name` of a ServiceEntry, as unresolved destinations name it.
fn entry_name(entry: &ServiceEntry) -> String {
    format!("{}/{}", entry.namespace, entry.name)
}

/// The port a destination takes on `entry` (`port`, or the entry's only
/// one when none is named) and the entry's declaration of it.
fn service_port<'e>(
    entry: &'e ServiceEntry,
    port: Option<u16>,
    host: &str,
) -> Result<(u16, &'e ServicePort), Unresolved> {
    if entry.ports.is_empty() {
        return Err(Unresolved::NoPorts {
            entry: entry_name(entry),
        });
    }
    let port = match (port, entry.ports.as_slice()) {
        (Some(port), _) => port,
        (None, [only]) => only.number,
        (None, ports) => {
            return Err(Unresolved::PortRequired {
                host: host.to_string(),
                ports: ports.len(),
            });
        }
    };
    let service_port = entry
        .ports
        .iter()
        .find(|p| p.number == port)
        .ok_or_else(|| Unresolved::NoSuchPort {
            entry: entry_name(entry),
            port,
        })?;
    Ok((port, service_port))
}

/// The port of `service` a destination takes: `port`, or the Service's
/// only one when none is named.
fn service_port_of<'s>(
    service: &'s KubeService,
    port: Option<u16>,
    host: &str,
) -> Result<&'s KubeServicePort, Unresolved> {
    match (port, service.ports.as_slice()) {
        (_, []) => Err(Unresolved::NoServicePorts {
            service: service.key.to_string(),
        }),
        (None, [only]) => Ok(only),
        (None, ports) => Err(Unresolved::PortRequired {
            host: host.to_string(),
            ports: ports.len(),
        }),
        (Some(number), ports) => {
            ports
                .iter()
                .find(|p| p.port == number)
                .ok_or_else(|| Unresolved::NoSuchServicePort {
                    service: service.key.to_string(),
                    port: number,
                })
        }
    }
}

/// A Service port's protocol as Istio's `kube.ConvertProtocol` reads it:
/// UDP is UDP; then `appProtocol`; then the name's prefix before `-`
/// (`http-web`, `grpc`); else none (TCP, as Istio's sniffing-off default).
fn kubernetes_protocol(port: &KubeServicePort) -> Option<Protocol> {
    if port.transport.eq_ignore_ascii_case("UDP") {
        return Some(Protocol::Udp);
    }
    let from_app = port.app_protocol.as_deref().and_then(Protocol::parse);
    from_app.or_else(|| {
        let prefix = port.name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix)
    })
}

/// Whether a cluster's effective policy (after the port-level and subset
/// merges) is `loadBalancer.simple: PASSTHROUGH`, which Istio's
/// `applyLoadBalancer` (and `buildSubsetCluster` for a subset) turns into
/// an ORIGINAL_DST cluster whatever the service's resolution.
fn passthrough(policy: &TrafficPolicy) -> bool {
    matches!(
        policy.load_balancer,
        Some(LoadBalancer::Simple(SimpleLb::Passthrough))
    )
}

/// The endpoints of a cluster on `entry`'s `port`: the entry's endpoints
/// the subset's `labels` select, each at its own number for the port's
/// name, or, when the entry lists none and `host` is no wildcard, `host`
/// itself resolved by DNS. None at all leaves the destination unresolved,
/// as do the resolutions that are not served. Each is placed by
/// `locality`; one `distribute` leaves out is dropped.
fn endpoints(
    entry: &ServiceEntry,
    host: &str,
    port: u16,
    service_port: &ServicePort,
    labels: &BTreeMap<String, String>,
    subset: &Option<String>,
    locality: &LocalityPlan,
) -> Result<Vec<Endpoint>, Unresolved> {
    let default_port = service_port.target_port.unwrap_or(port);
    let endpoints: Vec<Endpoint> = match entry.resolution {
        Resolution::None => {
            return Err(Unresolved::ResolutionNone {
                entry: entry_name(entry),
            });
        }
        Resolution::DynamicDns => {
            return Err(Unresolved::DynamicDns {
                entry: entry_name(entry),
            });
        }
        _ if entry.endpoints.is_empty() && !host.starts_with('*') => vec![Endpoint::new(
            EndpointAddress::Dns(host.to_string()),
            default_port,
            1,
        )],
        _ => {
            let selected: Vec<_> = entry
                .endpoints
                .iter()
                .filter(|ep| labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)))
                .collect();
            let topology: Vec<BTreeMap<String, String>> = selected
                .iter()
                .map(|ep| crate::plan::with_topology(&ep.labels, &ep.locality))
                .collect();
            let placed: Vec<Placed<'_>> = selected
                .iter()
                .zip(&topology)
                .map(|(ep, labels)| Placed {
                    locality: &ep.locality,
                    labels,
                    weight: ep.weight,
                })
                .collect();
            let placements = locality.place(&placed);
            selected
                .iter()
                .zip(placements)
                .filter_map(|(ep, placement)| {
                    Some(Endpoint {
                        address: ep.address.clone(),
                        port: ep
                            .ports
                            .get(&service_port.name)
                            .copied()
                            .unwrap_or(default_port),
                        weight: ep.weight,
                        locality: ep.locality.clone(),
                        placement: placement?,
                    })
                })
                .collect()
        }
    };
    if endpoints.is_empty() {
        return Err(match subset {
            Some(subset) => Unresolved::SubsetWithoutEndpoints {
                subset: subset.clone(),
                host: host.to_string(),
            },
            None => Unresolved::NoEndpoints {
                host: host.to_string(),
            },
        });
    }
    Ok(endpoints)
}

impl<'m> Clusters<'m> {
    /// Resolution as seen from the gateway workload's `namespace` (exportTo).
    pub(super) fn new(model: &'m Model, instance: &'m Instance) -> Self {
        Clusters {
            model,
            namespace: &instance.namespace,
            labels: &instance.labels,
            instance,
            built: BTreeMap::new(),
            ids: HashMap::new(),
            names: Vec::new(),
            resolved: HashMap::new(),
            entry_hosts: index_hosts(
                model
                    .service_entries
                    .iter()
                    .map(|se| (se.hosts.as_slice(), se.namespace.as_str())),
                &model.kubernetes.domain,
            ),
            rule_hosts: index_hosts(
                model
                    .destination_rules
                    .iter()
                    .map(|dr| (std::slice::from_ref(&dr.host), dr.namespace.as_str())),
                &model.kubernetes.domain,
            ),
        }
    }

    /// The cluster for `dest` (written in a resource of `namespace`), or
    /// why there is none; the id is the binding-time one.
    pub(super) fn resolve(
        &mut self,
        dest: &Destination,
        namespace: &str,
    ) -> Result<ClusterId, Unresolved> {
        let key = (
            dest.host.clone(),
            dest.port,
            dest.subset.clone(),
            namespace.to_string(),
        );
        if let Some(known) = self.resolved.get(&key) {
            return known.clone();
        }
        let resolved = self
            .resolve_anew(dest, namespace)
            .map(|name| self.ids[&name]);
        self.resolved.insert(key, resolved.clone());
        resolved
    }

    /// Builds the cluster `dest` names unless it is built already, in the
    /// steps Istio's lookup takes: the ServiceEntry covering the host, the
    /// port on it, the DestinationRule's policy and subset, the endpoints.
    /// Each step's refusal is the reason the destination is unresolved.
    fn resolve_anew(&mut self, dest: &Destination, namespace: &str) -> Result<String, Unresolved> {
        let host = qualify(&dest.host, namespace, &self.model.kubernetes.domain);
        if let Some(service) = self
            .kubernetes_service(&host)
            .filter(|_| host.contains(".svc."))
        {
            return self.resolve_service(dest, &host, service);
        }
        let entry = match self.service_entry(&host) {
            Ok(entry) => entry,
            Err(unresolved) => {
                let kubernetes = &self.model.kubernetes;
                return match self.kubernetes_service(&host) {
                    Some(service) => self.resolve_service(dest, &host, service),
                    None if kubernetes.read
                        && host.contains(".svc.")
                        && kubernetes.service_key(&host).is_some() =>
                    {
                        Err(Unresolved::NoService { host })
                    }
                    None => Err(unresolved),
                };
            }
        };
        let (port, service_port) = service_port(entry, dest.port, &host)?;
        let (policy, labels) = self.policy_and_labels(dest, &host, port, Some(&entry.namespace))?;
        let name = format!(
            "outbound|{port}|{}|{host}",
            dest.subset.as_deref().unwrap_or("")
        );
        if self.built.contains_key(&name) {
            return Ok(name);
        }
        let locality = LocalityPlan::of(&policy, self.instance);
        let original_destination = passthrough(&policy).then(|| OriginalDestination {
            // Istio's `PassthroughTargetPorts`: NONE entries' target ports.
            port_override: service_port
                .target_port
                .filter(|_| entry.resolution == Resolution::None),
        });
        // An ORIGINAL_DST cluster has no endpoints (Istio wipes them).
        let endpoints = match original_destination {
            Some(_) => Vec::new(),
            None => endpoints(
                entry,
                &host,
                port,
                service_port,
                &labels,
                &dest.subset,
                &locality,
            )?,
        };
        self.insert(Cluster {
            name: name.clone(),
            host,
            port,
            subset: dest.subset.clone(),
            protocol: service_port.protocol.as_deref().and_then(Protocol::parse),
            endpoints,
            discovered: None,
            policy,
            locality,
            original_destination,
        });
        Ok(name)
    }

    /// The Kubernetes Service `host` names, if the cluster has it.
    fn kubernetes_service(&self, host: &str) -> Option<&'m KubeService> {
        let kubernetes = &self.model.kubernetes;
        kubernetes
            .service_key(host)
            .and_then(|key| kubernetes.service(&key))
    }

    /// Builds the cluster of a Kubernetes Service as Istio does: the
    /// Service port by number (or its only port), the protocol from
    /// `appProtocol` or the port name's prefix, the endpoints those of its
    /// EndpointSlices (read by the proxy as they change), or the
    /// `externalName` resolved by DNS. Named `outbound|port|subset|FQDN`
    /// whichever form the route wrote.
    fn resolve_service(
        &mut self,
        dest: &Destination,
        host: &str,
        service: &'m KubeService,
    ) -> Result<String, Unresolved> {
        let fqdn = format!(
            "{}.{}.svc.{}",
            service.key.name, service.key.namespace, self.model.kubernetes.domain
        );
        let port = service_port_of(service, dest.port, host)?;
        let (policy, labels) =
            self.policy_and_labels(dest, &fqdn, port.port, Some(&service.key.namespace))?;
        let name = format!(
            "outbound|{}|{}|{fqdn}",
            port.port,
            dest.subset.as_deref().unwrap_or("")
        );
        if self.built.contains_key(&name) {
            return Ok(name);
        }
        let original_destination = passthrough(&policy).then_some(OriginalDestination {
            port_override: None,
        });
        let (endpoints, discovered) = match &service.external_name {
            _ if original_destination.is_some() => (Vec::new(), None),
            Some(external) => (
                vec![Endpoint::new(
                    EndpointAddress::Dns(external.clone()),
                    port.port,
                    1,
                )],
                None,
            ),
            None => (
                Vec::new(),
                Some(DiscoveredEndpoints {
                    service: service.key.clone(),
                    port_name: port.name.clone(),
                    labels,
                }),
            ),
        };
        self.insert(Cluster {
            name: name.clone(),
            host: fqdn,
            port: port.port,
            subset: dest.subset.clone(),
            protocol: kubernetes_protocol(port),
            endpoints,
            discovered,
            locality: LocalityPlan::of(&policy, self.instance),
            policy,
            original_destination,
        });
        Ok(name)
    }

    /// The DestinationRule that applies to the service `dest` names, found
    /// as `resolve` finds the service (Istio's `ServiceForHostname`, then
    /// the sidecar scope's rule for it); none when no service is found.
    pub(super) fn rule_of(
        &self,
        dest: &Destination,
        namespace: &str,
    ) -> Option<&'m DestinationRule> {
        let host = qualify(&dest.host, namespace, &self.model.kubernetes.domain);
        let service = self.kubernetes_service(&host);
        let (host, service_namespace) = match (service, self.service_entry(&host)) {
            (Some(service), entry) if host.contains(".svc.") || entry.is_err() => (
                format!(
                    "{}.{}.svc.{}",
                    service.key.name, service.key.namespace, self.model.kubernetes.domain
                ),
                service.key.namespace.as_str(),
            ),
            (_, Ok(entry)) => (host, entry.namespace.as_str()),
            (_, Err(_)) => return None,
        };
        self.destination_rule(&host, Some(service_namespace))
    }

    /// The visible ServiceEntry that covers `host` most specifically: a
    /// destination no entry covers is not served.
    fn service_entry(&self, host: &str) -> Result<&'m ServiceEntry, Unresolved> {
        self.best(&self.model.service_entries, &self.entry_hosts, host, |se| {
            (
                &se.namespace,
                &se.name,
                se.export_to.visible_from(&se.namespace, self.namespace),
            )
        })
        .ok_or_else(|| Unresolved::NoServiceEntry {
            host: host.to_string(),
        })
    }

    /// The DestinationRule that applies to `host` (a service of
    /// `service_namespace`), found as Istio finds it
    /// (`PushContext::destinationRule`): the most specific one in the
    /// gateway's own namespace (in the root namespace only those exported
    /// to `.`); else one in the service's namespace exported to the
    /// gateway's; else one in the root namespace exported to it. A rule in
    /// any other namespace never applies.
    fn destination_rule(
        &self,
        host: &str,
        service_namespace: Option<&str>,
    ) -> Option<&'m DestinationRule> {
        let own = self.namespace;
        // A rule with a workload selector applies only to the workloads it
        // selects, in its own namespace (Istio's `workloadSelector`).
        let selects_us = |dr: &DestinationRule| {
            dr.workload_selector.as_ref().is_none_or(|labels| {
                dr.namespace == own && labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            })
        };
        let in_namespace = |namespace: &str, local_only: bool| {
            self.best(
                &self.model.destination_rules,
                &self.rule_hosts,
                host,
                move |dr| {
                    let private =
                        dr.export_to.0.iter().all(|to| to == ".") && !dr.export_to.0.is_empty();
                    let visible = if local_only {
                        private
                    } else {
                        dr.export_to.visible_from(&dr.namespace, own)
                    };
                    (
                        &dr.namespace,
                        &dr.name,
                        dr.namespace == namespace && visible && selects_us(dr),
                    )
                },
            )
        };
        let from_own = if own == ROOT_NAMESPACE {
            in_namespace(own, true)
        } else {
            // Every rule in the gateway's namespace is visible to it.
            self.best(
                &self.model.destination_rules,
                &self.rule_hosts,
                host,
                |dr| {
                    (
                        &dr.namespace,
                        &dr.name,
                        dr.namespace == own && selects_us(dr),
                    )
                },
            )
        };
        from_own
            .or_else(|| service_namespace.and_then(|ns| in_namespace(ns, false)))
            .or_else(|| in_namespace(ROOT_NAMESPACE, false))
    }

    /// The traffic policy of `dest` and the endpoint labels its subset
    /// selects: the DestinationRule's policy, or its subset's when that has
    /// one. A subset needs a rule that names it.
    fn policy_and_labels(
        &self,
        dest: &Destination,
        host: &str,
        port: u16,
        service_namespace: Option<&str>,
    ) -> Result<(TrafficPolicy, BTreeMap<String, String>), Unresolved> {
        let rule = self.destination_rule(host, service_namespace);
        let mut subset_policy = None;
        let mut labels = BTreeMap::new();
        if let Some(subset_name) = &dest.subset {
            let dr = rule.ok_or_else(|| Unresolved::SubsetWithoutRule {
                subset: subset_name.clone(),
                host: host.to_string(),
            })?;
            let subset = dr
                .subsets
                .iter()
                .find(|s| &s.name == subset_name)
                .ok_or_else(|| Unresolved::UnknownSubset {
                    subset: subset_name.clone(),
                    rule: format!("{}/{}", dr.namespace, dr.name),
                })?;
            labels = subset.labels.clone();
            subset_policy = subset.traffic_policy.as_ref();
        }
        let policy = rule
            .map(|dr| dr.traffic_policy.with_subset(subset_policy, port))
            .or_else(|| subset_policy.map(|p| p.for_port(port).0))
            .unwrap_or_default();
        if let Some(reason) = policy.tls.as_ref().and_then(|tls| tls.unavailable.clone()) {
            return Err(Unresolved::OriginationUnavailable {
                host: host.to_string(),
                reason,
            });
        }
        Ok((policy, labels))
    }

    /// Keeps `cluster` under its name, with the next binding-time id.
    fn insert(&mut self, cluster: Cluster) {
        let id = ClusterId(u32::try_from(self.ids.len()).unwrap_or(u32::MAX));
        self.ids.insert(cluster.name.clone(), id);
        self.names.push(cluster.name.clone());
        self.built.insert(cluster.name.clone(), cluster);
    }

    /// The subset names of the DestinationRule that applies to `host`.
    pub(super) fn subset_names(&self, host: &str) -> Vec<String> {
        let service_namespace = self.service_entry(host).ok().map(|e| e.namespace.as_str());
        self.destination_rule(host, service_namespace)
            .map(|dr| dr.subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The visible resource whose host covers `host` most specifically;
    /// ties go to the first by (namespace, name), then position. `hosts`
    /// indexes the hosts of `items`.
    fn best<T>(
        &self,
        items: &'m [T],
        hosts: &HostIndex<usize>,
        host: &str,
        view: impl Fn(&'m T) -> (&'m String, &'m String, bool),
    ) -> Option<&'m T> {
        hosts
            .matching(host)
            .into_iter()
            .filter_map(|at| {
                let (pattern, item) = &hosts.entries()[at];
                let rank = specificity(pattern, host)?;
                let (namespace, name, visible) = view(&items[*item]);
                visible.then_some((rank, namespace, name, *item))
            })
            .min()
            .map(|(.., item)| &items[item])
    }

    /// Whether the cluster a binding-time id stands for balances by
    /// consistent hash.
    pub(super) fn hashes(&self, id: ClusterId) -> bool {
        self.built.get(self.name(id)).is_some_and(|c| {
            matches!(
                c.policy.load_balancer,
                Some(LoadBalancer::ConsistentHash(_))
            )
        })
    }

    /// Whether a cluster sends to each connection's original destination.
    pub(super) fn original_destination(&self, id: ClusterId) -> bool {
        self.built
            .get(self.name(id))
            .is_some_and(|c| c.original_destination.is_some())
    }

    /// The name of the cluster a binding-time id stands for.
    pub(super) fn name(&self, id: ClusterId) -> &str {
        self.names.get(id.index()).map_or("", String::as_str)
    }

    /// Every cluster built, sorted by name, and for each binding-time id
    /// (its index) the cluster's id in that order.
    pub(super) fn into_clusters(self) -> (Vec<Cluster>, Vec<ClusterId>) {
        let mut renumbered = vec![ClusterId(u32::MAX); self.ids.len()];
        for (at, name) in self.built.keys().enumerate() {
            if let Some(id) = self.ids.get(name) {
                renumbered[id.index()] = ClusterId(u32::try_from(at).unwrap_or(u32::MAX));
            }
        }
        (self.built.into_values().collect(), renumbered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rank of the most specific of `hosts` (of a resource in `apps`) covering `host`.
    fn rank(hosts: &[&str], host: &str) -> Option<Rank> {
        hosts
            .iter()
            .filter_map(|h| {
                specificity(
                    &HostPattern::from_server_host(&qualify(h, "apps", "cluster.local")),
                    host,
                )
            })
            .min()
    }

    #[test]
    fn exact_beats_longer_wildcard_beats_shorter_wildcard_beats_any() {
        let host = "v1.api.example.com";
        let ranks = [
            rank(&[host], host),
            rank(&["*.api.example.com"], host),
            rank(&["*.com"], host),
            rank(&["*"], host),
        ];
        assert!(ranks.iter().all(Option::is_some), "{ranks:?}");
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(rank(&["*", "*.com", host], host), ranks[0]);
    }

    #[test]
    fn wildcard_covers_only_longer_names_with_its_suffix() {
        assert_eq!(rank(&["*.example.com"], "example.com"), None);
        assert_eq!(rank(&["*.example.com"], ".example.com"), None);
        assert_eq!(
            rank(&["*.example.com"], "a-much-longer-name.example.org"),
            None
        );
    }
}
