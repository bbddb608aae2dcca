//! The userspace proxy for what needs a TCP stack: plaintext HTTP
//! (HTTP/1.1 and h2c, as Envoy's codec AUTO), TLS termination with rustls,
//! TLS passthrough by SNI and opaque TCP, all from the compiled plan.
//!
//! Per connection: accept ([`crate::connection`] caps and deadlines), then
//! by listener kind: HTTP ([`http`]); TLS: read the ClientHello
//! ([`client_hello`]), pick the server by SNI ([`tls::select`]), then
//! terminate ([`tls`]) and serve HTTP or forward, or pass the bytes
//! through ([`tcp`]); TCP: forward ([`tcp`]).
pub mod access_log;
pub mod auto_passthrough;
pub mod client_cert;
pub mod client_hello;
pub mod http;
pub mod redirect;
pub mod rewrite;
pub mod route;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    task::JoinSet,
};

use self::{
    access_log::Entry,
    client_hello::{ClientHello, Inspection},
    http::{Downstream, Shared, VirtualHosts},
    tls::AlertDescription,
};
use crate::{
    compile::{Forward, Plan, SniRoute, TlsServerKind},
    connection::{Acceptor, Activity, Admitted, Expiry, Gate, with_deadlines},
    hosts::HostPattern,
};

/// Largest request head accepted; Envoy's default `max_request_headers_kb` is 60.
const MAX_REQUEST_HEAD: usize = 60 * 1024;
/// Concurrent HTTP/2 streams per connection (Envoy's default is 2^31-1;
/// bounded here so one client cannot hold unbounded work).
const MAX_CONCURRENT_STREAMS: u32 = 1024;
const LISTEN_BACKLOG: u32 = 1024;

/// Failure to open a listening socket or to build what it serves.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `bind`/`listen` failed for this address.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A route table whose regexes do not compile.
    #[error("routes")]
    Routes(#[from] http::RoutesError),
    /// A terminating server's certificate or settings cannot be used.
    #[error("{server}: TLS")]
    Tls {
        server: String,
        #[source]
        source: tls::TlsSetupError,
    },
}

/// What one listener serves.
#[derive(Debug)]
pub enum PortService {
    /// Plaintext HTTP.
    Http(Arc<VirtualHosts>),
    /// TLS servers chosen by SNI, and the plaintext HTTP servers that share
    /// the port, for connections that do not start with a TLS record.
    Tls {
        servers: Vec<TlsEntry>,
        plaintext: Option<Arc<VirtualHosts>>,
    },
    /// Opaque TCP to the first matching `tcp` route.
    Tcp(Forward),
}

/// One server of a TLS listener.
#[derive(Debug)]
pub struct TlsEntry {
    /// `Gateway ns/name spec.servers[i]`.
    pub source: String,
    pub hosts: Vec<HostPattern>,
    pub action: TlsAction,
}

/// What happens after SNI picked a TLS server.
#[derive(Debug)]
pub enum TlsAction {
    TerminateHttp {
        config: Arc<ServerConfig>,
        hosts: Arc<VirtualHosts>,
    },
    TerminateTcp {
        config: Arc<ServerConfig>,
        forward: Option<Forward>,
    },
    Passthrough(Vec<SniRoute>),
    /// AUTO_PASSTHROUGH: the SNI names one of these clusters
    /// ([`auto_passthrough::forward`]); other connections are closed and logged.
    AutoPassthrough(BTreeSet<String>),
}

/// Everything the proxy serves, built from one plan. Connections read it
/// through a `watch` channel, so a reload swaps one pointer.
#[derive(Debug)]
pub struct Served {
    pub shared: Arc<Shared>,
    /// By listener id.
    pub ports: HashMap<u32, Arc<PortService>>,
}

/// Settings the plan does not carry.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub trusted_proxies: u32,
    pub access_log: access_log::Format,
}

