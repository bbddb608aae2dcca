//! A route's retry policy as Istio translates `http[].retries`
//! (istio/istio `pilot/pkg/networking/core/route/retry/retry.go`
//! `ConvertPolicy`, `parseRetryOn`).
use crate::{
    model::{HttpRetry, known_status_code},
    plan::{DEFAULT_BACKOFF_BASE, RetryOn, RetryPolicy},
};

/// Istio's default `retryOn` for a route that sets no retries.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Istio's default number of retries.
const DEFAULT_RETRIES: u32 = 2;

/// The policy of a route with `retries` (or none: Istio's default);
/// `hashing` when the route's single destination balances by consistent
/// hash (Istio then drops the other-host predicate: a retry stays on the
/// hashed endpoint). `None` when `attempts: 0` disables retries.
pub(super) fn retry_policy(retries: Option<&HttpRetry>, hashing: bool) -> Option<RetryPolicy> {
    let Some(retries) = retries else {
        return Some(default_policy(hashing));
    };
    if retries.attempts == 0 {
        return None;
    }
    let mut policy = default_policy(hashing);
    policy.num_retries = retries.attempts;
    if let Some(text) = &retries.retry_on {
        (policy.retry_on, policy.status_codes) = parse_retry_on(text);
    }
    policy.per_try_timeout = retries.per_try_timeout;
    if let Some(ignore) = retries.retry_ignore_previous_hosts {
        policy.other_host = ignore;
    }
    policy.remote_localities = retries.retry_remote_localities == Some(true);
    if let Some(base) = retries.backoff {
        policy.backoff_base = base;
        policy.backoff_max = base * 10;
    }
    Some(policy)
}

fn default_policy(hashing: bool) -> RetryPolicy {
    let (retry_on, status_codes) = parse_retry_on(DEFAULT_RETRY_ON);
    RetryPolicy {
        num_retries: DEFAULT_RETRIES,
        retry_on,
        status_codes,
        per_try_timeout: None,
        other_host: !hashing,
        remote_localities: false,
        backoff_base: DEFAULT_BACKOFF_BASE,
        // Envoy's default cap: ten times the base interval.
        backoff_max: DEFAULT_BACKOFF_BASE * 10,
    }
}

/// `retryOn` split into Envoy's conditions and status codes: entries
/// trimmed, integers that are status codes taken as codes, and
/// `retriable-status-codes` added when codes are given without it.
fn parse_retry_on(text: &str) -> (RetryOn, Vec<u16>) {
    let mut retry_on = RetryOn::default();
    let mut codes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(code) if known_status_code(code) => codes.push(code),
            _ => {
                if let Some(condition) = RetryOn::named(part) {
                    retry_on = retry_on.with(condition);
                }
            }
        }
    }
    if !codes.is_empty() {
        retry_on = retry_on.with(RetryOn::RETRIABLE_STATUS_CODES);
    }
    (retry_on, codes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn retries(attempts: u32, retry_on: Option<&str>) -> HttpRetry {
        HttpRetry {
            attempts,
            retry_on: retry_on.map(String::from),
            ..HttpRetry::default()
        }
    }

    #[test]
    fn a_route_without_retries_gets_istios_default_policy() {
        let policy = retry_policy(None, false).expect("a policy");
        assert_eq!(policy.num_retries, 2);
        for name in [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ] {
            let condition = RetryOn::named(name).expect("a condition");
            assert!(policy.retry_on.any(condition), "{name}");
        }
        assert!(!policy.retry_on.any(RetryOn::FIVE_XX));
        assert!(!policy.retry_on.any(RetryOn::RESET));
        // Istio gives Envoy no codes with the default: 503 is not retried.
        assert!(policy.status_codes.is_empty());
        assert!(policy.other_host);
        assert_eq!(policy.backoff_base, Duration::from_millis(25));
        assert_eq!(policy.backoff_max, Duration::from_millis(250));
        assert_eq!(policy.per_try_timeout, None);
    }

    #[test]
    fn consistent_hashing_keeps_retries_on_the_hashed_host() {
        assert!(!retry_policy(None, true).expect("a policy").other_host);
        let custom = retry_policy(Some(&retries(3, Some("5xx"))), true).expect("a policy");
        assert!(!custom.other_host);
    }

    #[test]
    fn zero_attempts_disable_retries() {
        assert_eq!(retry_policy(Some(&retries(0, None)), false), None);
    }

    #[test]
    fn attempts_alone_keep_the_default_conditions() {
        let policy = retry_policy(Some(&retries(5, None)), false).expect("a policy");
        assert_eq!(policy.num_retries, 5);
        assert_eq!(
            policy.retry_on,
            retry_policy(None, false).expect("a policy").retry_on
        );
    }

    #[test]
    fn status_codes_in_retry_on_become_retriable_status_codes() {
        let policy = retry_policy(
            Some(&retries(2, Some("5xx, 503 ,429,,gateway-error"))),
            false,
        )
        .expect("a policy");
        assert_eq!(policy.status_codes, [503, 429]);
        assert!(policy.retry_on.any(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(policy.retry_on.any(RetryOn::FIVE_XX));
        assert!(policy.retry_on.any(RetryOn::GATEWAY_ERROR));
        assert!(!policy.retry_on.any(RetryOn::CONNECT_FAILURE));
    }

    #[test]
    fn a_written_retry_on_replaces_the_default_conditions() {
        let policy = retry_policy(Some(&retries(1, Some("reset"))), false).expect("a policy");
        assert_eq!(policy.retry_on, RetryOn::RESET);
        assert!(policy.status_codes.is_empty());
    }

    #[test]
    fn ignore_previous_hosts_false_keeps_retries_on_any_host() {
        let mut written = retries(2, None);
        written.retry_ignore_previous_hosts = Some(false);
        assert!(
            !retry_policy(Some(&written), false)
                .expect("a policy")
                .other_host
        );
        written.retry_ignore_previous_hosts = Some(true);
        assert!(
            retry_policy(Some(&written), true)
                .expect("a policy")
                .other_host
        );
    }

    #[test]
    fn backoff_sets_the_base_and_a_cap_ten_times_it() {
        let mut written = retries(2, None);
        written.backoff = Some(Duration::from_millis(100));
        written.per_try_timeout = Some(Duration::from_secs(1));
        written.retry_remote_localities = Some(true);
        let policy = retry_policy(Some(&written), false).expect("a policy");
        assert_eq!(policy.backoff_base, Duration::from_millis(100));
        assert_eq!(policy.backoff_max, Duration::from_secs(1));
        assert_eq!(policy.per_try_timeout, Some(Duration::from_secs(1)));
        assert!(policy.remote_localities);
    }
}
