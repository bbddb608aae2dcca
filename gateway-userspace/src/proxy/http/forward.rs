//! The upstream phase of a request: the route's backend and its cluster,
//! the request as the backend gets it (rewrites, `Host`, hop-by-hop
//! headers), the exchange under the route's timeout, upgrades, and
//! Envoy's answers when the upstream fails, and the tries of a request
//! under its route's retry policy. `forward` is the one place a request is
//! sent (where mirrors will wrap it).
use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode, Uri, Version,
    body::{Body, Incoming},
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
};

use super::{
    bodies::{Counted, Holding},
    hash_key::{Ends, request_hash},
    headers::{apply_header_operations, is_only_host, is_upgrade, millis_header, strip_hop_by_hop},
    mirror::{self, Kept, Shadow},
    replay::{RETRY_BUFFER_LIMIT, Replay},
    retry::{NoResponse, backoff, retries_no_response, retries_response},
};
use crate::{
    plan::{Backend, HeaderOperations, RetryPolicy, Route, RouteAction, StringMatch},
    proxy::{
        access_log::Entry,
        body::{ProxyBody, empty, local},
        context::Shared,
        proxy_protocol,
        rewrite::{self, RegexRewrite},
        upstream::{
            self, ClusterCounter, FailureKind, Origin, RetryInFlight, TryResult, UpstreamCluster,
            UpstreamEndpoint, UpstreamError, UpstreamProtocol,
        },
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
    /// The client and the connection, for a consistent-hash key.
    pub(super) ends: Ends,
    /// Where the connection was going (original-destination clusters).
    pub(super) origin: Origin,
}

/// Sends the request to one of the route's backends.
pub(super) async fn forward(
    shared: &Shared,
    route: &Route,
    mut req: Request<Incoming>,
    target: Target<'_>,
    entry: &mut Entry,
    received: Option<&Arc<AtomicU64>>,
) -> Response<ProxyBody> {
    let RouteAction::Forward {
        backends,
        rewrite_uri,
        rewrite_authority,
        timeout,
        retry,
        mirrors,
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
    // The destination's own header operations follow the rule's; an
    // authority it sets applies when the rule rewrites none (Istio's
    // `processDestination`).
    apply_header_operations(req.headers_mut(), &backend.headers.request);
    let authority = rewrite_authority
        .as_deref()
        .or_else(|| written_authority(&backend.headers.request))
        .unwrap_or(target.authority);

    let version = match cluster.protocol {
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::SameAsClient if req.version() == Version::HTTP_2 => Version::HTTP_2,
        UpstreamProtocol::SameAsClient => Version::HTTP_11,
    };
    let hashed = cluster.hash_key().map(|key| {
        let query = req.uri().query();
        request_hash(key, req.headers(), query, &target.ends)
    });
    let (hash, set_cookie) = hashed.map_or((None, None), |h| (h.hash, h.set_cookie));
    let sending = Sending {
        cluster,
        // The connection a PROXY header names (`proxyProtocol`).
        downstream: proxy_protocol::Ends {
            source: target.ends.remote,
            destination: target.ends.local,
        },
        authority,
        path: &new_path,
        version,
        timeout: *timeout,
        retry: retry.as_ref(),
        hash,
        origin: target.origin,
    };
    let mirrors = mirror::chosen(shared, mirrors);
    let mut response = if mirrors.is_empty() {
        sending.send(req, received, entry).await
    } else {
        let shadow = Shadow {
            method: req.method().clone(),
            path: new_path.to_string(),
            authority: authority.to_string(),
            headers: req.headers().clone(),
            timeout: *timeout,
            origin: target.origin,
        };
        if req.body().is_end_stream() {
            mirror::send_copies(mirrors, &shadow, &Bytes::new());
            sending.send(req, received, entry).await
        } else {
            let (parts, body) = req.into_parts();
            let body = match mirror::keep(body, RETRY_BUFFER_LIMIT).await {
                Kept::Whole(bytes) => {
                    mirror::send_copies(mirrors, &shadow, &bytes);
                    mirror::full(bytes)
                }
                // Too large to keep whole: the route alone gets it.
                Kept::TooLarge(body) => body,
                Kept::Broken => {
                    entry.flags.push("DC");
                    return local(StatusCode::BAD_REQUEST, "");
                }
            };
            sending
                .send(Request::from_parts(parts, body), received, entry)
                .await
        }
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    apply_header_operations(response.headers_mut(), &backend.headers.response);
    response
}

/// How a routed request is sent: where, over what, under which policy.
struct Sending<'a> {
    cluster: &'a Arc<UpstreamCluster>,
    downstream: proxy_protocol::Ends,
    authority: &'a str,
    /// The path and query after the route's rewrites.
    path: &'a str,
    version: Version,
    timeout: Option<Duration>,
    retry: Option<&'a RetryPolicy>,
    /// The consistent-hash key, when the cluster hashes.
    hash: Option<u64>,
    origin: Origin,
}

impl Sending<'_> {
    /// The request sent, under the route's retry policy and timeout.
    async fn send<B>(
        self,
        req: Request<B>,
        received: Option<&Arc<AtomicU64>>,
        entry: &mut Entry,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let Sending {
            cluster,
            downstream,
            authority,
            path,
            version,
            timeout,
            retry,
            hash,
            origin,
        } = self;
        let (upstream_req, downstream_upgrade) =
            match upstream_request(req, authority, path, version, received) {
                Ok(parts) => parts,
                Err(reason) => {
                    log::debug!("400: {reason}");
                    entry.details = Some("invalid_path_rewrite");
                    return local(StatusCode::BAD_REQUEST, "");
                }
            };

        let Some(policy) = retry.filter(|_| downstream_upgrade.is_none()) else {
            // One try: no policy (`attempts: 0`), or an upgrade (its client
            // side cannot be replayed).
            let endpoint = match cluster.pick_hashed(hash, origin).await {
                Ok(endpoint) => endpoint,
                Err(err) => return upstream_failure(err, entry),
            };
            entry.upstream_host = Some(endpoint.addr);
            let sent = Instant::now();
            return match exchange_within(
                cluster,
                &endpoint,
                version,
                upstream_req,
                timeout,
                downstream,
            )
            .await
            {
                Ok(Ok((response, active))) => {
                    upstream_response(response, active, downstream_upgrade, sent.elapsed(), entry)
                }
                Ok(Err(err)) => upstream_failure(err, entry),
                Err(TimedOut) => route_timeout(cluster, entry),
            };
        };
        let deadline = timeout.map(|limit| Instant::now() + limit);
        let tries = Tries {
            cluster,
            downstream,
            version,
            policy,
            deadline,
            hash,
            origin,
        };
        tries.run(upstream_req, entry).await
    }
}

/// The tries of one request under a retry policy, all within the route's
/// timeout (Envoy's router with a `RetryPolicy`).
struct Tries<'a> {
    cluster: &'a Arc<UpstreamCluster>,
    downstream: proxy_protocol::Ends,
    version: Version,
    policy: &'a RetryPolicy,
    deadline: Option<Instant>,
    /// The request's consistent-hash key, when its cluster hashes.
    hash: Option<u64>,
    origin: Origin,
}

