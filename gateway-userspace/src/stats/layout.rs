//! What the kernel's counter slots stand for, written beside the pins so
//! `gateway stats` can name the counters without asking the daemon.
use gateway_common::{IPPROTO_TCP, ListenerKind, POLICY_ALLOW_LIST};

use crate::plan::Plan;

/// What the kernel's counter slots stand for: the listeners and server
/// hosts of the plan, by id. The daemon writes it beside its pins, so
/// `gateway stats` can name the counters without asking the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub listeners: Vec<LayoutListener>,
    pub hosts: Vec<LayoutHost>,
    /// The AuthorizationPolicy drop counters: (`POLICY_STATS` slot,
    /// `ns/name`, or `allow-list` for slot 0).
    pub policies: Vec<(u32, String)>,
}

/// The name slot `POLICY_ALLOW_LIST` is counted under.
const ALLOW_LIST: &str = "allow-list";

/// One listener's counter slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutListener {
    pub id: u32,
    /// `<bind or *>_<port>_<tcp|udp>`.
    pub label: String,
    /// An HTTP or TLS listener: its data segments are classified by host.
    pub names_hosts: bool,
    /// `--reset-unknown-hosts` applies to it.
    pub resets: bool,
}

/// One server host's counter slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutHost {
    pub id: u32,
    pub listener_id: u32,
    pub pattern: String,
}

impl Layout {
    /// The layout of `plan`'s counters.
    pub fn of(plan: &Plan) -> Self {
        Self {
            listeners: plan
                .listeners
                .iter()
                .map(|l| LayoutListener {
                    id: l.id,
                    label: listener_label(l),
                    names_hosts: l.kind != ListenerKind::Tcp && l.ip_protocol == IPPROTO_TCP,
                    resets: l.reset_unknown_hosts,
                })
                .collect(),
            hosts: plan
                .kernel_hosts()
                .into_iter()
                .map(|h| LayoutHost {
                    id: h.id,
                    listener_id: h.listener_id,
                    pattern: h.pattern.to_string(),
                })
                .collect(),
            policies: policy_slots(plan),
        }
    }

    /// As JSON, for the file `gateway stats` reads.
    pub fn to_json(&self) -> String {
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .iter()
            .map(|l| {
                serde_json::json!({"id": l.id, "label": l.label, "names_hosts": l.names_hosts, "resets": l.resets})
            })
            .collect();
        let hosts: Vec<serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| serde_json::json!({"id": h.id, "listener_id": h.listener_id, "pattern": h.pattern}))
            .collect();
        let policies: Vec<serde_json::Value> = self
            .policies
            .iter()
            .map(|(slot, name)| serde_json::json!({"slot": slot, "name": name}))
            .collect();
        serde_json::json!({"listeners": listeners, "hosts": hosts, "policies": policies})
            .to_string()
    }

    /// Reads [`Layout::to_json`]'s output; `None` if it is not that.
    pub fn from_json(text: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let id = |v: &serde_json::Value, key: &str| -> Option<u32> {
            u32::try_from(v.get(key)?.as_u64()?).ok()
        };
        let listeners = value
            .get("listeners")?
            .as_array()?
            .iter()
            .map(|l| {
                Some(LayoutListener {
                    id: id(l, "id")?,
                    label: l.get("label")?.as_str()?.to_string(),
                    names_hosts: l.get("names_hosts")?.as_bool()?,
                    resets: l.get("resets")?.as_bool()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let hosts = value
            .get("hosts")?
            .as_array()?
            .iter()
            .map(|h| {
                Some(LayoutHost {
                    id: id(h, "id")?,
                    listener_id: id(h, "listener_id")?,
                    pattern: h.get("pattern")?.as_str()?.to_string(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        // Absent in the layout of a build before AuthorizationPolicy counters.
        let policies = match value.get("policies").and_then(|p| p.as_array()) {
            Some(policies) => policies
                .iter()
                .map(|p| Some((id(p, "slot")?, p.get("name")?.as_str()?.to_string())))
                .collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        Some(Self {
            listeners,
            hosts,
            policies,
        })
    }
}

/// The policy counters `plan` uses: slot 0 when a port is allow-listed,
/// then each DENY policy with kernel entries.
fn policy_slots(plan: &Plan) -> Vec<(u32, String)> {
    let allow_listed = plan.ip_policy.ports.values().any(|p| p.allow.is_some());
    allow_listed
        .then(|| (POLICY_ALLOW_LIST, ALLOW_LIST.to_string()))
        .into_iter()
        .chain(
            plan.ip_policy
                .policies
                .iter()
                .map(|(slot, name)| (*slot, name.clone())),
        )
        .collect()
}

/// A listener's name in counters: `<bind or *>_<port>_<tcp|udp>`.
pub fn listener_label(listener: &crate::plan::Listener) -> String {
    let bind = listener.bind.map_or("*".to_string(), |ip| ip.to_string());
    let proto = if listener.ip_protocol == gateway_common::IPPROTO_UDP {
        "udp"
    } else {
        "tcp"
    };
    format!("{bind}_{}_{proto}", listener.port)
}
