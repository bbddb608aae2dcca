//! A route's retry policy as Envoy runs it under Istio's translation
//! (istio/istio `pilot/pkg/networking/core/route/retry/retry.go`).
use std::time::Duration;

/// Envoy's `retry_on` conditions, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// Any 5xx response, any reset, a connect failure, a per-try timeout.
    pub const FIVE_XX: Self = Self(1 << 0);
    /// 502, 503, 504, any reset, a connect failure, a per-try timeout.
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    /// No response at all: a reset, a disconnect, a per-try timeout.
    pub const RESET: Self = Self(1 << 2);
    /// A reset before the request reached the backend.
    pub const RESET_BEFORE_REQUEST: Self = Self(1 << 3);
    pub const CONNECT_FAILURE: Self = Self(1 << 4);
    /// 409.
    pub const RETRIABLE_4XX: Self = Self(1 << 5);
    /// HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: Self = Self(1 << 6);
    /// The policy's status codes.
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 7);
    /// Response headers matching `retriable_headers`, which Istio never
    /// sets: retries nothing here.
    pub const RETRIABLE_HEADERS: Self = Self(1 << 8);
    /// A response carrying `x-envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: Self = Self(1 << 9);
    /// HTTP/3 only: retries nothing here.
    pub const HTTP3_POST_CONNECT_FAILURE: Self = Self(1 << 10);
    pub const GRPC_CANCELLED: Self = Self(1 << 11);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 12);
    pub const GRPC_INTERNAL: Self = Self(1 << 13);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 14);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 15);

    /// The condition a policy name stands for (Envoy's names).
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "5xx" => Self::FIVE_XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "reset" => Self::RESET,
            "reset-before-request" => Self::RESET_BEFORE_REQUEST,
            "connect-failure" => Self::CONNECT_FAILURE,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "refused-stream" => Self::REFUSED_STREAM,
            "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
            "retriable-headers" => Self::RETRIABLE_HEADERS,
            "envoy-ratelimited" => Self::ENVOY_RATELIMITED,
            "http3-post-connect-failure" => Self::HTTP3_POST_CONNECT_FAILURE,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            _ => return None,
        })
    }

    /// Whether any of `other`'s conditions is set.
    pub const fn any(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets of conditions.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Envoy's default back-off base interval (`upstream.base_retry_backoff_ms`).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A route's retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub num_retries: u32,
    pub retry_on: RetryOn,
    /// For `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    /// Each try's limit; none: only the route's timeout bounds a try.
    pub per_try_timeout: Option<Duration>,
    /// Envoy's `previous_hosts` predicate: a retry draws another endpoint
    /// when there is one (off under consistent hashing).
    pub other_host: bool,
    /// `retryRemoteLocalities`: Envoy's `previous_priorities` retry priority.
    pub remote_localities: bool,
    /// Exponential back-off: the first retry waits up to `base`, each
    /// next one up to twice as long, never more than `max` (10 x base).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}