/// The endpoints a request's tries went to.
#[derive(Default)]
struct Tried {
    hosts: Vec<SocketAddr>,
    levels: Vec<u32>,
    /// Envoy's `previous_priorities` with Istio's update frequency of 2:
    /// after every second try, the levels tried so far take no more.
    excluded_levels: Vec<u32>,
}

/// Istio's `PreviousPrioritiesConfig.UpdateFrequency`.
const PRIORITY_UPDATE_FREQUENCY: usize = 2;

impl Tried {
    fn note(&mut self, endpoint: &UpstreamEndpoint, remote_localities: bool) {
        self.hosts.push(endpoint.addr);
        self.levels.push(endpoint.priority());
        if remote_localities && self.hosts.len().is_multiple_of(PRIORITY_UPDATE_FREQUENCY) {
            self.excluded_levels = self.levels.clone();
            self.excluded_levels.sort_unstable();
            self.excluded_levels.dedup();
        }
    }
}

/// How one try ended.
enum Outcome {
    /// The request in flight boxed: the variant stays near the others' size.
    Response(Response<Incoming>, Box<upstream::ActiveRequest>, Duration),
    Failed(UpstreamError),
    PerTryTimeout,
    RouteTimeout,
}

impl Tries<'_> {
    async fn run(self, req: Request<ProxyBody>, entry: &mut Entry) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        // A body that has ended already (a GET) needs no keeping.
        let replay = (!body.is_end_stream()).then(|| Replay::new(body, RETRY_BUFFER_LIMIT));
        let counters = &self.cluster.counters;
        let mut tried = Tried::default();
        let mut retries_left = self.policy.num_retries;
        let mut retrying: Option<RetryInFlight> = None;
        for attempt in 1u32.. {
            let req = try_request(&parts, attempt, replay.as_ref());
            let outcome = self.attempt(req, &mut tried, entry).await;
            let retriable = match &outcome {
                Outcome::Response(response, ..) => {
                    retries_response(self.policy, response.status(), response.headers())
                }
                Outcome::Failed(err) => {
                    retries_no_response(self.policy, NoResponse::Failed(err.kind()))
                }
                Outcome::PerTryTimeout => {
                    counters.add(ClusterCounter::PerTryTimeout);
                    retries_no_response(self.policy, NoResponse::PerTryTimeout)
                }
                Outcome::RouteTimeout => false,
            };
            let retried_before = retrying.take().is_some() || attempt > 1;
            if !retriable {
                if retried_before && matches!(outcome, Outcome::Response(..)) {
                    counters.add(ClusterCounter::RetrySuccess);
                }
                return self.answer(outcome, entry);
            }
            if retries_left == 0 {
                counters.add(ClusterCounter::RetryLimitExceeded);
                // After the try's own flag, in Envoy's order of flags.
                let answer = self.answer(outcome, entry);
                entry.flags.push("URX");
                return answer;
            }
            if !replay.as_ref().is_none_or(Replay::replayable) {
                // Too large to send again: Envoy does not retry it either.
                return self.answer(outcome, entry);
            }
            retries_left -= 1;
            let Some(in_flight) = self.cluster.start_retry() else {
                counters.add(ClusterCounter::RetryOverflow);
                let answer = self.answer(outcome, entry);
                entry.flags.push("UO");
                return answer;
            };
            retrying = Some(in_flight);
            counters.add(ClusterCounter::Retry);
            // The failed try's response (and its connection) is let go here.
            drop(outcome);
            let wait = backoff(self.policy, attempt, upstream::random());
            if !self.sleep_within_deadline(wait).await {
                return route_timeout(self.cluster, entry);
            }
        }
        local(StatusCode::INTERNAL_SERVER_ERROR, "")
    }

    /// One try, on an endpoint not tried before when the policy asks for
    /// one, and off the levels tried before under `retryRemoteLocalities`.
    async fn attempt(
        &self,
        req: Request<ProxyBody>,
        tried: &mut Tried,
        entry: &mut Entry,
    ) -> Outcome {
        let hosts: &[SocketAddr] = if self.policy.other_host {
            &tried.hosts
        } else {
            &[]
        };
        let endpoint = match self
            .cluster
            .pick_avoiding(hosts, &tried.excluded_levels, self.hash, self.origin)
            .await
        {
            Ok(endpoint) => endpoint,
            Err(err) => return Outcome::Failed(err),
        };
        tried.note(&endpoint, self.policy.remote_localities);
        entry.upstream_host = Some(endpoint.addr);
        let now = Instant::now();
        let left = self.deadline.map(|d| d.saturating_duration_since(now));
        let (limit, per_try) = match (self.policy.per_try_timeout, left) {
            (Some(per_try), Some(left)) if per_try < left => (Some(per_try), true),
            (Some(per_try), None) => (Some(per_try), true),
            (_, left) => (left, false),
        };
        match exchange_within(
            self.cluster,
            &endpoint,
            self.version,
            req,
            limit,
            self.downstream,
        )
        .await
        {
            Ok(Ok((response, active))) => {
                Outcome::Response(response, Box::new(active), now.elapsed())
            }
            Ok(Err(err)) => Outcome::Failed(err),
            Err(TimedOut) if per_try => Outcome::PerTryTimeout,
            Err(TimedOut) => Outcome::RouteTimeout,
        }
    }

    /// Waits `wait`, unless the route's timeout comes first (false).
    async fn sleep_within_deadline(&self, wait: Duration) -> bool {
        let now = Instant::now();
        match self.deadline {
            Some(deadline) if now + wait >= deadline => {
                tokio::time::sleep_until(deadline.into()).await;
                false
            }
            _ => {
                tokio::time::sleep(wait).await;
                true
            }
        }
    }

    /// What the client gets for the last try.
    fn answer(&self, outcome: Outcome, entry: &mut Entry) -> Response<ProxyBody> {
        match outcome {
            Outcome::Response(response, active, service_time) => {
                upstream_response(response, *active, None, service_time, entry)
            }
            Outcome::Failed(err) => upstream_failure(err, entry),
            Outcome::PerTryTimeout => {
                entry.flags.push("UT");
                entry.details = Some("upstream_per_try_timeout");
                local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
            }
            Outcome::RouteTimeout => route_timeout(self.cluster, entry),
        }
    }
}

