//! `http[].fault`: one test per rule of Istio's validation and translation.
use std::{path::PathBuf, time::Duration};

use crate::{
    config::{Config, diagnostic::Severity, load_sources},
    model::{AbortStatus, FaultAbort, FaultDelay, HttpFault, PerMillion},
};

fn with_fault(fault: &str) -> Config {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: apps\nspec:\n  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: web}}\n    fault:\n{fault}"
    );
    load_sources(&[(PathBuf::from("r.yaml"), text)])
}

fn fault_of(config: &Config) -> Option<HttpFault> {
    assert!(!config.has_errors(), "{:#?}", config.diagnostics);
    config.model.virtual_services[0].http[0].fault.clone()
}

fn diagnostic(config: &Config, severity: Severity, field: &str, message: &str) {
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.severity == severity && d.field == field && d.message == message),
        "missing {severity:?} {field}: {message}\n{:#?}",
        config.diagnostics
    );
}

#[test]
fn a_delay_and_an_abort_are_decoded_with_their_shares_in_millionths() {
    let config = with_fault(
        "      delay: {fixedDelay: 1.5s, percentage: {value: 12.5}}\n      abort: {httpStatus: 503, percentage: {value: 50}}\n",
    );
    assert_eq!(
        fault_of(&config),
        Some(HttpFault {
            delay: Some(FaultDelay {
                fixed: Duration::from_millis(1500),
                share: PerMillion(125_000),
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Http(503),
                share: PerMillion(500_000),
            }),
        })
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
}

#[test]
fn without_a_percentage_nothing_is_injected() {
    // Istio: an absent `percentage` leaves Envoy's FractionalPercent at 0,
    // and a delay's absent `percent` is translated as 0 too.
    let config =
        with_fault("      delay: {fixedDelay: 1s}\n      abort: {grpcStatus: UNAVAILABLE}\n");
    let fault = fault_of(&config).expect("a fault");
    assert_eq!(fault.delay.map(|d| d.share), Some(PerMillion(0)));
    assert_eq!(
        fault.abort,
        Some(FaultAbort {
            status: AbortStatus::Grpc(14),
            share: PerMillion(0)
        })
    );
}

#[test]
fn the_deprecated_percent_counts_only_without_percentage() {
    let percent = with_fault("      delay: {fixedDelay: 1s, percent: 30}\n");
    assert_eq!(
        fault_of(&percent).and_then(|f| f.delay).map(|d| d.share),
        Some(PerMillion(300_000))
    );
    let both = with_fault("      delay: {fixedDelay: 1s, percent: 30, percentage: {value: 1}}\n");
    assert_eq!(
        fault_of(&both).and_then(|f| f.delay).map(|d| d.share),
        Some(PerMillion(10_000))
    );
    // Above 100 Envoy chooses every request; a warning says so.
    let above = with_fault("      delay: {fixedDelay: 1s, percent: 150}\n");
    assert_eq!(
        fault_of(&above).and_then(|f| f.delay).map(|d| d.share),
        Some(PerMillion(1_500_000))
    );
    diagnostic(
        &above,
        Severity::Warning,
        "spec.http[0].fault.delay.percent",
        "percent 150 is outside 0..100: Envoy delays every request",
    );
}

#[test]
fn a_fault_needs_a_delay_or_an_abort() {
    diagnostic(
        &with_fault("      {}\n"),
        Severity::Error,
        "spec.http[0].fault",
        "HTTP fault injection must have an abort and/or a delay",
    );
}

#[test]
fn percentages_are_zero_or_between_a_ten_thousandth_and_a_hundred() {
    for (value, ok) in [
        ("0", true),
        ("0.0001", true),
        ("100", true),
        ("0.00001", false),
        ("100.5", false),
        ("-1", false),
    ] {
        let config = with_fault(&format!(
            "      abort: {{httpStatus: 500, percentage: {{value: {value}}}}}\n"
        ));
        assert_eq!(
            !config.has_errors(),
            ok,
            "{value}: {:#?}",
            config.diagnostics
        );
        if !ok {
            assert_eq!(
                config.diagnostics[0].field,
                "spec.http[0].fault.abort.percentage.value"
            );
        }
    }
}

#[test]
fn abort_http_status_is_between_200_and_599() {
    for (status, ok) in [(200, true), (599, true), (199, false), (600, false)] {
        let config = with_fault(&format!(
            "      abort: {{httpStatus: {status}, percentage: {{value: 1}}}}\n"
        ));
        assert_eq!(!config.has_errors(), ok, "{status}");
    }
    diagnostic(
        &with_fault("      abort: {httpStatus: 600}\n"),
        Severity::Error,
        "spec.http[0].fault.abort.httpStatus",
        "HTTP status 600 is not in range 200-599",
    );
}

#[test]
fn abort_grpc_status_is_one_of_istios_names() {
    let config = with_fault("      abort: {grpcStatus: Unavailable}\n");
    diagnostic(
        &config,
        Severity::Error,
        "spec.http[0].fault.abort.grpcStatus",
        "gRPC status \"Unavailable\" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'",
    );
    let last = with_fault("      abort: {grpcStatus: UNAUTHENTICATED}\n");
    assert_eq!(
        fault_of(&last).and_then(|f| f.abort).map(|a| a.status),
        Some(AbortStatus::Grpc(16))
    );
}

#[test]
fn http2_error_is_refused_as_istio_refuses_it() {
    diagnostic(
        &with_fault("      abort: {http2Error: REFUSED_STREAM}\n"),
        Severity::Error,
        "spec.http[0].fault.abort.http2Error",
        "HTTP/2 abort fault injection not supported yet",
    );
}

#[test]
fn an_abort_without_an_error_type_is_warned_and_dropped() {
    let config = with_fault(
        "      abort: {percentage: {value: 10}}\n      delay: {fixedDelay: 10ms, percentage: {value: 10}}\n",
    );
    diagnostic(
        &config,
        Severity::Warning,
        "spec.http[0].fault.abort",
        "abort configured, but error type not set",
    );
    let fault = fault_of(&config).expect("the delay stays");
    assert!(fault.abort.is_none());
    assert!(fault.delay.is_some());
    // Nothing left: no fault at all, as TranslateFault returns nil.
    let nothing = with_fault("      abort: {percentage: {value: 10}}\n");
    assert_eq!(fault_of(&nothing), None);
}

#[test]
fn fixed_delay_is_at_least_a_millisecond_to_the_millisecond() {
    for (delay, message) in [
        ("0s", "duration must be greater than 1ms"),
        ("1500us", "only durations to ms precision are supported"),
    ] {
        diagnostic(
            &with_fault(&format!("      delay: {{fixedDelay: {delay}}}\n")),
            Severity::Error,
            "spec.http[0].fault.delay.fixedDelay",
            message,
        );
    }
    let fine = with_fault("      delay: {fixedDelay: 1.1s}\n");
    assert_eq!(
        fault_of(&fine).and_then(|f| f.delay).map(|d| d.fixed),
        Some(Duration::from_millis(1100))
    );
}

#[test]
fn exponential_delay_is_refused() {
    diagnostic(
        &with_fault("      delay: {exponentialDelay: 1s}\n"),
        Severity::Error,
        "spec.http[0].fault.delay.exponentialDelay",
        "exponentialDelay not supported yet",
    );
}

#[test]
fn fault_is_no_longer_said_not_applied() {
    let config = with_fault("      abort: {httpStatus: 500, percentage: {value: 1}}\n");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
}

#[test]
fn shares_choose_a_draw_below_them_out_of_a_million() {
    assert!(PerMillion(1).chooses(0));
    assert!(!PerMillion(1).chooses(1));
    assert!(PerMillion(500_000).chooses(1_499_999));
    assert!(!PerMillion(500_000).chooses(1_500_000));
    assert!(!PerMillion(0).chooses(0));
    assert!(PerMillion::ALL.chooses(999_999));
    assert!(PerMillion(u32::MAX).chooses(u64::MAX));
}
