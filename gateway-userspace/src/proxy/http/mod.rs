//! The HTTP request path, plaintext or after TLS termination: head checks,
//! the gateway's forwarding headers, virtual host and route selection, and
//! the route's action (forward, redirect, direct response), with one
//! access-log entry per request.
//!
//! Per request, in order ([`handle`]): the log entry opened; the host
//! phase (`select_host`: head checks, the virtual host, the HTTPS
//! redirect); the route phase (`route_request`: path normalisation,
//! forwarding headers, the route's match); the action (`act`: redirect,
//! direct response, or the upstream phase in `forward.rs`); the response's
//! headers; and the log phase when the response body ends (`bodies.rs`).
//! Header work is in `headers.rs`.
mod bodies;
mod cors;
mod fault;
mod forward;
mod hash_key;
mod headers;
pub mod jwt;
mod mirror;
mod rbac;
mod replay;
mod retry;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Instant, SystemTime},
};

use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode, Version,
    body::Incoming,
    header::{self, HeaderValue},
};

use self::{
    bodies::{Logged, Pending, Unanswered},
    forward::{Target, forward},
    hash_key::Ends,
    headers::{
        X_FORWARDED_FOR, X_REQUEST_ID, apply_header_operations, authority_of, client_address,
        forwarded_proto, header_text, protocol_name, set_forwarding_headers,
    },
};
use super::{
    access_log::Entry,
    body::{ProxyBody, local, redirect_response},
    context::{Downstream, Shared},
    redirect::{self, Answer, RequestHead},
    rewrite::{self, RedirectRequest},
    route::{RequestFacts, Routed},
};
use crate::plan::RouteAction;

pub use super::route::{RoutesError, VirtualHosts};

pub(super) const SERVER_HEADER: &str = "xdp-gateway";

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    hosts: Arc<VirtualHosts>,
    downstream: Arc<Downstream>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let logging = shared.access_log.enabled();
    // The text fields only when the log line is written; the metrics need
    // the rest, which every request fills in.
    let entry = if logging {
        Entry {
            start: Some(SystemTime::now()),
            method: Some(req.method().to_string()),
            path: req.uri().path_and_query().map(|p| p.as_str().to_string()),
            protocol: Some(protocol_name(req.version())),
            user_agent: header_text(req.headers(), &header::USER_AGENT),
            downstream_local: Some(downstream.local),
            downstream_remote: Some(downstream.remote),
            sni: downstream.sni.clone(),
            workload_interface: downstream.workload_interface.clone(),
            ..Entry::default()
        }
    } else {
        // A claimed connection's requests are counted in the egress
        // metrics, by workload, interface and host, log or no log.
        let claimed = downstream.keeps_authority();
        Entry {
            protocol: Some(protocol_name(req.version())),
            workload_interface: downstream.workload_interface.clone(),
            downstream_remote: claimed.then_some(downstream.remote),
            downstream_local: claimed.then_some(downstream.local),
            sni: downstream.sni.clone().filter(|_| claimed),
            ..Entry::default()
        }
    };
    let received = Arc::new(AtomicU64::new(0));
    let mut unanswered = Unanswered(Some(Pending {
        entry,
        started,
        received: Arc::clone(&received),
        shared,
    }));
    let Some(pending) = unanswered.0.as_mut() else {
        return local(StatusCode::INTERNAL_SERVER_ERROR, "");
    };
    let mut response = route_request(
        &pending.shared,
        &hosts,
        &downstream,
        req,
        &mut pending.entry,
        Some(&received),
    )
    .await;
    pending.entry.status = response.status().as_u16();
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
    let (parts, body) = response.into_parts();
    let logged = Logged {
        inner: body,
        // Answered: the body's end writes the line from here on.
        pending: unanswered.0.take(),
    };
    Response::from_parts(parts, logged.boxed_unsync())
}

