//! Serving a connection once its phase is known ([`super::phases`]): HTTP
//! with hyper (plaintext or after TLS termination) with its deadlines,
//! drain on shutdown and the 408 for a stalled request head; the TLS
//! handshake; TCP and passthrough forwarded, with their log entries.
use std::{
    convert::Infallible,
    os::fd::RawFd,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};

use super::{
    access_log::Entry,
    authz,
    body::ProxyBody,
    context::{Conn, Downstream, Shared},
    http::{self, VirtualHosts},
    metrics,
    proxy_protocol::Ends,
    stream::{MAX_REQUEST_HEAD, Probe, Probed, Rewind},
    tcp::{self, CopyEnd},
};
use crate::{
    connection::{Activity, Expiry, Gate, with_deadlines},
    plan::Forward,
};

/// Concurrent HTTP/2 streams per connection (Envoy's default is 2^31-1;
/// bounded here so one client cannot hold unbounded work).
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long an idle connection gets to close gracefully (HTTP/2 GOAWAY,
/// HTTP/1 close after the current exchange) before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 and HTTP/2 on `io` (plaintext or terminated TLS).
/// `raw` is the plaintext socket under `io`, for the 408 Envoy sends to a
/// client whose request head did not arrive in time.
pub(super) async fn serve_http<I>(
    io: Probed<I>,
    raw: Option<RawFd>,
    downstream: Downstream,
    hosts: &Arc<VirtualHosts>,
    conn: Conn<'_>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        shared,
        gate,
        activity,
        mut drain,
    } = conn;
    let downstream = Arc::new(downstream);
    let service = service_fn({
        let activity = Arc::clone(activity);
        let (hosts, shared) = (Arc::clone(hosts), Arc::clone(shared));
        move |req| {
            let request = activity.begin();
            let (hosts, shared, downstream, activity) = (
                Arc::clone(&hosts),
                Arc::clone(&shared),
                Arc::clone(&downstream),
                Arc::clone(&activity),
            );
            async move {
                let response = http::handle(shared, hosts, downstream, req).await;
                // The request is in progress until its response body has
                // ended: the connection is not idle while it streams.
                Ok::<_, Infallible>(response.map(|body| InFlightBody {
                    inner: body,
                    activity,
                    _request: request,
                }))
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header timer of hyper's: the connection's deadlines tell a
    // request head that is late (408) from a kept-alive connection that
    // is quiet (the idle timeout), which one timer for every head cannot.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(Some(100))
        .max_local_error_reset_streams(Some(1024));
    let probe = Arc::clone(&io.probe);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = with_deadlines(connection.as_mut(), activity, gate) => outcome,
        () = draining(&mut drain) => {
            // Shutdown: finish what is in flight, then close cleanly.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_GRACE, connection).await;
            return;
        }
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            let head_timeout = err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            if head_timeout {
                request_timeout(raw, &probe);
            }
            log::debug!("connection ended with an error: {err}")
        }
        Err(Expiry::Head) => request_timeout(raw, &probe),
        Err(Expiry::Idle) => {
            log::debug!("connection idle for {:?}: closed", gate.limits.idle_timeout);
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACEFUL_CLOSE, connection).await;
        }
        // Nothing moves in the request in progress: the connection goes,
        // and the request's log line with it (`DC`).
        Err(Expiry::StreamIdle) => log::debug!(
            "no bytes moved for {:?} with a request in progress: closed",
            gate.limits.stream_idle_timeout
        ),
    }
}

/// A response body that keeps its request in progress until it ends (or
/// is dropped) and tells the connection's deadlines of every frame sent.
struct InFlightBody {
    inner: ProxyBody,
    activity: Arc<Activity>,
    _request: crate::connection::InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.activity.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Envoy's answer to a request head that did not arrive in time.
pub(super) const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Answers 408 on a plaintext HTTP/1 connection that sent part of a request
/// head but not all of it in time; a silent client (or an HTTP/2 one, which
/// has no such answer) is closed without a word.
fn request_timeout(raw: Option<RawFd>, probe: &Probe) {
    let Some(fd) = raw else {
        return;
    };
    if !probe.partial_http1() {
        return;
    }
    // SAFETY: `fd` belongs to the connection, which the caller still holds,
    // so it is open; a non-blocking send of a static buffer touches nothing else.
    #[allow(
        unsafe_code,
        reason = "FFI: the SAFETY comments state each call's contract"
    )]
    unsafe {
        libc::send(
            fd,
            REQUEST_TIMEOUT.as_ptr().cast(),
            REQUEST_TIMEOUT.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}

/// Resolves once the daemon starts stopping (never if the sender is gone).
pub(super) async fn draining(drain: &mut watch::Receiver<bool>) {
    loop {
        if *drain.borrow_and_update() {
            return;
        }
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How long in-flight requests get to finish when the daemon stops.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Completes the handshake on bytes already read plus the rest of the stream.
pub(super) async fn handshake(
    stream: TcpStream,
    prefix: Vec<u8>,
    config: &Arc<ServerConfig>,
    activity: &Arc<Activity>,
    gate: &Gate,
) -> Option<tokio_rustls::server::TlsStream<Rewind>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
    let accept = acceptor.accept(Rewind::new(prefix, stream));
    tokio::pin!(accept);
    match with_deadlines(accept, activity, gate).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            log::debug!("TLS handshake failed: {err}");
            None
        }
        Err(_) => None,
    }
}

pub(super) fn log_unrouted(downstream: &Downstream, shared: &Shared) {
    shared.finished(&mut Entry {
        start: Some(SystemTime::now()),
        flags: vec!["NR"],
        details: Some("filter_chain_not_found"),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        workload_interface: downstream.workload_interface.clone(),
        ..Entry::default()
    });
}

/// The TCP chain's RBAC decision for a connection: the rule id (or
/// `none`) that denies it. A TCP connection has no forwarded headers, so
/// its original client is its peer.
fn tcp_denial(shared: &Shared, downstream: &Downstream) -> Option<String> {
    let engine = &shared.authorizer.tcp;
    if engine.is_empty() {
        return None;
    }
    let attributes = authz::Attributes {
        peer: downstream.remote.ip(),
        remote: downstream.remote.ip(),
        local: downstream.local,
        sni: downstream.sni.as_deref(),
        http: None,
    };
    let decision = engine.decide(&attributes);
    authz::metrics::record("tcp", &decision);
    authz::log_shadow(&decision, || {
        format!("TCP {} -> {}", downstream.remote, downstream.local)
    });
    decision.denied.map(|matched| matched.id)
}

/// Forwards a connection (after `prefix`, bytes already read from it) and
/// logs it when it ends. `named` says whether a cluster's PROXY header
/// may name it: not on AUTO_PASSTHROUGH, whose SNI-DNAT clusters Istio
/// builds without `proxyProtocol` (`cluster_traffic_policy.go`).
pub(super) async fn forward_tcp<D>(
    mut client: D,
    prefix: &[u8],
    forward: &Forward,
    downstream: Downstream,
    shared: &Shared,
    named: bool,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut entry = Entry {
        start: Some(SystemTime::now()),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        workload_interface: downstream.workload_interface.clone(),
        ..Entry::default()
    };
    if let Some(denied) = tcp_denial(shared, &downstream) {
        // Envoy's network RBAC closes without a byte; unlike Envoy, which
        // lets tcp_proxy connect upstream before the first data is judged,
        // the backend never sees a denied connection.
        log::debug!("{}: connection denied by {denied}", downstream.remote);
        entry.rbac_denied = Some(denied);
        entry.duration = started.elapsed();
        shared.finished(&mut entry);
        return;
    }
    let ends = named.then_some(Ends {
        source: downstream.remote,
        destination: downstream.local,
    });
    match tcp::connect(forward, &shared.upstreams, downstream.origin(), ends).await {
        Ok(mut upstream) => {
            entry.upstream_host = Some(upstream.addr);
            entry.upstream_cluster = Some(upstream.cluster.clone());
            metrics::tcp_opened(&entry);
            let idle = upstream.idle_timeout.unwrap_or(shared.tcp_idle_timeout);
            let copied = tcp::copy_both_ways(&mut client, prefix, &mut upstream.stream, idle).await;
            (entry.bytes_received, entry.bytes_sent) = copied.moved;
            match copied.end {
                CopyEnd::Closed => {}
                CopyEnd::Idle => {
                    log::debug!("{}: no bytes moved for {idle:?}: closed", downstream.remote)
                }
                CopyEnd::Failed(err) => {
                    log::debug!("{}: forwarding ended: {err}", downstream.remote);
                    entry.flags.push("UC");
                }
            }
        }
        Err(err @ tcp::ForwardError::Tunnel { .. }) => {
            log::info!("{}: connection closed: {err}", downstream.remote);
            entry.flags.push(err.flag());
        }
        Err(err) => {
            log::debug!("{}: cannot forward: {err}", downstream.remote);
            entry.flags.push(err.flag());
        }
    }
    entry.duration = started.elapsed();
    shared.finished(&mut entry);
}
