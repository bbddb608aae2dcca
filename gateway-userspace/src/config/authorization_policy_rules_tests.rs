//! One test per AuthorizationPolicy rule (Istio's
//! `ValidateAuthorizationPolicy` and what the gateway refuses), then the
//! decoding of every field into the model.
use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::model::{
    AuthorizationPolicy, AuthzAction, Condition, Operation, PathMatch, PolicyTarget,
    RequestPrincipal, Source, Subnet, ValueMatch, Values,
};

fn load_policy(metadata_extra: &str, spec: &str) -> Config {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: apps\n{metadata_extra}spec:\n{spec}"
    );
    load_sources(&[(PathBuf::from("p.yaml"), text)])
}

fn policy(spec: &str) -> Config {
    load_policy("", spec)
}

fn assert_has(config: &Config, severity: Severity, field: &str, message: &str) {
    let all: Vec<_> = config
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.field.clone(), d.message.clone()))
        .collect();
    assert!(
        all.iter()
            .any(|(s, f, m)| *s == severity && f == field && m == message),
        "missing {severity:?} {field}: {message}\nfound: {all:#?}"
    );
}

fn assert_error(config: &Config, field: &str, message: &str) {
    assert_has(config, Severity::Error, field, message);
    assert!(config.model.authorization_policies.is_empty());
}

/// The only policy of `spec`, which must load without any diagnostic.
fn decoded(spec: &str) -> AuthorizationPolicy {
    let config = policy(spec);
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(config.model.authorization_policies.len(), 1);
    config.model.authorization_policies[0].clone()
}

fn exact(text: &str) -> ValueMatch {
    ValueMatch::Exact(text.to_string())
}

fn subnet(text: &str) -> Subnet {
    text.parse().unwrap()
}

const MESH: &str = "needs the client's mesh (SPIFFE) identity, which an ingress gateway's external clients do not have: the gateway refuses the policy rather than decide on it";

// --- selector and targetRef ---------------------------------------------

#[test]
fn only_one_of_target_refs_or_selector_can_be_set() {
    let config = policy(
        "  selector: {matchLabels: {istio: ingressgateway}}\n  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n",
    );
    assert_error(
        &config,
        "spec",
        "only one of targetRefs or workloadSelector can be set",
    );
}

#[test]
fn selector_labels_may_not_have_an_empty_key_or_a_wildcard() {
    let config = policy("  selector:\n    matchLabels: {\"\": a, app: \"web*\"}\n");
    assert_error(
        &config,
        "spec.selector.matchLabels",
        "empty key is not supported in selector: \"=a\"",
    );
    assert_error(
        &config,
        "spec.selector.matchLabels.app",
        "wildcard is not supported in selector: \"app=web*\"",
    );
}

#[test]
fn a_selector_without_labels_is_a_warning_and_selects_every_workload() {
    let config = policy("  selector: {}\n");
    assert_has(
        &config,
        Severity::Warning,
        "spec.selector",
        "workload selector specified without labels",
    );
    assert_eq!(
        config.model.authorization_policies[0].target,
        PolicyTarget::Selector(BTreeMap::new())
    );
}

#[test]
fn target_ref_name_must_be_set() {
    let config = policy("  targetRef: {group: gateway.networking.k8s.io, kind: Gateway}\n");
    assert_error(&config, "spec.targetRef.name", "targetRef name must be set");
}

#[test]
fn target_ref_namespace_must_not_be_set() {
    let config = policy(
        "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw, namespace: other}\n",
    );
    assert_error(
        &config,
        "spec.targetRefs[0].namespace",
        "targetRef namespace must not be set; cross namespace referencing is not supported",
    );
}

