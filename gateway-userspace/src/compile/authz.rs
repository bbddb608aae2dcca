//! Which AuthorizationPolicies apply to this gateway, in Istio's order.
use crate::{
    model::{
        AuthorizationPolicy, AuthzAction, AuthzRule, Condition, DEFAULT_ROOT_NAMESPACE, Instance,
        Model, Operation, Source,
    },
    plan::authz::{Authorization, PolicyRule},
};

/// The policies that attach to `instance` (`ShouldAttachPolicy`: root and
/// own namespace, selector a subset of its labels, `targetRefs` never),
/// sorted as `sortConfigByCreationTime` sorts them: creation time, then
/// name, then namespace. Dry-run and AUDIT policies are included; callers
/// pick by action.
pub(crate) fn applicable<'m>(
    model: &'m Model,
    instance: &Instance,
) -> Vec<&'m AuthorizationPolicy> {
    let mut policies: Vec<&AuthorizationPolicy> = model
        .authorization_policies
        .iter()
        .filter(|p| {
            p.target.applies_to(
                &p.namespace,
                &instance.labels,
                &instance.namespace,
                DEFAULT_ROOT_NAMESPACE,
            )
        })
        .collect();
    policies.sort_by(|a, b| {
        let key = |p: &'m AuthorizationPolicy| {
            (
                p.creation_timestamp.as_deref().unwrap_or(""),
                p.name.as_str(),
                p.namespace.as_str(),
            )
        };
        key(a).cmp(&key(b))
    });
    policies
}

/// The attached policies as the proxy evaluates them (`builder.go`
/// `build`): one list per action and chain, Istio's TCP trimming applied,
/// sorted by rule id. Warnings name the ALLOW rules a TCP chain skips.
pub(crate) fn authorization(model: &Model, instance: &Instance) -> (Authorization, Vec<String>) {
    let mut plan = Authorization::default();
    let mut warnings = Vec::new();
    for policy in applicable(model, instance) {
        let name = format!("{}/{}", policy.namespace, policy.name);
        // Created even for a policy without rules: an ALLOW policy that
        // allows nothing still turns allow-by-default off.
        plan.http.list_mut(policy.action, policy.dry_run);
        plan.tcp.list_mut(policy.action, policy.dry_run);
        for (index, rule) in policy.rules.iter().flatten().enumerate() {
            let id = policy.rule_id(index);
            let entry = |rule: AuthzRule| PolicyRule {
                id: id.clone(),
                policy: name.clone(),
                rule,
            };
            plan.http
                .list_mut(policy.action, policy.dry_run)
                .push(entry(rule.clone()));
            match for_tcp(rule, policy.action) {
                Some(trimmed) => plan.tcp.list_mut(policy.action, policy.dry_run).push(entry(trimmed)),
                None => warnings.push(format!(
                    "AuthorizationPolicy {name} rule {index}: uses HTTP attributes, so TCP and TLS passthrough connections skip it (Istio's \"skipped rule on TCP filter chain\"); an ALLOW policy none of whose rules remain denies every TCP connection"
                )),
            }
        }
    }
    plan.http.sort();
    plan.tcp.sort();
    (plan, warnings)
}

/// A rule as Istio builds it for a TCP filter chain, where HTTP attributes
/// do not exist: an ALLOW rule that uses one is skipped ("a smaller
/// allow"); DENY and AUDIT rules lose only those predicates ("a wider
/// deny"), so `methods: [POST]` with `ports: [8080]` denies all of 8080.
fn for_tcp(rule: &AuthzRule, action: AuthzAction) -> Option<AuthzRule> {
    let http_only = rule
        .from
        .iter()
        .flatten()
        .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
        || rule.to.iter().flatten().any(|o| {
            !o.hosts.is_empty()
                || !o.not_hosts.is_empty()
                || !o.methods.is_empty()
                || !o.not_methods.is_empty()
                || !o.paths.is_empty()
                || !o.not_paths.is_empty()
        })
        || rule.when.iter().any(is_http_only);
    if !http_only {
        return Some(rule.clone());
    }
    if action == AuthzAction::Allow {
        return None;
    }
    let from = rule.from.as_ref().map(|sources| {
        sources
            .iter()
            .map(|s| Source {
                request_principals: Vec::new(),
                not_request_principals: Vec::new(),
                ..s.clone()
            })
            .collect()
    });
    let to = rule.to.as_ref().map(|operations| {
        operations
            .iter()
            .map(|o| Operation {
                ports: o.ports.clone(),
                not_ports: o.not_ports.clone(),
                ..Operation::default()
            })
            .collect()
    });
    let when = rule
        .when
        .iter()
        .filter(|c| !is_http_only(c))
        .cloned()
        .collect();
    Some(AuthzRule { from, to, when })
}

/// `when` keys `generator.go` answers "is HTTP only" for on TCP.
fn is_http_only(condition: &Condition) -> bool {
    matches!(
        condition,
        Condition::RequestHeader { .. }
            | Condition::RequestPrincipal(_)
            | Condition::Audiences(_)
            | Condition::Presenter(_)
            | Condition::Claim { .. }
    )
}
