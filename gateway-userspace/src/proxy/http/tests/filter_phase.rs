//! The route's fault injection and CORS policy, ahead of its action:
//! the draws and answers alone, then live requests through [`handle`]
//! with the access log read back.
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use super::{
    super::fault,
    handle_phase::{Harness, PORT},
    upstream_phase::{route_to, yaml},
};
use crate::{
    plan::{AbortStatus, FaultAbort, FaultDelay, HttpFault, PerMillion},
    proxy::{access_log::Format, testing::Backend},
};

fn fault(delay: Option<u32>, abort: Option<u32>) -> HttpFault {
    HttpFault {
        delay: delay.map(|share| FaultDelay {
            fixed: Duration::from_millis(5),
            share: PerMillion(share),
        }),
        abort: abort.map(|share| FaultAbort {
            status: AbortStatus::Http(503),
            share: PerMillion(share),
        }),
    }
}

#[test]
fn the_delay_is_drawn_first_and_the_abort_on_its_own_draw() {
    let both = fault(Some(500_000), Some(500_000));
    let mut draws = [10, 900_000].into_iter();
    let injection = fault::decide(&both, || draws.next().expect("two draws"));
    assert_eq!(injection.delay, Some(Duration::from_millis(5)));
    assert_eq!(injection.abort, None);
    let mut draws = [900_000, 10].into_iter();
    let injection = fault::decide(&both, || draws.next().expect("two draws"));
    assert_eq!(injection.delay, None);
    assert_eq!(injection.abort, Some(AbortStatus::Http(503)));
    // Only what is configured draws.
    let abort_only = fault(None, Some(1_000_000));
    let mut count = 0;
    fault::decide(&abort_only, || {
        count += 1;
        0
    });
    assert_eq!(count, 1);
}

#[test]
fn grpc_requests_are_told_by_their_content_type() {
    let with = |content_type: &str| {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("content-type", content_type.parse().expect("a value"));
        fault::is_grpc(&headers)
    };
    assert!(with("application/grpc"));
    assert!(with("application/grpc+proto"));
    assert!(with("application/grpc;charset=utf-8"));
    assert!(!with("application/grpc-web"));
    assert!(!with("application/json"));
    assert!(!fault::is_grpc(&hyper::HeaderMap::new()));
}

async fn body_of(response: hyper::Response<crate::proxy::body::ProxyBody>) -> Vec<u8> {
    response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn a_grpc_abort_is_a_trailers_only_answer_with_its_status() {
    let response = fault::abort_response(AbortStatus::Grpc(14), true);
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(headers["grpc-message"], "fault filter abort");
    assert!(headers.get("content-length").is_none());
    assert!(body_of(response).await.is_empty());
}

#[tokio::test]
async fn an_http_abort_of_a_grpc_request_maps_its_status_as_envoy_does() {
    for (http, grpc) in [
        (400, "13"),
        (401, "16"),
        (403, "7"),
        (404, "12"),
        (429, "14"),
        (502, "14"),
        (503, "14"),
        (504, "14"),
        (418, "2"),
        (500, "2"),
    ] {
        let response = fault::abort_response(AbortStatus::Http(http), true);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], grpc, "{http}");
    }
}

#[tokio::test]
async fn a_grpc_abort_of_a_plain_request_is_a_200_with_the_text() {
    let response = fault::abort_response(AbortStatus::Grpc(14), false);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(body_of(response).await, b"fault filter abort");
    let response = fault::abort_response(AbortStatus::Http(429), false);
    assert_eq!(response.status(), 429);
    assert_eq!(body_of(response).await, b"fault filter abort");
}

const GET: &str = "GET /x HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";

fn harness_with(backend: &Backend, more: &str) -> Harness {
    let routes = route_to("policy.test", backend.addr, more);
    Harness::new(
        &yaml(PORT, &routes, &[("policy.test", backend.addr, "HTTP")], ""),
        Format::Json,
        false,
    )
}

/// Envoy's fault counter `name` as rendered now.
fn counter(name: &str) -> u64 {
    let mut out = String::new();
    crate::proxy::metrics::render(&mut out);
    out.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().expect("a number"))
}

/// Whether the counter `name` goes past `before` within a second (it is
/// recorded as the log phase runs).
async fn counted_past(name: &str, before: u64) -> bool {
    for _ in 0..100 {
        if counter(name) > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn an_abort_is_answered_by_the_gateway_flagged_fi_and_counted() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(
        &backend,
        "    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}\n    headers: {response: {set: {x-route: yes}}}\n",
    );
    let before = counter("envoy_http_fault_aborts_injected");
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "fault filter abort");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-type: text/plain"), "{head}");
    assert!(head.contains("\r\ncontent-length: 18"), "{head}");
    // A local reply on a forwarding route gets its response headers.
    assert!(head.contains("\r\nx-route: yes"), "{head}");
    let entry = harness.entry().await;
    assert_eq!(entry["response_flags"], "FI", "{entry}");
    assert_eq!(entry["response_code_details"], "fault_filter_abort");
    assert!(backend.requests.try_recv().is_err(), "the backend saw it");
    assert!(counted_past("envoy_http_fault_aborts_injected", before).await);
}

#[tokio::test]
async fn a_delay_holds_the_request_then_lets_it_through_flagged_di() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(
        &backend,
        "    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}\n",
    );
    let before = counter("envoy_http_fault_delays_injected");
    let started = Instant::now();
    let answer = harness.ask(GET).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    backend.request().await;
    let entry = harness.entry().await;
    assert_eq!(entry["response_flags"], "DI", "{entry}");
    assert!(counted_past("envoy_http_fault_delays_injected", before).await);
}

