//! The upstream phase of a request: the route's backend and its cluster,
//! the request as the backend gets it (rewrites, `Host`, hop-by-hop
//! headers), the exchange under the route's timeout, upgrades, and
//! Envoy's answers when the upstream fails. `forward` is the one place a
//! request is sent (where retries and mirrors will wrap it).
use std::{
    borrow::Cow,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode, Uri, Version,
    body::{Body, Incoming},
    header::{self, HeaderName, HeaderValue},
};

use super::{
    bodies::{Counted, Holding},
    headers::{is_only_host, is_upgrade, millis_header, strip_hop_by_hop},
};
use crate::{
    plan::{Backend, Route, RouteAction, StringMatch},
    proxy::{
        access_log::Entry,
        body::{ProxyBody, empty, local},
        context::Shared,
        rewrite::{self, RegexRewrite},
        upstream::{self, UpstreamError, UpstreamProtocol},
    },
};

/// Where a forwarded request goes, before the route's rewrites.
pub(super) struct Target<'a> {
    pub(super) authority: &'a str,
    /// Normalized path and the query.
    pub(super) path_and_query: &'a str,
    /// The `uri` of the match that selected the route (what `rewrite.uri` replaces).
    pub(super) matched_uri: Option<&'a StringMatch>,
    pub(super) regex_rewrite: Option<&'a RegexRewrite>,
}

/// Sends the request to one of the route's backends.
pub(super) async fn forward(
    shared: &Shared,
    route: &Route,
    req: Request<Incoming>,
    target: Target<'_>,
    entry: &mut Entry,
    received: Option<&Arc<AtomicU64>>,
) -> Response<ProxyBody> {
    let RouteAction::Forward {
        backends,
        rewrite_uri,
        rewrite_authority,
        timeout,
        ..
    } = &route.action
    else {
        return local(StatusCode::INTERNAL_SERVER_ERROR, "");
    };
    let Some(backend) = pick_backend(&backends.0) else {
        entry.flags.push("NC");
        entry.details = Some("cluster_not_found");
        return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    let cluster = match &backend.target {
        Ok(id) => shared.upstreams.get(*id),
        Err(_) => None,
    };
    let Some(cluster) = cluster else {
        entry.flags.push("NC");
        entry.details = Some("cluster_not_found");
        return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    entry.upstream_cluster = Some(cluster.name.clone());

    // Copied only when a rewrite changes it.
    let mut new_path = Cow::Borrowed(target.path_and_query);
    if let Some(rewrite) = rewrite_uri {
        new_path = Cow::Owned(rewrite::rewrite_uri(&new_path, target.matched_uri, rewrite));
    }
    if let Some(regex) = target.regex_rewrite {
        new_path = Cow::Owned(regex.apply(&new_path));
    }
    let authority = rewrite_authority.as_deref().unwrap_or(target.authority);

    let version = match cluster.protocol {
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::SameAsClient if req.version() == Version::HTTP_2 => Version::HTTP_2,
        UpstreamProtocol::SameAsClient => Version::HTTP_11,
    };
    let (upstream_req, downstream_upgrade) =
        match upstream_request(req, authority, &new_path, version, received) {
            Ok(parts) => parts,
            Err(reason) => {
                log::debug!("400: {reason}");
                entry.details = Some("invalid_path_rewrite");
                return local(StatusCode::BAD_REQUEST, "");
            }
        };

    let endpoint = match cluster.pick().await {
        Ok(endpoint) => endpoint,
        Err(err) => return upstream_failure(err, entry),
    };
    entry.upstream_host = Some(endpoint.addr);
    let sent = Instant::now();
    let exchange = upstream::send(&endpoint, cluster, version, upstream_req);
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(*limit, exchange).await {
            Ok(result) => result,
            Err(_) => {
                entry.flags.push("UT");
                entry.details = Some("upstream_response_timeout");
                return local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout");
            }
        },
        None => exchange.await,
    };
    let (response, active) = match result {
        Ok(ok) => ok,
        Err(err) => return upstream_failure(err, entry),
    };
    upstream_response(response, active, downstream_upgrade, sent.elapsed(), entry)
}

/// The backend's response as the client gets it: an upgrade joined to
/// the client's side, or the head cleaned (framing checked, hop-by-hop
/// headers off, the service time added) and the body holding the
/// endpoint's in-flight count.
fn upstream_response(
    mut response: Response<Incoming>,
    active: upstream::ActiveRequest,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    service_time: std::time::Duration,
    entry: &mut Entry,
) -> Response<ProxyBody> {
    entry.upstream_service_time = Some(service_time);
    entry.details = Some("via_upstream");

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream_upgrade) = downstream_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let _active = active;
                if let (Ok(down), Ok(up)) = tokio::join!(downstream_upgrade, upstream_upgrade) {
                    let mut down = hyper_util::rt::TokioIo::new(down);
                    let mut up = hyper_util::rt::TokioIo::new(up);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
            let (mut parts, _) = response.into_parts();
            parts.headers.insert(
                HeaderName::from_static("x-envoy-upstream-service-time"),
                millis_header(service_time),
            );
            return Response::from_parts(parts, empty());
        }
    }
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        // Framed two ways (RFC 9112 §6.3 calls it an error a proxy must
        // not pass on): Envoy refuses it as the backend's protocol error.
        entry.flags.push("UPE");
        entry.details = Some("upstream_reset_before_response_started{protocol_error}");
        return local(
            StatusCode::BAD_GATEWAY,
            "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
        );
    }
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.insert(
        HeaderName::from_static("x-envoy-upstream-service-time"),
        millis_header(service_time),
    );
    parts.version = Version::HTTP_11;
    let body = Holding {
        inner: body,
        _active: active,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Weighted random choice among the route's backends (Envoy weighted_clusters).
pub(super) fn pick_backend(backends: &[Backend]) -> Option<&Backend> {
    upstream::weighted(backends, |b| u64::from(b.weight), upstream::random())
        .or_else(|| backends.first())
}

pub(super) fn upstream_failure(err: UpstreamError, entry: &mut Entry) -> Response<ProxyBody> {
    log::debug!("503: {err}");
    entry.flags.push(err.flag());
    match err {
        UpstreamError::NoEndpoint | UpstreamError::Resolve { .. } => {
            entry.details = Some("no_healthy_upstream");
            local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
        }
        UpstreamError::Connect { .. } => {
            entry.details = Some("upstream_reset_before_response_started{connection_failure}");
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            )
        }
        UpstreamError::Tls { .. } => {
            // Envoy's wording for a failed upstream TLS handshake.
            entry.details =
                Some("upstream_reset_before_response_started{connection_failure,TLS_error}");
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error",
            )
        }
        UpstreamError::Exchange { source, .. } if upstream::protocol_error(&source) => {
            entry.details = Some("upstream_reset_before_response_started{protocol_error}");
            local(
                StatusCode::BAD_GATEWAY,
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            )
        }
        UpstreamError::Exchange { .. } => {
            entry.details = Some("upstream_reset_before_response_started{connection_termination}");
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            )
        }
    }
}

