//! JWT validation as planned: the `jwt_authn` providers Istio builds from
//! every RequestAuthentication that applies to the gateway
//! (`policy_applier.go` `convertToEnvoyJwtConfig`), typed for the proxy.
use std::time::Duration;

pub use crate::model::{ClaimToHeader, Jwk, JwkKey, Jwks, JwksSource, Verified};

/// One provider (Envoy's `origins-<i>`), in Istio's order (by issuer).
#[derive(Clone, Debug, PartialEq)]
pub struct JwtProvider {
    /// `iss` the token must carry; empty: any.
    pub issuer: String,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// The JWKS fetch timeout.
    pub timeout: Duration,
    /// Where tokens are read, Envoy's defaults filled in.
    pub locations: Vec<TokenLocation>,
    pub output_payload_to_header: Option<String>,
    /// `forwardOriginalToken`: false removes a header token once verified.
    pub forward: bool,
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose space-delimited string becomes a list in the payload
    /// authorization reads: always `permission` and `scope`; sorted.
    pub space_delimited_claims: Vec<String>,
}

/// A place a token is read from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenLocation {
    /// A header (lower case); the token follows `prefix` when one is set,
    /// and the header is skipped when the prefix is not in its value.
    Header {
        name: String,
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    Cookie(String),
}

/// Envoy's locations when a provider names none (`extractor.cc`).
pub fn default_locations() -> Vec<TokenLocation> {
    vec![
        TokenLocation::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        TokenLocation::Param("access_token".into()),
    ]
}