#[tokio::test]
async fn a_delay_then_an_abort_carry_both_flags_in_envoys_order() {
    let backend = Backend::ok().await;
    let harness = harness_with(
        &backend,
        "    fault:\n      delay: {fixedDelay: 1ms, percent: 100}\n      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}\n",
    );
    let answer = harness
        .ask("POST /svc/M HTTP/1.1\r\nhost: app.test\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("\r\ngrpc-status: 14\r\n"), "{answer}");
    assert!(
        head.contains("\r\ngrpc-message: fault filter abort\r\n"),
        "{answer}"
    );
    let entry = harness.entry().await;
    assert_eq!(entry["response_flags"], "DI,FI", "{entry}");
}

#[tokio::test]
async fn a_fault_applies_to_a_direct_response_route_too() {
    let routes = "  - directResponse: {status: 200, body: {string: fine}}
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    headers: {response: {set: {x-route: yes}}}
";
    let harness = Harness::new(&yaml(PORT, routes, &[], ""), Format::Json, false);
    let answer = harness.ask(GET).await;
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    // No route entry: Envoy's local reply does not get the route's headers.
    assert!(!answer.to_ascii_lowercase().contains("x-route"), "{answer}");
}

const CORS: &str = "    corsPolicy:
      allowOrigins: [{exact: https://allowed.example}, {prefix: https://dev.}]
      allowMethods: [GET, PUT]
      allowHeaders: ['*']
      exposeHeaders: [x-exposed]
      maxAge: 600s
      allowCredentials: true
";

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /x HTTP/1.1\r\nhost: app.test\r\norigin: {origin}\r\naccess-control-request-method: PUT\r\naccess-control-request-headers: x-a,x-b\r\nconnection: close\r\n\r\n"
    )
}

/// The head of `answer`, lower-cased, for header checks.
fn head_of(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .map_or(answer, |(head, _)| head)
        .to_ascii_lowercase()
        + "\r\n"
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_by_the_gateway() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(&backend, CORS);
    let answer = harness.ask(&preflight("https://dev.example")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = head_of(&answer);
    for line in [
        "access-control-allow-origin: https://dev.example",
        "access-control-allow-credentials: true",
        "access-control-allow-methods: get,put",
        "access-control-allow-headers: x-a,x-b",
        "access-control-max-age: 600",
        "content-length: 0",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
    }
    assert!(!head.contains("access-control-expose-headers"), "{head}");
    let entry = harness.entry().await;
    assert_eq!(entry["response_code_details"], "cors_response", "{entry}");
    assert!(backend.requests.try_recv().is_err(), "the backend saw it");
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_forwarded_without_allow_headers() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(&backend, CORS);
    let answer = harness.ask(&preflight("https://other.example")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!head_of(&answer).contains("access-control-"), "{answer}");
    let request = backend.request().await;
    assert!(request.starts_with("OPTIONS /x"), "{request}");
}

#[tokio::test]
async fn with_ignore_a_preflight_from_another_origin_is_answered_without_allow_origin() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(
        &backend,
        &format!("{CORS}      unmatchedPreflights: IGNORE\n"),
    );
    let answer = harness.ask(&preflight("https://other.example")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = head_of(&answer);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    // Envoy sets the rest whatever the origin.
    assert!(
        head.contains("\r\naccess-control-allow-methods: get,put\r\n"),
        "{head}"
    );
    assert!(backend.requests.try_recv().is_err(), "the backend saw it");
}

#[tokio::test]
async fn a_request_from_an_allowed_origin_gets_the_allow_headers_on_its_response() {
    let backend = Backend::start(|_| async {
        "HTTP/1.1 200 OK\r\naccess-control-allow-origin: *\r\ncontent-length: 2\r\n\r\nok"
            .to_string()
    })
    .await;
    let harness = harness_with(&backend, CORS);
    let answer = harness
        .ask("GET /x HTTP/1.1\r\nhost: app.test\r\norigin: https://allowed.example\r\nconnection: close\r\n\r\n")
        .await;
    let head = head_of(&answer);
    for line in [
        "access-control-allow-origin: https://allowed.example",
        "access-control-allow-credentials: true",
        "access-control-expose-headers: x-exposed",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
    }
    assert_eq!(
        head.matches("access-control-allow-origin").count(),
        1,
        "{head}"
    );
    // Another origin: the backend's answer untouched.
    let answer = harness
        .ask("GET /x HTTP/1.1\r\nhost: app.test\r\norigin: https://allowed.example.evil\r\nconnection: close\r\n\r\n")
        .await;
    let head = head_of(&answer);
    assert!(
        head.contains("\r\naccess-control-allow-origin: *\r\n"),
        "{head}"
    );
    assert!(!head.contains("access-control-expose-headers"), "{head}");
}

#[tokio::test]
async fn an_origin_pattern_matching_a_star_allows_every_origin() {
    let mut backend = Backend::ok().await;
    let harness = harness_with(
        &backend,
        "    corsPolicy: {allowOrigins: [{regex: '.*'}]}\n",
    );
    let answer = harness.ask(&preflight("https://anyone.example")).await;
    let head = head_of(&answer);
    assert!(
        head.contains("\r\naccess-control-allow-origin: https://anyone.example\r\n"),
        "{head}"
    );
    assert!(!head.contains("access-control-allow-methods"), "{head}");
    assert!(backend.requests.try_recv().is_err());
}

#[tokio::test]
async fn a_cors_policy_does_nothing_on_a_direct_response_route() {
    // Envoy's CORS filter skips a route without a route entry.
    let routes = format!("  - directResponse: {{status: 204}}\n{CORS}");
    let harness = Harness::new(&yaml(PORT, &routes, &[], ""), Format::Json, false);
    let answer = harness.ask(&preflight("https://allowed.example")).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert!(!head_of(&answer).contains("access-control-"), "{answer}");
}