#[test]
fn target_ref_must_be_to_an_allowed_kind() {
    // An Istio Gateway is not one of them: an error, not a no-op.
    let config =
        policy("  targetRefs:\n  - {group: networking.istio.io, kind: Gateway, name: gw}\n");
    assert_error(
        &config,
        "spec.targetRefs[0]",
        "targetRef must be to one of [core/v1/Service networking.istio.io/v1/ServiceEntry gateway.networking.k8s.io/v1/Gateway gateway.networking.k8s.io/v1/GatewayClass] but was networking.istio.io/Gateway",
    );
    // The core group may be written empty.
    let service = decoded_with_warnings("  targetRef: {kind: Service, name: web}\n");
    assert_eq!(service.target, PolicyTarget::TargetRefs);
}

fn decoded_with_warnings(spec: &str) -> AuthorizationPolicy {
    let config = policy(spec);
    assert!(!config.has_errors(), "{:#?}", config.diagnostics);
    config.model.authorization_policies[0].clone()
}

#[test]
fn a_target_ref_policy_is_decoded_as_ignored_with_a_warning() {
    let config = policy(
        "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n  action: DENY\n  rules: [{}]\n",
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.targetRefs",
        "targetRef/targetRefs attach a policy to Gateway-API gateways and waypoints only: Istio ignores it for a gateway serving networking.istio.io Gateways, and so does this gateway",
    );
    assert_eq!(
        config.model.authorization_policies[0].target,
        PolicyTarget::TargetRefs
    );
}

// --- action, provider, rules ----------------------------------------------

#[test]
fn custom_action_is_refused_naming_spec_action() {
    let config = policy(
        "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - to: [{operation: {paths: [/admin/*]}}]\n",
    );
    assert_error(
        &config,
        "spec.action",
        "CUSTOM (external authorization) is not supported by this gateway: it has no ext_authz client, and serving without the check would let through what the provider denies",
    );
    assert_eq!(config.diagnostics.len(), 1, "{:#?}", config.diagnostics);
}

