//! One test per rule of Istio's delegate merge; the cases marked "Istio:"
//! are ported from `pilot/pkg/model/virtualservice_test.go`
//! (`TestMergeHttpRoutes`, `TestMergeHTTPMatchRequests`, `TestHasConflict`).
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::*;
use crate::{
    config::{Severity, load_sources},
    model::{Instance, Model},
    plan::{Plan, RouteAction},
};

fn uri(m: StringMatch) -> HttpMatch {
    HttpMatch {
        uri: Some(m),
        ..HttpMatch::default()
    }
}

fn prefix(p: &str) -> StringMatch {
    StringMatch::Prefix(p.into())
}

fn exact(p: &str) -> StringMatch {
    StringMatch::Exact(p.into())
}

fn regex(p: &str) -> StringMatch {
    StringMatch::Regex(p.into())
}

fn header(name: &str, m: Option<StringMatch>) -> HttpMatch {
    HttpMatch {
        headers: BTreeMap::from([(name.to_string(), m)]),
        ..HttpMatch::default()
    }
}

// === hasConflict ===

#[test]
fn a_regex_on_either_side_conflicts_with_any_other_match() {
    // Istio: "regex uri", "url regex conflict", the two "... has conflicting uri match".
    assert!(has_conflict(&uri(regex("/a.*")), &uri(regex("/a.*"))));
    assert!(has_conflict(&uri(regex(".*")), &uri(prefix("/a"))));
    assert!(has_conflict(&uri(prefix("/")), &uri(regex("/a.*"))));
    assert!(has_conflict(&uri(exact("/a")), &uri(regex("/a"))));
}

#[test]
fn a_field_set_on_one_side_only_never_conflicts() {
    // Istio: "regex uri in root and delegate does not have uri", and the reverse.
    assert!(!has_conflict(&uri(regex("/a.*")), &HttpMatch::default()));
    assert!(!has_conflict(&HttpMatch::default(), &uri(regex("/a.*"))));
    assert!(!has_conflict(
        &header("x", Some(exact("1"))),
        &HttpMatch::default()
    ));
    assert!(!has_conflict(&HttpMatch::default(), &header("x", None)));
}

#[test]
fn a_root_exact_match_admits_only_the_same_exact_match() {
    assert!(!has_conflict(&uri(exact("/a")), &uri(exact("/a"))));
    assert!(has_conflict(&uri(exact("/a")), &uri(exact("/b"))));
    assert!(has_conflict(&uri(exact("/a")), &uri(prefix("/a"))));
}

#[test]
fn a_root_prefix_admits_a_longer_prefix_or_an_exact_path_under_it() {
    // Istio: "match uri", "mismatch uri".
    assert!(!has_conflict(&uri(prefix("/api")), &uri(prefix("/api/v1"))));
    assert!(!has_conflict(&uri(prefix("/api")), &uri(exact("/api/x"))));
    assert!(has_conflict(&uri(prefix("/api/v1")), &uri(prefix("/api"))));
    assert!(has_conflict(&uri(prefix("/api")), &uri(exact("/web"))));
}

#[test]
fn header_matches_follow_the_string_rules_key_by_key() {
    // Istio: "headers equal", "headers not equal", "headers prefix mismatch", "diff headers".
    let root = header("version", Some(exact("v1")));
    assert!(!has_conflict(&root, &header("version", Some(exact("v1")))));
    assert!(has_conflict(&root, &header("version", Some(exact("v2")))));
    assert!(has_conflict(
        &header("version", Some(prefix("v1"))),
        &header("version", Some(prefix("v")))
    ));
    assert!(!has_conflict(&root, &header("other", Some(exact("v2")))));
}

#[test]
fn a_presence_match_on_both_sides_conflicts_as_in_istio() {
    // An empty StringMatch on both sides is neither exact nor prefix: Istio's
    // `stringMatchConflict` falls through to "conflict".
    assert!(has_conflict(&header("x", None), &header("x", None)));
    assert!(has_conflict(
        &header("x", Some(exact("1"))),
        &header("x", None)
    ));
}

