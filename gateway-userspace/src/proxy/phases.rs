//! A connection's phases, in order, in one place. Each phase is one
//! function (or one hook call); a change to what happens at a phase is a
//! change to that function, in the spirit of pingora's `ProxyHttp` hooks.
//!
//! 1. **accept** ([`super::listener`]): the connection cap and deadlines
//!    ([`crate::connection`]), then [`serve_connection`] here.
//! 2. **claim**: a plug-in ([`super::context::Hook::claim`], the egress
//!    capture) may claim a connection made to an address that is not the
//!    gateway's; it is then asked at the points below marked *hook*, and
//!    nowhere else.
//! 3. **listener**: the listener the connection was made to
//!    ([`super::ListenerMap`]) and its kind: HTTP, TLS or TCP. No listener
//!    on the port: [`unserved_port`] (*hook*: `unserved_port`).
//! 4. **TLS/SNI** ([`serve_tls`]): the ClientHello ([`read_hello`]), the
//!    server chosen by SNI ([`tls::select`]; none: [`unknown_sni`], *hook*:
//!    `unknown_sni`), then terminate, pass through or forward
//!    ([`serve_tls_server`]).
//! 5. **HTTP** ([`serve_http_port`]; *hook*: `http`, serve or take): hyper
//!    ([`super::downstream::serve_http`]) or the lean 301 path
//!    ([`super::lean_redirect`]); then per request ([`super::http::handle`])
//!    the host phase (head checks, virtual host, HTTPS redirect) and the
//!    **route** phase (the VirtualService route and its action).
//! 6. **upstream**: `http/forward.rs` for a request (the cluster, the
//!    request as the backend gets it, the exchange under the route's
//!    timeout; endpoints, balancing, pools and origination in
//!    [`super::upstream`]), or [`super::downstream::forward_tcp`] for
//!    opaque TCP and passthrough.
//! 7. **log** ([`super::context::Shared::finished`]): the claiming
//!    plug-in completes the entry (*hook*: `log`, the verdict), then the
//!    access log and the metrics.
use std::{io, net::SocketAddr, os::fd::AsRawFd, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

use super::{
    auto_passthrough,
    client_hello::{self, ClientHello, Inspection},
    context::{Conn, Downstream, HttpChoice},
    downstream::{forward_tcp, handshake, log_unrouted, serve_http},
    http::VirtualHosts,
    lean_redirect,
    served::{PortService, Served, TlsAction, TlsEntry},
    stream::{Probed, Rewind},
    tls::{self, AlertDescription},
};
use crate::connection::{Activity, Admitted, Gate, with_deadlines};

/// Phases 2 and 3: the claim, then the connection's listener and its kind.
pub(super) async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
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
    // The address the client connected to: the kernel steered it here
    // from a listener's (address, port), which names the listener.
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let downstream = Downstream {
        tls: false,
        local,
        remote,
        sni: None,
        workload_interface: served
            .shared
            .hook
            .as_ref()
            .and_then(|hook| hook.claim(local, remote)),
        remote_ip: std::sync::OnceLock::new(),
    };
    let Some(service) = served
        .listeners
        .listener_at(local)
        .and_then(|id| served.ports.get(&id).cloned())
    else {
        unserved_port(stream, downstream, conn).await;
        return;
    };
    // Each kind's future is boxed: the task's own future stays a few hundred
    // bytes, which tokio moves at spawn and at completion, instead of the
    // whole connection state (about 7 KiB).
    match &*service {
        PortService::Http(hosts) => {
            Box::pin(serve_http_port(stream, downstream, hosts, conn)).await;
        }
        PortService::Tcp(forward) => {
            let _in_flight = activity.begin();
            Box::pin(forward_tcp(
                stream,
                &[],
                forward,
                downstream,
                &served.shared,
                true,
            ))
            .await;
        }
        PortService::Tls { servers, plaintext } => {
            let port = TlsPort {
                servers,
                plaintext: plaintext.as_ref(),
            };
            Box::pin(serve_tls(stream, port, downstream, conn)).await;
        }
    }
}

/// No listener serves the port: the claiming plug-in's, else a
/// connection steered by a plan this `Served` does not have yet (a
/// reload in flight), reset so the client fails at once instead of waiting.
async fn unserved_port(stream: TcpStream, downstream: Downstream, conn: Conn<'_>) {
    if let Some(hook) = conn.shared.hook_of(&downstream) {
        hook.unserved_port(stream, downstream, conn).await;
        return;
    }
    log::debug!(
        "{} -> {}: no listener; reset",
        downstream.remote,
        downstream.local
    );
    let _ = stream.set_zero_linger();
}

/// Phase 5 on a plaintext HTTP port: the claiming plug-in serves or
/// takes the connection; then the lean 301 path where the port
/// redirects, else hyper.
async fn serve_http_port(
    stream: TcpStream,
    downstream: Downstream,
    hosts: &Arc<VirtualHosts>,
    conn: Conn<'_>,
) {
    let (stream, read_ahead) = match conn.shared.hook_of(&downstream) {
        Some(hook) => {
            let serves = |host: &str| hosts.lookup(host).is_some();
            match hook.http(stream, &serves, &downstream, &conn).await {
                HttpChoice::Serve { stream, read_ahead } => (stream, read_ahead),
                HttpChoice::Taken => return,
            }
        }
        None => (stream, None),
    };
    let raw = Some(stream.as_raw_fd());
    match read_ahead {
        Some(prefix) => {
            let stream = Probed::new(Rewind::new(prefix, stream), conn.activity);
            serve_http(stream, raw, downstream, hosts, conn).await;
        }
        // The lean path answers from the head alone: never with security
        // filters to run first.
        None if hosts.redirects && !conn.shared.filters_requests() => {
            lean_redirect::serve(stream, downstream, hosts, conn).await
        }
        None => {
            let stream = Probed::new(stream, conn.activity);
            serve_http(stream, raw, downstream, hosts, conn).await;
        }
    }
}

