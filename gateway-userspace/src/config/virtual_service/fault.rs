//! `http[].fault`, with Istio's `validateHTTPFaultInjection` rules and
//! what `TranslateFault` keeps of it (pilot/pkg/networking/core/route).
use crate::{
    config::{
        decode::{Decoder, field, join},
        diagnostic::Severity,
        rules,
        yaml::{Node, Value},
    },
    model::{AbortStatus, FaultAbort, FaultDelay, HttpFault, PerMillion},
};

/// Istio's gRPC status names (`pkg/util/grpc/codes.go`), by code.
const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `fault`; `None` when it is invalid or nothing of it is translated.
pub(super) fn decode_fault(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<HttpFault> {
    let entries = d.mapping(node, path, &["delay", "abort"])?;
    let (delay_node, abort_node) = (field(entries, "delay"), field(entries, "abort"));
    let has = |n: Option<&Node>| n.is_some_and(|n| n.value != Value::Null);
    if !has(delay_node) && !has(abort_node) {
        d.error(
            node,
            path,
            "HTTP fault injection must have an abort and/or a delay",
        );
        return None;
    }
    let delay = delay_node.and_then(|n| decode_delay(d, n, &join(path, "delay")));
    let abort = abort_node.and_then(|n| decode_abort(d, n, &join(path, "abort")));
    // `TranslateFault` returns nothing when neither part survives.
    (delay.is_some() || abort.is_some()).then_some(HttpFault { delay, abort })
}

/// `fault.delay`: a `fixedDelay` of whole milliseconds (at least one), and
/// its share from `percentage`, else the deprecated integer `percent`,
/// else none at all (Istio translates an absent `percent` as 0%).
fn decode_delay(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<FaultDelay> {
    let entries = d.mapping(
        node,
        path,
        &["fixedDelay", "exponentialDelay", "percentage", "percent"],
    )?;
    let percentage = field(entries, "percentage")
        .and_then(|n| decode_percentage(d, n, &join(path, "percentage")));
    let percent =
        field(entries, "percent").and_then(|n| decode_percent(d, n, &join(path, "percent")));
    if let Some(at) = field(entries, "exponentialDelay") {
        d.error(
            at,
            &join(path, "exponentialDelay"),
            "exponentialDelay not supported yet",
        );
        return None;
    }
    let Some(at) = field(entries, "fixedDelay") else {
        d.report(
            Severity::Warning,
            node,
            path,
            "delay without fixedDelay: Istio translates no delay from it".into(),
        );
        return None;
    };
    let fixed = milliseconds(d, at, &join(path, "fixedDelay"))?;
    Some(FaultDelay {
        fixed,
        share: percentage.or(percent).unwrap_or_default(),
    })
}

/// `fault.abort`: `httpStatus` or `grpcStatus`, and its share from
/// `percentage` (none without it).
fn decode_abort(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<FaultAbort> {
    let entries = d.mapping(
        node,
        path,
        &["httpStatus", "grpcStatus", "http2Error", "percentage"],
    )?;
    let share = field(entries, "percentage")
        .and_then(|n| decode_percentage(d, n, &join(path, "percentage")))
        .unwrap_or_default();
    let set: Vec<&str> = ["httpStatus", "grpcStatus", "http2Error"]
        .into_iter()
        .filter(|name| field(entries, name).is_some())
        .collect();
    if set.len() > 1 {
        // A protobuf oneof: the CRD's schema refuses two of them.
        d.error(
            node,
            path,
            "only one of httpStatus, grpcStatus and http2Error may be set",
        );
        return None;
    }
    let status = match set.first().copied() {
        Some("httpStatus") => {
            let at = field(entries, "httpStatus")?;
            let status_path = join(path, "httpStatus");
            let status = d.integer(at, &status_path)?;
            // Istio's check lets 600 through; Envoy's `http_status` is
            // `[200, 600)` and would refuse the whole route table.
            if !(200..600).contains(&status) {
                d.error(
                    at,
                    &status_path,
                    format!("HTTP status {status} is not in range 200-599"),
                );
                return None;
            }
            AbortStatus::Http(u16::try_from(status).ok()?)
        }
        Some("grpcStatus") => {
            let at = field(entries, "grpcStatus")?;
            let status_path = join(path, "grpcStatus");
            let name = d.string(at, &status_path)?;
            let Some(code) = GRPC_STATUS.iter().position(|known| *known == name) else {
                d.error(
                    at,
                    &status_path,
                    format!(
                        "gRPC status {name:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
                    ),
                );
                return None;
            };
            AbortStatus::Grpc(u8::try_from(code).ok()?)
        }
        Some(_) => {
            let at = field(entries, "http2Error").unwrap_or(node);
            d.error(
                at,
                &join(path, "http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
            return None;
        }
        None => {
            d.report(
                Severity::Warning,
                node,
                path,
                "abort configured, but error type not set".into(),
            );
            return None;
        }
    };
    Some(FaultAbort { status, share })
}

/// A `Percent` (`{value: 12.5}`): 0, or 0.0001 to 100, as `value * 10000`
/// millionths, truncated (`translatePercentToFractionalPercent`).
pub(super) fn decode_percentage(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<PerMillion> {
    let Some((at, value_path, value)) = super::percent_value(d, node, path)? else {
        return Some(PerMillion(0));
    };
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        d.error(
            at,
            &value_path,
            format!("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
        return None;
    }
    // Rust's cast truncates as Go's `uint32(p.Value * 10000)` does.
    Some(PerMillion((value * 10_000.0) as u32))
}

/// The deprecated integer `percent` of a delay: hundredths, which Istio
/// does not check; Envoy chooses every request above 100, and a negative
/// value, cast to an unsigned numerator, is above 100.
fn decode_percent(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<PerMillion> {
    let value = d.integer(node, path)?;
    let Ok(value) = i32::try_from(value) else {
        d.error(
            node,
            path,
            format!("percent {value} is not a 32-bit integer"),
        );
        return None;
    };
    if !(0..=100).contains(&value) {
        d.report(
            Severity::Warning,
            node,
            path,
            format!("percent {value} is outside 0..100: Envoy delays every request"),
        );
    }
    Some(PerMillion((value as u32).saturating_mul(10_000)))
}

/// A duration of whole milliseconds, at least one (Istio's
/// `ValidateDuration`).
pub(super) fn milliseconds(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<std::time::Duration> {
    let text = d.string(node, path)?;
    let Some(millis) = rules::duration_millis(&text) else {
        d.error(
            node,
            path,
            format!(
                "invalid duration {text:?}: expected a number with a unit such as 5s, 100ms or 1m"
            ),
        );
        return None;
    };
    if millis < 1.0 {
        d.error(node, path, "duration must be greater than 1ms");
        return None;
    }
    // Judged in whole nanoseconds: `1.1s` is 1100.0000000000002 ms in binary.
    let nanos = (millis * 1e6).round() as u64;
    if !nanos.is_multiple_of(1_000_000) {
        d.error(node, path, "only durations to ms precision are supported");
        return None;
    }
    Some(std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests;