#[test]
fn without_headers_and_query_params_conflict_like_headers() {
    // Istio: "withoutHeaders mismatch".
    let root = HttpMatch {
        without_headers: BTreeMap::from([("x".into(), Some(exact("1")))]),
        query_params: BTreeMap::from([("q".into(), Some(exact("1")))]),
        ..HttpMatch::default()
    };
    let leaf = HttpMatch {
        without_headers: BTreeMap::from([("x".into(), Some(exact("2")))]),
        ..HttpMatch::default()
    };
    assert!(has_conflict(&root, &leaf));
    let leaf = HttpMatch {
        query_params: BTreeMap::from([("q".into(), Some(exact("2")))]),
        ..HttpMatch::default()
    };
    assert!(has_conflict(&root, &leaf));
}

#[test]
fn ignore_uri_case_must_agree() {
    let leaf = HttpMatch {
        ignore_uri_case: true,
        ..HttpMatch::default()
    };
    assert!(has_conflict(&HttpMatch::default(), &leaf));
}

#[test]
fn ports_conflict_only_when_both_are_set_and_differ() {
    // Istio: the three "port" cases.
    let on = |port| HttpMatch {
        port,
        ..HttpMatch::default()
    };
    assert!(has_conflict(&on(Some(8080)), &on(Some(9090))));
    assert!(!has_conflict(&on(Some(8080)), &on(None)));
    assert!(!has_conflict(&on(None), &on(Some(9090))));
}

#[test]
fn a_root_source_namespace_binds_the_delegate_to_the_same() {
    // Istio: "sourceNamespace mismatch": a delegate that sets none conflicts too.
    let root = HttpMatch {
        source_namespace: Some("a".into()),
        ..HttpMatch::default()
    };
    assert!(has_conflict(&root, &HttpMatch::default()));
    let same = HttpMatch {
        source_namespace: Some("a".into()),
        ..HttpMatch::default()
    };
    assert!(!has_conflict(&root, &same));
}

#[test]
fn source_labels_conflict_only_on_a_different_value() {
    // Istio: "sourceLabels mismatch".
    let labelled = |value: &str| HttpMatch {
        source_labels: BTreeMap::from([("app".into(), value.into())]),
        ..HttpMatch::default()
    };
    assert!(has_conflict(&labelled("a"), &labelled("b")));
    assert!(!has_conflict(&labelled("a"), &labelled("a")));
    assert!(!has_conflict(&HttpMatch::default(), &labelled("b")));
}

#[test]
fn the_root_gateways_must_include_the_delegates() {
    // Istio: "root has less gateways than delegate", "gateway conflicted merge".
    let on = |gateways: &[&str]| HttpMatch {
        gateways: gateways.iter().map(ToString::to_string).collect(),
        ..HttpMatch::default()
    };
    assert!(has_conflict(&on(&["ns/a"]), &on(&["ns/a", "ns/b"])));
    assert!(has_conflict(&on(&["ns/a"]), &on(&["ns/b"])));
    assert!(!has_conflict(&on(&["ns/a", "ns/b"]), &on(&["ns/b"])));
    assert!(!has_conflict(&on(&["ns/a"]), &on(&["ns/a"])));
    // Istio compares the counts first: a repeated gateway is one too many.
    assert!(has_conflict(&on(&["ns/a"]), &on(&["ns/a", "ns/a"])));
    assert!(!has_conflict(&on(&[]), &on(&["ns/b"])));
}

// === mergeHTTPMatchRequests ===

#[test]
fn no_matches_on_one_side_takes_the_other_sides() {
    let root = [uri(prefix("/api"))];
    assert_eq!(merge_matches(&root, &[]), Ok(root.to_vec()));
    assert_eq!(merge_matches(&[], &root), Ok(root.to_vec()));
}

