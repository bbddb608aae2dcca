//! The JWT phase: Envoy's `jwt_authn` filter as Istio configures it for a
//! RequestAuthentication (`policy_applier.go` `convertToEnvoyJwtConfig`;
//! Envoy `source/extensions/filters/http/jwt_authn/{filter,verifier,
//! authenticator,extractor}.cc`, `source/common/jwt/{jwt,verify}.cc`).
//!
//! The requirement Istio builds is `requires_any[origins-0..N-1,
//! requires_all[requires_any[origins-i, allow_missing]...]]` (one provider:
//! `requires_any[origins-0, allow_missing]`): a request without a token
//! passes, a token that fails is refused.
use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    header::{self, HeaderName, HeaderValue},
};
use serde_json::{Map, Value};

use super::super::{
    access_log::Entry,
    body::{ProxyBody, local},
    context::Shared,
};
use crate::model::BASE64URL;
use crate::plan::{JwksSource, JwtProvider, TokenLocation, Verified};

/// A verified token's payload, as authorization reads it (`scope`,
/// `permission` and `spaceDelimitedClaims` turned into lists).
pub type Claims = Arc<Map<String, Value>>;

/// A provider's current key set: `None` until fetched (every token then
/// fails: fail closed). Swapped whole on refresh.
pub type KeyCell = Arc<RwLock<Option<Arc<crate::plan::Jwks>>>>;

/// Envoy's default clock skew for `exp` and `nbf` (`kClockSkewInSecond`).
const CLOCK_SKEW_SECS: u64 = 60;

/// Envoy's cap on the path in the `WWW-Authenticate` realm.
const MAX_REALM_PATH: usize = 256;

/// The JWT phase of one plan.
#[derive(Debug)]
pub struct JwtAuthn {
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Provider {
    plan: JwtProvider,
    keys: KeyCell,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
}

/// Why a token was refused: Envoy's statuses (`status.cc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtStatus {
    Missing,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    IatOutOfRange,
    NbfNotInteger,
    NbfOutOfRange,
    ExpNotInteger,
    ExpOutOfRange,
    JtiNotString,
    AudNotString,
    SignatureBadBase64,
    UnknownIssuer,
    NotYetValid,
    Expired,
    AudienceNotAllowed,
    VerificationFail,
    KidAlgMismatch,
    Ed25519WrongLength,
}

