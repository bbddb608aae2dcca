use serde_json::json;

use super::{
    Jwks, JwksError, Verified,
    test_keys::{TestKey, jwks},
};

/// `header.payload` and the signature of a token, as `Jwks::verify` takes them.
fn split(token: &str) -> (String, Vec<u8>) {
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    (
        signed.to_string(),
        super::BASE64URL.decode(signature).expect("base64url"),
    )
}

use base64::Engine as _;

fn verify(set: &Jwks, key: &TestKey, alg: &str) -> Verified {
    let token = key.sign(alg, &json!({"iss": "a"}));
    let (signed, signature) = split(&token);
    set.verify(alg, Some(&key.kid), signed.as_bytes(), &signature)
}

#[test]
fn every_algorithm_envoy_lists_verifies_except_es512() {
    let rsa = TestKey::rsa("rsa");
    let p256 = TestKey::es256("p256");
    let p384 = TestKey::es384("p384");
    let ed = TestKey::ed25519("ed");
    let oct = TestKey::hmac("oct", b"a secret of some length");
    let (set, problems) = Jwks::parse(&jwks(&[&rsa, &p256, &p384, &ed, &oct])).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        assert_eq!(verify(&set, &rsa, alg), Verified::Ok, "{alg}");
    }
    assert_eq!(verify(&set, &p256, "ES256"), Verified::Ok);
    assert_eq!(verify(&set, &p384, "ES384"), Verified::Ok);
    assert_eq!(verify(&set, &ed, "EdDSA"), Verified::Ok);
    for alg in ["HS256", "HS384", "HS512"] {
        assert_eq!(verify(&set, &oct, alg), Verified::Ok, "{alg}");
    }
}

#[test]
fn a_signature_by_another_key_fails() {
    let signer = TestKey::es256("k");
    let other = TestKey::es256("k");
    let (set, _) = Jwks::parse(&jwks(&[&other])).unwrap();
    assert_eq!(verify(&set, &signer, "ES256"), Verified::Fails);
}

#[test]
fn a_tampered_payload_fails() {
    let key = TestKey::rsa("k");
    let (set, _) = Jwks::parse(&jwks(&[&key])).unwrap();
    let token = key.sign("RS256", &json!({"sub": "alice"}));
    let (signed, signature) = split(&token);
    let forged = signed.replace(signed.split('.').nth(1).unwrap(), "eyJzdWIiOiJtYWxsb3J5In0");
    assert_eq!(
        set.verify("RS256", Some("k"), forged.as_bytes(), &signature),
        Verified::Fails
    );
}

#[test]
fn no_key_with_the_tokens_kid_is_a_kid_alg_mismatch() {
    let key = TestKey::rsa("one");
    let (set, _) = Jwks::parse(&jwks(&[&key])).unwrap();
    let (signed, signature) = split(&key.sign("RS256", &json!({})));
    assert_eq!(
        set.verify("RS256", Some("two"), signed.as_bytes(), &signature),
        Verified::KidAlgMismatch
    );
    // A token without kid tries every key.
    assert_eq!(
        set.verify("RS256", None, signed.as_bytes(), &signature),
        Verified::Ok
    );
}

#[test]
fn a_key_whose_alg_differs_from_the_tokens_is_skipped() {
    let key = TestKey::rsa("k");
    let mut jwk = key.jwk();
    jwk["alg"] = json!("RS512");
    let (set, _) = Jwks::parse(&json!({"keys": [jwk]}).to_string()).unwrap();
    let (signed, signature) = split(&key.sign("RS256", &json!({})));
    assert_eq!(
        set.verify("RS256", Some("k"), signed.as_bytes(), &signature),
        Verified::KidAlgMismatch
    );
}

#[test]
fn an_ed25519_signature_of_the_wrong_length_is_its_own_failure() {
    let key = TestKey::ed25519("k");
    let (set, _) = Jwks::parse(&jwks(&[&key])).unwrap();
    assert_eq!(
        set.verify("EdDSA", Some("k"), b"a.b", &[0; 63]),
        Verified::Ed25519WrongLength
    );
}

#[test]
fn key_set_errors_are_envoys() {
    assert_eq!(Jwks::parse("not json"), Err(JwksError::Json));
    assert_eq!(Jwks::parse("{}"), Err(JwksError::NoKeys));
    assert_eq!(Jwks::parse(r#"{"keys": 1}"#), Err(JwksError::BadKeys));
    assert_eq!(Jwks::parse(r#"{"keys": []}"#), Err(JwksError::NoValidKeys));
    let only_bad = r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#;
    assert_eq!(
        Jwks::parse(only_bad).map_err(|e| e.to_string()),
        Err("keys[0]: [n] field is missing for a RSA key".to_string())
    );
}

#[test]
fn a_bad_key_beside_a_good_one_is_skipped_and_reported() {
    let key = TestKey::es256("k");
    let text = json!({"keys": [{"kty": "XYZ"}, key.jwk()]}).to_string();
    let (set, problems) = Jwks::parse(&text).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        "keys[0]: [kty] is not supported in [keys]"
    );
}

#[test]
fn ec_curve_and_alg_must_agree() {
    let key = TestKey::es256("k");
    let mut jwk = key.jwk();
    jwk["alg"] = json!("ES384");
    let text = json!({"keys": [jwk]}).to_string();
    assert_eq!(
        Jwks::parse(&text).map_err(|e| e.to_string()),
        Err("keys[0]: [crv] field specified is not compatible with [alg] for an EC key".into())
    );
}

#[test]
fn private_material_is_flagged() {
    let key = TestKey::rsa("k");
    let mut jwk = key.jwk();
    jwk["d"] = json!("AQAB");
    let (set, _) = Jwks::parse(&json!({"keys": [jwk, key.jwk()]}).to_string()).unwrap();
    assert!(set.keys[0].private);
    assert!(!set.keys[1].private);
}
