//! Authorization outcomes per policy, for `/stats/prometheus`. Envoy
//! counts RBAC decisions per filter only (`rbac.allowed`, `rbac.denied`);
//! an operator asking "which policy is denying" needs the policy, so the
//! counters carry it.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{LazyLock, Mutex},
};

use super::{Decision, NO_POLICY};

/// (family, chain, dry-run result) -> policy -> count. The policy is the
/// inner key so a request whose series exists allocates nothing.
type Series = (&'static str, &'static str, &'static str);

static COUNTS: LazyLock<Mutex<BTreeMap<Series, BTreeMap<String, u64>>>> =
    LazyLock::new(Default::default);

/// Counts one decision on `chain` (`http` or `tcp`).
pub fn record(chain: &'static str, decision: &Decision) {
    let Ok(mut counts) = COUNTS.lock() else {
        return;
    };
    let mut add = |family, policy: &str, result| {
        let by_policy = counts.entry((family, chain, result)).or_default();
        match by_policy.get_mut(policy) {
            Some(count) => *count += 1,
            None => {
                by_policy.insert(policy.to_string(), 1);
            }
        }
    };
    match (&decision.denied, &decision.allowed_by) {
        (Some(denied), _) => add("denied", &denied.policy, ""),
        (None, Some(allowed)) => add("allowed", &allowed.policy, ""),
        (None, None) => {}
    }
    if let Some(audited) = &decision.audited {
        add("audited", &audited.policy, "");
    }
    match &decision.dry_run {
        Some(Some(would_deny)) => add("dry_run", &would_deny.policy, "denied"),
        Some(None) => add("dry_run", NO_POLICY, "allowed"),
        None => {}
    }
}

/// The counters in Prometheus' text format.
pub fn render(out: &mut String) {
    let Ok(counts) = COUNTS.lock() else {
        return;
    };
    for (family, help) in [
        (
            "denied",
            "Requests and connections denied, by the policy that denied (none: no ALLOW rule matched).",
        ),
        (
            "allowed",
            "Requests and connections an ALLOW rule allowed, by its policy.",
        ),
        (
            "audited",
            "Requests and connections an AUDIT rule matched, by its policy.",
        ),
        (
            "dry_run",
            "What istio.io/dry-run policies would have decided, by policy.",
        ),
    ] {
        let name = format!("gateway_authorization_{family}_total");
        let mut header = false;
        let series = counts.iter().filter(|((f, _, _), _)| *f == family);
        let lines =
            series.flat_map(|(key, by_policy)| by_policy.iter().map(move |(p, v)| (key, p, v)));
        for ((_, chain, result), policy, value) in lines {
            if !header {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                header = true;
            }
            let result = if result.is_empty() {
                String::new()
            } else {
                format!(",result=\"{result}\"")
            };
            let _ = writeln!(
                out,
                "{name}{{chain=\"{chain}\",policy=\"{}\"{result}}} {value}",
                crate::proxy::metrics::escape(policy)
            );
        }
    }
}
