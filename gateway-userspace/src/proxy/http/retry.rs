//! When a try is retried, and how long the next one waits: Envoy's
//! `RetryStateImpl` (`wouldRetryFromHeaders`, `wouldRetryFromReset`) and
//! its fully jittered exponential back-off
//! (`JitteredExponentialBackOffStrategy`).
use std::time::Duration;

use hyper::{HeaderMap, StatusCode};

use crate::{
    plan::{RetryOn, RetryPolicy},
    proxy::upstream::FailureKind,
};

/// Why a try got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoResponse {
    Failed(FailureKind),
    /// The try ran out of its `perTryTimeout`.
    PerTryTimeout,
}

/// Conditions under which any reset (or a per-try timeout) is retried.
const ON_ANY_RESET: RetryOn = RetryOn::FIVE_XX
    .with(RetryOn::GATEWAY_ERROR)
    .with(RetryOn::RESET);

/// Whether a try that got no response is retried.
pub(super) fn retries_no_response(policy: &RetryPolicy, why: NoResponse) -> bool {
    let on = policy.retry_on;
    match why {
        NoResponse::Failed(FailureKind::NoHost | FailureKind::Overflow) => false,
        NoResponse::PerTryTimeout | NoResponse::Failed(FailureKind::Reset) => on.any(ON_ANY_RESET),
        NoResponse::Failed(FailureKind::ResetBeforeRequest) => {
            on.any(ON_ANY_RESET.with(RetryOn::RESET_BEFORE_REQUEST))
        }
        NoResponse::Failed(FailureKind::ConnectFailure) => on.any(
            ON_ANY_RESET
                .with(RetryOn::CONNECT_FAILURE)
                .with(RetryOn::RESET_BEFORE_REQUEST),
        ),
        NoResponse::Failed(FailureKind::RefusedStream) => {
            on.any(ON_ANY_RESET.with(RetryOn::REFUSED_STREAM))
        }
    }
}

/// Whether a response with this status and these headers is retried.
pub(super) fn retries_response(
    policy: &RetryPolicy,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    let on = policy.retry_on;
    if headers.contains_key("x-envoy-overloaded") {
        return false;
    }
    if headers.contains_key("x-envoy-ratelimited") {
        return on.any(RetryOn::ENVOY_RATELIMITED);
    }
    let code = status.as_u16();
    (on.any(RetryOn::FIVE_XX) && status.is_server_error())
        || (on.any(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504))
        || (on.any(RetryOn::RETRIABLE_4XX) && code == 409)
        || (on.any(RetryOn::RETRIABLE_STATUS_CODES) && policy.status_codes.contains(&code))
        || grpc_status(headers).is_some_and(|grpc| retries_grpc_status(on, grpc))
}

/// The `grpc-status` of a trailers-only gRPC response.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn retries_grpc_status(on: RetryOn, status: u32) -> bool {
    let condition = match status {
        1 => RetryOn::GRPC_CANCELLED,
        4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
        8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        13 => RetryOn::GRPC_INTERNAL,
        14 => RetryOn::GRPC_UNAVAILABLE,
        _ => return false,
    };
    on.any(condition)
}

