//! A route's `fault`, as Envoy's fault filter applies the configuration
//! Istio's `TranslateFault` gives it (source/extensions/filters/http/fault/
//! fault_filter.cc): before anything else of the route, a delay drawn with
//! its share (flag `DI`), then, once the delay has run, an abort drawn on
//! its own (flag `FI`, details `fault_filter_abort`) answered by the
//! gateway as Envoy's `sendLocalReply` answers it.
use std::time::Duration;

use bytes::Bytes;
use hyper::{
    HeaderMap, Response, StatusCode,
    header::{self, HeaderValue},
};

use super::super::{
    access_log::Entry,
    body::{ProxyBody, empty, local},
    upstream,
};
use crate::plan::{AbortStatus, HttpFault};

/// The body of an abort (Envoy's, a gRPC abort's `grpc-message` too).
pub(super) const ABORT_BODY: &str = "fault filter abort";

/// What a request's draws decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Injection {
    pub delay: Option<Duration>,
    pub abort: Option<AbortStatus>,
}

/// The faults for one request, `draw` giving each decision's random
/// number: the delay's first, then the abort's.
pub(super) fn decide(fault: &HttpFault, mut draw: impl FnMut() -> u64) -> Injection {
    let delay = fault
        .delay
        .filter(|delay| delay.share.chooses(draw()))
        .map(|delay| delay.fixed);
    let abort = fault
        .abort
        .filter(|abort| abort.share.chooses(draw()))
        .map(|abort| abort.status);
    Injection { delay, abort }
}

/// Applies `fault` to a request with `headers`: waits out a delay, and
/// returns the answer of an abort; `None` lets the request go on.
pub(super) async fn inject(
    fault: &HttpFault,
    headers: &HeaderMap,
    entry: &mut Entry,
) -> Option<Response<ProxyBody>> {
    let injection = decide(fault, upstream::random);
    if let Some(delay) = injection.delay {
        entry.flags.push("DI");
        tokio::time::sleep(delay).await;
    }
    let status = injection.abort?;
    entry.flags.push("FI");
    entry.details = Some("fault_filter_abort");
    Some(abort_response(status, is_grpc(headers)))
}

/// Envoy's local reply for an abort: to a gRPC request a trailers-only
/// response (200, `grpc-status`, `grpc-message`); else the status with
/// the text body. An abort by `grpcStatus` of a request that is not gRPC
/// answers 200 with the text body, as Envoy does.
pub(super) fn abort_response(status: AbortStatus, grpc_request: bool) -> Response<ProxyBody> {
    let (http, grpc) = match status {
        AbortStatus::Http(code) => (code, None),
        AbortStatus::Grpc(code) => (200, Some(code)),
    };
    if !grpc_request {
        let code = StatusCode::from_u16(http).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return local(code, Bytes::from_static(ABORT_BODY.as_bytes()));
    }
    let grpc = grpc.unwrap_or_else(|| http_to_grpc_status(http));
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(grpc)));
    headers.insert("grpc-message", HeaderValue::from_static(ABORT_BODY));
    response
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc`, alone
/// or followed by `+` or `;`.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub(super) fn http_to_grpc_status(http: u16) -> u8 {
    match http {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}