impl JwtStatus {
    /// The body Envoy answers with.
    pub fn text(self) -> &'static str {
        self.strings().0
    }

    /// The response code details (`jwt_authn_access_denied{..}`, spaces
    /// as `_`).
    pub fn details(self) -> &'static str {
        self.strings().1
    }

    fn strings(self) -> (&'static str, &'static str) {
        macro_rules! s {
            ($text:literal, $details:literal) => {
                ($text, concat!("jwt_authn_access_denied{", $details, "}"))
            };
        }
        match self {
            Self::Missing => s!("Jwt is missing", "Jwt_is_missing"),
            Self::BadFormat => s!(
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
                "Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections"
            ),
            Self::HeaderBadBase64 => s!(
                "Jwt header is an invalid Base64url encoded",
                "Jwt_header_is_an_invalid_Base64url_encoded"
            ),
            Self::HeaderBadJson => s!(
                "Jwt header is an invalid JSON",
                "Jwt_header_is_an_invalid_JSON"
            ),
            Self::HeaderBadAlg => s!(
                "Jwt header [alg] field is required and must be a string",
                "Jwt_header_[alg]_field_is_required_and_must_be_a_string"
            ),
            Self::HeaderNotImplementedAlg => s!(
                "Jwt header [alg] is not supported",
                "Jwt_header_[alg]_is_not_supported"
            ),
            Self::HeaderBadKid => s!(
                "Jwt header [kid] field is not a string",
                "Jwt_header_[kid]_field_is_not_a_string"
            ),
            Self::PayloadBadBase64 => s!(
                "Jwt payload is an invalid Base64url encoded",
                "Jwt_payload_is_an_invalid_Base64url_encoded"
            ),
            Self::PayloadBadJson => s!(
                "Jwt payload is an invalid JSON",
                "Jwt_payload_is_an_invalid_JSON"
            ),
            Self::IssNotString => s!(
                "Jwt payload [iss] field is not a string",
                "Jwt_payload_[iss]_field_is_not_a_string"
            ),
            Self::SubNotString => s!(
                "Jwt payload [sub] field is not a string",
                "Jwt_payload_[sub]_field_is_not_a_string"
            ),
            Self::IatNotInteger => s!(
                "Jwt payload [iat] field is not an integer",
                "Jwt_payload_[iat]_field_is_not_an_integer"
            ),
            Self::IatOutOfRange => s!(
                "Jwt payload [iat] field is not a positive 64 bit integer",
                "Jwt_payload_[iat]_field_is_not_a_positive_64_bit_integer"
            ),
            Self::NbfNotInteger => s!(
                "Jwt payload [nbf] field is not an integer",
                "Jwt_payload_[nbf]_field_is_not_an_integer"
            ),
            Self::NbfOutOfRange => s!(
                "Jwt payload [nbf] field is not a positive 64 bit integer",
                "Jwt_payload_[nbf]_field_is_not_a_positive_64_bit_integer"
            ),
            Self::ExpNotInteger => s!(
                "Jwt payload [exp] field is not an integer",
                "Jwt_payload_[exp]_field_is_not_an_integer"
            ),
            Self::ExpOutOfRange => s!(
                "Jwt payload [exp] field is not a positive 64 bit integer",
                "Jwt_payload_[exp]_field_is_not_a_positive_64_bit_integer"
            ),
            Self::JtiNotString => s!(
                "Jwt payload [jti] field is not a string",
                "Jwt_payload_[jti]_field_is_not_a_string"
            ),
            Self::AudNotString => s!(
                "Jwt payload [aud] field is not a string or string list",
                "Jwt_payload_[aud]_field_is_not_a_string_or_string_list"
            ),
            Self::SignatureBadBase64 => s!(
                "Jwt signature is an invalid Base64url encoded",
                "Jwt_signature_is_an_invalid_Base64url_encoded"
            ),
            Self::UnknownIssuer => s!(
                "Jwt issuer is not configured",
                "Jwt_issuer_is_not_configured"
            ),
            Self::NotYetValid => s!("Jwt not yet valid", "Jwt_not_yet_valid"),
            Self::Expired => s!("Jwt is expired", "Jwt_is_expired"),
            Self::AudienceNotAllowed => s!(
                "Audiences in Jwt are not allowed",
                "Audiences_in_Jwt_are_not_allowed"
            ),
            Self::VerificationFail => s!("Jwt verification fails", "Jwt_verification_fails"),
            Self::KidAlgMismatch => s!(
                "Jwks doesn't have key to match kid or alg from Jwt",
                "Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt"
            ),
            Self::Ed25519WrongLength => s!(
                "Jwt ED25519 signature is wrong length",
                "Jwt_ED25519_signature_is_wrong_length"
            ),
        }
    }

    /// Envoy's answer: 403 for an audience not allowed, else 401.
    pub fn status_code(self) -> StatusCode {
        match self {
            Self::AudienceNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A token as parsed (`Jwt::parseFromString`).
#[derive(Debug)]
struct Jwt<'t> {
    signed: String,
    payload_b64: &'t str,
    alg: String,
    kid: Option<String>,
    iss: String,
    audiences: Vec<String>,
    nbf: u64,
    exp: u64,
    payload: Map<String, Value>,
    signature: Vec<u8>,
}

const IMPLEMENTED_ALGS: &[&str] = &[
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

fn parse(token: &str) -> Result<Jwt<'_>, JwtStatus> {
    // `absl::StrSplit(.., SkipEmpty())`: empty sections do not count.
    let parts: Vec<&str> = token.split('.').filter(|s| !s.is_empty()).collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(JwtStatus::BadFormat);
    };
    let header = BASE64URL
        .decode(header_b64)
        .map_err(|_| JwtStatus::HeaderBadBase64)?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else {
        return Err(JwtStatus::HeaderBadJson);
    };
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(JwtStatus::HeaderBadAlg);
    };
    if !IMPLEMENTED_ALGS.contains(&alg.as_str()) {
        return Err(JwtStatus::HeaderNotImplementedAlg);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtStatus::HeaderBadKid),
    };
    let payload = BASE64URL
        .decode(payload_b64)
        .map_err(|_| JwtStatus::PayloadBadBase64)?;
    let Ok(Value::Object(payload)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(JwtStatus::PayloadBadJson);
    };
    let string = |name: &str, bad| match payload.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad),
    };
    let iss = string("iss", JwtStatus::IssNotString)?;
    string("sub", JwtStatus::SubNotString)?;
    // `StructUtils::GetUInt64`: JSON numbers are doubles; negative or past
    // u64 is out of range, a fraction is dropped.
    let number = |name: &str, not_integer, out_of_range| match payload.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(v),
            (None, Some(f)) if f < 0.0 || f >= u64::MAX as f64 => Err(out_of_range),
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked in range above; the fraction is dropped as Envoy's cast drops it"
            )]
            (None, Some(f)) => Ok(f as u64),
            _ => Err(not_integer),
        },
        Some(_) => Err(not_integer),
    };
    number("iat", JwtStatus::IatNotInteger, JwtStatus::IatOutOfRange)?;
    let nbf = number("nbf", JwtStatus::NbfNotInteger, JwtStatus::NbfOutOfRange)?;
    let exp = number("exp", JwtStatus::ExpNotInteger, JwtStatus::ExpOutOfRange)?;
    string("jti", JwtStatus::JtiNotString)?;
    let audiences = match payload.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtStatus::AudNotString)?,
        Some(_) => return Err(JwtStatus::AudNotString),
    };
    let signature = BASE64URL
        .decode(signature_b64)
        .map_err(|_| JwtStatus::SignatureBadBase64)?;
    Ok(Jwt {
        // Envoy rebuilds it from the parts (empty sections were skipped).
        signed: format!("{header_b64}.{payload_b64}"),
        payload_b64,
        alg: alg.clone(),
        kid,
        iss,
        audiences,
        nbf,
        exp,
        payload,
        signature,
    })
}

