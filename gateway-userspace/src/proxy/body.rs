//! The body type of everything the proxy sends or forwards, and the
//! responses the gateway makes itself.
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::{
    Response, StatusCode,
    header::{self, HeaderValue},
};

/// Every body the proxy sends or forwards.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

pub(super) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A response the proxy makes itself; a body gets `text/plain` as from Envoy.
pub(super) fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
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

pub(super) fn redirect_response(status: StatusCode, location: &str) -> Response<ProxyBody> {
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