/// The route phase: the virtual host, the normalised path, the forwarding
/// headers and the route; then the route's action.
async fn route_request(
    shared: &Shared,
    hosts: &VirtualHosts,
    downstream: &Downstream,
    mut req: Request<Incoming>,
    entry: &mut Entry,
    received: Option<&Arc<AtomicU64>>,
) -> Response<ProxyBody> {
    let forwarded_https = forwarded_proto(req.headers(), downstream, shared.trusted_proxies);
    // The router's own answers (the HTTPS redirect, 404) wait for the
    // security filters, which come before the router in Envoy's chain.
    let filtered = shared.filters_requests();
    let (authority, host_index, router_answer) =
        match select_host(hosts, &req, forwarded_https, entry) {
            Ok((authority, index)) => (authority, Some(index), None),
            Err(Early::Router {
                authority,
                response,
            }) if filtered => (authority.unwrap_or_default(), None, Some(response)),
            Err(Early::Router { response, .. } | Early::Codec(response)) => return response,
        };
    // The text fields only the log line (and egress metrics) read.
    let logging = shared.access_log.enabled();
    if host_index.is_some() && (logging || downstream.keeps_authority()) {
        entry.authority = Some(authority.clone());
    }

    // Envoy's normalize_path, before routing and as forwarded.
    let original = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(path_and_query) = rewrite::normalize_path(original) else {
        entry.details = Some("path_normalization_failed");
        return local(StatusCode::BAD_REQUEST, "");
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query.as_str(), None),
    };

    set_forwarding_headers(req.headers_mut(), downstream, forwarded_https);
    let claims = match jwt::phase(shared, &mut req, forwarded_https, entry) {
        Ok(claims) => claims,
        Err(answer) => return answer,
    };
    if logging {
        entry.x_forwarded_for = header_text(req.headers(), &X_FORWARDED_FOR);
        entry.request_id = header_text(req.headers(), &X_REQUEST_ID);
    }

    if let Some(denied) = rbac::authorize(
        shared,
        downstream,
        &req,
        &authority,
        path,
        claims.as_deref(),
        entry,
    ) {
        return denied;
    }
    if let Some(response) = router_answer {
        return response;
    }
    let Some(virtual_host) = host_index.and_then(|index| hosts.hosts().get(index)) else {
        return local(StatusCode::NOT_FOUND, "");
    };
    let scheme = if downstream.tls { "https" } else { "http" };
    let facts = RequestFacts {
        method: req.method().as_str(),
        scheme,
        authority: &authority,
        path,
        query,
        headers: req.headers(),
        port: downstream.local.port(),
    };
    let Some(routed) = virtual_host.route(&facts) else {
        entry.flags.push("NR");
        entry.details = Some("route_not_found");
        return local(StatusCode::NOT_FOUND, "");
    };
    if logging {
        entry.route = Some(routed.route.source.clone());
    }
    let request = RedirectRequest {
        scheme,
        authority: &authority,
        path_and_query: &path_and_query,
        matched_uri: routed.matched_uri,
    };
    act(shared, routed, req, request, downstream, entry, received).await
}

/// A request answered before routing: by the codec (a bad head, served
/// before any filter) or by the router (the HTTPS redirect, an unknown
/// host), which answers only after the security filters allowed it.
enum Early {
    Codec(Response<ProxyBody>),
    Router {
        authority: Option<String>,
        response: Response<ProxyBody>,
    },
}