impl Served {
    /// Builds what every listener of `plan` serves, loading certificates.
    pub fn new(plan: &Plan, options: Options) -> Result<Self, ProxyError> {
        let shared = Arc::new(Shared {
            upstreams: upstream::Upstreams::new(&plan.clusters),
            access_log: access_log::AccessLog::new(options.access_log),
            trusted_proxies: options.trusted_proxies,
        });
        let mut ports = HashMap::new();
        for listener in &plan.http {
            let hosts = Arc::new(VirtualHosts::new(listener.hosts.clone())?);
            ports.insert(listener.listener_id, Arc::new(PortService::Http(hosts)));
        }
        for listener in &plan.tls {
            let mut entries = Vec::new();
            for server in &listener.servers {
                let config = |tls| {
                    tls::server_config(tls).map_err(|source| ProxyError::Tls {
                        server: server.source.clone(),
                        source,
                    })
                };
                let action = match &server.kind {
                    TlsServerKind::TerminateHttp { tls, hosts } => TlsAction::TerminateHttp {
                        config: config(tls)?,
                        hosts: Arc::new(VirtualHosts::new(hosts.clone())?),
                    },
                    TlsServerKind::TerminateTcp { tls, route } => TlsAction::TerminateTcp {
                        config: config(tls)?,
                        forward: route.as_ref().map(|(forward, _)| forward.clone()),
                    },
                    TlsServerKind::Passthrough { routes } => TlsAction::Passthrough(routes.clone()),
                    TlsServerKind::AutoPassthrough { clusters } => {
                        TlsAction::AutoPassthrough(clusters.clone())
                    }
                };
                let hosts = match &action {
                    TlsAction::AutoPassthrough(clusters) => {
                        auto_passthrough::server_names(&server.hosts, clusters)
                    }
                    _ => server.hosts.clone(),
                };
                entries.push(TlsEntry {
                    source: server.source.clone(),
                    hosts,
                    action,
                });
            }
            let plaintext = match &listener.plaintext {
                Some(hosts) => Some(Arc::new(VirtualHosts::new(hosts.clone())?)),
                None => None,
            };
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tls {
                    servers: entries,
                    plaintext,
                }),
            );
        }
        for listener in &plan.tcp {
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tcp(listener.route.clone())),
            );
        }
        Ok(Served { shared, ports })
    }
}

/// A listening socket and the listener it serves.
pub struct BoundListener {
    pub local_addr: SocketAddr,
    listener: TcpListener,
    listener_id: u32,
}