#[test]
fn a_delegate_match_merges_with_every_root_match_it_fits_in_order() {
    // Istio: "multi url match".
    let root = [uri(prefix("/productpage")), uri(prefix("/reviews"))];
    let leaf = [uri(exact("/reviews/1")), uri(prefix("/productpage/v1"))];
    assert_eq!(
        merge_matches(&root, &leaf),
        Ok(vec![
            uri(exact("/reviews/1")),
            uri(prefix("/productpage/v1"))
        ])
    );
    let header_only = [header("version", Some(exact("v2")))];
    let merged = merge_matches(&root, &header_only).expect("no conflict");
    assert_eq!(merged.len(), 2, "one merged match per root match");
    assert_eq!(merged[1].uri, Some(prefix("/reviews")));
    assert_eq!(merged[1].headers, header_only[0].headers);
}

#[test]
fn a_delegate_match_fitting_no_root_match_is_a_conflict() {
    // Istio: "url mismatch", "conflicted merge".
    let root = [uri(prefix("/productpage"))];
    let leaf = [uri(prefix("/productpage/v1")), uri(prefix("/reviews"))];
    assert_eq!(merge_matches(&root, &leaf), Err(1));
}

#[test]
fn a_merged_match_keeps_the_delegates_fields_and_fills_the_rest_from_the_root() {
    // Istio: "complicated merge", "gateway merge", "source labels merge".
    let root = HttpMatch {
        uri: Some(prefix("/api")),
        method: Some(exact("GET")),
        headers: BTreeMap::from([
            ("a".into(), Some(exact("root"))),
            ("b".into(), Some(exact("root"))),
        ]),
        port: Some(8080),
        gateways: vec!["istio-system/gw".into()],
        source_labels: BTreeMap::from([("app".into(), "x".into())]),
        ..HttpMatch::default()
    };
    let leaf = HttpMatch {
        uri: Some(prefix("/api/v1")),
        headers: BTreeMap::from([("b".into(), Some(exact("root")))]),
        query_params: BTreeMap::from([("q".into(), None)]),
        ..HttpMatch::default()
    };
    let merged = merge_match(&root, &leaf);
    assert_eq!(merged.uri, Some(prefix("/api/v1")));
    assert_eq!(merged.method, Some(exact("GET")));
    assert_eq!(merged.headers, root.headers);
    assert_eq!(merged.query_params, leaf.query_params);
    assert_eq!(merged.port, Some(8080));
    assert_eq!(merged.gateways, root.gateways);
    assert_eq!(merged.source_labels, root.source_labels);
}

// === mergeHTTPRoute, through the decoder ===

fn load(docs: &[&str]) -> Model {
    let config = load_sources(&[(PathBuf::from("t.yaml"), docs.join("---\n"))]);
    let errors: Vec<String> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    config.model
}

fn vs(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

/// The root `root` in `apps`'s rules after the merge, with the warnings.
fn merged(model: &Model) -> (Vec<(String, HttpRoute)>, Vec<String>) {
    let root = model
        .virtual_services
        .iter()
        .find(|v| v.name == "root")
        .expect("root");
    let delegates = Delegates::new(&model.virtual_services);
    let mut warnings = Vec::new();
    let rules = http_rules(root, &delegates, &mut warnings)
        .into_iter()
        .map(|r| (r.source, r.route.into_owned()))
        .collect();
    (rules, warnings)
}

const ROOT_HEAD: &str = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n";

#[test]
fn delegate_rules_replace_the_root_rule_each_named_by_both() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - match: [{{uri: {{prefix: /api}}}}]\n    delegate: {{name: d, namespace: team}}\n  - route:\n    - destination: {{host: web}}\n"
            ),
        ),
        &vs(
            "d",
            "team",
            "  http:\n  - match: [{uri: {prefix: /api/v1}}]\n    route:\n    - destination: {host: v1}\n  - route:\n    - destination: {host: v0}\n",
        ),
    ]);
    let (rules, warnings) = merged(&model);
    let sources: Vec<&str> = rules.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        sources,
        [
            "VirtualService apps/root spec.http[0] -> team/d spec.http[0]",
            "VirtualService apps/root spec.http[0] -> team/d spec.http[1]",
            "VirtualService apps/root spec.http[1]",
        ]
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    // Istio: "delegate with empty match": a delegate rule without matches takes the root's.
    assert_eq!(rules[0].1.matches, [uri(prefix("/api/v1"))]);
    assert_eq!(rules[1].1.matches, [uri(prefix("/api"))]);
}

