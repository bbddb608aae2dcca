//! JSON Web Key Sets and JWS signature checks, as Envoy's JWT library does
//! them (`source/common/jwt/jwks.cc`, `verify.cc`), on `ring`. Pure: used
//! by `config` for an inline `jwks` and by the proxy for fetched ones.
use base64::{
    Engine,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ring::{hmac, signature};

/// Base64url as Envoy reads it (`absl::WebSafeBase64Unescape`): padding
/// optional.
pub const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A key set: the keys that parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key and the `kid`/`alg` a token must agree with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub key: JwkKey,
    /// The JWK carried private material (`d`, or a symmetric `k`): Istio
    /// warns, only the public part is used.
    pub private: bool,
}

/// Key material, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwkKey {
    /// `kty: RSA`: big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// `kty: EC`: the uncompressed point `04 || x || y`.
    Ec { curve: EcCurve, point: Vec<u8> },
    /// `kty: OKP`, `crv: Ed25519`.
    Ed25519 { x: Vec<u8> },
    /// `kty: oct`: an HMAC secret.
    Oct { k: Vec<u8> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
    /// Parsed, never verified: `ring` has no P-521 (ES512 tokens fail).
    P521,
}

/// Why a key set or one of its keys did not parse; the texts are Envoy's
/// (`source/common/jwt/status.cc`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("Jwks is an invalid JSON")]
    Json,
    #[error("Jwks does not have [keys] field")]
    NoKeys,
    #[error("[keys] in Jwks is not an array")]
    BadKeys,
    #[error("Jwks doesn't have any valid public key")]
    NoValidKeys,
    #[error("keys[{index}]: {reason}")]
    Key { index: usize, reason: &'static str },
}

/// The outcome of a signature check ([`Jwks::verify`]), as Envoy's
/// `verifyJwtWithoutTimeChecking` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    Ok,
    /// Some key matched `kid` and `alg`, none verified the signature.
    Fails,
    /// No key has the token's `kid` (when both name one) and `alg`.
    KidAlgMismatch,
    /// An Ed25519 signature not 64 bytes long.
    Ed25519WrongLength,
}

impl Jwks {
    /// Parses a JWKS document: the keys that parse, and the problem of each
    /// key that does not (config refuses any; a fetched set skips them, as
    /// Envoy does). No valid key at all is an error.
    pub fn parse(text: &str) -> Result<(Self, Vec<JwksError>), JwksError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| JwksError::Json)?;
        let keys = match value.get("keys") {
            None => return Err(JwksError::NoKeys),
            Some(serde_json::Value::Array(keys)) => keys,
            Some(_) => return Err(JwksError::BadKeys),
        };
        let mut set = Self::default();
        let mut problems = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            match parse_key(key) {
                Ok(key) => set.keys.push(key),
                Err(reason) => problems.push(JwksError::Key { index, reason }),
            }
        }
        if set.keys.is_empty() {
            return Err(problems
                .into_iter()
                .next()
                .unwrap_or(JwksError::NoValidKeys));
        }
        Ok((set, problems))
    }

    /// Checks `signature` over `signed` (`header.payload` as sent) with
    /// each key whose `kid` and `alg` agree with the token's, in order.
    pub fn verify(
        &self,
        alg: &str,
        kid: Option<&str>,
        signed: &[u8],
        signature: &[u8],
    ) -> Verified {
        let mut matched = false;
        for jwk in &self.keys {
            if let (Some(want), Some(have)) = (kid, jwk.kid.as_deref()) {
                if want != have {
                    continue;
                }
            }
            if jwk.alg.as_deref().is_some_and(|a| a != alg) {
                continue;
            }
            matched = true;
            match &jwk.key {
                JwkKey::Ed25519 { x } => {
                    if signature.len() != 64 {
                        return Verified::Ed25519WrongLength;
                    }
                    let key = signature::UnparsedPublicKey::new(&signature::ED25519, x);
                    if key.verify(signed, signature).is_ok() {
                        return Verified::Ok;
                    }
                }
                key => {
                    if verify_with(key, alg, signed, signature) {
                        return Verified::Ok;
                    }
                }
            }
        }
        if matched {
            Verified::Fails
        } else {
            Verified::KidAlgMismatch
        }
    }
}

