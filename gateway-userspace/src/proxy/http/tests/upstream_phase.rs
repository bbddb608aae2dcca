//! The upstream phase through the proxy in-process (`proxy::testing`):
//! what the backend gets (rewrites, `Host`, bodies, the protocol) and
//! what the client gets when the backend fails.
use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::proxy::testing::{Backend, LOOPBACK, Proxy, exchange, read_response};

/// A Gateway serving every host on `port`; a VirtualService for
/// `app.test` whose http routes are `routes` (YAML list items, indented
/// two spaces); and per `(service, backend, protocol)` a ServiceEntry
/// declaring `service` at the backend's loopback address. `extra` is
/// more documents (each starting with `---`).
pub(super) fn yaml(
    port: u16,
    routes: &str,
    services: &[(&str, SocketAddr, &str)],
    extra: &str,
) -> String {
    let mut text = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
{routes}"
    );
    for (index, (service, backend, protocol)) in services.iter().enumerate() {
        text.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend-{index}, namespace: istio-system}}
spec:
  hosts: [{service}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {backend_port}, name: http, protocol: {protocol}}}]
  endpoints: [{{address: \"{ip}\"}}]
",
            backend_port = backend.port(),
            ip = backend.ip(),
        ));
    }
    text.push_str(extra);
    text
}

/// One route to `service` on the backend's port, with `more` (YAML
/// lines of the route, indented four spaces) after its destination.
pub(super) fn route_to(service: &str, backend: SocketAddr, more: &str) -> String {
    format!(
        "  - route:\n    - destination: {{host: {service}, port: {{number: {}}}}}\n{more}",
        backend.port()
    )
}

/// A proxy with one route (`more` added) to `service` at `backend`.
pub(super) async fn proxy_to(service: &str, backend: SocketAddr, more: &str) -> Proxy {
    let routes = route_to(service, backend, more);
    Proxy::start(|port| yaml(port, &routes, &[(service, backend, "HTTP")], "")).await
}

/// The answer to one `connection: close` request, as text.
pub(super) async fn ask(proxy: &Proxy, request: &str) -> String {
    String::from_utf8_lossy(&exchange(proxy.addr, request.as_bytes()).await).into_owned()
}

/// The value of the metric line named `name` (with its labels) whose
/// labels include `destination_service="service"` and `labels`, once it
/// is recorded (the log phase runs as the response body ends).
pub(super) async fn metric(name: &str, service: &str, labels: &str) -> f64 {
    let wanted = format!("destination_service=\"{service}\"");
    for _ in 0..500 {
        let mut out = String::new();
        crate::proxy::metrics::render(&mut out);
        let found = out.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels_text, value) = rest.rsplit_once("} ")?;
            (labels_text.contains(&wanted) && labels_text.contains(labels))
                .then(|| value.parse::<f64>().expect("a number"))
        });
        if let Some(value) = found {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {name} for {service} with {labels}");
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    listener.local_addr().expect("address")
}

/// A backend that takes every connection and closes it once the request
/// head has arrived, answering nothing.
async fn hanging_up_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
        }
    });
    (addr, task)
}

/// An HTTP/2 (prior knowledge) backend answering `200 h2`.
async fn h2_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"h2"))))
                    }),
                ),
            );
        }
    });
    (addr, task)
}

const GET: &str = "GET /old/x?q=1 HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn a_rewritten_request_reaches_the_backend_with_its_new_path_and_host() {
    let mut backend = Backend::ok().await;
    let more =
        "    match: [{uri: {prefix: /old}}]\n    rewrite: {uri: /new, authority: new.test}\n";
    let proxy = proxy_to("rewrite.test", backend.addr, more).await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request = backend.request().await;
    assert!(
        request.starts_with("GET /new/x?q=1 HTTP/1.1\r\n"),
        "{request}"
    );
    let hosts: Vec<&str> = request
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(hosts, ["host: new.test"], "{request}");
}

#[tokio::test]
async fn a_plain_request_keeps_its_host_and_asks_for_no_upgrade() {
    let mut backend = Backend::ok().await;
    let proxy = proxy_to("plain.test", backend.addr, "").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request = backend.request().await.to_ascii_lowercase();
    assert!(
        request.starts_with("get /old/x?q=1 http/1.1\r\n"),
        "{request}"
    );
    assert_eq!(
        request.matches("\r\nhost: app.test\r\n").count(),
        1,
        "{request}"
    );
    assert!(!request.contains("upgrade"), "{request}");
}

