//! `http[].retries`, checked as Istio's `ValidateHTTPRetry` checks it
//! (istio/istio `pkg/config/validation/agent/validation.go`).
use std::time::Duration;

use crate::{
    config::{
        common::{count, duration},
        decode::{Decoder, field, join},
        yaml::Node,
    },
    model::{HttpRetry, known_status_code},
};

/// The `retryOn` policy names Istio accepts (`supportedRetryOnPolicies`):
/// Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` values.
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const FIELDS: &[&str] = &[
    "attempts",
    "perTryTimeout",
    "retryOn",
    "retryRemoteLocalities",
    "retryIgnorePreviousHosts",
    "backoff",
];

/// `retries`; `None` on an error (the rule is then refused by the caller's
/// error count, like any invalid field).
pub(super) fn decode_retries(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<HttpRetry> {
    let entries = d.mapping(node, path, FIELDS)?;
    let attempts = match field(entries, "attempts") {
        Some(at) => match d.integer(at, &join(path, "attempts")) {
            Some(n) if n < 0 => {
                d.error(at, &join(path, "attempts"), "attempts cannot be negative");
                return None;
            }
            _ => count(d, entries, "attempts", path)?,
        },
        None => 0,
    };
    let per_try_timeout = precise_duration(d, entries, "perTryTimeout", path);
    let backoff = precise_duration(d, entries, "backoff", path);
    let retry_on = d.opt_string(entries, "retryOn", path);
    if let (Some(text), Some(at)) = (&retry_on, field(entries, "retryOn")) {
        for policy in text.split(',') {
            if !is_retry_on_policy(policy) {
                d.error(
                    at,
                    &join(path, "retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
    let flag = |d: &mut Decoder<'_>, name: &str| {
        field(entries, name).and_then(|n| d.boolean(n, &join(path, name)))
    };
    let retry_remote_localities = flag(d, "retryRemoteLocalities");
    let retry_ignore_previous_hosts = flag(d, "retryIgnorePreviousHosts");
    if attempts == 0
        && (per_try_timeout.is_some() || retry_on.is_some() || retry_remote_localities.is_some())
    {
        d.error(
            node,
            path,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    Some(HttpRetry {
        attempts,
        per_try_timeout,
        retry_on,
        retry_remote_localities,
        retry_ignore_previous_hosts,
        backoff,
    })
}

/// One `retryOn` entry as Istio's validation reads it: a policy name, or
/// an integer that is a known HTTP status code (Go's `http.StatusText`).
/// Not trimmed: Istio's validation splits on `,` only.
fn is_retry_on_policy(policy: &str) -> bool {
    RETRY_ON_POLICIES.contains(&policy) || policy.parse::<u16>().is_ok_and(known_status_code)
}

/// A duration Istio's `ValidateDuration` accepts: at least 1ms, whole
/// milliseconds.
fn precise_duration(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    name: &str,
    path: &str,
) -> Option<Duration> {
    let value = duration(d, entries, name, path)?;
    let at = field(entries, name)?;
    if value < Duration::from_millis(1) {
        d.error(at, &join(path, name), "duration must be greater than 1ms");
        return None;
    }
    if value.subsec_nanos() % 1_000_000 != 0 {
        d.error(
            at,
            &join(path, name),
            "only durations to ms precision are supported",
        );
        return None;
    }
    Some(value)
}
