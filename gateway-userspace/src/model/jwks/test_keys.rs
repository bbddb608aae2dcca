//! Keys and tokens for the JWT tests: RS*/PS* with a committed 2048-bit
//! RSA key (`rsa2048.der`, PKCS#1: `ring` cannot generate RSA keys), ES256, ES384
//! and EdDSA keys generated per run, HMAC from a secret.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use serde_json::{Value, json};

const RSA_DER: &[u8] = include_bytes!("rsa2048.der");

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A signing key and the public JWK verifying it.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    signer: Signer,
}

impl TestKey {
    pub(crate) fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::from_der(RSA_DER).expect("the test RSA key");
        Self::new(kid, Signer::Rsa(pair))
    }

    pub(crate) fn es256(kid: &str) -> Self {
        Self::ec(kid, &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    pub(crate) fn es384(kid: &str) -> Self {
        Self::ec(kid, &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ec(kid: &str, alg: &'static signature::EcdsaSigningAlgorithm, crv: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("an EC key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("an EC key");
        Self::new(kid, Signer::Ec(pair, crv))
    }

    pub(crate) fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("an Ed25519 key");
        Self::new(kid, Signer::Ed(pair))
    }

    pub(crate) fn hmac(kid: &str, secret: &[u8]) -> Self {
        Self::new(kid, Signer::Hmac(secret.to_vec()))
    }

    fn new(kid: &str, signer: Signer) -> Self {
        Self {
            kid: kid.to_string(),
            signer,
        }
    }

    /// The public JWK (with `kid`, without `alg`).
    pub(crate) fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.signer {
            Signer::Rsa(pair) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": self.kid, "n": b64(&public.n), "e": b64(&public.e)})
            }
            Signer::Ec(pair, crv) => {
                let point = pair.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                json!({
                    "kty": "EC", "kid": self.kid, "crv": crv,
                    "x": b64(&point[1..=half]), "y": b64(&point[1 + half..]),
                })
            }
            Signer::Ed(pair) => json!({
                "kty": "OKP", "kid": self.kid, "crv": "Ed25519",
                "x": b64(pair.public_key().as_ref()),
            }),
            Signer::Hmac(secret) => json!({"kty": "oct", "kid": self.kid, "k": b64(secret)}),
        }
    }

    /// A token with `claims`, signed with `alg`, naming this key's `kid`.
    pub(crate) fn sign(&self, alg: &str, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": alg, "typ": "JWT", "kid": self.kid}), claims)
    }

    /// A token with the header as given.
    pub(crate) fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let alg = header["alg"].as_str().unwrap_or("RS256");
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, signed.as_bytes(), &mut out)
                    .expect("an RSA signature");
                out
            }
            Signer::Ec(pair, _) => pair
                .sign(&rng, signed.as_bytes())
                .expect("an EC signature")
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let algorithm = match alg {
                    "HS384" => hmac::HMAC_SHA384,
                    "HS512" => hmac::HMAC_SHA512,
                    _ => hmac::HMAC_SHA256,
                };
                hmac::sign(&hmac::Key::new(algorithm, secret), signed.as_bytes())
                    .as_ref()
                    .to_vec()
            }
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A JWKS document of these keys' public JWKs.
pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}
