//! Decodes `security.istio.io` (`v1`, `v1beta1`) `AuthorizationPolicy`
//! documents into [`model::AuthorizationPolicy`], applying Istio's
//! `ValidateAuthorizationPolicy` (istio/istio `pkg/config/validation`)
//! with its messages and our field paths. What an ingress gateway cannot
//! decide on (CUSTOM, the client's mesh identity, Envoy filter metadata)
//! is an error naming the field, never a silent allow or deny.
//!
//! The target (`selector`, `targetRef`, `targetRefs`) is decoded in
//! `target`, a rule's `from` and `to` in `rule`, its `when` in
//! `conditions`, and Istio's value checks are `checks`.
//!
//! [`model::AuthorizationPolicy`]: crate::model::AuthorizationPolicy
mod checks;
mod conditions;
mod rule;
mod target;

use super::{
    decode::{Decoder, field, item, join},
    diagnostic::Severity,
    gateway,
    yaml::{Node, Value},
};
use crate::model::{AuthorizationPolicy, AuthzAction, AuthzRule};

const SPEC_FIELDS: &[&str] = &[
    "selector",
    "targetRef",
    "targetRefs",
    "rules",
    "action",
    "provider",
];
const RULE_FIELDS: &[&str] = &["from", "to", "when"];

/// The annotation that makes a policy evaluated and logged only.
const DRY_RUN: &str = "istio.io/dry-run";

/// Istio's warning for a DENY rule that only HTTP attributes decide
/// (it then denies every connection to the workload's TCP ports).
const DENY_TCP_WARNING: &str = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";

/// `action` as written: the three actions served, or CUSTOM (refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Served(AuthzAction),
    Custom,
}

impl Action {
    /// The name Istio prints (`found ALLOW`).
    fn name(self) -> &'static str {
        match self {
            Self::Served(AuthzAction::Allow) => "ALLOW",
            Self::Served(AuthzAction::Deny) => "DENY",
            Self::Served(AuthzAction::Audit) => "AUDIT",
            Self::Custom => "CUSTOM",
        }
    }
}

/// Decodes an AuthorizationPolicy whose identity is known; the value is
/// complete only when no error was reported (the caller checks).
pub(super) fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
) -> Option<AuthorizationPolicy> {
    let creation_timestamp = gateway::creation_timestamp(d, doc);
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let target = target::decode(d, spec, entries);
    let action = decode_action(d, entries);
    let dry_run = decode_dry_run(d, doc, action, &namespace, &name);
    check_provider(d, spec, entries, action);
    let rules = decode_rules(d, spec, entries, action);
    let Action::Served(action) = action else {
        return None;
    };
    Some(AuthorizationPolicy {
        namespace,
        name,
        creation_timestamp,
        target,
        action,
        dry_run,
        rules,
        defined_at: Some(d.position(doc)),
    })
}

/// `action`: ALLOW when absent; CUSTOM is an error here (the policy is
/// still checked by Istio's rules, so every problem shows at once).
fn decode_action(d: &mut Decoder<'_>, entries: &[(Node, Node)]) -> Action {
    let Some(node) = field(entries, "action").filter(|n| n.value != Value::Null) else {
        return Action::Served(AuthzAction::Allow);
    };
    let Some(text) = d.string(node, "spec.action") else {
        return Action::Served(AuthzAction::Allow);
    };
    match text.as_str() {
        "ALLOW" => Action::Served(AuthzAction::Allow),
        "DENY" => Action::Served(AuthzAction::Deny),
        "AUDIT" => Action::Served(AuthzAction::Audit),
        "CUSTOM" => {
            d.error(
                node,
                "spec.action",
                "CUSTOM (external authorization) is not supported by this gateway: it has no ext_authz client, and serving without the check would let through what the provider denies",
            );
            Action::Custom
        }
        other => {
            d.error(
                node,
                "spec.action",
                format!("unknown action {other:?}: expected ALLOW, DENY, AUDIT or CUSTOM"),
            );
            Action::Served(AuthzAction::Allow)
        }
    }
}

/// The `istio.io/dry-run` annotation, with Istio's admission checks
/// (`checkDryRunAnnotation`): a value Go's `strconv.ParseBool` refuses,
/// or the annotation on an AUDIT or CUSTOM policy, is an error.
fn decode_dry_run(
    d: &mut Decoder<'_>,
    doc: &Node,
    action: Action,
    namespace: &str,
    name: &str,
) -> bool {
    let Some(node) = doc
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(DRY_RUN))
    else {
        return false;
    };
    let path = join("metadata.annotations", DRY_RUN);
    let Some(text) = d.string(node, &path) else {
        return false;
    };
    if !matches!(
        action,
        Action::Served(AuthzAction::Allow | AuthzAction::Deny)
    ) {
        d.error(
            node,
            &path,
            format!(
                "the annotation {DRY_RUN} currently only supports action ALLOW/DENY, found action {} in {namespace}/{name}",
                action.name()
            ),
        );
        return false;
    }
    match checks::parse_bool(&text) {
        Ok(dry_run) => dry_run,
        Err(err) => {
            d.error(
                node,
                &path,
                format!(
                    "{namespace}/{name} has annotation {DRY_RUN} with invalid value ({text}): {err}"
                ),
            );
            false
        }
    }
}

