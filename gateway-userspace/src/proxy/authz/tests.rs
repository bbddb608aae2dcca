//! The evaluation order and every match form, named after Istio's rules.
use std::net::SocketAddr;

use hyper::HeaderMap;
use serde_json::{Map, Value};

use super::*;
use crate::{
    compile::authz::authorization,
    model::{
        AuthorizationPolicy, AuthzAction, Instance, Model, PolicyTarget, RequestPrincipal,
        ValueMatch, Values,
    },
};

fn policy(name: &str, action: AuthzAction, rules: Option<Vec<AuthzRule>>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        namespace: "istio-system".into(),
        name: name.into(),
        creation_timestamp: None,
        target: PolicyTarget::Namespace,
        action,
        dry_run: false,
        rules,
        defined_at: None,
    }
}

fn authorizer(policies: Vec<AuthorizationPolicy>) -> Authorizer {
    let model = Model {
        authorization_policies: policies,
        ..Model::default()
    };
    let (plan, _) = authorization(&model, &Instance::default());
    Authorizer::new(&plan).expect("templates compile")
}

fn from_ips(blocks: &[&str]) -> AuthzRule {
    AuthzRule {
        from: Some(vec![Source {
            ip_blocks: blocks.iter().map(|b| b.parse().expect("block")).collect(),
            ..Source::default()
        }]),
        ..AuthzRule::default()
    }
}

fn to_paths(paths: &[&str]) -> AuthzRule {
    AuthzRule {
        to: Some(vec![Operation {
            paths: paths
                .iter()
                .map(|p| {
                    if p.contains("{*}") || p.contains("{**}") {
                        PathMatch::Template(p.to_string())
                    } else {
                        PathMatch::Value(ValueMatch::parse(p))
                    }
                })
                .collect(),
            ..Operation::default()
        }]),
        ..AuthzRule::default()
    }
}

struct Request {
    peer: &'static str,
    remote: &'static str,
    method: &'static str,
    path: &'static str,
    authority: &'static str,
    headers: HeaderMap,
    jwt: Option<Map<String, Value>>,
}

fn get(path: &'static str) -> Request {
    Request {
        peer: "192.0.2.7",
        remote: "192.0.2.7",
        method: "GET",
        path,
        authority: "example.com",
        headers: HeaderMap::new(),
        jwt: None,
    }
}

fn local() -> SocketAddr {
    "198.51.100.1:8080".parse().expect("address")
}

fn decide(authorizer: &Authorizer, request: &Request) -> Decision {
    let attributes = Attributes {
        peer: request.peer.parse().expect("peer"),
        remote: request.remote.parse().expect("remote"),
        local: local(),
        sni: None,
        http: Some(HttpAttributes {
            authority: request.authority,
            method: request.method,
            path: request.path,
            headers: &request.headers,
            jwt: request.jwt.as_ref(),
        }),
    };
    authorizer.http.decide(&attributes)
}

fn denied_by(authorizer: &Authorizer, request: &Request) -> Option<String> {
    decide(authorizer, request).denied.map(|m| m.id)
}

#[test]
fn without_an_allow_policy_everything_not_denied_is_allowed() {
    let deny = policy(
        "deny-admin",
        AuthzAction::Deny,
        Some(vec![to_paths(&["/admin*"])]),
    );
    let authz = authorizer(vec![deny]);
    assert_eq!(denied_by(&authz, &get("/")), None);
    assert_eq!(
        denied_by(&authz, &get("/admin/x")).as_deref(),
        Some("ns[istio-system]-policy[deny-admin]-rule[0]")
    );
}

#[test]
fn deny_is_evaluated_before_allow() {
    let allow = policy(
        "allow-all",
        AuthzAction::Allow,
        Some(vec![AuthzRule::default()]),
    );
    let deny = policy(
        "deny-admin",
        AuthzAction::Deny,
        Some(vec![to_paths(&["/admin"])]),
    );
    let authz = authorizer(vec![allow, deny]);
    assert!(denied_by(&authz, &get("/admin")).is_some());
    assert_eq!(denied_by(&authz, &get("/ok")), None);
}

#[test]
fn an_allow_policy_that_matches_nothing_denies_with_policy_none() {
    let allow = policy(
        "office",
        AuthzAction::Allow,
        Some(vec![from_ips(&["203.0.113.0/24"])]),
    );
    let authz = authorizer(vec![allow]);
    assert_eq!(denied_by(&authz, &get("/")).as_deref(), Some(NO_POLICY));
    let mut office = get("/");
    office.peer = "203.0.113.200";
    assert_eq!(denied_by(&authz, &office), None);
    assert_eq!(
        decide(&authz, &office)
            .allowed_by
            .map(|m| m.policy)
            .as_deref(),
        Some("istio-system/office")
    );
}

