//! Which AuthorizationPolicies apply to this gateway, in Istio's order.
use crate::model::{AuthorizationPolicy, DEFAULT_ROOT_NAMESPACE, Instance, Model};

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