/// A try that ran out of time before the response head came.
struct TimedOut;

/// One exchange with `endpoint`, within `limit` when there is one, its
/// result told to outlier detection (a timeout too): what a single try
/// and each try under a retry policy share.
async fn exchange_within(
    cluster: &UpstreamCluster,
    endpoint: &Arc<UpstreamEndpoint>,
    version: Version,
    req: Request<ProxyBody>,
    limit: Option<Duration>,
    downstream: proxy_protocol::Ends,
) -> Result<Result<(Response<Incoming>, upstream::ActiveRequest), UpstreamError>, TimedOut> {
    let exchange = upstream::send_for(endpoint, cluster, version, req, Some(downstream));
    let result = match limit {
        Some(limit) => match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => {
                cluster.observe(endpoint, TryResult::TimedOut);
                return Err(TimedOut);
            }
        },
        None => exchange.await,
    };
    observe(cluster, endpoint, &result);
    Ok(result)
}

/// Tells outlier detection how a try went: a response (after a
/// connection that worked), a failed connect, or a reset. Failures before
/// any endpoint was tried (no endpoint, overflow) say nothing of one.
fn observe(
    cluster: &UpstreamCluster,
    endpoint: &UpstreamEndpoint,
    result: &Result<(Response<Incoming>, upstream::ActiveRequest), UpstreamError>,
) {
    match result {
        Ok((response, _)) => {
            cluster.observe(endpoint, TryResult::Connected);
            cluster.observe(endpoint, TryResult::Response(response.status().as_u16()));
        }
        Err(err) => match err.kind() {
            FailureKind::ConnectFailure => cluster.observe(endpoint, TryResult::ConnectFailed),
            FailureKind::Reset | FailureKind::ResetBeforeRequest | FailureKind::RefusedStream => {
                cluster.observe(endpoint, TryResult::Reset)
            }
            FailureKind::NoHost | FailureKind::Overflow => {}
        },
    }
}

