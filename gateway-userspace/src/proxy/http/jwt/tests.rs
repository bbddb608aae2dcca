//! The JWT phase against Envoy's behaviour, one rule per test.
use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::{JwtAuthn, JwtStatus};
use crate::{
    model::test_keys::{TestKey, jwks},
    plan::{ClaimToHeader, Jwks, JwksSource, JwtProvider, TokenLocation, default_locations},
    proxy::access_log::Entry,
};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://issuer.example";

fn provider(key: &TestKey) -> JwtProvider {
    let (set, _) = Jwks::parse(&jwks(&[key])).expect("a key set");
    JwtProvider {
        issuer: ISSUER.into(),
        audiences: Vec::new(),
        jwks: JwksSource::Inline(Arc::new(set)),
        timeout: Duration::from_secs(5),
        locations: default_locations(),
        output_payload_to_header: None,
        forward: false,
        claim_to_headers: Vec::new(),
        space_delimited_claims: vec!["permission".into(), "scope".into()],
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "exp": NOW + 3600})
}

fn bearer(token: &str) -> Request<()> {
    Request::get("/path?x=1")
        .header("host", "example.com")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

fn check(
    providers: &[JwtProvider],
    req: &mut Request<()>,
) -> Result<Option<super::Claims>, JwtStatus> {
    JwtAuthn::new(providers).expect("providers").check(req, NOW)
}

#[test]
fn a_valid_token_passes_with_its_payload() {
    let key = TestKey::rsa("k");
    let mut req = bearer(&key.sign("RS256", &claims()));
    let payload = check(&[provider(&key)], &mut req)
        .unwrap()
        .expect("a payload");
    assert_eq!(payload["sub"], "alice");
}

#[test]
fn no_token_passes_without_a_payload() {
    let key = TestKey::rsa("k");
    let mut req = Request::get("/").body(()).unwrap();
    assert_eq!(check(&[provider(&key)], &mut req).unwrap(), None);
}

#[test]
fn a_token_signed_by_another_key_fails_verification() {
    let key = TestKey::es256("k");
    let other = TestKey::es256("k");
    let mut req = bearer(&other.sign("ES256", &claims()));
    assert_eq!(
        check(&[provider(&key)], &mut req),
        Err(JwtStatus::VerificationFail)
    );
}

#[test]
fn an_opaque_bearer_token_is_refused_as_bad_format() {
    let key = TestKey::rsa("k");
    let mut req = bearer("opaque-oauth-token");
    assert_eq!(
        check(&[provider(&key)], &mut req),
        Err(JwtStatus::BadFormat)
    );
}

#[test]
fn a_token_from_an_unconfigured_issuer_is_refused() {
    let key = TestKey::rsa("k");
    let mut req = bearer(&key.sign("RS256", &json!({"iss": "someone-else", "exp": NOW + 60})));
    assert_eq!(
        check(&[provider(&key)], &mut req),
        Err(JwtStatus::UnknownIssuer)
    );
}

#[test]
fn an_unknown_kid_is_a_key_mismatch() {
    let key = TestKey::rsa("k");
    let renamed = TestKey::rsa("other");
    let mut req = bearer(&renamed.sign("RS256", &claims()));
    assert_eq!(
        check(&[provider(&key)], &mut req),
        Err(JwtStatus::KidAlgMismatch)
    );
}

#[test]
fn an_unsupported_alg_is_refused() {
    let key = TestKey::rsa("k");
    let token = key.sign_with_header(&json!({"alg": "none"}), &claims());
    assert_eq!(
        check(&[provider(&key)], &mut bearer(&token)),
        Err(JwtStatus::HeaderNotImplementedAlg)
    );
}

#[test]
fn exp_and_nbf_allow_sixty_seconds_of_skew() {
    let key = TestKey::ed25519("k");
    let at = |claims: Value| check(&[provider(&key)], &mut bearer(&key.sign("EdDSA", &claims)));
    assert!(at(json!({"iss": ISSUER, "exp": NOW - 60})).is_ok());
    assert_eq!(
        at(json!({"iss": ISSUER, "exp": NOW - 61})),
        Err(JwtStatus::Expired)
    );
    assert!(at(json!({"iss": ISSUER, "nbf": NOW + 60})).is_ok());
    assert_eq!(
        at(json!({"iss": ISSUER, "nbf": NOW + 61})),
        Err(JwtStatus::NotYetValid)
    );
    // No exp: never expires.
    assert!(at(json!({"iss": ISSUER})).is_ok());
    assert_eq!(
        at(json!({"iss": ISSUER, "exp": "soon"})),
        Err(JwtStatus::ExpNotInteger)
    );
    assert_eq!(
        at(json!({"iss": ISSUER, "exp": -1})),
        Err(JwtStatus::ExpOutOfRange)
    );
    // A fraction is dropped, as Envoy's cast drops it.
    assert!(at(json!({"iss": ISSUER, "nbf": (NOW + 60) as f64 + 0.5})).is_ok());
}

#[test]
fn audiences_are_checked_only_when_configured() {
    let key = TestKey::rsa("k");
    let token = key.sign("RS256", &json!({"iss": ISSUER, "aud": ["b", "https://a/"]}));
    let mut p = provider(&key);
    assert!(check(&[p.clone()], &mut bearer(&token)).is_ok());
    p.audiences = vec!["c".into()];
    assert_eq!(
        check(&[p.clone()], &mut bearer(&token)),
        Err(JwtStatus::AudienceNotAllowed)
    );
    // Envoy ignores the scheme and a trailing slash.
    p.audiences = vec!["http://a".into()];
    assert!(check(&[p], &mut bearer(&token)).is_ok());
}

#[test]
fn failures_are_answered_as_envoy_answers() {
    let key = TestKey::rsa("k");
    let authn = JwtAuthn::new(&[provider(&key)]).unwrap();
    let mut entry = Entry::default();
    let mut req = bearer(&key.sign("RS256", &json!({"iss": ISSUER, "exp": 1})));
    let response = authn
        .authenticate(&mut req, "http", &mut entry)
        .unwrap_err();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"http://example.com/path?x=1\", error=\"invalid_token\""
    );
    assert_eq!(
        entry.details,
        Some("jwt_authn_access_denied{Jwt_is_expired}")
    );
    let body = futures_body(response);
    assert_eq!(body, "Jwt is expired");
    assert_eq!(
        JwtStatus::AudienceNotAllowed.status_code(),
        StatusCode::FORBIDDEN
    );
    let missing = super::reject(JwtStatus::Missing, &req, "https");
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"https://example.com/path?x=1\""
    );
}

