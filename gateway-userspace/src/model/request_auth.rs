//! `security.istio.io` RequestAuthentication as decoded: which JWTs the
//! gateway validates (Istio's `policy_applier.go` turns each `jwtRules`
//! entry into an Envoy `jwt_authn` provider). The facts are in
//! docs/security-policy.md.
use std::{sync::Arc, time::Duration};

use super::{Jwks, PolicyTarget};

/// A RequestAuthentication that passed decoding and Istio's validation.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestAuthentication {
    pub namespace: String,
    pub name: String,
    pub target: PolicyTarget,
    pub jwt_rules: Vec<JwtRule>,
}

/// One `jwtRules` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtRule {
    /// `iss` a token must carry; empty: any (Envoy's provider without issuer).
    pub issuer: String,
    /// Empty: `aud` is not checked (Envoy; the proto's "service name" rule
    /// is not in Istio's source).
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where tokens are read; all empty: Envoy's defaults.
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    pub forward_original_token: bool,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// The JWKS fetch's timeout (Istio's default 5 s).
    pub timeout: Duration,
    /// Claims besides `scope` and `permission` whose space-delimited
    /// string is turned into a list for authorization.
    pub space_delimited_claims: Vec<String>,
}

/// Where a rule's keys come from.
#[derive(Clone, Debug, PartialEq)]
pub enum JwksSource {
    /// `jwks`, parsed when read (it wins over `jwksUri`, as in istiod's
    /// default fetch mode).
    Inline(Arc<Jwks>),
    /// `jwksUri`.
    Uri(String),
    /// Only `issuer`: OIDC discovery (`<issuer>/.well-known/openid-configuration`).
    Discovery,
}

/// `fromHeaders[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtHeader {
    /// Lower-cased (header names are case-insensitive).
    pub name: String,
    /// Searched for in the value; the token follows it.
    pub prefix: String,
}

/// `outputClaimToHeaders[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimToHeader {
    pub header: String,
    /// A claim name; `a.b` reads a nested claim.
    pub claim: String,
}

/// Istio's default JWKS fetch timeout (`policy_applier.go`).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
