//! A route's `corsPolicy`, as Envoy's CORS filter applies the policy
//! Istio's `TranslateCORSPolicy` gives it (source/extensions/filters/http/
//! cors/cors_filter.cc). Only a forwarding route has one (the binder
//! leaves it out elsewhere, as the filter skips routes without a route
//! entry).
//!
//! - A request with a non-empty `Origin` is a CORS request; its origin is
//!   allowed when one of `allowOrigins` accepts the text `*` or the origin.
//! - A preflight (OPTIONS with a non-empty
//!   `Access-Control-Request-Method`) is answered by the gateway, 200 with
//!   no body, unless its origin is not allowed and unmatched preflights are
//!   forwarded (the default). The answer carries `allow-origin` (the
//!   request's origin) only when allowed, and `allow-credentials`,
//!   `allow-methods`, `allow-headers`, `max-age` whenever configured (a
//!   `*` list echoes the request's `Access-Control-Request-*`).
//! - Any other response to a request from an allowed origin gets
//!   `allow-origin` (the origin), `allow-credentials: true` when set, and
//!   `expose-headers` when configured, replacing what the backend sent.
use hyper::{
    HeaderMap, Method, Response, StatusCode,
    header::{self, HeaderName, HeaderValue},
};

use super::super::{
    body::{ProxyBody, local},
    route::StringMatches,
};
use crate::plan::CorsPolicy;

/// What the CORS filter does with a request.
#[derive(Debug)]
pub(super) enum Step {
    /// A preflight the gateway answers.
    Answer(Response<ProxyBody>),
    /// The request goes on; the response gets the allow headers when an
    /// allowed origin is latched.
    Continue(Option<Latched>),
}

/// An allowed origin, and the policy whose headers its response gets.
#[derive(Debug)]
pub(super) struct Latched {
    origin: HeaderValue,
    allow_credentials: bool,
    expose_headers: String,
}

/// The request phase of the filter.
pub(super) fn on_request(
    policy: Option<&CorsPolicy>,
    origins: &StringMatches,
    method: &Method,
    headers: &HeaderMap,
) -> Step {
    let Some(policy) = policy else {
        return Step::Continue(None);
    };
    let Some(origin) = joined(headers, &header::ORIGIN) else {
        return Step::Continue(None);
    };
    let allowed = origins.any_accepts(b"*") || origins.any_accepts(origin.as_bytes());
    let latched = allowed.then(|| Latched {
        origin: origin.clone(),
        allow_credentials: policy.allow_credentials,
        expose_headers: policy.expose_headers.clone(),
    });
    let requested_method = joined(headers, &header::ACCESS_CONTROL_REQUEST_METHOD);
    let Some(requested_method) = requested_method.filter(|_| method == Method::OPTIONS) else {
        return Step::Continue(latched);
    };
    if !allowed && policy.forward_unmatched_preflights {
        return Step::Continue(None);
    }
    let mut response = local(StatusCode::OK, "");
    let out = response.headers_mut();
    if allowed {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if policy.allow_credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(methods) = listed(&policy.allow_methods, Some(requested_method)) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    let requested_headers = joined(headers, &header::ACCESS_CONTROL_REQUEST_HEADERS);
    if let Some(allowed_headers) = listed(&policy.allow_headers, requested_headers) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers);
    }
    if let Some(secs) = policy.max_age_secs {
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(secs));
    }
    Step::Answer(response)
}

/// The response phase: the allow headers for a latched origin.
pub(super) fn on_response(latched: Option<Latched>, headers: &mut HeaderMap) {
    let Some(latched) = latched else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, latched.origin);
    if latched.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Ok(expose) = HeaderValue::from_str(&latched.expose_headers) {
        if !expose.is_empty() {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose);
        }
    }
}

/// A configured list (empty: no header), `*` standing for what the
/// request asked for (nothing asked: an empty value, as Envoy sets it).
fn listed(configured: &str, requested: Option<HeaderValue>) -> Option<HeaderValue> {
    match configured {
        "" => None,
        "*" => Some(requested.unwrap_or_else(|| HeaderValue::from_static(""))),
        list => HeaderValue::from_str(list).ok(),
    }
}

/// A request header's values joined with `,` (Envoy keeps these inline
/// headers so); `None` when absent or empty.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let value = match values.next() {
        None => first.clone(),
        Some(second) => {
            let mut bytes = first.as_bytes().to_vec();
            for value in std::iter::once(second).chain(values) {
                bytes.push(b',');
                bytes.extend_from_slice(value.as_bytes());
            }
            HeaderValue::from_bytes(&bytes).ok()?
        }
    };
    (!value.is_empty()).then_some(value)
}