#[test]
fn an_allow_policy_without_rules_allows_nothing() {
    let authz = authorizer(vec![policy("allow-nothing", AuthzAction::Allow, None)]);
    assert_eq!(denied_by(&authz, &get("/")).as_deref(), Some(NO_POLICY));
    assert!(!authz.is_empty());
}

#[test]
fn an_empty_rule_matches_every_request() {
    let authz = authorizer(vec![policy(
        "deny-all",
        AuthzAction::Deny,
        Some(vec![AuthzRule::default()]),
    )]);
    assert!(denied_by(&authz, &get("/anything")).is_some());
}

#[test]
fn from_to_and_when_must_all_match() {
    let rule = AuthzRule {
        when: vec![Condition::RequestHeader {
            name: "x-team".into(),
            values: Values {
                values: vec![ValueMatch::Exact("edge".into())],
                not_values: vec![],
            },
        }],
        ..AuthzRule {
            to: to_paths(&["/api*"]).to,
            ..from_ips(&["192.0.2.0/24"])
        }
    };
    let authz = authorizer(vec![policy("team", AuthzAction::Allow, Some(vec![rule]))]);
    let mut request = get("/api/v1");
    assert!(denied_by(&authz, &request).is_some(), "header missing");
    request
        .headers
        .insert("x-team", "edge".parse().expect("value"));
    assert_eq!(denied_by(&authz, &request), None);
    request.path = "/other";
    assert!(denied_by(&authz, &request).is_some(), "path outside");
    request.path = "/api";
    request.peer = "198.51.100.9";
    assert!(denied_by(&authz, &request).is_some(), "source outside");
}

#[test]
fn not_values_exclude_what_values_admit() {
    let rule = AuthzRule {
        to: Some(vec![Operation {
            methods: vec![ValueMatch::Presence],
            not_methods: vec![ValueMatch::Exact("DELETE".into())],
            ..Operation::default()
        }]),
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy(
        "no-delete",
        AuthzAction::Allow,
        Some(vec![rule]),
    )]);
    assert_eq!(denied_by(&authz, &get("/")), None);
    let mut delete = get("/");
    delete.method = "DELETE";
    assert!(denied_by(&authz, &delete).is_some());
}

#[test]
fn audit_rules_are_reported_and_never_decide() {
    let audit = policy(
        "audit-all",
        AuthzAction::Audit,
        Some(vec![AuthzRule::default()]),
    );
    let authz = authorizer(vec![audit]);
    let decision = decide(&authz, &get("/"));
    assert_eq!(decision.denied, None);
    assert_eq!(
        decision.audited.map(|m| m.policy).as_deref(),
        Some("istio-system/audit-all")
    );
}

#[test]
fn dry_run_policies_are_reported_and_never_enforced() {
    let mut deny = policy(
        "deny-all",
        AuthzAction::Deny,
        Some(vec![AuthzRule::default()]),
    );
    deny.dry_run = true;
    let authz = authorizer(vec![deny]);
    let decision = decide(&authz, &get("/"));
    assert_eq!(decision.denied, None);
    assert_eq!(
        decision.dry_run.flatten().map(|m| m.id).as_deref(),
        Some("ns[istio-system]-policy[deny-all]-rule[0]")
    );
}

#[test]
fn the_first_rule_in_id_order_names_the_denial() {
    // Envoy's policies are a std::map: rule[10] sorts before rule[2].
    let mut rules = vec![
        AuthzRule {
            ..to_paths(&["/never"])
        };
        10
    ];
    rules[2] = AuthzRule::default();
    rules.push(AuthzRule::default());
    let authz = authorizer(vec![policy("many", AuthzAction::Deny, Some(rules))]);
    assert_eq!(
        denied_by(&authz, &get("/")).as_deref(),
        Some("ns[istio-system]-policy[many]-rule[10]")
    );
}

#[test]
fn path_templates_match_as_envoys_uri_template() {
    let authz = authorizer(vec![policy(
        "t",
        AuthzAction::Deny,
        Some(vec![to_paths(&["/foo/{*}/bar", "/files/{**}"])]),
    )]);
    assert!(denied_by(&authz, &get("/foo/x/bar")).is_some());
    assert!(
        denied_by(&authz, &get("/foo//bar")).is_none(),
        "{{*}} is one non-empty segment"
    );
    assert!(denied_by(&authz, &get("/foo/x/y/bar")).is_none());
    assert!(denied_by(&authz, &get("/files/a/b/c.txt")).is_some());
    assert!(
        denied_by(&authz, &get("/files/")).is_some(),
        "{{**}} may be empty"
    );
    assert!(denied_by(&authz, &get("/files")).is_none());
}