/// `provider`: only with CUSTOM, where it must name one.
fn check_provider(d: &mut Decoder<'_>, spec: &Node, entries: &[(Node, Node)], action: Action) {
    let provider = field(entries, "provider").filter(|n| n.value != Value::Null);
    let name = provider.and_then(|node| {
        let fields = d.mapping(node, "spec.provider", &["name"])?;
        d.opt_string(fields, "name", "spec.provider")
    });
    // Go decodes an empty list as absent.
    let rules_set =
        field(entries, "rules").is_some_and(|n| matches!(&n.value, Value::Seq(s) if !s.is_empty()));
    match (action, provider) {
        (Action::Custom, _) if !rules_set => {}
        (Action::Custom, provider) if name.is_none() => d.error(
            provider.unwrap_or(spec),
            "spec.provider.name",
            "`provider.name` must not be empty",
        ),
        (Action::Served(_), Some(node)) => d.error(
            node,
            "spec.provider",
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action.name()
            ),
        ),
        _ => {}
    }
}

/// `rules`: `None` when absent or null. Go decodes an empty list as
/// absent, so `rules: []` on DENY (and CUSTOM) is Istio's "without
/// `rules`" error too; on ALLOW and AUDIT it is kept as an empty list,
/// which like `None` matches nothing.
fn decode_rules(
    d: &mut Decoder<'_>,
    spec: &Node,
    entries: &[(Node, Node)],
    action: Action,
) -> Option<Vec<AuthzRule>> {
    let node = field(entries, "rules").filter(|n| n.value != Value::Null);
    let items = match node {
        Some(node) => d.sequence(node, "spec.rules"),
        None => None,
    };
    let without_rules = |what: &str| {
        format!(
            "{what} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request"
        )
    };
    if items.is_none_or(<[Node]>::is_empty) {
        let at = node.unwrap_or(spec);
        match action {
            Action::Custom => d.error(at, "spec.rules", without_rules("CUSTOM")),
            Action::Served(AuthzAction::Deny) => d.error(at, "spec.rules", without_rules("DENY")),
            _ => {}
        }
    }
    let items = items?;
    let mut rules = Vec::with_capacity(items.len());
    for (index, node) in items.iter().enumerate() {
        let path = item("spec.rules", index);
        if let Some(rule) = decode_rule(d, node, &path, index, action) {
            rules.push(rule);
        }
    }
    Some(rules)
}

/// One entry of `rules`, with Istio's per-rule checks and its DENY
/// warning about TCP ports.
fn decode_rule(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    index: usize,
    action: Action,
) -> Option<AuthzRule> {
    if node.value == Value::Null {
        // Go would decode a null entry as `{}`, a rule matching every
        // request; Istio's check for it is kept instead.
        d.error(
            node,
            path,
            format!("`rule` must not be nil, found at rule {index}"),
        );
        return None;
    }
    let entries = d.mapping(node, path, RULE_FIELDS)?;
    let custom = action == Action::Custom;
    let from = rule::decode_from(d, entries, path, index, custom);
    let to = rule::decode_to(d, entries, path, index);
    let when: Vec<_> = d
        .items(entries, "when", path)
        .into_iter()
        .filter_map(|(when_path, when)| conditions::decode(d, when, &when_path, custom))
        .collect();
    let deny_tcp = (from.exists && !to.exists && !from.tcp) || (to.exists && !to.tcp);
    if action == Action::Served(AuthzAction::Deny) && deny_tcp {
        d.report(Severity::Warning, node, path, DENY_TCP_WARNING.to_string());
    }
    Some(AuthzRule {
        from: from.value,
        to: to.value,
        when,
    })
}

/// A list of strings with each item's node and path; `None` when the
/// field is absent, null or an empty list (all nil to Go).
pub(super) struct Strings<'n> {
    /// The list's node, for errors about the field as a whole.
    pub(super) node: &'n Node,
    pub(super) path: String,
    pub(super) items: Vec<(String, &'n Node, String)>,
}

impl Strings<'_> {
    /// The values alone.
    pub(super) fn values(&self) -> Vec<String> {
        self.items.iter().map(|(v, _, _)| v.clone()).collect()
    }
}

/// Reads the string list `name` of `entries` (see [`Strings`]).
pub(super) fn strings<'n>(
    d: &mut Decoder<'_>,
    entries: &'n [(Node, Node)],
    name: &str,
    path: &str,
) -> Option<Strings<'n>> {
    let node = field(entries, name)?;
    let path = join(path, name);
    let list = d.sequence(node, &path)?;
    if list.is_empty() {
        return None;
    }
    let items = list
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let item_path = item(&path, i);
            d.string(n, &item_path).map(|s| (s, n, item_path))
        })
        .collect();
    Some(Strings { node, path, items })
}

/// The message for a field or `when` key that needs the client's mesh
/// identity: refused, as a gateway's external clients have none.
pub(super) fn mesh_identity_refused(what: &str) -> String {
    format!(
        "{what} needs the client's mesh (SPIFFE) identity, which an ingress gateway's external clients do not have: the gateway refuses the policy rather than decide on it"
    )
}

#[cfg(test)]
mod checks_tests;