#[test]
fn custom_action_without_rules_is_meaningless() {
    for rules in ["", "  rules: []\n"] {
        let config = policy(&format!(
            "  action: CUSTOM\n  provider: {{name: ext}}\n{rules}"
        ));
        assert_error(
            &config,
            "spec.rules",
            "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }
}

#[test]
fn custom_action_needs_a_provider_name() {
    let config = policy("  action: CUSTOM\n  rules: [{}]\n");
    assert_error(
        &config,
        "spec.provider.name",
        "`provider.name` must not be empty",
    );
    let config = policy("  action: CUSTOM\n  provider: {}\n  rules: [{}]\n");
    assert_error(
        &config,
        "spec.provider.name",
        "`provider.name` must not be empty",
    );
}

#[test]
fn custom_action_refuses_identity_fields_and_auth_keys() {
    let config = policy(
        "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from: [{source: {requestPrincipals: [\"*\"], namespaces: [ns]}}]\n    when:\n    - {key: \"request.auth.claims[group]\", values: [admin]}\n    - {key: source.namespace, values: [ns]}\n",
    );
    let at = "spec.rules[0].from[0].source";
    assert_error(
        &config,
        &format!("{at}.requestPrincipals"),
        "From.RequestPrincipals is currently not supported with CUSTOM action",
    );
    assert_error(
        &config,
        &format!("{at}.namespaces"),
        "From.Namespaces is currently not supported with CUSTOM action",
    );
    assert_error(
        &config,
        "spec.rules[0].when[0].key",
        "request.auth.claims[group] is currently not supported with CUSTOM action",
    );
    assert_error(
        &config,
        "spec.rules[0].when[1].key",
        "source.namespace is currently not supported with CUSTOM action",
    );
}

#[test]
fn provider_must_not_be_set_with_a_non_custom_action() {
    let config = policy("  provider: {name: ext}\n");
    assert_error(
        &config,
        "spec.provider",
        "`provider` must not be with non CUSTOM action, found ALLOW",
    );
    let config = policy("  action: AUDIT\n  provider: {name: ext}\n");
    assert_error(
        &config,
        "spec.provider",
        "`provider` must not be with non CUSTOM action, found AUDIT",
    );
}

#[test]
fn deny_without_rules_is_meaningless() {
    // Go decodes `rules: []` as absent, so it is the same error.
    for rules in ["", "  rules:\n", "  rules: []\n"] {
        let config = policy(&format!("  action: DENY\n{rules}"));
        assert_error(
            &config,
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }
}

#[test]
fn an_unknown_action_is_an_error() {
    let config = policy("  action: REJECT\n");
    assert_error(
        &config,
        "spec.action",
        "unknown action \"REJECT\": expected ALLOW, DENY, AUDIT or CUSTOM",
    );
}

#[test]
fn a_rule_must_not_be_nil() {
    let config = policy("  rules:\n  - {}\n  - null\n");
    assert_error(
        &config,
        "spec.rules[1]",
        "`rule` must not be nil, found at rule 1",
    );
}

// --- from -----------------------------------------------------------------

#[test]
fn from_must_not_be_empty() {
    let config = policy("  rules:\n  - from: []\n");
    assert_error(
        &config,
        "spec.rules[0].from",
        "`from` must not be empty, found at rule 0",
    );
}

#[test]
fn from_entries_and_their_source_must_not_be_nil() {
    let config = policy("  rules:\n  - {}\n  - from:\n    - null\n    - {}\n    - source: null\n");
    assert_error(
        &config,
        "spec.rules[1].from[0]",
        "`from` must not be nil, found at rule 1",
    );
    assert_error(
        &config,
        "spec.rules[1].from[1]",
        "`from.source` must not be nil, found at rule 1",
    );
    assert_error(
        &config,
        "spec.rules[1].from[2]",
        "`from.source` must not be nil, found at rule 1",
    );
}

#[test]
fn from_source_must_not_be_empty() {
    // An empty list is nil to Go, so it does not count.
    let config = policy("  rules:\n  - from: [{source: {ipBlocks: []}}]\n");
    assert_error(
        &config,
        "spec.rules[0].from[0].source",
        "`from.source` must not be empty, found at rule 0",
    );
}

#[test]
fn service_accounts_cannot_be_set_with_namespaces_or_principals() {
    for source in [
        "serviceAccounts: [ns/sa], notPrincipals: [x]",
        "notServiceAccounts: [sa], namespaces: [ns]",
    ] {
        let config = policy(&format!("  rules:\n  - from: [{{source: {{{source}}}}}]\n"));
        assert_error(
            &config,
            "spec.rules[0].from[0].source",
            "cannot set serviceAccounts with namespaces or principals, found at rule 0",
        );
    }
    // Either alone is only refused as a mesh identity.
    let config = policy("  rules:\n  - from: [{source: {notServiceAccounts: [sa]}}]\n");
    assert!(
        !config
            .diagnostics
            .iter()
            .any(|d| d.message.starts_with("cannot set serviceAccounts")),
        "{:#?}",
        config.diagnostics
    );
}

#[test]
fn ip_blocks_are_validated_as_istio_validate_ips() {
    let config = policy(
        "  rules:\n  - from:\n    - source:\n        ipBlocks: [10.0.0.0/33]\n        notIpBlocks: [example.com]\n        remoteIpBlocks: [\"1.2.3.4/\"]\n        notRemoteIpBlocks: [\"2001:db8::/129\"]\n",
    );
    let at = "spec.rules[0].from[0].source";
    assert_error(
        &config,
        &format!("{at}.ipBlocks[0]"),
        "bad CIDR range (10.0.0.0/33): netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range",
    );
    assert_error(
        &config,
        &format!("{at}.notIpBlocks[0]"),
        "bad IP address (example.com)",
    );
    assert_error(
        &config,
        &format!("{at}.remoteIpBlocks[0]"),
        "bad CIDR range (1.2.3.4/): netip.ParsePrefix(\"1.2.3.4/\"): bad bits after slash: \"\"",
    );
    assert_error(
        &config,
        &format!("{at}.notRemoteIpBlocks[0]"),
        "bad CIDR range (2001:db8::/129): netip.ParsePrefix(\"2001:db8::/129\"): prefix length out of range",
    );
}

#[test]
fn empty_values_are_not_allowed_in_source_and_operation_fields() {
    let config = policy(
        "  rules:\n  - from: [{source: {requestPrincipals: [a, \"\"], ipBlocks: [\"\"]}}]\n    to: [{operation: {methods: [\"\"], notHosts: [\"\"]}}]\n",
    );
    assert_error(
        &config,
        "spec.rules[0].from[0].source.requestPrincipals[1]",
        "empty value not allowed, found in RequestPrincipals",
    );
    assert_error(
        &config,
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "empty value not allowed, found in IpBlocks",
    );
    assert_error(
        &config,
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "bad IP address ()",
    );
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.methods[0]",
        "empty value not allowed, found in Methods",
    );
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.notHosts[0]",
        "empty value not allowed, found in NotHosts",
    );
}

#[test]
fn service_accounts_are_checked_as_check_service_account() {
    let config = policy("  rules:\n  - from: [{source: {notServiceAccounts: [\"a/b/c\"]}}]\n");
    assert_error(
        &config,
        "spec.rules[0].from[0].source.notServiceAccounts",
        "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\" in NotServiceAccounts",
    );
}

#[test]
fn trust_domains_are_checked_as_check_trust_domain_values() {
    let config = policy("  rules:\n  - from: [{source: {trustDomains: [\"a*b\"]}}]\n");
    assert_error(
        &config,
        "spec.rules[0].from[0].source.trustDomains",
        "wildcard is only allowed at the start or end, found in TrustDomains: \"a*b\"",
    );
}

#[test]
fn source_fields_that_need_a_mesh_identity_are_refused() {
    for field in [
        "principals",
        "notPrincipals",
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "trustDomains",
        "notTrustDomains",
    ] {
        let config = policy(&format!(
            "  rules:\n  - from: [{{source: {{{field}: [default]}}}}]\n"
        ));
        assert_error(
            &config,
            &format!("spec.rules[0].from[0].source.{field}"),
            &format!("{field} {MESH}"),
        );
    }
}

// --- to -------------------------------------------------------------------

#[test]
fn to_must_not_be_empty() {
    let config = policy("  rules:\n  - to: []\n");
    assert_error(
        &config,
        "spec.rules[0].to",
        "`to` must not be empty, found at rule 0",
    );
}

#[test]
fn to_entries_and_their_operation_must_not_be_nil() {
    let config = policy("  rules:\n  - to:\n    - null\n    - {operation: null}\n");
    assert_error(
        &config,
        "spec.rules[0].to[0]",
        "`to` must not be nil, found at rule 0",
    );
    assert_error(
        &config,
        "spec.rules[0].to[1]",
        "`to.operation` must not be nil, found at rule 0",
    );
}

#[test]
fn to_operation_must_not_be_empty() {
    let config = policy("  rules:\n  - to: [{operation: {}}]\n");
    assert_error(
        &config,
        "spec.rules[0].to[0].operation",
        "`to.operation` must not be empty, found at rule 0",
    );
}

#[test]
fn ports_must_be_numbers_up_to_65535() {
    let config =
        policy("  rules:\n  - to: [{operation: {ports: [\"70000\"], notPorts: [http]}}]\n");
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.ports[0]",
        "bad port (70000): <nil>",
    );
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.notPorts[0]",
        "bad port (http): strconv.ParseUint: parsing \"http\": invalid syntax",
    );
}