/// One signature check with one key; the digest follows the token's `alg`
/// as in Envoy (an unknown suffix is SHA-256).
fn verify_with(key: &JwkKey, alg: &str, signed: &[u8], sig: &[u8]) -> bool {
    let bits = match &alg.get(2..) {
        Some("384") => 384,
        Some("512") => 512,
        _ => 256,
    };
    match key {
        JwkKey::Rsa { n, e } => {
            let params: &signature::RsaParameters = match (alg.get(..2), bits) {
                (Some("RS"), 384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (Some("RS"), 512) => &signature::RSA_PKCS1_2048_8192_SHA512,
                (Some("RS"), _) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (Some("PS"), 384) => &signature::RSA_PSS_2048_8192_SHA384,
                (Some("PS"), 512) => &signature::RSA_PSS_2048_8192_SHA512,
                (Some("PS"), _) => &signature::RSA_PSS_2048_8192_SHA256,
                _ => return false,
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, signed, sig)
                .is_ok()
        }
        JwkKey::Ec { curve, point } => {
            let algorithm = match (curve, bits) {
                (EcCurve::P256, 256) => &signature::ECDSA_P256_SHA256_FIXED,
                (EcCurve::P384, 384) => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return false,
            };
            signature::UnparsedPublicKey::new(algorithm, point)
                .verify(signed, sig)
                .is_ok()
        }
        JwkKey::Oct { k } => {
            let algorithm = match bits {
                384 => hmac::HMAC_SHA384,
                512 => hmac::HMAC_SHA512,
                _ => hmac::HMAC_SHA256,
            };
            hmac::verify(&hmac::Key::new(algorithm, k), signed, sig).is_ok()
        }
        JwkKey::Ed25519 { .. } => false,
    }
}

/// One key (`extractJwk`): Envoy's checks and messages.
fn parse_key(value: &serde_json::Value) -> Result<Jwk, &'static str> {
    let Some(object) = value.as_object() else {
        return Err("[kty] is missing in [keys]");
    };
    let text = |name: &str, missing: &'static str, bad: &'static str| match object.get(name) {
        None => Err(missing),
        Some(serde_json::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(bad),
    };
    let optional = |name: &str| {
        object
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let bytes = |s: &str, bad: &'static str| BASE64URL.decode(s).map_err(|_| bad);
    let kty = text(
        "kty",
        "[kty] is missing in [keys]",
        "[kty] is bad in [keys]",
    )?;
    let alg = optional("alg");
    let has_private = object.contains_key("d");
    let alg_starts = |prefix: &str| alg.as_deref().is_none_or(|a| a.starts_with(prefix));
    let key = match kty {
        "RSA" => {
            if !alg_starts("RS") && !alg_starts("PS") {
                return Err("[alg] is not started with [RS] or [PS] for an RSA key");
            }
            let n = text(
                "n",
                "[n] field is missing for a RSA key",
                "[n] field is not string for a RSA key",
            )?;
            let e = text(
                "e",
                "[e] field is missing for a RSA key",
                "[e] field is not string for a RSA key",
            )?;
            let error = "Jwks RSA [n] or [e] field is missing or has a parse error";
            JwkKey::Rsa {
                n: bytes(n, error)?,
                e: bytes(e, error)?,
            }
        }
        "EC" => {
            if !alg_starts("ES") {
                return Err("[alg] is not started with [ES] for an EC key");
            }
            let crv = match object.get("crv") {
                None => None,
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err("[crv] field is not string for an EC key"),
            };
            let curve = match (crv, alg.as_deref()) {
                (Some("P-256"), None | Some("ES256")) | (None, Some("ES256") | None) => {
                    EcCurve::P256
                }
                (Some("P-384"), None | Some("ES384")) | (None, Some("ES384")) => EcCurve::P384,
                (Some("P-521"), None | Some("ES512")) | (None, Some("ES512")) => EcCurve::P521,
                (Some("P-256" | "P-384" | "P-521"), Some("ES256" | "ES384" | "ES512")) => {
                    return Err("[crv] field specified is not compatible with [alg] for an EC key");
                }
                _ => return Err("[crv] or [alg] field is not supported for an EC key"),
            };
            let x = text(
                "x",
                "[x] field is missing for an EC key",
                "[x] field is not string for an EC key",
            )?;
            let y = text(
                "y",
                "[y] field is missing for an EC key",
                "[y] field is not string for an EC key",
            )?;
            let bad = "Jwks EC [x] or [y] field is an invalid Base64.";
            let mut point = vec![4];
            point.extend(bytes(x, bad)?);
            point.extend(bytes(y, bad)?);
            JwkKey::Ec { curve, point }
        }
        "oct" => {
            if !alg_starts("HS") {
                return Err("[alg] does not start with [HS] for an HMAC key");
            }
            let k = text(
                "k",
                "[k] field is missing for an HMAC key",
                "[k] field is not string for an HMAC key",
            )?;
            JwkKey::Oct {
                k: bytes(k, "Jwks Oct key is an invalid Base64")?,
            }
        }
        "OKP" => {
            if alg.as_deref().is_some_and(|a| a != "EdDSA") {
                return Err("[alg] is not [EdDSA] for an OKP key");
            }
            let crv = text(
                "crv",
                "[crv] field is missing for an OKP key",
                "[crv] field is not string for an OKP key",
            )?;
            if crv != "Ed25519" {
                return Err("[crv] field is not supported for an OKP key");
            }
            let x = text(
                "x",
                "[x] field is missing for an OKP key",
                "[x] field is not string for an OKP key",
            )?;
            let x = bytes(x, "Jwks OKP [x] field is an invalid Base64.")?;
            if x.len() != 32 {
                return Err("Jwks OKP [x] field is wrong length.");
            }
            JwkKey::Ed25519 { x }
        }
        _ => return Err("[kty] is not supported in [keys]"),
    };
    let private = has_private || matches!(key, JwkKey::Oct { .. });
    Ok(Jwk {
        kid: optional("kid"),
        alg,
        key,
        private,
    })
}

#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;
