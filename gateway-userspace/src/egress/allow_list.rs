//! Keeps the guard's registry addresses current: the fixed ones as soon
//! as a configuration is applied, and the names' DNS answers refreshed as
//! often as the proxy refreshes its own (so the kernel and the proxy
//! follow a DNS change together). A name that stops resolving keeps its
//! last answer, as the proxy's clusters do.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use tokio::sync::watch;

use super::{
    Cidr,
    registry::{Registry, host_cidr},
};
use crate::{dataplane::EgressMaps, proxy::upstream::DNS_REFRESH};

/// How long one name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Each name's last answer.
pub type Answers = BTreeMap<String, BTreeSet<IpAddr>>;

/// The addresses the guard lets through: the fixed ones and every answer.
pub fn allowed(registry: &Registry, answers: &Answers) -> BTreeSet<Cidr> {
    let resolved = answers
        .iter()
        .filter(|(name, _)| registry.names.contains(*name))
        .flat_map(|(_, addrs)| addrs.iter().copied().map(host_cidr));
    registry.fixed.iter().copied().chain(resolved).collect()
}

/// The guard's maps and the names' last answers.
pub struct AllowList {
    maps: EgressMaps,
    answers: Answers,
}

impl AllowList {
    pub fn new(maps: EgressMaps) -> Self {
        AllowList {
            maps,
            answers: Answers::new(),
        }
    }

    /// Resolves the names of `registry` and writes what it allows to the
    /// kernel (the daemon does this once before the guard is attached).
    pub async fn refresh(&mut self, registry: &Registry) {
        self.answers.retain(|name, _| registry.names.contains(name));
        for name in &registry.names {
            resolve(name, &mut self.answers).await;
        }
        let wanted = allowed(registry, &self.answers);
        match self.maps.set_allowed(&wanted, &registry.open_ports) {
            Ok(change) => {
                for cidr in &change.added {
                    log::debug!("egress: the registry allows {cidr}");
                }
                for cidr in &change.removed {
                    log::debug!("egress: the registry no longer allows {cidr}");
                }
            }
            Err(err) => log::warn!("egress: cannot update the registry's addresses: {err}"),
        }
    }

    /// Refreshes every `DNS_REFRESH`, and at once when a reload sends a
    /// new registry; runs until the sender is gone.
    pub async fn keep_current(mut self, mut registry: watch::Receiver<Registry>) {
        let mut tick = tokio::time::interval(DNS_REFRESH);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = registry.changed() => if changed.is_err() { return },
            }
            let current = registry.borrow_and_update().clone();
            self.refresh(&current).await;
        }
    }
}

/// Resolves `name` into `answers`, saying when its answer changes.
async fn resolve(name: &str, answers: &mut Answers) {
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
    let fresh: BTreeSet<IpAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.map(|addr| addr.ip()).collect(),
        Ok(Err(err)) => return unresolved(name, &err.to_string(), answers),
        Err(_) => return unresolved(name, "timed out", answers),
    };
    if fresh.is_empty() {
        return unresolved(name, "no address", answers);
    }
    let previous = answers.insert(name.to_string(), fresh.clone());
    if previous.as_ref() != Some(&fresh) {
        log::info!(
            "egress: {name} resolves to {} (was {}); the kernel allows it",
            list(Some(&fresh)),
            list(previous.as_ref())
        );
    }
}

fn unresolved(name: &str, reason: &str, answers: &Answers) {
    match answers.get(name) {
        Some(last) => log::debug!(
            "egress: cannot resolve {name} ({reason}); keeping {}",
            list(Some(last))
        ),
        None => log::warn!(
            "egress: cannot resolve {name} ({reason}); connections to it are refused until it resolves"
        ),
    }
}

fn list(addrs: Option<&BTreeSet<IpAddr>>) -> String {
    match addrs {
        Some(addrs) if !addrs.is_empty() => addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "nothing".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_only_for_names_the_registry_still_has() {
        let registry = Registry {
            fixed: ["203.0.113.0/28".parse().unwrap()].into(),
            names: ["dataengine.com".to_string()].into(),
            open_ports: BTreeSet::new(),
        };
        let answers: Answers = [
            (
                "dataengine.com".to_string(),
                ["198.51.100.10".parse().unwrap()].into(),
            ),
            (
                "gone.example".to_string(),
                ["198.51.100.99".parse().unwrap()].into(),
            ),
        ]
        .into();
        let allowed: Vec<String> = allowed(&registry, &answers)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["198.51.100.10/32", "203.0.113.0/28"]);
    }
}
