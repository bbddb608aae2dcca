//! The `compile` view of the AuthorizationPolicies: per chain, the rules
//! of each action in the order Envoy's RBAC engine walks them.
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{
    model::{AuthzRule, Condition, Operation, PathMatch, Source, ValueMatch},
    plan::authz::{Authorization, PolicyRule, Rules},
};

/// The table section; empty when no policy applies.
pub(super) fn table(plan: &Authorization) -> String {
    let mut out = String::new();
    if plan.is_empty() {
        return out;
    }
    for (chain, rules) in [("HTTP", &plan.http), ("TCP", &plan.tcp)] {
        let _ = writeln!(out, "authorization ({chain} requests and connections):");
        for (action, list) in lists(rules) {
            match list {
                Some(list) if list.is_empty() && action.starts_with("ALLOW") => {
                    let _ = writeln!(out, "  {action}  (no rule: allows nothing)");
                }
                Some(list) => {
                    for rule in list {
                        let _ = writeln!(out, "  {action}  {}  {}", rule.id, describe(&rule.rule));
                    }
                }
                None => {}
            }
        }
        if rules.allow.is_none() {
            out.push_str("  (no ALLOW policy: what no DENY rule matches is allowed)\n");
        }
    }
    out
}

/// The JSON form: per chain, per action, the rule ids and descriptions.
pub(super) fn json(plan: &Authorization) -> Value {
    let chain = |rules: &Rules| {
        let mut value = json!({});
        for (action, list) in lists(rules) {
            if let Some(list) = list {
                value[action] = list
                    .iter()
                    .map(|r| json!({"id": r.id, "policy": r.policy, "rule": describe(&r.rule)}))
                    .collect();
            }
        }
        value
    };
    json!({"http": chain(&plan.http), "tcp": chain(&plan.tcp)})
}

fn lists(rules: &Rules) -> [(&'static str, Option<&Vec<PolicyRule>>); 5] {
    [
        ("AUDIT", Some(&rules.audit).filter(|l| !l.is_empty())),
        ("DENY", Some(&rules.deny).filter(|l| !l.is_empty())),
        ("ALLOW", rules.allow.as_ref()),
        (
            "DENY (dry-run)",
            Some(&rules.dry_run_deny).filter(|l| !l.is_empty()),
        ),
        ("ALLOW (dry-run)", rules.dry_run_allow.as_ref()),
    ]
}

/// A rule on one line: `from[..] to[..] when[..]`, `any` for an empty rule.
fn describe(rule: &AuthzRule) -> String {
    let mut parts = Vec::new();
    if let Some(from) = &rule.from {
        parts.push(format!(
            "from[{}]",
            from.iter().map(source).collect::<Vec<_>>().join(" | ")
        ));
    }
    if let Some(to) = &rule.to {
        parts.push(format!(
            "to[{}]",
            to.iter().map(operation).collect::<Vec<_>>().join(" | ")
        ));
    }
    if !rule.when.is_empty() {
        parts.push(format!(
            "when[{}]",
            rule.when
                .iter()
                .map(condition)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if parts.is_empty() {
        "any".to_string()
    } else {
        parts.join(" ")
    }
}

fn list<T>(name: &str, values: &[T], show: impl Fn(&T) -> String) -> Option<String> {
    (!values.is_empty()).then(|| {
        format!(
            "{name}={}",
            values.iter().map(show).collect::<Vec<_>>().join(",")
        )
    })
}

fn form(value: &ValueMatch) -> String {
    match value {
        ValueMatch::Presence => "*".to_string(),
        ValueMatch::Suffix(s) => format!("*{s}"),
        ValueMatch::Prefix(p) => format!("{p}*"),
        ValueMatch::Exact(e) => e.clone(),
    }
}

fn source(s: &Source) -> String {
    let principal =
        |p: &crate::model::RequestPrincipal| format!("{}/{}", form(&p.issuer), form(&p.subject));
    [
        list("ipBlocks", &s.ip_blocks, ToString::to_string),
        list("notIpBlocks", &s.not_ip_blocks, ToString::to_string),
        list("remoteIpBlocks", &s.remote_ip_blocks, ToString::to_string),
        list(
            "notRemoteIpBlocks",
            &s.not_remote_ip_blocks,
            ToString::to_string,
        ),
        list("requestPrincipals", &s.request_principals, principal),
        list("notRequestPrincipals", &s.not_request_principals, principal),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

fn operation(o: &Operation) -> String {
    let path = |p: &PathMatch| match p {
        PathMatch::Value(v) => form(v),
        PathMatch::Template(t) => t.clone(),
    };
    [
        list("hosts", &o.hosts, form),
        list("notHosts", &o.not_hosts, form),
        list("ports", &o.ports, ToString::to_string),
        list("notPorts", &o.not_ports, ToString::to_string),
        list("methods", &o.methods, form),
        list("notMethods", &o.not_methods, form),
        list("paths", &o.paths, path),
        list("notPaths", &o.not_paths, path),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

fn condition(c: &Condition) -> String {
    fn values<T>(key: &str, v: &crate::model::Values<T>, show: impl Fn(&T) -> String) -> String {
        let mut text = key.to_string();
        if !v.values.is_empty() {
            text.push_str(&format!(
                " in {}",
                v.values.iter().map(&show).collect::<Vec<_>>().join(",")
            ));
        }
        if !v.not_values.is_empty() {
            text.push_str(&format!(
                " not in {}",
                v.not_values.iter().map(&show).collect::<Vec<_>>().join(",")
            ));
        }
        text
    }
    let ip = |s: &crate::model::Subnet| s.to_string();
    match c {
        Condition::RequestHeader { name, values: v } => {
            values(&format!("request.headers[{name}]"), v, form)
        }
        Condition::SourceIp(v) => values("source.ip", v, ip),
        Condition::RemoteIp(v) => values("remote.ip", v, ip),
        Condition::DestinationIp(v) => values("destination.ip", v, ip),
        Condition::DestinationPort(v) => values("destination.port", v, ToString::to_string),
        Condition::RequestPrincipal(v) => values("request.auth.principal", v, |p| {
            format!("{}/{}", form(&p.issuer), form(&p.subject))
        }),
        Condition::Audiences(v) => values("request.auth.audiences", v, form),
        Condition::Presenter(v) => values("request.auth.presenter", v, form),
        Condition::Claim { path, values: v } => {
            let key: String = path.iter().map(|p| format!("[{p}]")).collect();
            values(&format!("request.auth.claims{key}"), v, form)
        }
        Condition::ConnectionSni(v) => values("connection.sni", v, form),
    }
}