#[test]
fn a_delegate_rule_whose_match_conflicts_with_the_root_is_dropped_and_said() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - match: [{{uri: {{prefix: /api}}}}]\n    delegate: {{name: d}}\n"
            ),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - match: [{uri: {prefix: /web}}]\n    route:\n    - destination: {host: web}\n  - route:\n    - destination: {host: v0}\n",
        ),
    ]);
    let (rules, warnings) = merged(&model);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].0,
        "VirtualService apps/root spec.http[0] -> apps/d spec.http[1]"
    );
    assert_eq!(
        warnings,
        [
            "VirtualService apps/root spec.http[0] -> apps/d spec.http[0]: match[0] conflicts with every match of the root rule; as in Istio, this delegate rule is dropped"
        ]
    );
}

#[test]
fn fields_the_delegate_leaves_unset_come_from_the_root_rule() {
    // Istio: "root catch all": timeout and headers inherited.
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - name: r\n    delegate: {{name: d}}\n    timeout: 10s\n    rewrite: {{uri: /v2}}\n    headers:\n      request:\n        add: {{istio: test}}\n        remove: [trace-id]\n"
            ),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - name: one\n    route:\n    - destination: {host: web}\n",
        ),
    ]);
    let (rules, _) = merged(&model);
    let rule = &rules[0].1;
    assert_eq!(rule.timeout, Some(Duration::from_secs(10)));
    assert_eq!(rule.rewrite_uri.as_deref(), Some("/v2"));
    assert_eq!(
        rule.request_headers.add,
        [("istio".to_string(), "test".to_string())]
    );
    assert_eq!(rule.request_headers.remove, ["trace-id"]);
    assert_eq!(rule.name.as_deref(), Some("r-one"), "names are joined");
}

#[test]
fn a_field_the_delegate_writes_even_empty_or_zero_is_its_own() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - delegate: {{name: d}}\n    timeout: 10s\n    rewrite: {{uri: /v2}}\n    headers:\n      request:\n        set: {{x: root}}\n"
            ),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - timeout: 0s\n    rewrite: {authority: b.example.com}\n    headers: {response: {set: {y: leaf}}}\n    route:\n    - destination: {host: web}\n",
        ),
    ]);
    let (rules, _) = merged(&model);
    let rule = &rules[0].1;
    assert_eq!(rule.timeout, None, "0s: no timeout, the root's not taken");
    assert_eq!(
        rule.rewrite_uri, None,
        "the rewrite is taken whole, not per field"
    );
    assert_eq!(rule.rewrite_authority.as_deref(), Some("b.example.com"));
    assert!(
        rule.request_headers.is_empty(),
        "headers are taken whole too"
    );
    assert_eq!(
        rule.response_headers.set,
        [("y".to_string(), "leaf".to_string())]
    );
}

#[test]
fn a_field_written_null_is_unset_and_inherited() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - delegate: {{name: d}}\n    headers: {{request: {{set: {{x: root}}}}}}\n"
            ),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - headers: null\n    route:\n    - destination: {host: web}\n",
        ),
    ]);
    let (rules, _) = merged(&model);
    assert_eq!(
        rules[0].1.request_headers.set,
        [("x".to_string(), "root".to_string())]
    );
}

