//! Ids that survive a reload: the kernel counts per listener and per host
//! in arrays indexed by id, so a listener or host that stays must keep its
//! slot, and a new one must take a free slot, never another's.
use std::collections::{BTreeMap, BTreeSet};

use gateway_common::POLICY_ALLOW_LIST;

use crate::plan::{
    HostPattern, IpPolicy, Plan,
    kernel::{FreeIds, ListenerKey},
};

impl Plan {
    /// Gives the listeners and kernel hosts this plan shares with
    /// `previous` (same bind, port and protocol; same listener and
    /// pattern) the ids they had there; the others take the lowest free
    /// ids. Ids stay below the larger of the two plans' counts, so within
    /// the kernel's limits when both plans are.
    pub fn keep_ids_from(&mut self, previous: &Self) {
        let old: BTreeMap<ListenerKey, u32> =
            previous.listeners.iter().map(|l| (l.key(), l.id)).collect();
        let kept: BTreeSet<u32> = self
            .listeners
            .iter()
            .filter_map(|l| old.get(&l.key()).copied())
            .collect();
        let mut free = FreeIds::new(kept);
        let renumbered: BTreeMap<u32, u32> = self
            .listeners
            .iter()
            .map(|l| {
                let id = old.get(&l.key()).copied().unwrap_or_else(|| free.take());
                (l.id, id)
            })
            .collect();
        let new_id = |id: u32| renumbered.get(&id).copied().unwrap_or(id);
        for listener in &mut self.listeners {
            listener.id = new_id(listener.id);
        }
        for listener in &mut self.http {
            listener.listener_id = new_id(listener.listener_id);
        }
        for listener in &mut self.tls {
            listener.listener_id = new_id(listener.listener_id);
        }
        for listener in &mut self.tcp {
            listener.listener_id = new_id(listener.listener_id);
        }
        // Hosts, by the key of their listener (ids may differ between plans).
        let old_keys: BTreeMap<u32, ListenerKey> =
            previous.listeners.iter().map(|l| (l.id, l.key())).collect();
        let old_hosts: BTreeMap<(ListenerKey, HostPattern), u32> = previous
            .kernel_hosts()
            .into_iter()
            .filter_map(|h| Some(((*old_keys.get(&h.listener_id)?, h.pattern), h.id)))
            .collect();
        let keys: BTreeMap<u32, ListenerKey> =
            self.listeners.iter().map(|l| (l.id, l.key())).collect();
        self.host_ids = BTreeMap::new();
        for host in self.kernel_hosts() {
            let Some(key) = keys.get(&host.listener_id) else {
                continue;
            };
            if let Some(id) = old_hosts.get(&(*key, host.pattern.clone())) {
                self.host_ids.insert((host.listener_id, host.pattern), *id);
            }
        }
        self.keep_policy_slots_from(&previous.ip_policy);
    }

    /// The DENY policies `previous` counted keep their `POLICY_STATS`
    /// slots (by `ns/name`); the others take the lowest free ones.
    fn keep_policy_slots_from(&mut self, previous: &IpPolicy) {
        let old: BTreeMap<&str, u32> = previous
            .policies
            .iter()
            .map(|(slot, name)| (name.as_str(), *slot))
            .collect();
        let mut used: BTreeSet<u32> = self
            .ip_policy
            .policies
            .values()
            .filter_map(|name| old.get(name.as_str()).copied())
            .collect();
        used.insert(POLICY_ALLOW_LIST);
        let mut free = FreeIds::new(used);
        let renumbered: BTreeMap<u32, u32> = self
            .ip_policy
            .policies
            .iter()
            .map(|(slot, name)| {
                let new = old.get(name.as_str()).copied();
                (*slot, new.unwrap_or_else(|| free.take()))
            })
            .collect();
        let slot_of = |slot: u32| renumbered.get(&slot).copied().unwrap_or(slot);
        self.ip_policy.policies = std::mem::take(&mut self.ip_policy.policies)
            .into_iter()
            .map(|(slot, name)| (slot_of(slot), name))
            .collect();
        for entry in self.ip_policy.ports.values_mut() {
            for slot in entry.deny.values_mut() {
                *slot = slot_of(*slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

    use crate::{
        compile::{self, Plan},
        config,
        model::Instance,
    };

    fn plan(ports: &[(u16, &str)]) -> Plan {
        let servers: String = ports
            .iter()
            .map(|(port, host)| {
                format!(
                    "  - port: {{number: {port}, name: p{port}, protocol: HTTP}}\n    hosts: [\"{host}\", \"*.{host}\"]\n"
                )
            })
            .collect();
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: ns}}\nspec:\n  servers:\n{servers}"
        );
        let loaded = config::load_sources(&[(PathBuf::from("g.yaml"), yaml)]);
        let addr: IpAddr = "192.0.2.1".parse().expect("address");
        compile::plan(&loaded.model, &Instance::default(), &[addr]).expect("plan")
    }

    fn ids_by_port(plan: &Plan) -> BTreeMap<u16, u32> {
        plan.listeners.iter().map(|l| (l.port, l.id)).collect()
    }

    fn host_ids(plan: &Plan) -> BTreeMap<(u16, String), u32> {
        let ports: BTreeMap<u32, u16> = plan.listeners.iter().map(|l| (l.id, l.port)).collect();
        plan.kernel_hosts()
            .into_iter()
            .map(|h| ((ports[&h.listener_id], h.pattern.to_string()), h.id))
            .collect()
    }

    #[test]
    fn listeners_and_hosts_that_stay_keep_their_ids_and_new_ones_take_free_ids() {
        let before = plan(&[(80, "a.test"), (443, "b.test"), (8080, "c.test")]);
        // 443 goes, 81 comes (it sorts before 443 and would shift the ids).
        let mut after = plan(&[(80, "a.test"), (81, "d.test"), (8080, "c.test")]);
        after.keep_ids_from(&before);
        let (old, new) = (ids_by_port(&before), ids_by_port(&after));
        assert_eq!(new[&80], old[&80]);
        assert_eq!(new[&8080], old[&8080]);
        assert_eq!(new[&81], old[&443], "the freed slot is reused");
        let served: Vec<u32> = after.http.iter().map(|l| l.listener_id).collect();
        let mut ids: Vec<u32> = new.values().copied().collect();
        ids.sort();
        let mut served_sorted = served;
        served_sorted.sort();
        assert_eq!(served_sorted, ids, "the served listeners follow");
        let (old_hosts, new_hosts) = (host_ids(&before), host_ids(&after));
        for key in [(80, "a.test".to_string()), (8080, "*.c.test".to_string())] {
            assert_eq!(new_hosts[&key], old_hosts[&key], "{key:?}");
        }
        let mut all: Vec<u32> = new_hosts.values().copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), new_hosts.len(), "host ids are distinct");
        assert!(all.iter().all(|id| (*id as usize) < 6), "{all:?}");
    }

    #[test]
    fn a_plan_keeps_its_own_ids() {
        let before = plan(&[(80, "a.test"), (443, "b.test")]);
        let mut again = plan(&[(80, "a.test"), (443, "b.test")]);
        again.keep_ids_from(&before);
        assert_eq!(again.listeners, before.listeners);
        assert_eq!(again.kernel_hosts(), before.kernel_hosts());
        assert_eq!(again.http, before.http);
    }
}
