//! The proxy in-process for unit tests: a plan compiled from YAML, served
//! on a loopback port by the same connection phases the daemon runs, with
//! no root, kernel or namespace. What the daemon adds (the kernel's
//! steering, the reload) is tested end to end in `tests/`.
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{Options as ServedOptions, Served, access_log, phases::serve_connection};
use crate::{
    compile,
    connection::{Gate, Limits, Place},
    model::Instance,
    plan::Plan,
};

/// Loopback, where every test connection goes.
pub(crate) const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a test waits for an answer before it fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// Compiles `yaml` (one or more documents) for Istio's default ingress
/// gateway on loopback; panics on any diagnostic or compile error.
pub(crate) fn plan(yaml: &str) -> Plan {
    let config = crate::config::load_sources(&[(PathBuf::from("test.yaml"), yaml.to_string())]);
    assert!(
        config.diagnostics.is_empty(),
        "diagnostics: {:#?}",
        config.diagnostics
    );
    compile::plan(&config.model, &Instance::default(), &[LOOPBACK]).expect("the plan compiles")
}

/// Limits loose enough that no test meets them unless it sets one.
pub(crate) fn limits() -> Limits {
    Limits {
        request_head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        stream_idle_timeout: Duration::from_secs(60),
        max_connections: 64,
        max_per_source: 64,
    }
}

/// Settings the plan does not carry, as the daemon's defaults.
pub(crate) fn options() -> ServedOptions {
    ServedOptions {
        trusted_proxies: 0,
        access_log: access_log::Format::Off,
        egress: None,
        tcp_idle_timeout: Duration::from_secs(60),
        jwks_refresh: super::jwks::DEFAULT_REFRESH,
        discovery: Default::default(),
        files: Arc::new(crate::files::Disk),
    }
}

/// A proxy serving one plan on a loopback port.
pub(crate) struct Proxy {
    /// Where clients connect; its port is the Gateway server's.
    pub addr: SocketAddr,
    /// Counts the connections being served.
    pub gate: Arc<Gate>,
    drain: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Serves the plan `yaml(port)` compiles to, where `port` is the
    /// loopback port the proxy listens on (the YAML's Gateway port).
    pub(crate) async fn start(yaml: impl FnOnce(u16) -> String) -> Self {
        Self::start_with(yaml, options(), limits()).await
    }

    /// [`Proxy::start`] with the daemon's settings and limits given.
    pub(crate) async fn start_with(
        yaml: impl FnOnce(u16) -> String,
        options: ServedOptions,
        limits: Limits,
    ) -> Self {
        let listener = TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let served =
            Arc::new(Served::new(&plan(&yaml(addr.port())), options).expect("the plan is served"));
        let gate = Arc::new(Gate::new(limits));
        let (drain, drain_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, served, Arc::clone(&gate), drain_rx));
        Self {
            addr,
            gate,
            drain,
            accept,
        }
    }

    /// Starts draining, as the daemon does when it stops.
    pub(crate) fn drain(&self) {
        self.drain.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    served: Arc<Served>,
    gate: Arc<Gate>,
    drain: watch::Receiver<bool>,
) {
    while let Ok((stream, remote)) = listener.accept().await {
        let Ok(admitted) = gate.admit(remote.ip(), Place::ONLY) else {
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            remote,
            Arc::clone(&served),
            Arc::clone(&gate),
            admitted,
            drain.clone(),
        ));
    }
}

/// Sends `request` on a new connection to `addr` and returns every byte
/// the proxy sent until it closed the connection.
pub(crate) async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_to_close(&mut stream).await
}

/// Every byte until the peer closes; panics after [`PATIENCE`].
pub(crate) async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the connection closes in time")
        .expect("read");
    answer
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) and
/// leaves the connection open; panics after [`PATIENCE`].
pub(crate) async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let read = async {
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse::<usize>().expect("a length"));
                if bytes.len() >= end + 4 + length {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a whole response in time");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A backend on loopback answering every HTTP/1.1 request on every
/// connection with what `answer` returns for the request's head and body
/// (given as text), and handing each request's text to the test.
pub(crate) struct Backend {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Answers every request with `200` and the body `ok`.
    pub(crate) async fn ok() -> Self {
        Self::start(|_| async { "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string() })
            .await
    }

    /// Answers every request with the raw response `answer` returns.
    pub(crate) async fn start<F, A>(answer: F) -> Self
    where
        F: Fn(String) -> A + Send + Sync + 'static,
        A: Future<Output = String> + Send + 'static,
    {
        let listener = TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (tx, requests) = mpsc::unbounded_channel();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_backend(stream, Arc::clone(&answer), tx.clone()));
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// The next request the backend received; panics after [`PATIENCE`].
    pub(crate) async fn request(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("the backend runs")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_backend<F, A>(
    mut stream: TcpStream,
    answer: Arc<F>,
    requests: mpsc::UnboundedSender<String>,
) where
    F: Fn(String) -> A,
    A: Future<Output = String>,
{
    let mut bytes = Vec::new();
    loop {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let length = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while bytes.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        let request: String = String::from_utf8_lossy(&bytes[..end + 4 + length]).into_owned();
        bytes.drain(..end + 4 + length);
        let response = answer(request.clone()).await;
        let _ = requests.send(request);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A Gateway with one plaintext HTTP server on `port` for `host`, a
/// VirtualService sending it to `backend`, and the ServiceEntry that
/// declares `backend.test` at its loopback address.
pub(crate) fn http_route_yaml(port: u16, host: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"{host}\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: istio-system}}
spec:
  hosts: [\"{host}\"]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: backend.test, port: {{number: {backend_port}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: istio-system}}
spec:
  hosts: [backend.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {backend_port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: \"{ip}\"}}]
",
        backend_port = backend.port(),
        ip = backend.ip(),
    )
}

#[tokio::test]
async fn a_request_reaches_the_backend_through_the_proxy() {
    let mut backend = Backend::ok().await;
    let proxy = Proxy::start(|port| http_route_yaml(port, "app.test", backend.addr)).await;
    let answer = exchange(
        proxy.addr,
        b"GET /hello HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let request = backend.request().await;
    assert!(request.starts_with("GET /hello HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn a_kept_alive_connection_closes_when_the_proxy_drains() {
    let backend = Backend::ok().await;
    let proxy = Proxy::start(|port| http_route_yaml(port, "app.test", backend.addr)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    proxy.drain();
    assert_eq!(read_to_close(&mut stream).await, b"");
    let active = || {
        proxy
            .gate
            .counters
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for _ in 0..100 {
        if active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active(), 0, "the connection is no longer counted");
}
