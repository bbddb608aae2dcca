//! AUTO_PASSTHROUGH: the clusters a server lets clients name by SNI
//! (`outbound_.<port>_.<subset>_.<host>`), built as Istio's
//! `gateway.go::builtAutoPassthroughFilterChains` builds its filter chains.
use std::collections::BTreeMap;

use super::clusters::{Clusters, qualify};
use crate::{
    model::{Destination, HostIndex, HostPattern, Model, Resolution},
    plan::ClusterId,
};

/// The clusters an AUTO_PASSTHROUGH server with `server_hosts` may reach,
/// and a warning for each one that cannot be built.
///
/// As in Istio: every MESH_INTERNAL ServiceEntry visible from `namespace`,
/// each of its hosts the server's hosts cover, each port but UDP ones, the
/// service itself and every subset of its DestinationRule. Hosts with a
/// wildcard and ServiceEntries with resolution NONE are left out: a
/// standalone gateway has no address to send their connections to.
pub(super) fn reachable(
    model: &Model,
    namespace: &str,
    clusters: &mut Clusters<'_>,
    server_hosts: &[HostPattern],
    source: &str,
) -> (BTreeMap<String, ClusterId>, Vec<String>) {
    let mut names = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut covering = HostIndex::default();
    for host in server_hosts {
        covering.push(host.clone(), ());
    }
    let entries = model.service_entries.iter().filter(|se| {
        se.mesh_internal
            && se.resolution != Resolution::None
            && se.export_to.visible_from(&se.namespace, namespace)
    });
    for se in entries {
        for host in &se.hosts {
            let host = qualify(host, &se.namespace, &model.kubernetes.domain);
            if host.contains('*')
                || covering
                    .covering(&HostPattern::from_server_host(&host))
                    .is_empty()
            {
                continue;
            }
            let subsets = clusters.subset_names(&host);
            let ports = se.ports.iter().filter(|p| {
                !p.protocol
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case("UDP"))
            });
            for port in ports {
                for subset in std::iter::once(None).chain(subsets.iter().cloned().map(Some)) {
                    let dest = Destination {
                        host: host.clone(),
                        subset: subset.clone(),
                        port: Some(port.number),
                        weight: 1,
                        headers: Default::default(),
                    };
                    match clusters.resolve(&dest, &se.namespace) {
                        Ok(id) => {
                            names.insert(clusters.name(id).to_string(), id);
                        }
                        Err(reason) => warnings.push(format!(
                            "{source}: AUTO_PASSTHROUGH cannot reach outbound_.{}_.{}_.{host}: {reason}; connections naming it are closed",
                            port.number,
                            subset.as_deref().unwrap_or("")
                        )),
                    }
                }
            }
        }
    }
    (names, warnings)
}
