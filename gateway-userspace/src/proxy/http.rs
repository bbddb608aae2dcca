//! The HTTP request path, plaintext or after TLS termination: head checks,
//! the gateway's forwarding headers, virtual host and route selection, and
//! the route's action (forward, redirect, direct response), with one
//! access-log entry per request.
use std::{
    borrow::Cow,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::{
    HeaderMap, Request, Response, StatusCode, Uri, Version,
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderName, HeaderValue},
};

use super::{
    access_log::Entry,
    context::{Downstream, Shared},
    redirect::{self, Answer, RequestHead},
    rewrite::{self, RedirectRequest, RegexRewrite},
    route::{RequestFacts, Routed},
    upstream::{self, UpstreamError, UpstreamProtocol},
};
use crate::plan::{Backend, HeaderOperations, Route, RouteAction, StringMatch};

pub use super::route::{RoutesError, VirtualHosts};

/// Every body the proxy sends or forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

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
        Entry {
            protocol: Some(protocol_name(req.version())),
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

async fn route_request(
    shared: &Shared,
    hosts: &VirtualHosts,
    downstream: &Downstream,
    mut req: Request<Incoming>,
    entry: &mut Entry,
    received: Option<&Arc<AtomicU64>>,
) -> Response<ProxyBody> {
    // At most two Host values matter (none, one, or too many): no allocation.
    let mut hosts_sent = req.headers().get_all(header::HOST).iter();
    let host_values = [hosts_sent.next(), hosts_sent.next()].map(|v| v.map(HeaderValue::as_bytes));
    let host_headers: &[&[u8]] = match &host_values {
        [None, _] => &[],
        [Some(one), None] => std::slice::from_ref(one),
        [Some(_), Some(_)] => &[b"", b""],
    };
    let forwarded_https = forwarded_proto(req.headers(), downstream, shared.trusted_proxies);
    let head = RequestHead {
        http10: req.version() == Version::HTTP_10,
        uri_authority: req.uri().authority().map(|a| a.as_str()),
        host_headers,
        path_and_query: req.uri().path_and_query().map(|p| p.as_str()),
    };
    let answer = redirect::answer(hosts, head, forwarded_https == "https");
    let (authority, host_index) = match answer {
        Answer::Proceed { authority, host } => (authority.to_string(), host),
        Answer::Redirect { location } => {
            entry.details = Some("via_https_redirect");
            if entry.start.is_some() {
                entry.authority = authority_of(&head);
            }
            return redirect_response(StatusCode::MOVED_PERMANENTLY, &location);
        }
        Answer::NotFound => {
            entry.flags.push("NR");
            entry.details = Some("route_not_found");
            entry.authority = authority_of(&head);
            return local(StatusCode::NOT_FOUND, "");
        }
        Answer::BadRequest { reason } => {
            log::debug!("400 for {}: {reason}", req.uri());
            entry.details = Some("http1.codec_error");
            return local(StatusCode::BAD_REQUEST, "");
        }
        Answer::UpgradeRequired => {
            entry.details = Some("low_version");
            return local(StatusCode::UPGRADE_REQUIRED, "");
        }
    };
    // The text fields only the log line (and egress metrics) read.
    let logging = shared.access_log.enabled();
    if logging || downstream.keeps_authority() {
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
    if logging {
        entry.x_forwarded_for = header_text(req.headers(), &X_FORWARDED_FOR);
        entry.request_id = header_text(req.headers(), &X_REQUEST_ID);
    }

    let Some(virtual_host) = hosts.hosts().get(host_index) else {
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
    let Some(Routed {
        route,
        matched_uri,
        regex_rewrite,
    }) = virtual_host.route(&facts)
    else {
        entry.flags.push("NR");
        entry.details = Some("route_not_found");
        return local(StatusCode::NOT_FOUND, "");
    };
    if logging {
        entry.route = Some(route.source.clone());
    }
    apply_header_operations(req.headers_mut(), &route.request_headers);

    let mut response = match &route.action {
        RouteAction::Redirect(redirect) => {
            let request = RedirectRequest {
                scheme,
                authority: &authority,
                path_and_query: &path_and_query,
                matched_uri,
            };
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
                authority: &authority,
                path_and_query: &path_and_query,
                matched_uri,
                regex_rewrite,
            };
            forward(shared, route, req, target, entry, received).await
        }
    };
    apply_header_operations(response.headers_mut(), &route.response_headers);
    response
}

/// Where a forwarded request goes, before the route's rewrites.
struct Target<'a> {
    authority: &'a str,
    /// Normalized path and the query.
    path_and_query: &'a str,
    /// The `uri` of the match that selected the route (what `rewrite.uri` replaces).
    matched_uri: Option<&'a StringMatch>,
    regex_rewrite: Option<&'a RegexRewrite>,
}

/// Sends the request to one of the route's backends.
async fn forward(
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
    let (mut response, active) = match result {
        Ok(ok) => ok,
        Err(err) => return upstream_failure(err, entry),
    };
    let service_time = sent.elapsed();
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
fn pick_backend(backends: &[Backend]) -> Option<&Backend> {
    upstream::weighted(backends, |b| u64::from(b.weight), upstream::random())
        .or_else(|| backends.first())
}

fn upstream_failure(err: UpstreamError, entry: &mut Entry) -> Response<ProxyBody> {
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
type UpstreamParts = (Request<ProxyBody>, Option<hyper::upgrade::OnUpgrade>);

fn upstream_request(
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

/// Whether the request's only `Host` is `authority` already (kept as it
/// is, in its place, without a new value).
fn is_only_host(headers: &HeaderMap, authority: &str) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    matches!(
        (hosts.next(), hosts.next()),
        (Some(host), None) if host.as_bytes() == authority.as_bytes()
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy, except the
/// upgrade handshake of a websocket, which must reach the backend.
///
/// One pass over the names a message has finds what goes: most messages
/// carry none of these but `connection`, and looking each candidate up by
/// name (hashing it, twice per request) cost more than the pass.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let connection = headers.get_all(header::CONNECTION);
    let named_by_connection = |name: &HeaderName| {
        connection.iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',').map(str::trim).any(|token| {
                    token.eq_ignore_ascii_case(name.as_str())
                        && !(keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
                })
            })
        })
    };
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let hop = if name == header::CONNECTION || name == header::UPGRADE {
            !keep_upgrade
        } else if name == header::TE {
            // `te: trailers` is what gRPC needs; anything else goes.
            headers
                .get(header::TE)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        } else {
            name == header::TRANSFER_ENCODING
                || name == header::PROXY_AUTHENTICATE
                || name == header::PROXY_AUTHORIZATION
                || name == header::TRAILER
                || name.as_str() == "keep-alive"
                || name.as_str() == "proxy-connection"
        };
        if hop || named_by_connection(name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme the request was made with: the connection's, unless a
/// trusted hop in front (`--trusted-proxies` >= 1) says otherwise (Envoy's
/// `use_remote_address` with `xff_num_trusted_hops`).
fn forwarded_proto(headers: &HeaderMap, downstream: &Downstream, trusted: u32) -> &'static str {
    let own = if downstream.tls { "https" } else { "http" };
    if trusted == 0 {
        return own;
    }
    match headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
        Some(v) if v.eq_ignore_ascii_case(b"https") => "https",
        Some(v) if v.eq_ignore_ascii_case(b"http") => "http",
        _ => own,
    }
}

