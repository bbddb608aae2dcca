//! The egress guard's start ([`start`]: what is never captured, the
//! policy, the registry's addresses, the guard attached, the capture's
//! routing rules installed) and the task that keeps the registry's
//! addresses current: the fixed ones as soon as a configuration is
//! applied, and the names' DNS answers refreshed as often as the proxy
//! refreshes its own (so the kernel and the proxy follow a DNS change
//! together). A name that stops resolving keeps its last answer, as the
//! proxy's clusters do.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::watch;

use super::{Options, host::node_addresses};
use crate::{
    compile::egress_registry::{Registry, host_cidr},
    dataplane::{Capture, Dataplane, EgressMaps, refusal_log},
    model::Subnet,
    plan::DNS_REFRESH,
    proxy::egress::OutboundPolicy,
};

/// The `--egress-from` interfaces by index.
pub fn captured_interfaces(names: &[String]) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut captured = BTreeMap::new();
    for name in names {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .with_context(|| format!("--egress-from {name}: no such interface (see `ip link`)"))?;
        captured.insert(index, name.clone());
    }
    Ok(captured)
}

/// The egress guard: what is never captured (the excluded ranges and
/// every address of the node), the policy, the registry's addresses
/// written once before the guard is attached to the captured interfaces,
/// then the tasks that keep them current and log the refusals. Returns
/// where a reload sends the new registry.
pub async fn start(
    args: &Options,
    dataplane: &mut Dataplane,
    mut maps: EgressMaps,
    captured: &BTreeMap<u32, String>,
    registry: Registry,
) -> anyhow::Result<watch::Sender<Registry>> {
    let mut never = args.egress_exclude.clone();
    never.extend(node_addresses(None)?.into_iter().map(host_cidr));
    let ifindexes: Vec<u32> = captured.keys().copied().collect();
    dataplane.set_egress(&ifindexes, &never)?;
    maps.set_policy(args.outbound_traffic_policy == OutboundPolicy::AllowAny)?;
    if let Some(refusals) = maps.take_refusals() {
        tokio::spawn(refusal_log::log_refusals(refusals, captured.clone()));
    }
    let mut allow_list = AllowList::new(maps);
    allow_list.refresh(&registry).await;
    log::info!(
        "egress: outboundTrafficPolicy {:?}; the registry allows {} fixed address range(s), the current addresses of {} name(s), and any address on {} port(s) left to the proxy",
        args.outbound_traffic_policy,
        registry.fixed.len(),
        registry.names.len(),
        registry.open_ports.len()
    );
    dataplane.attach_egress_guard(&args.egress_from)?;
    let (registry_tx, registry_rx) = watch::channel(registry);
    tokio::spawn(allow_list.keep_current(registry_rx));
    Ok(registry_tx)
}

/// Installs the routing rules that capture the `--egress-from`
/// interfaces' outbound TCP; removed when the result is dropped.
pub fn capture(args: &Options) -> anyhow::Result<Capture> {
    let capture =
        Capture::install(&args.egress_from, &args.egress_exclude).map_err(anyhow::Error::msg)?;
    log::info!(
        "egress: capturing the outbound TCP of the workloads behind {} (excluded: {})",
        args.egress_from.join(", "),
        args.egress_exclude
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(capture)
}

/// How long one name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Each name's last answer.
pub type Answers = BTreeMap<String, BTreeSet<IpAddr>>;

/// The addresses the guard lets through: the fixed ones and every answer.
pub fn allowed(registry: &Registry, answers: &Answers) -> BTreeSet<Subnet> {
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
        Self {
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
