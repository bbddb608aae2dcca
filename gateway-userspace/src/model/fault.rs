//! `http[].fault`: the delay and abort Istio's `TranslateFault` hands to
//! Envoy's fault filter, validated.
use std::time::Duration;

/// A share of requests, in millionths: Envoy's `FractionalPercent` with
/// the `MILLION` denominator Istio's `percentage` becomes. At or above a
/// million every request is chosen, as Envoy clamps a numerator above its
/// denominator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PerMillion(pub u32);

impl PerMillion {
    pub const ALL: Self = Self(1_000_000);

    /// Whether a request whose random draw is `draw` is chosen: Envoy's
    /// `random % denominator < numerator`.
    pub fn chooses(self, draw: u64) -> bool {
        draw % 1_000_000 < u64::from(self.0)
    }
}

/// `fault`: at least one of delay and abort. The two are drawn
/// independently, the abort after the delay has run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// `fault.delay` with a `fixedDelay` (the only kind Istio translates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDelay {
    /// Whole milliseconds, at least one.
    pub fixed: Duration,
    pub share: PerMillion,
}

/// `fault.abort` with an `httpStatus` or a `grpcStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub share: PerMillion,
}

/// What an abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status in 200..=599.
    Http(u16),
    /// A gRPC status code (0..=16), from Istio's names (`UNAVAILABLE`).
    Grpc(u8),
}