/// `CheckAudience`: `http(s)://` and a trailing `/` are ignored on both sides.
fn audiences_allowed(allowed: &[String], audiences: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let sanitize = |a: &str| -> String {
        let a = a
            .strip_prefix("http://")
            .or_else(|| a.strip_prefix("https://"))
            .unwrap_or(a);
        a.strip_suffix('/').unwrap_or(a).to_string()
    };
    let allowed: Vec<String> = allowed.iter().map(|a| sanitize(a)).collect();
    audiences.iter().any(|a| allowed.contains(&sanitize(a)))
}

/// A token found in a request and the issuers allowed at its location.
struct Found<'l> {
    token: String,
    location: &'l TokenLocation,
    /// Issuers of the providers that read this location; `None` in it: any.
    issuers: Vec<&'l str>,
}

impl JwtAuthn {
    /// The phase for `providers`; `None` when there are none. Keys of
    /// providers with a URI or discovery are fetched by [`super::super::jwks`].
    pub fn new(providers: &[JwtProvider]) -> Option<Self> {
        if providers.is_empty() {
            return None;
        }
        let providers = providers
            .iter()
            .map(|plan| {
                let keys = match &plan.jwks {
                    JwksSource::Inline(jwks) => Some(Arc::clone(jwks)),
                    _ => None,
                };
                Provider {
                    keys: Arc::new(RwLock::new(keys)),
                    payload_header: plan
                        .output_payload_to_header
                        .as_deref()
                        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
                    claim_headers: plan
                        .claim_to_headers
                        .iter()
                        .filter_map(|c| {
                            HeaderName::from_bytes(c.header.as_bytes())
                                .ok()
                                .map(|h| (h, c.claim.clone()))
                        })
                        .collect(),
                    plan: plan.clone(),
                }
            })
            .collect();
        Some(Self { providers })
    }

    /// The providers whose keys are fetched, with the cell a fetch fills.
    pub fn fetched(&self) -> impl Iterator<Item = (&JwtProvider, &KeyCell)> {
        self.providers
            .iter()
            .filter(|p| !matches!(p.plan.jwks, JwksSource::Inline(_)))
            .map(|p| (&p.plan, &p.keys))
    }

