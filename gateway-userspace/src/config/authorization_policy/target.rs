//! Which workloads a policy names: `selector.matchLabels`, or
//! `targetRef`/`targetRefs` (Istio's `validateOneOfSelectorType`,
//! `validateWorkloadSelector`, `validatePolicyTargetReference`).
use crate::{
    config::{
        common::string_map,
        decode::{Decoder, field, item, join},
        diagnostic::Severity,
        yaml::{Node, Value},
    },
    model::PolicyTarget,
};

const TARGET_REF_FIELDS: &[&str] = &["group", "kind", "name", "namespace"];

/// The kinds a `targetRef` may name, as Istio prints them
/// (`allowedTargetRefs`: canonical group, version, kind).
const ALLOWED_TARGET_REFS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];
const ALLOWED_TARGET_REFS_TEXT: &str = "[core/v1/Service networking.istio.io/v1/ServiceEntry gateway.networking.k8s.io/v1/Gateway gateway.networking.k8s.io/v1/GatewayClass]";

/// Why a `targetRef` policy is left out here, as Istio leaves it out.
const TARGET_REFS_IGNORED: &str = "targetRef/targetRefs attach a policy to Gateway-API gateways and waypoints only: Istio ignores it for a gateway serving networking.istio.io Gateways, and so does this gateway";

/// The policy's target; problems are reported on `d`.
pub(super) fn decode(d: &mut Decoder<'_>, spec: &Node, entries: &[(Node, Node)]) -> PolicyTarget {
    let present = |name: &str| field(entries, name).filter(|n| n.value != Value::Null);
    let selector = present("selector").map(|node| decode_selector(d, node));
    let target_ref = present("targetRef");
    if let Some(node) = target_ref {
        check_target_ref(d, node, "spec.targetRef");
    }
    let target_refs = match present("targetRefs") {
        Some(node) => d.sequence(node, "spec.targetRefs").unwrap_or_default(),
        None => &[],
    };
    for (index, node) in target_refs.iter().enumerate() {
        check_target_ref(d, node, &item("spec.targetRefs", index));
    }
    let set = [
        selector.is_some(),
        target_ref.is_some(),
        !target_refs.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        d.error(
            spec,
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    if let Some(node) = target_ref {
        d.report(
            Severity::Warning,
            node,
            "spec.targetRef",
            TARGET_REFS_IGNORED.to_string(),
        );
        return PolicyTarget::TargetRefs;
    }
    if let Some(node) = field(entries, "targetRefs").filter(|_| !target_refs.is_empty()) {
        d.report(
            Severity::Warning,
            node,
            "spec.targetRefs",
            TARGET_REFS_IGNORED.to_string(),
        );
        return PolicyTarget::TargetRefs;
    }
    match selector {
        Some(labels) => PolicyTarget::Selector(labels),
        None => PolicyTarget::Namespace,
    }
}

/// `selector.matchLabels`, with Istio's checks of its labels.
fn decode_selector(d: &mut Decoder<'_>, node: &Node) -> std::collections::BTreeMap<String, String> {
    let Some(entries) = d.mapping(node, "spec.selector", &["matchLabels"]) else {
        return Default::default();
    };
    let path = "spec.selector.matchLabels";
    let labels = match field(entries, "matchLabels") {
        Some(labels_node) => string_map(d, labels_node, path),
        None => Default::default(),
    };
    let at = field(entries, "matchLabels").unwrap_or(node);
    for (key, value) in &labels {
        let pair = format!("{key}={value}");
        if key.is_empty() {
            d.error(
                at,
                path,
                format!("empty key is not supported in selector: {pair:?}"),
            );
        }
        if key.contains('*') || value.contains('*') {
            d.error(
                at,
                &join(path, key),
                format!("wildcard is not supported in selector: {pair:?}"),
            );
        }
    }
    if labels.is_empty() {
        d.report(
            Severity::Warning,
            node,
            "spec.selector",
            "workload selector specified without labels".to_string(),
        );
    }
    labels
}

/// One `targetRef`: a name, no namespace, an allowed group and kind.
fn check_target_ref(d: &mut Decoder<'_>, node: &Node, path: &str) {
    let Some(entries) = d.mapping(node, path, TARGET_REF_FIELDS) else {
        return;
    };
    let mut text = |name: &str| -> String {
        field(entries, name)
            .and_then(|n| match n.value {
                Value::Null => None,
                _ => d.string(n, &join(path, name)),
            })
            .unwrap_or_default()
    };
    let (group, kind, name, namespace) =
        (text("group"), text("kind"), text("name"), text("namespace"));
    if name.is_empty() {
        d.error(node, &join(path, "name"), "targetRef name must be set");
    }
    if !namespace.is_empty() {
        d.error(
            node,
            &join(path, "namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let canonical = if group.is_empty() {
        "core"
    } else {
        group.as_str()
    };
    if !ALLOWED_TARGET_REFS.contains(&(canonical, kind.as_str())) {
        d.error(
            node,
            path,
            format!(
                "targetRef must be to one of {ALLOWED_TARGET_REFS_TEXT} but was {group}/{kind}"
            ),
        );
    }
}