#[test]
fn path_templates_must_be_valid() {
    let config = policy(
        "  rules:\n  - to: [{operation: {paths: [\"/{**}/{*}\"], notPaths: [\"/a/{b}\"]}}]\n",
    );
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.paths[0]",
        "invalid or unsupported path {**}/{*}, found in Paths. {**} is not the last operator",
    );
    assert_error(
        &config,
        "spec.rules[0].to[0].operation.notPaths[0]",
        "invalid or unsupported path a/{b}, found in NotPaths. Contains '{' or '}' beyond a supported path template",
    );
}

// --- when -----------------------------------------------------------------

#[test]
fn a_condition_key_must_not_be_empty() {
    let config = policy("  rules:\n  - when:\n    - {values: [a]}\n    - null\n");
    assert_error(
        &config,
        "spec.rules[0].when[0].key",
        "`key` must not be empty",
    );
    assert_error(
        &config,
        "spec.rules[0].when[1].key",
        "`key` must not be empty",
    );
}

#[test]
fn a_condition_needs_values_or_not_values() {
    let config = policy("  rules:\n  - when: [{key: source.ip, values: []}]\n");
    assert_error(
        &config,
        "spec.rules[0].when[0]",
        "at least one of `values` or `notValues` must be set for key source.ip",
    );
}