fn futures_body(response: hyper::Response<crate::proxy::body::ProxyBody>) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn a_header_without_its_prefix_is_skipped() {
    let key = TestKey::rsa("k");
    let token = key.sign("RS256", &claims());
    let mut req = Request::get("/")
        .header("authorization", token.clone())
        .body(())
        .unwrap();
    // Not `Bearer `: no token at all, so the request passes.
    assert_eq!(check(&[provider(&key)], &mut req).unwrap(), None);
    let mut req = Request::get("/")
        .header("authorization", format!("Bearer   {token}"))
        .body(())
        .unwrap();
    assert!(check(&[provider(&key)], &mut req).unwrap().is_some());
}

#[test]
fn the_default_query_parameter_is_access_token() {
    let key = TestKey::rsa("k");
    let token = key.sign("RS256", &claims());
    let mut req = Request::get(format!("/?a=b&access_token={token}"))
        .body(())
        .unwrap();
    assert!(check(&[provider(&key)], &mut req).unwrap().is_some());
    let bad = Request::get("/?access_token=junk").body(());
    assert_eq!(
        check(&[provider(&key)], &mut bad.unwrap()),
        Err(JwtStatus::BadFormat)
    );
}

#[test]
fn configured_locations_replace_the_defaults() {
    let key = TestKey::rsa("k");
    let token = key.sign("RS256", &claims());
    let mut p = provider(&key);
    p.locations = vec![
        TokenLocation::Header {
            name: "x-jwt".into(),
            prefix: String::new(),
        },
        TokenLocation::Param("token".into()),
        TokenLocation::Cookie("session".into()),
    ];
    let header = Request::get("/").header("x-jwt", token.clone()).body(());
    assert!(check(&[p.clone()], &mut header.unwrap()).unwrap().is_some());
    let param = Request::get(format!("/?token={token}")).body(());
    assert!(check(&[p.clone()], &mut param.unwrap()).unwrap().is_some());
    let cookie = Request::get("/")
        .header("cookie", format!("a=b; session=\"{token}\""))
        .body(());
    assert!(check(&[p.clone()], &mut cookie.unwrap()).unwrap().is_some());
    // The default locations are not read any more.
    assert_eq!(check(&[p], &mut bearer("junk")).unwrap(), None);
}