/// The route's `timeout` ran out: Envoy's 504.
fn route_timeout(cluster: &UpstreamCluster, entry: &mut Entry) -> Response<ProxyBody> {
    cluster.counters.add(ClusterCounter::Timeout);
    entry.flags.push("UT");
    entry.details = Some("upstream_response_timeout");
    local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
}

/// The request of try `attempt`: the same head, with
/// `x-envoy-attempt-count` (Istio turns on `include_request_attempt_count`),
/// and a copy of the kept body.
fn try_request(parts: &Parts, attempt: u32, replay: Option<&Replay>) -> Request<ProxyBody> {
    let body = match replay {
        Some(replay) => replay.copy().boxed_unsync(),
        None => empty(),
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    let headers = req.headers_mut();
    headers.clone_from(&parts.headers);
    headers.insert(
        HeaderName::from_static("x-envoy-attempt-count"),
        HeaderValue::from(attempt),
    );
    req
}

/// The backend's response as the client gets it: an upgrade joined to
/// the client's side, or the head cleaned (framing checked, hop-by-hop
/// headers off, the service time added) and the body holding the
/// endpoint's in-flight count.
fn upstream_response(
    mut response: Response<Incoming>,
    active: upstream::ActiveRequest,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    service_time: Duration,
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

/// The authority a destination's request `set` (else `add`) writes as
/// `:authority` or `host`.
fn written_authority(ops: &HeaderOperations) -> Option<&str> {
    fn named((name, value): &(String, String)) -> Option<&str> {
        (name == ":authority" || name == "host").then_some(value.as_str())
    }
    ops.set
        .iter()
        .find_map(named)
        .or_else(|| ops.add.iter().find_map(named))
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
        UpstreamError::NoEndpoint
        | UpstreamError::NoOriginalDestination { .. }
        | UpstreamError::Resolve { .. } => {
            entry.details = Some("no_healthy_upstream");
            local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
        }
        UpstreamError::Overflow => {
            entry.details = Some("upstream_reset_before_response_started{overflow}");
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            )
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

pub(super) fn upstream_request<B>(
    mut req: Request<B>,
    authority: &str,
    path_and_query: &str,
    version: Version,
    received: Option<&Arc<AtomicU64>>,
) -> Result<UpstreamParts, String>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
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