#[test]
fn condition_values_must_not_be_empty() {
    let config = policy("  rules:\n  - when: [{key: connection.sni, notValues: [\"\"]}]\n");
    assert_error(
        &config,
        "spec.rules[0].when[0].notValues[0]",
        "invalid `notValue` for `key` connection.sni: empty value not allowed, found in connection.sni",
    );
}

#[test]
fn unknown_condition_keys_are_refused_for_values_and_not_values() {
    // Istio checks both lists, set or not.
    let config = policy("  rules:\n  - when: [{key: source.port, values: [\"80\"]}]\n");
    assert_error(
        &config,
        "spec.rules[0].when[0].values",
        "invalid `value` for `key` source.port: unknown attribute: source.port",
    );
    assert_error(
        &config,
        "spec.rules[0].when[0].key",
        "invalid `notValue` for `key` source.port: unknown attribute: source.port",
    );
}

#[test]
fn replaced_and_deprecated_condition_keys_are_refused() {
    for (key, message) in [
        (
            "destination.namespace",
            "attribute destination.namespace is replaced by the metadata.namespace",
        ),
        (
            "destination.labels[app]",
            "attribute destination.labels[app] is replaced by the workload selector",
        ),
        (
            "destination.name",
            "deprecated attribute destination.name: only supported in v1alpha1",
        ),
        (
            "destination.user",
            "deprecated attribute destination.user: only supported in v1alpha1",
        ),
    ] {
        let config = policy(&format!(
            "  rules:\n  - when: [{{key: \"{key}\", values: [x]}}]\n"
        ));
        assert_error(
            &config,
            "spec.rules[0].when[0].values",
            &format!("invalid `value` for `key` {key}: {message}"),
        );
    }
}

#[test]
fn map_keys_need_the_a_b_format() {
    for key in [
        "request.headers",
        "request.auth.claims[]",
        "experimental.envoy.filters.x",
    ] {
        let config = policy(&format!(
            "  rules:\n  - when: [{{key: \"{key}\", values: [x]}}]\n"
        ));
        assert_error(
            &config,
            "spec.rules[0].when[0].values",
            &format!("invalid `value` for `key` {key}: bad key ({key}): should have format a[b]"),
        );
    }
}

#[test]
fn condition_ips_and_ports_are_validated() {
    let config = policy(
        "  rules:\n  - when:\n    - {key: remote.ip, values: [10.0.0.0/8, bad]}\n    - {key: destination.port, notValues: [\"-1\"]}\n",
    );
    assert_error(
        &config,
        "spec.rules[0].when[0].values[1]",
        "invalid `value` for `key` remote.ip: bad IP address (bad)",
    );
    assert_error(
        &config,
        "spec.rules[0].when[1].notValues[0]",
        "invalid `notValue` for `key` destination.port: bad port (-1): strconv.ParseUint: parsing \"-1\": invalid syntax",
    );
}