#[tokio::test]
async fn a_posted_body_reaches_the_backend_and_is_counted() {
    let mut backend = Backend::ok().await;
    let proxy = proxy_to("posted-body.test", backend.addr, "").await;
    let answer = ask(
        &proxy,
        "POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request = backend.request().await;
    assert!(request.ends_with("\r\n\r\nhello"), "{request}");
    let sum = metric("istio_request_bytes_sum", "posted-body.test", "").await;
    assert_eq!(sum, 5.0);
}

#[tokio::test]
async fn a_websocket_upgrade_becomes_a_tunnel_to_the_backend() {
    let mut backend = Backend::start(|request| async move {
        if request.to_ascii_lowercase().contains("upgrade: websocket") {
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                .to_string()
        } else {
            format!("echo {}", request.trim_end())
        }
    })
    .await;
    let proxy = proxy_to("websocket.test", backend.addr, "").await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: app.test\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let handshake = backend.request().await.to_ascii_lowercase();
    assert!(handshake.contains("upgrade: websocket"), "{handshake}");
    // The bytes after the handshake go through untouched, both ways.
    stream.write_all(b"ping\r\n\r\n").await.expect("write");
    let mut echo = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
        .await
        .expect("the echo in time")
        .expect("read");
    assert_eq!(&echo, b"echo ping");
}

#[tokio::test]
async fn a_backend_refusing_connections_is_a_503_connection_failure() {
    let backend = closed_port().await;
    let proxy = proxy_to("refusing.test", backend, "").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("reset reason: connection failure"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_backend_hanging_up_without_an_answer_is_a_503_connection_termination() {
    let (backend, _task) = hanging_up_backend().await;
    let proxy = proxy_to("hanging-up.test", backend, "").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("reset reason: connection termination"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_backend_answering_nonsense_is_a_502_protocol_error() {
    let backend = Backend::start(|_| async { "NONSENSE\r\n\r\n".to_string() }).await;
    let proxy = proxy_to("nonsense.test", backend.addr, "").await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.ends_with("reset reason: protocol error"), "{answer}");
}

/// A DestinationRule making `service`'s cluster speak the client's protocol.
fn client_protocol(service: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: same-as-client, namespace: istio-system}}
spec:
  host: {service}
  trafficPolicy:
    connectionPool: {{http: {{useClientProtocol: true}}}}
"
    )
}

#[tokio::test]
async fn a_cluster_following_the_client_speaks_http1_to_an_http1_client() {
    let mut backend = Backend::ok().await;
    let routes = route_to("follow-h1.test", backend.addr, "");
    let proxy = Proxy::start(|port| {
        yaml(
            port,
            &routes,
            &[("follow-h1.test", backend.addr, "HTTP")],
            &client_protocol("follow-h1.test"),
        )
    })
    .await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request = backend.request().await;
    assert!(request.starts_with("GET /old/x?q=1 HTTP/1.1"), "{request}");
}

#[tokio::test]
async fn a_cluster_following_the_client_speaks_http2_to_an_http2_client() {
    // An HTTP/1.1 backend sees the HTTP/2 preface as a request `PRI *`.
    let mut backend = Backend::start(|_| async { String::new() }).await;
    let routes = route_to("follow-h2.test", backend.addr, "");
    let proxy = Proxy::start(|port| {
        yaml(
            port,
            &routes,
            &[("follow-h2.test", backend.addr, "HTTP")],
            &client_protocol("follow-h2.test"),
        )
    })
    .await;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(connection);
    let request = Request::get("http://app.test/")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a request");
    // The backend cannot answer it; only what it received matters here.
    let asking = tokio::spawn(async move { send.send_request(request).await });
    let received = backend.request().await;
    assert!(received.starts_with("PRI * HTTP/2.0"), "{received}");
    asking.abort();
    driver.abort();
}

#[tokio::test]
async fn an_http2_cluster_gets_an_http1_clients_request_with_scheme_and_authority() {
    let (backend, _task) = h2_backend().await;
    let routes = route_to("h2-backend.test", backend, "");
    let proxy =
        Proxy::start(|port| yaml(port, &routes, &[("h2-backend.test", backend, "HTTP2")], ""))
            .await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("h2"), "{answer}");
}

#[tokio::test]
async fn the_backends_body_reaches_the_client() {
    let backend = Backend::start(|_| async {
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-backend: yes\r\n\r\nhello".to_string()
    })
    .await;
    let proxy = proxy_to("response-body.test", backend.addr, "").await;
    let answer = ask(&proxy, GET).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "hello");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nx-backend: yes"), "{head}");
    assert!(
        head.contains("\r\nx-envoy-upstream-service-time: "),
        "{head}"
    );
}

#[tokio::test]
async fn a_destinations_own_headers_follow_the_rules_and_its_authority_applies() {
    let mut backend = Backend::ok().await;
    let more = "      headers:\n        request: {set: {x-dest: one, host: dest.test}, remove: [x-rule]}\n        response: {add: {x-dest-reply: one}}\n    headers: {request: {set: {x-rule: yes, x-both: rule}}}\n";
    let proxy = proxy_to("dest-headers.test", backend.addr, more).await;
    let answer = ask(&proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nx-dest-reply: one\r\n"),
        "{answer}"
    );
    let request = backend.request().await.to_ascii_lowercase();
    assert!(request.contains("\r\nx-dest: one\r\n"), "{request}");
    assert!(request.contains("\r\nx-both: rule\r\n"), "{request}");
    assert!(
        !request.contains("x-rule"),
        "the destination's remove runs after the rule's set: {request}"
    );
    let hosts: Vec<&str> = request.lines().filter(|l| l.starts_with("host:")).collect();
    assert_eq!(hosts, ["host: dest.test"], "{request}");
}