#[test]
fn the_root_rules_direct_response_wins_over_a_delegate_route_not_a_redirect() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!("{ROOT_HEAD}  - delegate: {{name: d}}\n    directResponse: {{status: 418}}\n"),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - match: [{uri: {exact: /r}}]\n    redirect: {uri: /elsewhere}\n  - match: [{uri: {exact: /d}}]\n    directResponse: {status: 204}\n  - route:\n    - destination: {host: web}\n",
        ),
    ]);
    let (rules, _) = merged(&model);
    assert!(matches!(rules[0].1.action, HttpAction::Redirect(_)));
    assert!(matches!(
        rules[1].1.action,
        HttpAction::DirectResponse { status: 204, .. }
    ));
    assert!(matches!(
        rules[2].1.action,
        HttpAction::DirectResponse { status: 418, .. }
    ));
}

#[test]
fn a_missing_or_invisible_delegate_drops_only_its_rule() {
    let root = vs(
        "root",
        "apps",
        &format!(
            "{ROOT_HEAD}  - delegate: {{name: d, namespace: team}}\n  - route:\n    - destination: {{host: web}}\n"
        ),
    );
    let only_root = load(&[&root]);
    let (rules, warnings) = merged(&only_root);
    let sources: Vec<&str> = rules.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sources, ["VirtualService apps/root spec.http[1]"]);
    assert!(warnings.is_empty(), "config reports it where it is written");
    // exportTo is judged against the root's namespace.
    let private = vs(
        "d",
        "team",
        "  exportTo: [.]\n  http:\n  - route:\n    - destination: {host: web}\n",
    );
    let (rules, _) = merged(&load(&[&root, &private]));
    assert_eq!(rules.len(), 1);
    let to_apps = private.replace("[.]", "[apps]");
    let (rules, _) = merged(&load(&[&root, &to_apps]));
    assert_eq!(rules.len(), 2);
}

// === through the whole pipeline ===

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*.example.com\"]
";

fn service_entry(name: &str, namespace: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  hosts: [{name}.{namespace}.svc.cluster.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {address}}}]\n"
    )
}

fn plan_of(model: &Model) -> Plan {
    crate::compile::plan(model, &Instance::default(), &[]).expect("plan")
}

#[test]
fn a_delegates_short_hosts_resolve_in_the_delegates_namespace() {
    let model = load(&[
        GATEWAY,
        &service_entry("api", "team", "192.0.2.20"),
        &service_entry("api", "apps", "192.0.2.30"),
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - match: [{{uri: {{prefix: /api}}}}]\n    delegate: {{name: d, namespace: team}}\n"
            ),
        ),
        &vs(
            "d",
            "team",
            "  http:\n  - route:\n    - destination: {host: api}\n",
        ),
    ]);
    let plan = plan_of(&model);
    let vhost = plan.http[0].hosts.lookup("a.example.com").expect("vhost");
    assert_eq!(
        vhost.routes[0].source,
        "VirtualService apps/root spec.http[0] -> team/d spec.http[0]"
    );
    let RouteAction::Forward { backends, .. } = &vhost.routes[0].action else {
        panic!("not a forward");
    };
    let cluster = backends.0[0].target.clone().expect("resolved");
    assert_eq!(
        plan.clusters[cluster.index()].name,
        "outbound|80||api.team.svc.cluster.local"
    );
}

#[test]
fn retries_the_delegate_leaves_unset_are_the_root_rules_and_written_ones_its_own() {
    let model = load(&[
        &vs(
            "root",
            "apps",
            &format!(
                "{ROOT_HEAD}  - delegate: {{name: d}}\n    retries: {{attempts: 4, retryOn: 5xx}}\n"
            ),
        ),
        &vs(
            "d",
            "apps",
            "  http:\n  - match: [{uri: {prefix: /own}}]\n    retries: {attempts: 0}\n    route:\n    - destination: {host: web}\n  - route:\n    - destination: {host: web}\n",
        ),
    ]);
    let (rules, _) = merged(&model);
    assert_eq!(rules[0].1.retries.as_ref().map(|r| r.attempts), Some(0));
    assert_eq!(rules[1].1.retries.as_ref().map(|r| r.attempts), Some(4));
}