/// What Envoy sets at an Istio gateway: `X-Forwarded-For` gains the peer
/// address, `X-Forwarded-Proto` is the scheme decided above, and a request
/// without `X-Request-Id` gets a fresh UUIDv4 (Istio keeps a client's id).
fn set_forwarding_headers(headers: &mut HeaderMap, downstream: &Downstream, proto: &'static str) {
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            HeaderValue::from_str(&format!("{existing},{}", downstream.remote.ip())).ok()
        }
        _ => Some(downstream.remote_ip_header()),
    };
    if let Some(value) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if !headers.contains_key(&X_REQUEST_ID) {
        if let Ok(value) = HeaderValue::from_bytes(&uuid_v4()) {
            headers.insert(X_REQUEST_ID.clone(), value);
        }
    }
}

/// A random (version 4) UUID, in its 36-character text form.
fn uuid_v4() -> [u8; 36] {
    let (a, b) = (upstream::random(), upstream::random());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    let bytes = (u128::from(a) << 64 | u128::from(b)).to_be_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            at += 1; // a dash
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    text
}

/// `set` replaces, `add` appends, `remove` deletes (Istio `Headers.HeaderOperations`).
fn apply_header_operations(headers: &mut HeaderMap, ops: &HeaderOperations) {
    for (name, value) in &ops.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
}

