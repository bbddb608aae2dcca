//! The userspace proxy for what needs a TCP stack. Today: the plaintext
//! HTTP listeners (HTTP/1.1 and h2c, as Envoy's codec AUTO), answering the
//! `tls.httpsRedirect` 301 and 404 for undeclared hosts.
pub mod client_hello;
pub mod redirect;
pub mod rewrite;
pub mod route;

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::JoinSet,
};

use self::redirect::{Answer, RequestHead, answer};
use crate::{
    compile::HttpListener,
    connection::{Acceptor, Activity, Admitted, Expiry, Gate, with_deadlines},
    hosts::HostTable,
};

/// Largest request head accepted; Envoy's default `max_request_headers_kb` is 60.
const MAX_REQUEST_HEAD: usize = 60 * 1024;
const LISTEN_BACKLOG: u32 = 1024;
const SERVER_HEADER: &str = "xdp-gateway";

/// Failure to open a listening socket.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `bind`/`listen` failed for this address.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A listening socket and the virtual hosts it serves.
pub struct BoundListener {
    pub local_addr: SocketAddr,
    listener: TcpListener,
    hosts: Arc<HostTable>,
}

/// Opens a socket for every plaintext HTTP listener: on its bind address,
/// or on each of `addresses`, or on the dual-stack wildcard when none are given.
pub fn bind_all(
    http: &[HttpListener],
    addresses: &[IpAddr],
) -> Result<Vec<BoundListener>, ProxyError> {
    let mut bound = Vec::new();
    for listener in http {
        let hosts = Arc::new(listener.hosts.clone());
        let ips: Vec<IpAddr> = match (listener.bind, addresses) {
            (Some(bind), _) => vec![bind],
            (None, []) => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            (None, addresses) => addresses.to_vec(),
        };
        for ip in ips {
            let addr = SocketAddr::new(ip, listener.port);
            let socket = listen(addr).map_err(|source| ProxyError::Bind { addr, source })?;
            bound.push(BoundListener {
                local_addr: socket.local_addr().unwrap_or(addr),
                listener: socket,
                hosts: Arc::clone(&hosts),
            });
        }
    }
    Ok(bound)
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Restarting the daemon must not wait for TIME_WAIT sockets of the old one.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves every listener until `shutdown` flips to true, then stops
/// accepting and lets in-flight connections finish for a short grace period.
/// Every connection of every listener passes `gate` (one cap for the whole
/// proxy) and is held to its deadlines.
pub async fn serve(
    listeners: Vec<BoundListener>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, Arc::clone(&gate), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(bound: BoundListener, gate: Arc<Gate>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut acceptor = Acceptor::new(format!("proxy {}", bound.local_addr));
    loop {
        tokio::select! {
            (stream, admitted) = acceptor.admitted(&bound.listener, &gate) => {
                let hosts = Arc::clone(&bound.hosts);
                connections.spawn(serve_connection(stream, hosts, Arc::clone(&gate), admitted));
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(bound.listener);
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            _ = &mut grace => { connections.abort_all(); break }
        }
    }
}

/// How long an idle connection gets to close gracefully (HTTP/2 GOAWAY,
/// HTTP/1 close after the current exchange) before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

async fn serve_connection(
    stream: tokio::net::TcpStream,
    hosts: Arc<HostTable>,
    gate: Arc<Gate>,
    _admitted: Admitted,
) {
    let activity = Arc::new(Activity::new());
    let service = service_fn({
        let activity = Arc::clone(&activity);
        move |req| {
            let _request = activity.begin();
            let response = handle(&hosts, &req);
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits.request_head_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    match with_deadlines(connection.as_mut(), &activity, &gate).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => log::debug!("connection ended with an error: {err}"),
        // Nothing was ever asked: drop it without a word.
        Err(Expiry::Head) => {}
        Err(Expiry::Idle) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACEFUL_CLOSE, connection).await;
        }
    }
}

/// Turns a request into the proxy's answer.
pub fn handle(hosts: &HostTable, req: &Request<Incoming>) -> Response<Empty<Bytes>> {
    let host_headers: Vec<&[u8]> = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let head = RequestHead {
        http10: req.version() == hyper::Version::HTTP_10,
        uri_authority: req.uri().authority().map(|a| a.as_str()),
        host_headers: &host_headers,
        path_and_query: req.uri().path_and_query().map(|p| p.as_str()),
    };
    let (status, location) = match answer(hosts, head) {
        Answer::Redirect { location } => (StatusCode::MOVED_PERMANENTLY, Some(location)),
        Answer::NotFound => (StatusCode::NOT_FOUND, None),
        Answer::BadRequest { reason } => {
            log::debug!("400 for {}: {reason}", req.uri());
            (StatusCode::BAD_REQUEST, None)
        }
        Answer::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, None),
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::SERVER,
        header::HeaderValue::from_static(SERVER_HEADER),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from_static("0"),
    );
    if let Some(location) = location {
        // The authority was validated to RFC 3986 characters and the path
        // came from a parsed URI, so this cannot fail; fall back to 404 if it does.
        match header::HeaderValue::from_str(&location) {
            Ok(value) => {
                headers.insert(header::LOCATION, value);
            }
            Err(_) => *response.status_mut() = StatusCode::NOT_FOUND,
        }
    }
    response
}