#[test]
fn remote_ip_blocks_judge_the_original_client_and_ip_blocks_the_peer() {
    let rule = AuthzRule {
        from: Some(vec![Source {
            remote_ip_blocks: vec!["203.0.113.0/24".parse().expect("block")],
            ..Source::default()
        }]),
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy(
        "clients",
        AuthzAction::Allow,
        Some(vec![rule]),
    )]);
    let mut behind_proxy = get("/");
    behind_proxy.peer = "192.0.2.1";
    behind_proxy.remote = "203.0.113.5";
    assert_eq!(denied_by(&authz, &behind_proxy), None);
    let mut direct = get("/");
    direct.peer = "203.0.113.5";
    direct.remote = "192.0.2.1";
    assert!(denied_by(&authz, &direct).is_some());
}

#[test]
fn without_a_token_no_request_principal_matches_and_not_request_principals_does() {
    let require = AuthzRule {
        from: Some(vec![Source {
            not_request_principals: vec![RequestPrincipal::parse("*")],
            ..Source::default()
        }]),
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy(
        "require-jwt",
        AuthzAction::Deny,
        Some(vec![require]),
    )]);
    assert!(denied_by(&authz, &get("/")).is_some());
    let mut with_token = get("/");
    with_token.jwt = serde_json::from_str(r#"{"iss":"https://idp.example","sub":"alice"}"#).ok();
    assert_eq!(denied_by(&authz, &with_token), None);
}

#[test]
fn claims_conditions_read_the_verified_payload() {
    let rule = AuthzRule {
        when: vec![Condition::Claim {
            path: vec!["groups".into()],
            values: Values {
                values: vec![ValueMatch::Exact("admins".into())],
                not_values: vec![],
            },
        }],
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy("admins", AuthzAction::Allow, Some(vec![rule]))]);
    let mut request = get("/");
    request.jwt = serde_json::from_str(r#"{"groups":["dev","admins"]}"#).ok();
    assert_eq!(denied_by(&authz, &request), None);
    request.jwt = serde_json::from_str(r#"{"groups":"dev"}"#).ok();
    assert!(denied_by(&authz, &request).is_some());
}

#[test]
fn hosts_are_case_insensitive_and_an_exact_host_does_not_match_host_and_port() {
    let rule = AuthzRule {
        to: Some(vec![Operation {
            hosts: vec![ValueMatch::Exact("Example.com".into())],
            ..Operation::default()
        }]),
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy("host", AuthzAction::Allow, Some(vec![rule]))]);
    assert_eq!(denied_by(&authz, &get("/")), None);
    let mut with_port = get("/");
    with_port.authority = "example.com:8080";
    assert!(denied_by(&authz, &with_port).is_some());
}

#[test]
fn on_tcp_an_allow_rule_with_http_attributes_is_skipped_and_a_deny_rule_widens() {
    let allow = policy("paths", AuthzAction::Allow, Some(vec![to_paths(&["/api"])]));
    let authz = authorizer(vec![allow]);
    let tcp = Attributes {
        peer: "192.0.2.7".parse().expect("ip"),
        remote: "192.0.2.7".parse().expect("ip"),
        local: local(),
        sni: Some("db.example"),
        http: None,
    };
    assert_eq!(
        authz.tcp.decide(&tcp).denied.map(|m| m.id).as_deref(),
        Some(NO_POLICY)
    );

    let deny = AuthzRule {
        to: Some(vec![Operation {
            methods: vec![ValueMatch::Exact("POST".into())],
            ports: vec![8080],
            ..Operation::default()
        }]),
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy("post", AuthzAction::Deny, Some(vec![deny]))]);
    assert!(
        authz.tcp.decide(&tcp).denied.is_some(),
        "all of 8080 denied on TCP"
    );
    assert!(
        denied_by(&authz, &get("/")).is_none(),
        "only POST denied on HTTP"
    );
}

#[test]
fn connection_sni_and_destination_port_conditions() {
    let rule = AuthzRule {
        when: vec![
            Condition::ConnectionSni(Values {
                values: vec![ValueMatch::Suffix(".example".into())],
                not_values: vec![],
            }),
            Condition::DestinationPort(Values {
                values: vec![8080],
                not_values: vec![],
            }),
        ],
        ..AuthzRule::default()
    };
    let authz = authorizer(vec![policy("sni", AuthzAction::Allow, Some(vec![rule]))]);
    let mut tcp = Attributes {
        peer: "192.0.2.7".parse().expect("ip"),
        remote: "192.0.2.7".parse().expect("ip"),
        local: local(),
        sni: Some("db.example"),
        http: None,
    };
    assert_eq!(authz.tcp.decide(&tcp).denied, None);
    tcp.sni = None;
    assert!(authz.tcp.decide(&tcp).denied.is_some());
}