/// The host phase: head checks, the virtual host the request names (its
/// authority and index) and the HTTPS redirect; or the answer already.
#[expect(
    clippy::result_large_err,
    reason = "the error is the request's answer, returned once to the caller, never propagated"
)]
fn select_host(
    hosts: &VirtualHosts,
    req: &Request<Incoming>,
    forwarded_https: &str,
    entry: &mut Entry,
) -> Result<(String, usize), Early> {
    // At most two Host values matter (none, one, or too many): no allocation.
    let mut hosts_sent = req.headers().get_all(header::HOST).iter();
    let host_values = [hosts_sent.next(), hosts_sent.next()].map(|v| v.map(HeaderValue::as_bytes));
    let host_headers: &[&[u8]] = match &host_values {
        [None, _] => &[],
        [Some(one), None] => std::slice::from_ref(one),
        [Some(_), Some(_)] => &[b"", b""],
    };
    let head = RequestHead {
        http10: req.version() == Version::HTTP_10,
        uri_authority: req.uri().authority().map(|a| a.as_str()),
        host_headers,
        path_and_query: req.uri().path_and_query().map(|p| p.as_str()),
    };
    match redirect::answer(hosts, head, forwarded_https == "https") {
        Answer::Proceed { authority, host } => Ok((authority.to_string(), host)),
        Answer::Redirect { location } => {
            entry.details = Some("via_https_redirect");
            if entry.start.is_some() {
                entry.authority = authority_of(&head);
            }
            Err(Early::Router {
                authority: authority_of(&head),
                response: redirect_response(StatusCode::MOVED_PERMANENTLY, &location),
            })
        }
        Answer::NotFound => {
            entry.flags.push("NR");
            entry.details = Some("route_not_found");
            entry.authority = authority_of(&head);
            Err(Early::Router {
                authority: authority_of(&head),
                response: local(StatusCode::NOT_FOUND, ""),
            })
        }
        Answer::BadRequest { reason } => {
            log::debug!("400 for {}: {reason}", req.uri());
            entry.details = Some("http1.codec_error");
            Err(Early::Codec(local(StatusCode::BAD_REQUEST, "")))
        }
        Answer::UpgradeRequired => {
            entry.details = Some("low_version");
            Err(Early::Codec(local(StatusCode::UPGRADE_REQUIRED, "")))
        }
    }
}

/// The route's action (redirect, direct response, or the upstream phase),
/// between its request and response header operations; before them, in
/// the order of the filters Istio gives a gateway (fault, CORS, router),
/// the route's fault injection (`fault.rs`) and CORS policy (`cors.rs`).
async fn act(
    shared: &Shared,
    routed: Routed<'_>,
    mut req: Request<Incoming>,
    request: RedirectRequest<'_>,
    downstream: &Downstream,
    entry: &mut Entry,
    received: Option<&Arc<AtomicU64>>,
) -> Response<ProxyBody> {
    let route = routed.route;
    let forwards = matches!(route.action, RouteAction::Forward { .. });
    if let Some(fault) = &route.fault {
        if let Some(mut aborted) = fault::inject(fault, req.headers(), entry).await {
            // Envoy's local replies get the response headers of a route
            // with a route entry (a forwarding one) only.
            if forwards {
                apply_header_operations(aborted.headers_mut(), &route.response_headers);
            }
            return aborted;
        }
    }
    let latched = match cors::on_request(
        route.cors.as_ref(),
        routed.cors_origins,
        req.method(),
        req.headers(),
    ) {
        cors::Step::Answer(preflight) => {
            entry.details = Some("cors_response");
            return preflight;
        }
        cors::Step::Continue(latched) => latched,
    };
    apply_header_operations(req.headers_mut(), &route.request_headers);
    let mut response = match &route.action {
        RouteAction::Redirect(redirect) => {
            let location = rewrite::redirect_location(redirect, request, downstream.tls);
            entry.details = Some("direct_response");
            let code = StatusCode::from_u16(rewrite::redirect_status(redirect))
                .unwrap_or(StatusCode::MOVED_PERMANENTLY);
            redirect_response(code, &location)
        }
        RouteAction::DirectResponse { status, body } => {
            entry.details = Some("direct_response");
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            local(status, body.clone().unwrap_or_default())
        }
        RouteAction::Forward { .. } => {
            let target = Target {
                authority: request.authority,
                path_and_query: request.path_and_query,
                matched_uri: routed.matched_uri,
                regex_rewrite: routed.regex_rewrite,
                ends: Ends {
                    client: client_address(req.headers(), downstream, shared.trusted_proxies),
                    remote: downstream.remote,
                    local: downstream.local,
                },
                origin: downstream.origin(),
            };
            forward(shared, route, req, target, entry, received).await
        }
    };
    apply_header_operations(response.headers_mut(), &route.response_headers);
    cors::on_response(latched, response.headers_mut());
    response
}
