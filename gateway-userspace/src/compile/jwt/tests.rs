//! Which RequestAuthentications become providers, and in what order.
use std::{collections::BTreeMap, time::Duration};

use super::providers;
use crate::{
    model::{Instance, JwksSource, JwtHeader, JwtRule, Model, PolicyTarget, RequestAuthentication},
    plan::{TokenLocation, default_locations},
};

fn rule(issuer: &str) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        audiences: Vec::new(),
        jwks: JwksSource::Discovery,
        from_headers: Vec::new(),
        from_params: Vec::new(),
        from_cookies: Vec::new(),
        output_payload_to_header: None,
        forward_original_token: false,
        output_claim_to_headers: Vec::new(),
        timeout: Duration::from_secs(5),
        space_delimited_claims: Vec::new(),
    }
}

fn policy(
    namespace: &str,
    name: &str,
    target: PolicyTarget,
    issuers: &[&str],
) -> RequestAuthentication {
    RequestAuthentication {
        namespace: namespace.into(),
        name: name.into(),
        target,
        jwt_rules: issuers.iter().map(|i| rule(i)).collect(),
    }
}

fn issuers(model: &Model, instance: &Instance) -> Vec<String> {
    providers(model, instance)
        .into_iter()
        .map(|p| p.issuer)
        .collect()
}

#[test]
fn rules_of_every_attached_policy_are_merged_and_sorted_by_issuer() {
    let gateway = Instance {
        namespace: "gw".into(),
        ..Instance::default()
    };
    let selector =
        |k: &str, v: &str| PolicyTarget::Selector(BTreeMap::from([(k.into(), v.into())]));
    let model = Model {
        request_authentications: vec![
            policy("gw", "b", PolicyTarget::Namespace, &["z", "m"]),
            policy("istio-system", "root", PolicyTarget::Namespace, &["a"]),
            policy("gw", "a", selector("istio", "ingressgateway"), &["m2"]),
            // Not attached: another namespace, another selector, targetRefs.
            policy("apps", "x", PolicyTarget::Namespace, &["no1"]),
            policy("gw", "y", selector("app", "other"), &["no2"]),
            policy("gw", "t", PolicyTarget::TargetRefs, &["no3"]),
        ],
        ..Model::default()
    };
    assert_eq!(issuers(&model, &gateway), ["a", "m", "m2", "z"]);
}

#[test]
fn equal_issuers_keep_the_workload_namespace_first() {
    let gateway = Instance {
        namespace: "gw".into(),
        ..Instance::default()
    };
    let mut root = policy("istio-system", "a", PolicyTarget::Namespace, &["same"]);
    root.jwt_rules[0].audiences = vec!["root".into()];
    let mut own = policy("gw", "z", PolicyTarget::Namespace, &["same"]);
    own.jwt_rules[0].audiences = vec!["own".into()];
    let model = Model {
        request_authentications: vec![root, own],
        ..Model::default()
    };
    let audiences: Vec<_> = providers(&model, &gateway)
        .into_iter()
        .map(|p| p.audiences[0].clone())
        .collect();
    assert_eq!(audiences, ["own", "root"]);
}

#[test]
fn no_location_means_envoys_defaults_and_scope_permission_are_always_delimited() {
    let mut with_header = rule("b");
    with_header.from_headers = vec![JwtHeader {
        name: "x-jwt".into(),
        prefix: String::new(),
    }];
    with_header.space_delimited_claims = vec!["scope".into(), "roles".into()];
    let model = Model {
        request_authentications: vec![RequestAuthentication {
            namespace: "istio-system".into(),
            name: "r".into(),
            target: PolicyTarget::Namespace,
            jwt_rules: vec![rule("a"), with_header],
        }],
        ..Model::default()
    };
    let planned = providers(&model, &Instance::default());
    assert_eq!(planned[0].locations, default_locations());
    assert_eq!(planned[0].space_delimited_claims, ["permission", "scope"]);
    assert_eq!(
        planned[1].locations,
        [TokenLocation::Header {
            name: "x-jwt".into(),
            prefix: String::new()
        }]
    );
    assert_eq!(
        planned[1].space_delimited_claims,
        ["permission", "roles", "scope"]
    );
}

#[test]
fn no_policy_means_no_provider() {
    assert!(providers(&Model::default(), &Instance::default()).is_empty());
}