#[test]
fn condition_keys_that_need_a_mesh_identity_are_refused() {
    for key in [
        "source.principal",
        "source.namespace",
        "source.serviceAccount",
        "source.trustDomain",
    ] {
        let config = policy(&format!(
            "  rules:\n  - when: [{{key: {key}, values: [default]}}]\n"
        ));
        assert_error(
            &config,
            "spec.rules[0].when[0].key",
            &format!("{key} {MESH}"),
        );
    }
    // Istio's own checks of their values still apply.
    let config = policy("  rules:\n  - when: [{key: source.serviceAccount, values: [\"*\"]}]\n");
    assert_error(
        &config,
        "spec.rules[0].when[0].values",
        "invalid `value` for `key` source.serviceAccount: wildcard not allowed, found in source.serviceAccount",
    );
}

#[test]
fn envoy_filter_metadata_conditions_are_refused() {
    let config = policy(
        "  rules:\n  - when: [{key: \"experimental.envoy.filters.http.rbac[x]\", values: [y]}]\n",
    );
    assert_error(
        &config,
        "spec.rules[0].when[0].key",
        "experimental.envoy.filters.http.rbac[x] is not supported by this gateway: it matches Envoy filter metadata, which this gateway does not have",
    );
}

#[test]
fn keys_istio_admits_but_cannot_build_are_refused() {
    let config = policy("  rules:\n  - when: [{key: \"request.headersx[a]\", values: [y]}]\n");
    assert_error(
        &config,
        "spec.rules[0].when[0].key",
        "bad key (request.headersx[a]): expecting format [<NAME>], but found x[a]; Istio admits it but drops the condition when building Envoy's RBAC, so the gateway refuses it",
    );
}

// --- the DENY warning -------------------------------------------------------

const TCP_WARNING: &str = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";

#[test]
fn a_deny_rule_with_only_http_attributes_warns_about_tcp_ports() {
    for rule in [
        "  - to: [{operation: {methods: [POST]}}]\n",
        "  - from: [{source: {requestPrincipals: [\"*\"]}}]\n",
        "  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]\n    to: [{operation: {paths: [/a]}}]\n",
    ] {
        let config = policy(&format!("  action: DENY\n  rules:\n{rule}"));
        assert_has(&config, Severity::Warning, "spec.rules[0]", TCP_WARNING);
        assert_eq!(config.model.authorization_policies.len(), 1);
    }
    for quiet in [
        "  - to: [{operation: {methods: [POST], ports: [\"8080\"]}}]\n",
        "  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]\n",
        "  - {}\n",
    ] {
        let config = policy(&format!("  action: DENY\n  rules:\n{quiet}"));
        assert!(
            config.diagnostics.is_empty(),
            "{quiet}: {:#?}",
            config.diagnostics
        );
    }
    // ALLOW is not warned.
    let config = policy("  rules:\n  - to: [{operation: {methods: [POST]}}]\n");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
}

// --- dry-run ----------------------------------------------------------------

#[test]
fn dry_run_is_read_with_go_parse_bool() {
    for (value, dry_run) in [("\"true\"", true), ("\"T\"", true), ("\"0\"", false)] {
        let config = load_policy(
            &format!("  annotations: {{istio.io/dry-run: {value}}}\n"),
            "  action: DENY\n  rules: [{}]\n",
        );
        assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
        assert_eq!(config.model.authorization_policies[0].dry_run, dry_run);
    }
}

#[test]
fn a_dry_run_value_go_cannot_parse_is_refused() {
    let config = load_policy("  annotations: {istio.io/dry-run: \"yes\"}\n", "  {}\n");
    assert_error(
        &config,
        "metadata.annotations.istio.io/dry-run",
        "apps/p has annotation istio.io/dry-run with invalid value (yes): strconv.ParseBool: parsing \"yes\": invalid syntax",
    );
}