/// What a TLS port serves, borrowed from [`PortService::Tls`].
struct TlsPort<'a> {
    servers: &'a [TlsEntry],
    plaintext: Option<&'a Arc<VirtualHosts>>,
}

/// Phase 4: the ClientHello, the server its SNI names, and that server.
async fn serve_tls(
    mut stream: TcpStream,
    port: TlsPort<'_>,
    mut downstream: Downstream,
    conn: Conn<'_>,
) {
    let (prefix, hello) = match read_hello(&mut stream, &downstream, &conn).await {
        Hello::Tls(prefix, hello) => (prefix, hello),
        Hello::NotTls(prefix) => {
            // TLS detection: plaintext HTTP servers on this port take it.
            match port.plaintext {
                Some(hosts) => {
                    let raw = Some(stream.as_raw_fd());
                    let stream = Probed::new(Rewind::new(prefix, stream), conn.activity);
                    serve_http(stream, raw, downstream, hosts, conn).await;
                }
                None => log::debug!("{}: not TLS on a TLS port", downstream.remote),
            }
            return;
        }
        Hello::Ended => return,
    };
    downstream.sni = hello.sni.clone();
    let servers = port.servers;
    match tls::select(servers, |e| e.hosts.as_slice(), hello.sni.as_deref()) {
        Some(server) => serve_tls_server(server, stream, prefix, &hello, downstream, conn).await,
        None => unknown_sni(stream, &prefix, &downstream, &conn).await,
    }
}

/// What the start of a connection to a TLS port turned out to be.
enum Hello {
    /// A whole ClientHello (the bytes read, and what they say).
    Tls(Vec<u8>, ClientHello),
    /// Not TLS: the bytes read, for the port's plaintext servers.
    NotTls(Vec<u8>),
    /// Malformed (answered with an alert), late or closed.
    Ended,
}

/// Reads the ClientHello within the request-head deadline.
async fn read_hello(stream: &mut TcpStream, downstream: &Downstream, conn: &Conn<'_>) -> Hello {
    let hello = {
        let read = read_client_hello(stream);
        tokio::pin!(read);
        with_deadlines(read, conn.activity, conn.gate).await
    };
    match hello {
        Ok(Ok((prefix, Inspection::Hello(hello)))) => Hello::Tls(prefix, hello),
        Ok(Ok((_, Inspection::Malformed(reason)))) => {
            log::debug!("{}: malformed ClientHello: {reason}", downstream.remote);
            let _ = stream
                .write_all(&tls::alert(AlertDescription::DecodeError))
                .await;
            Hello::Ended
        }
        Ok(Ok((prefix, _))) => Hello::NotTls(prefix),
        Ok(Err(_)) | Err(_) => Hello::Ended,
    }
}

/// No server of the port accepts the SNI: the claiming plug-in's first,
/// then the alert Envoy sends.
async fn unknown_sni(stream: TcpStream, prefix: &[u8], downstream: &Downstream, conn: &Conn<'_>) {
    let mut stream = stream;
    if let Some(hook) = conn.shared.hook_of(downstream) {
        match hook.unknown_sni(stream, prefix, downstream, conn).await {
            Some(back) => stream = back,
            None => return,
        }
    }
    let sni = &downstream.sni;
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
}

/// The TLS server SNI chose: pass through by SNI route or mesh SNI, or
/// terminate and serve HTTP or forward TCP.
async fn serve_tls_server(
    server: &TlsEntry,
    stream: TcpStream,
    prefix: Vec<u8>,
    hello: &ClientHello,
    mut downstream: Downstream,
    conn: Conn<'_>,
) {
    let (shared, gate, activity) = (conn.shared, conn.gate, conn.activity);
    let sni = hello.sni.as_deref();
    match &server.action {
        TlsAction::Passthrough(routes) => {
            let route = tls::select(routes, |r| std::slice::from_ref(&r.sni), sni);
            let _in_flight = activity.begin();
            match route {
                Some(route) => {
                    forward_tcp(stream, &prefix, &route.forward, downstream, shared, true).await
                }
                None => log_unrouted(&downstream, shared),
            }
        }
        TlsAction::AutoPassthrough(clusters) => {
            let _in_flight = activity.begin();
            match auto_passthrough::forward(sni, &hello.alpn, clusters) {
                Some(forward) => {
                    forward_tcp(stream, &prefix, &forward, downstream, shared, false).await
                }
                None => log_unrouted(&downstream, shared),
            }
        }
        TlsAction::TerminateHttp { config, hosts } => {
            let Some(tls_stream) = handshake(stream, prefix, config, activity, gate).await else {
                return;
            };
            downstream.tls = true;
            // A 408 would have to be encrypted: a slow TLS client is just closed.
            let stream = Probed::new(tls_stream, activity);
            serve_http(stream, None, downstream, hosts, conn).await;
        }
        TlsAction::TerminateTcp { config, forward } => {
            let Some(tls_stream) = handshake(stream, prefix, config, activity, gate).await else {
                return;
            };
            let _in_flight = activity.begin();
            match forward {
                Some(forward) => {
                    forward_tcp(tls_stream, &[], forward, downstream, shared, true).await
                }
                None => log_unrouted(&downstream, shared),
            }
        }
    }
}

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