/// Opens a socket for every listener of the plan the proxy serves: on its
/// bind address, or on each of `addresses`, or on the dual-stack wildcard
/// when none are given.
pub fn bind_all(plan: &Plan, addresses: &[IpAddr]) -> Result<Vec<BoundListener>, ProxyError> {
    let served = plan
        .http
        .iter()
        .map(|l| (l.listener_id, l.bind, l.port))
        .chain(plan.tls.iter().map(|l| (l.listener_id, l.bind, l.port)))
        .chain(plan.tcp.iter().map(|l| (l.listener_id, l.bind, l.port)));
    let mut bound = Vec::new();
    for (listener_id, bind, port) in served {
        let ips: Vec<IpAddr> = match (bind, addresses) {
            (Some(bind), _) => vec![bind],
            (None, []) => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            (None, addresses) => addresses.to_vec(),
        };
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            let socket = listen(addr).map_err(|source| ProxyError::Bind { addr, source })?;
            bound.push(BoundListener {
                local_addr: socket.local_addr().unwrap_or(addr),
                listener: socket,
                listener_id,
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
/// proxy) and is held to its deadlines; each takes the `served` current at accept.
pub async fn serve(
    listeners: Vec<BoundListener>,
    served: watch::Receiver<Arc<Served>>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(
            listener,
            served.clone(),
            Arc::clone(&gate),
            shutdown.clone(),
        ));
    }
    let flusher = tokio::spawn(flush_access_log(served.clone()));
    while tasks.join_next().await.is_some() {}
    flusher.abort();
    served.borrow().shared.access_log.flush();
}

async fn flush_access_log(served: watch::Receiver<Arc<Served>>) {
    let mut interval = tokio::time::interval(access_log::FLUSH_INTERVAL);
    loop {
        interval.tick().await;
        let current = Arc::clone(&served.borrow());
        current.shared.access_log.flush();
    }
}

async fn accept_loop(
    bound: BoundListener,
    served: watch::Receiver<Arc<Served>>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut acceptor = Acceptor::new(format!("proxy {}", bound.local_addr));
    loop {
        tokio::select! {
            (stream, remote, admitted) = acceptor.admitted(&bound.listener, &gate) => {
                let current = Arc::clone(&served.borrow());
                let addrs = (bound.local_addr, remote);
                connections.spawn(serve_connection(stream, addrs, bound.listener_id, current, Arc::clone(&gate), admitted, shutdown.clone()));
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
    stream: TcpStream,
    (listening, remote): (SocketAddr, SocketAddr),
    listener_id: u32,
    served: Arc<Served>,
    gate: Arc<Gate>,
    _admitted: Admitted,
    drain: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let conn = Conn {
        shared: &served.shared,
        gate: &gate,
        activity: &activity,
        drain,
    };
    // A socket bound to one address needs no getsockname(2) per connection.
    let local = if listening.ip().is_unspecified() {
        match stream.local_addr() {
            Ok(local) => local,
            Err(_) => return,
        }
    } else {
        listening
    };
    let _ = stream.set_nodelay(true);
    let Some(service) = served.ports.get(&listener_id).cloned() else {
        return;
    };
    let downstream = Downstream {
        tls: false,
        local,
        remote,
        sni: None,
    };
    match &*service {
        PortService::Http(hosts) => {
            let raw = Some(stream.as_raw_fd());
            serve_http(Probed::new(stream), raw, downstream, hosts, conn).await
        }
        PortService::Tcp(forward) => {
            let _in_flight = activity.begin();
            forward_tcp(stream, &[], forward, downstream, &served.shared).await;
        }
        PortService::Tls { servers, plaintext } => {
            let port = TlsPort {
                servers,
                plaintext: plaintext.as_ref(),
            };
            serve_tls(stream, port, downstream, conn).await
        }
    }
}

/// What a connection is served with, whatever its kind.
struct Conn<'a> {
    shared: &'a Arc<Shared>,
    gate: &'a Gate,
    activity: &'a Arc<Activity>,
    /// Flips to true when the daemon stops: HTTP connections finish the
    /// request in progress and close (GOAWAY for HTTP/2).
    drain: watch::Receiver<bool>,
}

/// Serves HTTP/1.1 and HTTP/2 on `io` (plaintext or terminated TLS).
/// `raw` is the plaintext socket under `io`, for the 408 Envoy sends to a
/// client whose request head did not arrive in time.
async fn serve_http<I>(
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
            let (hosts, shared, downstream) = (
                Arc::clone(&hosts),
                Arc::clone(&shared),
                Arc::clone(&downstream),
            );
            async move {
                let response = http::handle(shared, hosts, downstream, req).await;
                drop(request);
                Ok::<_, Infallible>(response)
            }
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
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACEFUL_CLOSE, connection).await;
        }
    }
}

/// Answers 408 on a plaintext HTTP/1 connection that sent part of a request
/// head but not all of it in time; a silent client (or an HTTP/2 one, which
/// has no such answer) is closed without a word.
fn request_timeout(raw: Option<RawFd>, probe: &Probe) {
    const ANSWER: &[u8] =
        b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let Some(fd) = raw else {
        return;
    };
    if !probe.partial_http1() {
        return;
    }
    // SAFETY: `fd` belongs to the connection, which the caller still holds,
    // so it is open; a non-blocking send of a static buffer touches nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::send(
            fd,
            ANSWER.as_ptr().cast(),
            ANSWER.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}

/// What a connection sent before its request head was complete.
#[derive(Debug, Default)]
struct Probe {
    received: AtomicBool,
    /// The first bytes were the HTTP/2 preface (`PRI `).
    http2: AtomicBool,
}

impl Probe {
    fn partial_http1(&self) -> bool {
        self.received.load(Ordering::Relaxed) && !self.http2.load(Ordering::Relaxed)
    }
}

/// `io`, noting whether any byte arrived and whether it started like HTTP/2.
struct Probed<I> {
    inner: I,
    probe: Arc<Probe>,
}

impl<I> Probed<I> {
    fn new(inner: I) -> Self {
        Probed {
            inner,
            probe: Arc::new(Probe::default()),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Probed<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let fresh = buf.filled().get(before..).unwrap_or_default();
        if !fresh.is_empty() && !self.probe.received.swap(true, Ordering::Relaxed) {
            self.probe
                .http2
                .store(fresh.starts_with(b"PRI "), Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Probed<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once the daemon starts stopping (never if the sender is gone).
async fn draining(drain: &mut watch::Receiver<bool>) {
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

/// Reads from `stream` until the bytes are a whole ClientHello, something
/// else, or too large.
async fn read_client_hello(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Inspection)> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        match client_hello::inspect(&buffer) {
            Inspection::NeedMore => continue,
            done => return Ok((buffer, done)),
        }
    }
}

/// What a TLS port serves, borrowed from [`PortService::Tls`].
struct TlsPort<'a> {
    servers: &'a [TlsEntry],
    plaintext: Option<&'a Arc<VirtualHosts>>,
}

async fn serve_tls(
    mut stream: TcpStream,
    port: TlsPort<'_>,
    mut downstream: Downstream,
    conn: Conn<'_>,
) {
    let (shared, gate, activity) = (conn.shared, conn.gate, conn.activity);
    // The ClientHello must arrive within the request-head deadline.
    let hello = {
        let read = read_client_hello(&mut stream);
        tokio::pin!(read);
        with_deadlines(read, activity, gate).await
    };
    let (prefix, hello) = match hello {
        Ok(Ok((prefix, Inspection::Hello(hello)))) => (prefix, hello),
        Ok(Ok((_, Inspection::Malformed(reason)))) => {
            log::debug!("{}: malformed ClientHello: {reason}", downstream.remote);
            let _ = stream
                .write_all(&tls::alert(AlertDescription::DecodeError))
                .await;
            return;
        }
        Ok(Ok((prefix, _))) => {
            // TLS detection: plaintext HTTP servers on this port take it.
            match port.plaintext {
                Some(hosts) => {
                    let raw = Some(stream.as_raw_fd());
                    let stream = Probed::new(Rewind::new(prefix, stream));
                    serve_http(stream, raw, downstream, hosts, conn).await;
                }
                None => log::debug!("{}: not TLS on a TLS port", downstream.remote),
            }
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let ClientHello { sni, .. } = &hello;
    downstream.sni = sni.clone();
    let Some(entry) = tls::select(port.servers, |e| e.hosts.as_slice(), sni.as_deref()) else {
        let alert = if sni.is_some() {
            AlertDescription::UnrecognizedName
        } else {
            AlertDescription::HandshakeFailure
        };
        log::debug!(
            "{}: no server for SNI {:?}; {alert:?} alert",
            downstream.remote,
            sni
        );
        let _ = stream.write_all(&tls::alert(alert)).await;
        let _ = stream.shutdown().await;
        return;
    };
    match &entry.action {
        TlsAction::Passthrough(routes) => {
            let route = tls::select(routes, |r| std::slice::from_ref(&r.sni), sni.as_deref());
            let _in_flight = activity.begin();
            match route {
                Some(route) => {
                    forward_tcp(stream, &prefix, &route.forward, downstream, shared).await
                }
                None => log_unrouted(&downstream, shared),
            }
        }
        TlsAction::AutoPassthrough(clusters) => {
            let _in_flight = activity.begin();
            match auto_passthrough::forward(sni.as_deref(), &hello.alpn, clusters) {
                Some(forward) => forward_tcp(stream, &prefix, &forward, downstream, shared).await,
                None => log_unrouted(&downstream, shared),
            }
        }
        TlsAction::TerminateHttp { config, hosts } => {
            let Some(tls_stream) = handshake(stream, prefix, config, activity, gate).await else {
                return;
            };
            downstream.tls = true;
            // A 408 would have to be encrypted: a slow TLS client is just closed.
            serve_http(Probed::new(tls_stream), None, downstream, hosts, conn).await;
        }
        TlsAction::TerminateTcp { config, forward } => {
            let Some(tls_stream) = handshake(stream, prefix, config, activity, gate).await else {
                return;
            };
            let _in_flight = activity.begin();
            match forward {
                Some(forward) => forward_tcp(tls_stream, &[], forward, downstream, shared).await,
                None => log_unrouted(&downstream, shared),
            }
        }
    }
}

/// Completes the handshake on bytes already read plus the rest of the stream.
async fn handshake(
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

fn log_unrouted(downstream: &Downstream, shared: &Shared) {
    shared.access_log.log(&Entry {
        start: Some(SystemTime::now()),
        flags: vec!["NR"],
        details: Some("filter_chain_not_found"),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        ..Entry::default()
    });
}

/// Forwards a connection (after `prefix`, bytes already read from it) and
/// logs it when it ends.
async fn forward_tcp<D>(
    mut client: D,
    prefix: &[u8],
    forward: &Forward,
    downstream: Downstream,
    shared: &Shared,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut entry = Entry {
        start: Some(SystemTime::now()),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        ..Entry::default()
    };
    match tcp::connect(forward, &shared.upstreams).await {
        Ok(mut upstream) => {
            entry.upstream_host = Some(upstream.addr);
            entry.upstream_cluster = Some(upstream.cluster.clone());
            match tcp::copy_both_ways(&mut client, prefix, &mut upstream.stream).await {
                Ok((received, sent)) => {
                    entry.bytes_received = received;
                    entry.bytes_sent = sent;
                }
                Err(err) => {
                    log::debug!("{}: forwarding ended: {err}", downstream.remote);
                    entry.flags.push("UC");
                }
            }
        }
        Err(err) => {
            log::debug!("{}: cannot forward: {err}", downstream.remote);
            entry.flags.push(err.flag());
        }
    }
    entry.duration = started.elapsed();
    shared.access_log.log(&entry);
}

/// A stream that first yields bytes already read from it: the peeked
/// ClientHello is handed to rustls, or to the backend, unchanged.
pub struct Rewind {
    prefix: Vec<u8>,
    offset: usize,
    inner: TcpStream,
}

impl Rewind {
    /// `prefix` comes first, then the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Rewind {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.offset..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