#[test]
fn dry_run_is_only_for_allow_and_deny() {
    let config = load_policy(
        "  annotations: {istio.io/dry-run: \"true\"}\n",
        "  action: AUDIT\n  rules: [{}]\n",
    );
    assert_error(
        &config,
        "metadata.annotations.istio.io/dry-run",
        "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action AUDIT in apps/p",
    );
}

// --- decoding into the model --------------------------------------------------

#[test]
fn metadata_selector_and_action_are_decoded() {
    let config = load_sources(&[(
        PathBuf::from("p.yaml"),
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  creationTimestamp: \"2026-01-02T03:04:05Z\"\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: AUDIT\n  rules: [{}]\n".to_string(),
    )]);
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let p = &config.model.authorization_policies[0];
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("default", "p"));
    assert_eq!(
        p.creation_timestamp.as_deref(),
        Some("2026-01-02T03:04:05Z")
    );
    assert_eq!(
        p.target,
        PolicyTarget::Selector(BTreeMap::from([(
            "istio".to_string(),
            "ingressgateway".to_string()
        )]))
    );
    assert_eq!(p.action, AuthzAction::Audit);
    assert!(!p.dry_run);
    assert_eq!(p.defined_at.as_deref(), Some("p.yaml:1"));
    assert_eq!(p.rules.as_ref().map(Vec::len), Some(1));
}

#[test]
fn absent_rules_are_none_and_an_empty_list_is_kept_empty() {
    let allow_nothing = decoded("  {}\n");
    assert_eq!(allow_nothing.action, AuthzAction::Allow);
    assert_eq!(allow_nothing.target, PolicyTarget::Namespace);
    assert_eq!(allow_nothing.rules, None);
    assert_eq!(decoded("  rules:\n").rules, None);
    assert_eq!(decoded("  rules: []\n").rules, Some(Vec::new()));
    let match_all = decoded("  rules: [{}]\n").rules.unwrap();
    assert_eq!(match_all[0].from, None);
    assert_eq!(match_all[0].to, None);
    assert!(match_all[0].when.is_empty());
}

#[test]
fn every_source_and_operation_field_is_decoded() {
    let p = decoded(
        "  rules:\n  - from:\n    - source:\n        ipBlocks: [192.0.2.0/24]\n        notIpBlocks: [192.0.2.7]\n        remoteIpBlocks: [\"2001:db8::/32\"]\n        notRemoteIpBlocks: [198.51.100.1]\n        requestPrincipals: [\"https://issuer.example/sub\"]\n        notRequestPrincipals: [\"*\"]\n    to:\n    - operation:\n        hosts: [\"*.example.com\"]\n        notHosts: [admin.example.com]\n        ports: [\"443\"]\n        notPorts: [\"8443\"]\n        methods: [GET]\n        notMethods: [\"DEL*\"]\n        paths: [\"/api/{*}/items/{**}\"]\n        notPaths: [/internal*]\n",
    );
    let rule = &p.rules.unwrap()[0];
    assert_eq!(
        rule.from,
        Some(vec![Source {
            ip_blocks: vec![subnet("192.0.2.0/24")],
            not_ip_blocks: vec![subnet("192.0.2.7")],
            remote_ip_blocks: vec![subnet("2001:db8::/32")],
            not_remote_ip_blocks: vec![subnet("198.51.100.1")],
            request_principals: vec![RequestPrincipal {
                issuer: exact("https://issuer.example"),
                subject: exact("sub"),
            }],
            not_request_principals: vec![RequestPrincipal {
                issuer: ValueMatch::Presence,
                subject: ValueMatch::Presence,
            }],
        }])
    );
    assert_eq!(
        rule.to,
        Some(vec![Operation {
            hosts: vec![ValueMatch::Suffix(".example.com".into())],
            not_hosts: vec![exact("admin.example.com")],
            ports: vec![443],
            not_ports: vec![8443],
            methods: vec![exact("GET")],
            not_methods: vec![ValueMatch::Prefix("DEL".into())],
            paths: vec![PathMatch::Template("/api/{*}/items/{**}".into())],
            not_paths: vec![PathMatch::Value(ValueMatch::Prefix("/internal".into()))],
        }])
    );
}