/// The wait before retry `retry` (1 for the first): a draw below the
/// interval, which starts at the base and doubles per retry up to the cap
/// (Envoy draws `random % interval` in milliseconds).
pub(super) fn backoff(policy: &RetryPolicy, retry: u32, draw: u64) -> Duration {
    let base = policy.backoff_base.as_millis().max(1);
    let max = policy.backoff_max.as_millis().max(base);
    let doublings = retry.saturating_sub(1).min(32);
    let interval = base.saturating_mul(1u128 << doublings).min(max);
    let millis = u128::from(draw) % interval;
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn policy(retry_on: &[&str], codes: &[u16]) -> RetryPolicy {
        let retry_on = retry_on
            .iter()
            .filter_map(|name| RetryOn::named(name))
            .fold(RetryOn::default(), RetryOn::with);
        RetryPolicy {
            num_retries: 2,
            retry_on,
            status_codes: codes.to_vec(),
            per_try_timeout: None,
            other_host: true,
            remote_localities: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }

    fn istio_default() -> RetryPolicy {
        policy(
            &[
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ],
            &[],
        )
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("a status")
    }

    fn grpc(code: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_str(code).expect("a value"));
        headers
    }

    #[test]
    fn istios_default_retries_a_refused_connection_and_a_refused_stream_only() {
        let p = istio_default();
        let failed = |kind| retries_no_response(&p, NoResponse::Failed(kind));
        assert!(failed(FailureKind::ConnectFailure));
        assert!(failed(FailureKind::RefusedStream));
        assert!(!failed(FailureKind::Reset));
        assert!(!failed(FailureKind::ResetBeforeRequest));
        assert!(!failed(FailureKind::NoHost));
        assert!(!retries_no_response(&p, NoResponse::PerTryTimeout));
        assert!(!retries_response(&p, status(503), &HeaderMap::new()));
    }

    #[test]
    fn istios_default_retries_grpc_unavailable_and_cancelled() {
        let p = istio_default();
        assert!(retries_response(&p, status(200), &grpc("14")));
        assert!(retries_response(&p, status(200), &grpc("1")));
        assert!(!retries_response(&p, status(200), &grpc("13")));
        assert!(!retries_response(&p, status(200), &grpc("0")));
    }

    #[test]
    fn five_xx_retries_every_server_error_reset_and_per_try_timeout() {
        let p = policy(&["5xx"], &[]);
        for code in [500, 501, 503, 599] {
            assert!(
                retries_response(&p, status(code), &HeaderMap::new()),
                "{code}"
            );
        }
        assert!(!retries_response(&p, status(404), &HeaderMap::new()));
        for kind in [
            FailureKind::ConnectFailure,
            FailureKind::RefusedStream,
            FailureKind::Reset,
            FailureKind::ResetBeforeRequest,
        ] {
            assert!(
                retries_no_response(&p, NoResponse::Failed(kind)),
                "{kind:?}"
            );
        }
        assert!(retries_no_response(&p, NoResponse::PerTryTimeout));
    }

    #[test]
    fn gateway_error_retries_502_503_504_only() {
        let p = policy(&["gateway-error"], &[]);
        let retried: Vec<u16> = (500..=505)
            .filter(|code| retries_response(&p, status(*code), &HeaderMap::new()))
            .collect();
        assert_eq!(retried, [502, 503, 504]);
        assert!(retries_no_response(&p, NoResponse::PerTryTimeout));
    }

    #[test]
    fn reset_retries_no_response_but_not_a_response() {
        let p = policy(&["reset"], &[]);
        assert!(retries_no_response(
            &p,
            NoResponse::Failed(FailureKind::Reset)
        ));
        assert!(retries_no_response(&p, NoResponse::PerTryTimeout));
        assert!(!retries_response(&p, status(503), &HeaderMap::new()));
    }

    #[test]
    fn reset_before_request_retries_only_what_never_reached_the_backend() {
        let p = policy(&["reset-before-request"], &[]);
        let failed = |kind| retries_no_response(&p, NoResponse::Failed(kind));
        assert!(failed(FailureKind::ResetBeforeRequest));
        assert!(failed(FailureKind::ConnectFailure));
        assert!(!failed(FailureKind::Reset));
        assert!(!retries_no_response(&p, NoResponse::PerTryTimeout));
    }

    #[test]
    fn retriable_4xx_is_409_and_status_codes_are_the_listed_ones() {
        let p = policy(&["retriable-4xx", "retriable-status-codes"], &[429]);
        assert!(retries_response(&p, status(409), &HeaderMap::new()));
        assert!(retries_response(&p, status(429), &HeaderMap::new()));
        assert!(!retries_response(&p, status(400), &HeaderMap::new()));
        assert!(!retries_response(&p, status(503), &HeaderMap::new()));
    }

    #[test]
    fn an_overloaded_or_rate_limited_answer_is_retried_only_under_envoy_ratelimited() {
        let p = policy(&["5xx"], &[]);
        let mut overloaded = HeaderMap::new();
        overloaded.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        assert!(!retries_response(&p, status(503), &overloaded));
        let mut limited = HeaderMap::new();
        limited.insert("x-envoy-ratelimited", HeaderValue::from_static("true"));
        assert!(!retries_response(&p, status(503), &limited));
        let limits = policy(&["envoy-ratelimited"], &[]);
        assert!(retries_response(&limits, status(429), &limited));
    }

    #[test]
    fn backoff_draws_below_an_interval_doubling_from_the_base_to_the_cap() {
        let p = istio_default();
        let ms = Duration::from_millis;
        // A draw one below the interval waits longest; a draw of the
        // interval itself waits nothing.
        assert_eq!(backoff(&p, 1, 24), ms(24));
        assert_eq!(backoff(&p, 1, 25), ms(0));
        assert_eq!(backoff(&p, 2, 49), ms(49));
        assert_eq!(backoff(&p, 3, 99), ms(99));
        assert_eq!(backoff(&p, 4, 199), ms(199));
        // 25 ms x 16 is over the cap: 250 ms it is.
        assert_eq!(backoff(&p, 5, 249), ms(249));
        assert_eq!(backoff(&p, 5, 250), ms(0));
        assert_eq!(backoff(&p, 40, 249), ms(249));
        assert_eq!(backoff(&p, 3, 130), ms(30));
        assert_eq!(backoff(&p, 1, 0), Duration::ZERO);
    }
}
