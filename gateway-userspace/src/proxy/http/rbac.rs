//! The authorization phase of a request: Envoy's RBAC filters as Istio
//! places them, after JWT validation and before routing, so a denied
//! client gets 403 `RBAC: access denied` whatever the host or path.
use hyper::{Request, Response, StatusCode, body::Incoming};
use serde_json::{Map, Value};

use super::headers::client_address;
use crate::proxy::{
    access_log::Entry,
    authz::{self, Attributes, HttpAttributes},
    body::{ProxyBody, local},
    context::{Downstream, Shared},
};

/// Envoy's response code details for an RBAC denial; the access log adds
/// the matched policy id in brackets.
pub(crate) const RBAC_DENIED: &str = "rbac_access_denied_matched_policy";

/// The request's decision; `Some` is the 403 to answer. Audited and
/// dry-run matches are logged, every decision is counted per policy.
pub(super) fn authorize(
    shared: &Shared,
    downstream: &Downstream,
    req: &Request<Incoming>,
    authority: &str,
    path: &str,
    jwt: Option<&Map<String, Value>>,
    entry: &mut Entry,
) -> Option<Response<ProxyBody>> {
    let engine = &shared.authorizer.http;
    if engine.is_empty() {
        return None;
    }
    let attributes = Attributes {
        peer: downstream.remote.ip(),
        remote: client_address(req.headers(), downstream, shared.trusted_proxies),
        local: downstream.local,
        sni: downstream.sni.as_deref(),
        http: Some(HttpAttributes {
            authority,
            method: req.method().as_str(),
            path,
            headers: req.headers(),
            jwt,
        }),
    };
    let decision = engine.decide(&attributes);
    authz::metrics::record("http", &decision);
    authz::log_shadow(&decision, || {
        format!(
            "{} {authority}{path} from {}",
            req.method(),
            attributes.remote
        )
    });
    let denied = decision.denied?;
    entry.details = Some(RBAC_DENIED);
    entry.rbac_denied = Some(denied.id);
    Some(local(StatusCode::FORBIDDEN, authz::DENIED_BODY))
}