#[test]
fn request_principals_keep_istio_forms() {
    let p = decoded(
        "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"iss/sub\", \"*@example.com\", \"accounts.example*\", \"*/*\", \"iss/*\"]\n",
    );
    let from = p.rules.unwrap()[0].from.clone().unwrap();
    let forms: Vec<(ValueMatch, ValueMatch)> = from[0]
        .request_principals
        .iter()
        .map(|r| (r.issuer.clone(), r.subject.clone()))
        .collect();
    assert_eq!(
        forms,
        vec![
            (exact("iss"), exact("sub")),
            (
                ValueMatch::Presence,
                ValueMatch::Suffix("@example.com".into())
            ),
            (
                ValueMatch::Prefix("accounts.example".into()),
                ValueMatch::Presence
            ),
            (ValueMatch::Presence, exact("*")),
            (exact("iss"), ValueMatch::Presence),
        ]
    );
}

#[test]
fn every_served_condition_key_is_decoded() {
    let p = decoded(
        "  rules:\n  - when:\n    - {key: \"request.headers[X-Tenant]\", values: [\"a*\"], notValues: [ab]}\n    - {key: source.ip, values: [10.0.0.0/8]}\n    - {key: remote.ip, notValues: [192.0.2.1]}\n    - {key: destination.ip, values: [\"2001:db8::1\"]}\n    - {key: destination.port, values: [\"443\"]}\n    - {key: request.auth.principal, values: [\"iss/sub\"]}\n    - {key: request.auth.audiences, values: [api]}\n    - {key: request.auth.presenter, values: [\"*\"]}\n    - {key: \"request.auth.claims[groups]\", values: [admin]}\n    - {key: \"request.auth.claims[nested][key]\", values: [v]}\n    - {key: \"request.auth.claims[a[b]]\", values: [v]}\n    - {key: connection.sni, values: [\"*.example.com\"]}\n",
    );
    let when = p.rules.unwrap()[0].when.clone();
    let one = |m: ValueMatch| Values {
        values: vec![m],
        not_values: vec![],
    };
    assert_eq!(
        when,
        vec![
            Condition::RequestHeader {
                name: "X-Tenant".into(),
                values: Values {
                    values: vec![ValueMatch::Prefix("a".into())],
                    not_values: vec![exact("ab")],
                },
            },
            Condition::SourceIp(Values {
                values: vec![subnet("10.0.0.0/8")],
                not_values: vec![],
            }),
            Condition::RemoteIp(Values {
                values: vec![],
                not_values: vec![subnet("192.0.2.1")],
            }),
            Condition::DestinationIp(Values {
                values: vec![subnet("2001:db8::1")],
                not_values: vec![],
            }),
            Condition::DestinationPort(Values {
                values: vec![443],
                not_values: vec![],
            }),
            Condition::RequestPrincipal(Values {
                values: vec![RequestPrincipal::parse("iss/sub")],
                not_values: vec![],
            }),
            Condition::Audiences(one(exact("api"))),
            Condition::Presenter(one(ValueMatch::Presence)),
            Condition::Claim {
                path: vec!["groups".into()],
                values: one(exact("admin")),
            },
            Condition::Claim {
                path: vec!["nested".into(), "key".into()],
                values: one(exact("v")),
            },
            Condition::Claim {
                path: vec!["a[b]".into()],
                values: one(exact("v")),
            },
            Condition::ConnectionSni(one(ValueMatch::Suffix(".example.com".into()))),
        ]
    );
}

#[test]
fn a_policy_with_any_error_is_left_out_whole() {
    let config = policy(
        "  rules:\n  - to: [{operation: {methods: [GET]}}]\n  - to: [{operation: {ports: [x]}}]\n",
    );
    assert!(config.has_errors());
    assert!(config.model.authorization_policies.is_empty());
}