#[test]
fn claims_go_to_headers_and_the_payload_header_is_base64url() {
    let key = TestKey::rsa("k");
    let body = json!({"iss": ISSUER, "sub": "alice", "n": 42, "f": 1.5, "b": true,
        "nested": {"group": "admins"}, "list": ["x"]});
    let token = key.sign("RS256", &body);
    let mut p = provider(&key);
    p.output_payload_to_header = Some("x-payload".into());
    p.claim_to_headers = ["sub", "n", "f", "b", "nested.group", "list", "absent"]
        .iter()
        .map(|c| ClaimToHeader {
            header: format!("x-{}", c.replace('.', "-")),
            claim: c.to_string(),
        })
        .collect();
    let mut req = bearer(&token);
    req.headers_mut().insert("x-sub", "forged".parse().unwrap());
    check(&[p], &mut req).unwrap();
    let h = req.headers();
    assert_eq!(h["x-payload"], token.split('.').nth(1).unwrap());
    assert_eq!(h.get_all("x-sub").iter().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(h["x-n"], "42");
    assert_eq!(h["x-f"], "1.500000");
    assert_eq!(h["x-b"], "true");
    assert_eq!(h["x-nested-group"], "admins");
    assert!(h.get("x-list").is_none());
    assert!(h.get("x-absent").is_none());
}

#[test]
fn the_token_header_is_removed_unless_forwarded() {
    let key = TestKey::rsa("k");
    let token = key.sign("RS256", &claims());
    let mut p = provider(&key);
    let mut req = bearer(&token);
    check(&[p.clone()], &mut req).unwrap();
    assert!(req.headers().get("authorization").is_none());
    p.forward = true;
    let mut req = bearer(&token);
    check(&[p], &mut req).unwrap();
    assert!(req.headers().get("authorization").is_some());
}

#[test]
fn space_delimited_claims_become_lists() {
    let key = TestKey::rsa("k");
    let token = key.sign(
        "RS256",
        &json!({"iss": ISSUER, "scope": "read  write", "roles": "a b", "other": "c d"}),
    );
    let mut p = provider(&key);
    p.space_delimited_claims.push("roles".into());
    let payload = check(&[p], &mut bearer(&token)).unwrap().unwrap();
    assert_eq!(payload["scope"], json!(["read", "write"]));
    assert_eq!(payload["roles"], json!(["a", "b"]));
    assert_eq!(payload["other"], "c d");
}

#[test]
fn a_cors_preflight_bypasses_the_phase() {
    let key = TestKey::rsa("k");
    let mut req = Request::options("/")
        .header("origin", "https://a.example")
        .header("access-control-request-method", "GET")
        .header("authorization", "Bearer junk")
        .body(())
        .unwrap();
    assert_eq!(check(&[provider(&key)], &mut req).unwrap(), None);
    req.headers_mut().remove("origin");
    assert_eq!(
        check(&[provider(&key)], &mut req),
        Err(JwtStatus::BadFormat)
    );
}

#[test]
fn with_two_providers_a_token_for_either_passes_and_a_bad_one_fails() {
    let a = TestKey::rsa("a");
    let b = TestKey::es256("b");
    let mut pb = provider(&b);
    pb.issuer = "b-issuer".into();
    let providers = [provider(&a), pb];
    let token_b = b.sign("ES256", &json!({"iss": "b-issuer", "sub": "bob"}));
    assert_eq!(
        check(&providers, &mut bearer(&token_b)).unwrap().unwrap()["sub"],
        "bob"
    );
    assert!(check(&providers, &mut bearer(&a.sign("RS256", &claims()))).is_ok());
    // Signed by a's key for b's issuer: no provider passes it, and the
    // first `requires_any[origins-0, allow_missing]` reports its issuer
    // as not configured for origins-0 (Envoy's requires_all stops there).
    let forged = a.sign("RS256", &json!({"iss": "b-issuer"}));
    assert_eq!(
        check(&providers, &mut bearer(&forged)),
        Err(JwtStatus::UnknownIssuer)
    );
    // With b's provider alone, the same token reaches the key check.
    assert_eq!(
        check(&providers[1..], &mut bearer(&forged)),
        Err(JwtStatus::KidAlgMismatch)
    );
}

#[test]
fn keys_not_fetched_yet_fail_every_token_but_not_a_missing_one() {
    let key = TestKey::rsa("k");
    let mut p = provider(&key);
    p.jwks = JwksSource::Uri("http://127.0.0.1:9/keys".into());
    let authn = JwtAuthn::new(&[p]).unwrap();
    let mut req = bearer(&key.sign("RS256", &claims()));
    assert_eq!(authn.check(&mut req, NOW), Err(JwtStatus::VerificationFail));
    assert_eq!(
        authn
            .check(&mut Request::get("/").body(()).unwrap(), NOW)
            .unwrap(),
        None
    );
    // Once a set arrives, the same token passes.
    let (cell_provider, cell) = authn.fetched().next().unwrap();
    assert_eq!(cell_provider.issuer, ISSUER);
    *cell.write().unwrap() = Some(Arc::new(Jwks::parse(&jwks(&[&key])).unwrap().0));
    assert!(
        authn
            .check(&mut bearer(&key.sign("RS256", &claims())), NOW)
            .is_ok()
    );
}