fn authority_of(head: &RequestHead<'_>) -> Option<String> {
    head.uri_authority
        .map(str::to_string)
        .or_else(|| match head.host_headers {
            [one] => std::str::from_utf8(one).ok().map(str::to_string),
            _ => None,
        })
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// `x-envoy-upstream-service-time`. Times under 100 ms, nearly all of
/// them, are slices of one static text: no allocation per response.
fn millis_header(elapsed: Duration) -> HeaderValue {
    const SMALL: &str = "0123456789\
        10111213141516171819202122232425262728293031323334353637383940414243444546474849\
        50515253545556575859606162636465666768697071727374757677787980818283848586878889\
        90919293949596979899";
    let millis = elapsed.as_millis();
    let small = match usize::try_from(millis) {
        Ok(digit @ 0..=9) => SMALL.get(digit..=digit),
        Ok(two @ 10..=99) => SMALL.get(10 + 2 * (two - 10)..12 + 2 * (two - 10)),
        _ => None,
    };
    match small {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
    }
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A response the proxy makes itself; a body gets `text/plain` as from Envoy.
pub fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let body: Bytes = body.into();
    let length = body.len();
    let has_body = !body.is_empty();
    let mut response = Response::new(if has_body {
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        empty()
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if has_body {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

fn redirect_response(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = local(status, "");
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        // The authority was validated and the path parsed, so this cannot happen.
        Err(_) => *response.status_mut() = StatusCode::NOT_FOUND,
    }
    response
}

/// Counts the bytes of a body as they pass.
struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps the endpoint's in-flight count until the response body is done.
struct Holding<B> {
    inner: B,
    _active: upstream::ActiveRequest,
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The access-log entry of a request whose response is still streaming.
struct Pending {
    entry: Entry,
    started: Instant,
    received: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

/// Writes the entry when the response body ends, or is dropped early
/// (the client went away: Envoy's `DC`).
struct Logged {
    inner: ProxyBody,
    pending: Option<Pending>,
}

/// How a response body ended.
#[derive(Clone, Copy)]
enum BodyEnd {
    Complete,
    /// The client went away first (Envoy's `DC`).
    Downstream,
    /// The backend's body failed: cut short (`UC`) or malformed (`UPE`).
    Upstream {
        protocol: bool,
    },
}

impl Logged {
    fn finish(&mut self, end: BodyEnd) {
        if let Some(mut pending) = self.pending.take() {
            match end {
                BodyEnd::Complete => {}
                BodyEnd::Downstream => pending.entry.flags.push("DC"),
                BodyEnd::Upstream { protocol } => {
                    let (flag, details) = if protocol {
                        (
                            "UPE",
                            "upstream_reset_after_response_started{protocol_error}",
                        )
                    } else {
                        (
                            "UC",
                            "upstream_reset_after_response_started{connection_termination}",
                        )
                    };
                    pending.entry.flags.push(flag);
                    pending.entry.details = Some(details);
                }
            }
            pending.finish();
        }
    }
}

impl Pending {
    fn finish(mut self) {
        self.entry.duration = self.started.elapsed();
        self.entry.bytes_received = self.received.load(Ordering::Relaxed);
        self.shared.finished(&mut self.entry);
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(pending)) = (frame.data_ref(), self.pending.as_mut()) {
                    pending.entry.bytes_sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(None) => self.finish(BodyEnd::Complete),
            // Only a backend's body can fail: the gateway's own are whole.
            Poll::Ready(Some(Err(err))) => {
                let protocol = upstream::protocol_error(err);
                self.finish(BodyEnd::Upstream { protocol });
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let end = if self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::Downstream
        };
        self.finish(end);
    }
}

/// The log entry of a request not answered yet. A client that goes away
/// first (the request's future is dropped) still gets its line and its
/// metrics: status 0, `DC`, as Envoy logs it.
struct Unanswered(Option<Pending>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut pending) = self.0.take() {
            pending.entry.status = 0;
            pending.entry.flags.push("DC");
            pending.entry.details = Some("downstream_remote_disconnect");
            pending.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::OnceLock};

    use super::*;
    use crate::plan::ClusterId;

    fn downstream(tls: bool) -> Downstream {
        Downstream {
            tls,
            local: SocketAddr::from(([203, 0, 113, 1], 80)),
            remote: SocketAddr::from(([203, 0, 113, 2], 40000)),
            sni: None,
            workload_interface: None,
            remote_ip: OnceLock::new(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn forwarded_proto_is_the_connections_unless_a_trusted_hop_says() {
        let xfp = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(forwarded_proto(&xfp, &downstream(false), 0), "http");
        assert_eq!(forwarded_proto(&xfp, &downstream(false), 1), "https");
        assert_eq!(
            forwarded_proto(&HeaderMap::new(), &downstream(true), 1),
            "https"
        );
        let odd = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(forwarded_proto(&odd, &downstream(false), 1), "http");
    }

    #[test]
    fn forwarding_headers_append_the_peer_and_set_the_scheme() {
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarding_headers(&mut h, &downstream(false), "http");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7,203.0.113.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        let id = h["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "{id}");
    }

    #[test]
    fn request_ids_are_version_4_uuids() {
        let first = uuid_v4();
        assert_ne!(first, uuid_v4());
        let text = std::str::from_utf8(&first).expect("ascii");
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{text}"
        );
        assert!(
            text.bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(groups[2].starts_with('4'), "version 4: {text}");
        assert!(
            matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "variant: {text}"
        );
    }

    #[test]
    fn a_clients_request_id_is_kept() {
        let mut h = headers(&[("x-request-id", "abc")]);
        set_forwarding_headers(&mut h, &downstream(true), "https");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["x-forwarded-for"], "203.0.113.2");
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_upgrade_kept_for_websocket() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("te").is_none() && h.get("upgrade").is_none());
        assert_eq!(h["x-kept"], "1");
        let mut ws = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut ws, true);
        assert_eq!(ws["upgrade"], "websocket");
        assert_eq!(ws["connection"], "upgrade");
        let mut grpc = headers(&[("te", "trailers")]);
        strip_hop_by_hop(&mut grpc, false);
        assert_eq!(grpc["te"], "trailers");
    }

    #[test]
    fn header_operations_set_add_remove() {
        let mut h = headers(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let ops = HeaderOperations {
            set: vec![("a".into(), "2".into())],
            add: vec![("b".into(), "2".into())],
            remove: vec!["c".into()],
        };
        apply_header_operations(&mut h, &ops);
        assert_eq!(h.get_all("a").iter().collect::<Vec<_>>(), ["2"]);
        assert_eq!(h.get_all("b").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(h.get("c").is_none());
    }

    #[test]
    fn service_time_is_the_whole_milliseconds() {
        for millis in [0, 1, 9, 10, 11, 42, 99, 100, 101, 12_345] {
            let value = millis_header(Duration::from_micros(millis * 1000 + 999));
            assert_eq!(value.to_str().ok(), Some(millis.to_string().as_str()));
        }
    }

    #[test]
    fn the_host_is_kept_only_when_it_is_the_single_one_wanted() {
        assert!(is_only_host(&headers(&[("host", "a.test")]), "a.test"));
        assert!(!is_only_host(&headers(&[("host", "a.test")]), "b.test"));
        assert!(!is_only_host(&headers(&[]), "a.test"));
        let two = headers(&[("host", "a.test"), ("host", "a.test")]);
        assert!(!is_only_host(&two, "a.test"));
    }

    #[test]
    fn weighted_backends_split_by_weight() {
        let backends = [
            Backend {
                weight: 90,
                target: Ok(ClusterId(0)),
            },
            Backend {
                weight: 10,
                target: Ok(ClusterId(1)),
            },
        ];
        let a = (0..10_000)
            .filter(|_| {
                pick_backend(&backends).and_then(|b| b.target.as_ref().ok()) == Some(&ClusterId(0))
            })
            .count();
        assert!((8_700..9_300).contains(&a), "{a}");
    }
}