    /// The phase: `Ok` with the verified payload (or none: no token, a CORS
    /// preflight), or Envoy's answer.
    #[expect(
        clippy::result_large_err,
        reason = "the error is the request's answer, returned once to the caller, never propagated"
    )]
    pub fn authenticate<B>(
        &self,
        req: &mut Request<B>,
        scheme: &str,
        entry: &mut Entry,
    ) -> Result<Option<Claims>, Response<ProxyBody>> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        match self.check(req, now) {
            Ok(claims) => {
                super::super::metrics::jwt_outcome(true);
                Ok(claims)
            }
            Err(status) => {
                super::super::metrics::jwt_outcome(false);
                entry.details = Some(status.details());
                Err(reject(status, req, scheme))
            }
        }
    }

    /// The decision at `now` (seconds since the epoch).
    fn check<B>(&self, req: &mut Request<B>, now: u64) -> Result<Option<Claims>, JwtStatus> {
        // `sanitizePayloadHeaders`: what the phase writes is never taken
        // from the client.
        for provider in &self.providers {
            if let Some(name) = &provider.payload_header {
                req.headers_mut().remove(name);
            }
            for (name, _) in &provider.claim_headers {
                req.headers_mut().remove(name);
            }
        }
        if is_cors_preflight(req) {
            return Ok(None);
        }
        // `origins-i`: a provider whose every token verifies passes the request.
        for (index, provider) in self.providers.iter().enumerate() {
            let found = extract(
                req,
                [(provider.plan.issuer.as_str(), &provider.plan.locations)],
            );
            if found.is_empty() {
                continue;
            }
            let mut payload = None;
            let mut failed = false;
            for token in found.iter().rev() {
                match self.verify(req, token, Some(index), now) {
                    Ok(claims) => payload = Some(claims),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                return Ok(payload);
            }
        }
        // `requires_all[requires_any[origins-i, allow_missing]...]`: the
        // tokens at each provider's locations, verified by issuer; the last
        // one verified decides (Envoy's allow_missing authenticator).
        let mut payload = None;
        for provider in &self.providers {
            let found = extract(
                req,
                [(provider.plan.issuer.as_str(), &provider.plan.locations)],
            );
            let mut last = Ok(());
            for token in found.iter().rev() {
                match self.verify(req, token, None, now) {
                    Ok(claims) => {
                        payload = Some(claims);
                        last = Ok(());
                    }
                    Err(status) => last = Err(status),
                }
            }
            last?;
        }
        Ok(payload)
    }

    /// One token through Envoy's authenticator (`startVerify`): parse,
    /// issuer, time, audiences, signature; on success the payload header,
    /// claim headers and the token's removal.
    fn verify<B>(
        &self,
        req: &mut Request<B>,
        found: &Found<'_>,
        provider: Option<usize>,
        now: u64,
    ) -> Result<Claims, JwtStatus> {
        let jwt = parse(&found.token)?;
        let allowed = found.issuers.iter().any(|i| i.is_empty() || *i == jwt.iss);
        if !allowed {
            return Err(JwtStatus::UnknownIssuer);
        }
        let provider = match provider {
            Some(index) => self.providers.get(index),
            // `findByIssuer`: the first provider with the issuer, else the
            // first without one.
            None => self
                .providers
                .iter()
                .find(|p| p.plan.issuer == jwt.iss)
                .or_else(|| self.providers.iter().find(|p| p.plan.issuer.is_empty())),
        }
        .ok_or(JwtStatus::UnknownIssuer)?;
        if now + CLOCK_SKEW_SECS < jwt.nbf {
            return Err(JwtStatus::NotYetValid);
        }
        if jwt.exp != 0 && now > jwt.exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(JwtStatus::Expired);
        }
        if !audiences_allowed(&provider.plan.audiences, &jwt.audiences) {
            return Err(JwtStatus::AudienceNotAllowed);
        }
        let keys = provider
            .keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        // No key set fetched yet: fail closed, as istiod's PublicOnlyJwks.
        let Some(keys) = keys else {
            return Err(JwtStatus::VerificationFail);
        };
        match keys.verify(
            &jwt.alg,
            jwt.kid.as_deref(),
            jwt.signed.as_bytes(),
            &jwt.signature,
        ) {
            Verified::Ok => {}
            Verified::Fails => return Err(JwtStatus::VerificationFail),
            Verified::KidAlgMismatch => return Err(JwtStatus::KidAlgMismatch),
            Verified::Ed25519WrongLength => return Err(JwtStatus::Ed25519WrongLength),
        }
        let headers = req.headers_mut();
        if let Some(name) = &provider.payload_header {
            if let Ok(value) = HeaderValue::from_str(jwt.payload_b64) {
                headers.append(name.clone(), value);
            }
        }
        for (name, claim) in &provider.claim_headers {
            if let Some(value) = claim_text(&jwt.payload, claim) {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.append(name.clone(), value);
                }
            }
        }
        if !provider.plan.forward {
            // Only a header token is removed (Envoy's query removal is newer
            // than the behaviour documented here; cookies never).
            if let TokenLocation::Header { name, .. } = found.location {
                headers.remove(name.as_str());
            }
        }
        Ok(Arc::new(normalize(
            jwt.payload,
            &provider.plan.space_delimited_claims,
        )))
    }
}

