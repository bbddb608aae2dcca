//! RequestAuthentications to JWT providers: those that attach to this
//! gateway (workload namespace, then the root namespace), their rules
//! concatenated and ordered by issuer (`policy_applier.go`
//! `newPolicyApplier`, `convertToEnvoyJwtConfig`).
use crate::{
    model::{DEFAULT_ROOT_NAMESPACE, Instance, JwtRule, Model, RequestAuthentication},
    plan::{JwtProvider, TokenLocation, default_locations},
};

/// The providers the proxy validates tokens with; empty when no
/// RequestAuthentication applies (no JWT phase at all).
pub(crate) fn providers(model: &Model, instance: &Instance) -> Vec<JwtProvider> {
    let mut policies: Vec<&RequestAuthentication> = model
        .request_authentications
        .iter()
        .filter(|p| {
            p.target.applies_to(
                &p.namespace,
                &instance.labels,
                &instance.namespace,
                DEFAULT_ROOT_NAMESPACE,
            )
        })
        .collect();
    // `getConfigsForWorkload` lists the workload's namespace, then the root.
    policies.sort_by_key(|p| (p.namespace != instance.namespace, &p.namespace, &p.name));
    let mut rules: Vec<&JwtRule> = policies.iter().flat_map(|p| &p.jwt_rules).collect();
    // Istio sorts with an unstable sort; equal issuers keep their order here.
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    rules.into_iter().map(provider).collect()
}

fn provider(rule: &JwtRule) -> JwtProvider {
    let mut locations: Vec<TokenLocation> = rule
        .from_headers
        .iter()
        .map(|h| TokenLocation::Header {
            name: h.name.clone(),
            prefix: h.prefix.clone(),
        })
        .chain(rule.from_params.iter().cloned().map(TokenLocation::Param))
        .chain(rule.from_cookies.iter().cloned().map(TokenLocation::Cookie))
        .collect();
    if locations.is_empty() {
        locations = default_locations();
    }
    let mut space_delimited_claims = rule.space_delimited_claims.clone();
    space_delimited_claims.extend(["permission".to_string(), "scope".to_string()]);
    space_delimited_claims.sort();
    space_delimited_claims.dedup();
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks: rule.jwks.clone(),
        timeout: rule.timeout,
        locations,
        output_payload_to_header: rule.output_payload_to_header.clone(),
        forward: rule.forward_original_token,
        claim_to_headers: rule.output_claim_to_headers.clone(),
        space_delimited_claims,
    }
}

#[cfg(test)]
mod tests;