/// The request as the backend gets it; for an upgrade, also the client's
/// side of the upgraded connection.
pub(super) type UpstreamParts = (Request<ProxyBody>, Option<hyper::upgrade::OnUpgrade>);

pub(super) fn upstream_request(
    mut req: Request<Incoming>,
    authority: &str,
    path_and_query: &str,
    version: Version,
    received: Option<&Arc<AtomicU64>>,
) -> Result<UpstreamParts, String> {
    let websocket = version == Version::HTTP_11 && is_upgrade(req.headers());
    let downstream_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, websocket);
    // The client's origin-form URI goes on as it came when routing left
    // its path as it was (the usual case): building a new one allocates.
    let unchanged = version != Version::HTTP_2
        && parts.uri.scheme().is_none()
        && parts.uri.authority().is_none()
        && parts.uri.path_and_query().map(|p| p.as_str()) == Some(path_and_query);
    if !unchanged {
        parts.uri = if version == Version::HTTP_2 {
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
        } else {
            Uri::builder().path_and_query(path_and_query).build()
        }
        .map_err(|err| format!("cannot forward {path_and_query:?}: {err}"))?;
    }
    parts.version = version;
    if version == Version::HTTP_2 {
        parts.headers.remove(header::HOST);
    } else if !is_only_host(&parts.headers, authority) {
        parts.headers.remove(header::HOST);
        let host = HeaderValue::from_str(authority).map_err(|err| err.to_string())?;
        parts.headers.insert(header::HOST, host);
    }
    // A body that has ended already (a GET) is not counted: nothing passes.
    let body = match received {
        _ if body.is_end_stream() => empty(),
        Some(count) => Counted {
            inner: body,
            count: Arc::clone(count),
        }
        .boxed_unsync(),
        None => body.boxed_unsync(),
    };
    Ok((Request::from_parts(parts, body), downstream_upgrade))
}