/// The phase as the request path calls it: nothing to do without providers.
#[expect(
    clippy::result_large_err,
    reason = "the error is the request's answer, returned once to the caller, never propagated"
)]
pub(super) fn phase<B>(
    shared: &Shared,
    req: &mut Request<B>,
    scheme: &str,
    entry: &mut Entry,
) -> Result<Option<Claims>, Response<ProxyBody>> {
    match &shared.jwt {
        None => Ok(None),
        Some(authn) => authn.authenticate(req, scheme, entry),
    }
}

/// `bypass_cors_preflight`: OPTIONS with `Origin` and
/// `Access-Control-Request-Method`, both non-empty.
fn is_cors_preflight<B>(req: &Request<B>) -> bool {
    let present = |name| {
        req.headers()
            .get(name)
            .is_some_and(|v: &HeaderValue| !v.is_empty())
    };
    req.method() == Method::OPTIONS
        && present(header::ORIGIN)
        && present(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The tokens at `locations` (Envoy's extractor: headers, then query
/// parameters, then cookies, each sorted by name).
fn extract<'l, B, const N: usize>(
    req: &Request<B>,
    providers: [(&'l str, &'l Vec<TokenLocation>); N],
) -> Vec<Found<'l>> {
    let mut locations: Vec<(&'l TokenLocation, Vec<&'l str>)> = Vec::new();
    for (issuer, list) in providers {
        for location in list {
            match locations.iter_mut().find(|(l, _)| *l == location) {
                Some((_, issuers)) => issuers.push(issuer),
                None => locations.push((location, vec![issuer])),
            }
        }
    }
    locations.sort_by(|a, b| a.0.cmp(b.0));
    let mut found = Vec::new();
    for (location, issuers) in locations {
        let mut push = |token: String| {
            found.push(Found {
                token,
                location,
                issuers: issuers.clone(),
            });
        };
        match location {
            TokenLocation::Header { name, prefix } => {
                for value in req.headers().get_all(name.as_str()) {
                    let Ok(value) = value.to_str() else {
                        continue;
                    };
                    if prefix.is_empty() {
                        push(value.to_string());
                        continue;
                    }
                    let Some(at) = value.find(prefix.as_str()) else {
                        continue;
                    };
                    push(token_after(value, at + prefix.len()).to_string());
                }
            }
            TokenLocation::Param(name) => {
                if let Some(value) = query_param(req.uri().query().unwrap_or(""), name) {
                    push(value);
                }
            }
            TokenLocation::Cookie(name) => {
                if let Some(value) = cookie(req.headers(), name) {
                    push(value);
                }
            }
        }
    }
    found
}

/// `extractJWT`: from the first base64url character or dot after the
/// prefix to the end; the whole value when there is none.
fn token_after(value: &str, after: usize) -> &str {
    let rest = value.get(after..).unwrap_or("");
    match rest.find(|c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Some(start) => &rest[start..],
        None => value,
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cookie `name` (the first one sent), quotes around the value removed.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_string()
            })
        })
}

/// A claim as `outputClaimToHeaders` writes it: strings as they are,
/// numbers as Envoy prints them, booleans; `a.b` reads nested objects.
fn claim_text(payload: &Map<String, Value>, claim: &str) -> Option<String> {
    let mut parts = claim.split('.');
    let mut value = payload.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => v.to_string(),
            // `convertClaimDoubleToString`: `std::to_string(double)`.
            (None, Some(f)) => format!("{f:.6}"),
            _ => return None,
        },
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// `normalize_payload_in_metadata`: each listed claim holding a string
/// becomes the list of its space-separated words.
fn normalize(mut payload: Map<String, Value>, claims: &[String]) -> Map<String, Value> {
    for claim in claims {
        if let Some(Value::String(text)) = payload.get(claim) {
            let words = text
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| Value::String(w.to_string()))
                .collect();
            payload.insert(claim.clone(), Value::Array(words));
        }
    }
    payload
}

/// Envoy's local reply: the status text as the body and
/// `WWW-Authenticate: Bearer realm="<scheme>://<host><path>"`, with
/// `error="invalid_token"` unless the token was missing.
fn reject<B>(status: JwtStatus, req: &Request<B>, scheme: &str) -> Response<ProxyBody> {
    let mut response = local(status.status_code(), status.text());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let path = req.uri().path_and_query().map_or("", |p| p.as_str());
    let path = path.get(..MAX_REALM_PATH.min(path.len())).unwrap_or(path);
    let mut value = format!("Bearer realm=\"{scheme}://{host}{path}\"");
    if status != JwtStatus::Missing {
        value.push_str(", error=\"invalid_token\"");
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests;
