//! The accept phase: the proxy's listening sockets, and accept loops held
//! to the connection cap; each connection then goes through
//! [`super::phases`].
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    task::JoinSet,
};

use super::{access_log, error::ProxyError, phases::serve_connection, served::Served};
use crate::connection::{Acceptor, Gate, Place};
use gateway_common::proxy_socket_slot;

const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket of the proxy. The kernel's socket-lookup program
/// hands it every connection to every listener of its address family and
/// kind (`gateway_common::proxy_socket_slot`); each connection's listener
/// is read from the address it was made to.
pub struct BoundListener {
    pub local_addr: SocketAddr,
    /// Its `PROXY_SOCKETS` slot.
    pub slot: u32,
    listener: TcpListener,
}

impl AsRawFd for BoundListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }
}

impl std::os::fd::AsFd for BoundListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The proxy's listening sockets, on loopback ports the system picks: for
/// IPv4 and IPv6 (none where the host has no IPv6), each once for
/// listeners whose clients speak first (HTTP, TLS), accepted only once the
/// first data has arrived (`TCP_DEFER_ACCEPT`, as nginx's `deferred` and
/// HAProxy's `defer-accept`), and once for the others. The proxy binds
/// nothing per listener, so ports below 1024 need no privilege to bind,
/// and a listener added or removed is only a map update.
///
/// `transparent` (egress capture): the sockets may answer from addresses
/// that are not the node's (a workload's original destination), as a
/// TPROXY socket does (`IP_TRANSPARENT`); without it the kernel refuses
/// to route the SYN-ACK from a foreign source address.
pub fn steering_sockets(transparent: bool) -> Result<Vec<BoundListener>, ProxyError> {
    let open = |addr: SocketAddr, client_first: bool| {
        let socket = listen(addr, transparent, client_first)
            .map_err(|source| ProxyError::Bind { addr, source })?;
        Ok::<_, ProxyError>(BoundListener {
            local_addr: socket.local_addr().unwrap_or(addr),
            slot: proxy_socket_slot(addr.is_ipv6(), client_first),
            listener: socket,
        })
    };
    let mut sockets = Vec::new();
    for client_first in [true, false] {
        sockets.push(open(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            client_first,
        )?);
    }
    for client_first in [true, false] {
        match open(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), client_first) {
            Ok(v6) => sockets.push(v6),
            Err(err) => {
                log::warn!("no IPv6 listening socket ({err}); IPv6 listeners are not served");
                break;
            }
        }
    }
    Ok(sockets)
}

/// Seconds a connection to a client-first listener may stay unaccepted
/// without data: after that the kernel accepts it anyway (at the next
/// retransmitted SYN-ACK, about one second), and the request-head deadline
/// takes over.
const DEFER_ACCEPT_SECONDS: libc::c_int = 1;

/// Sets `TCP_DEFER_ACCEPT` (which nix does not wrap) to
/// [`DEFER_ACCEPT_SECONDS`].
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
fn defer_accept(socket: &TcpSocket) -> io::Result<()> {
    let seconds: libc::c_int = DEFER_ACCEPT_SECONDS;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that
    // lives across the call, with its size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn listen(addr: SocketAddr, transparent: bool, client_first: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if transparent {
        use nix::sys::socket::{setsockopt, sockopt};
        // IP_TRANSPARENT sets the same socket flag as IPV6_TRANSPARENT.
        setsockopt(&socket, sockopt::IpTransparent, &true)?;
    }
    if client_first {
        // The connection reaches accept(2) with its first request (or
        // ClientHello) already in: one wake-up of the proxy instead of two,
        // and the data read at once.
        defer_accept(&socket)?;
    }
    // Restarting the daemon must not wait for TIME_WAIT sockets of the old one.
    socket.set_reuseaddr(true)?;
    // Accepted sockets inherit TCP_NODELAY: responses and forwarded chunks
    // go out at once, with no setsockopt(2) per connection.
    socket.set_nodelay(true)?;
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
    let mut acceptor = Acceptor::new(format!("proxy {}", bound.local_addr));
    loop {
        tokio::select! {
            (stream, remote, admitted) = acceptor.admitted(&bound.listener, &gate, |stream| place(stream, &served.borrow())) => {
                let current = Arc::clone(&served.borrow());
                // Detached: nothing wakes this loop when a connection ends;
                // `Admitted` counts it on the gate until then.
                tokio::spawn(serve_connection(stream, remote, current, Arc::clone(&gate), admitted, shutdown.clone()));
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(bound.listener);
    // Connections see the same shutdown signal and drain; wait for the
    // gate's count to reach zero, at most the grace period (the process
    // then exits and takes what is left with it).
    let grace = Instant::now() + SHUTDOWN_GRACE;
    while gate.counters.active.load(Ordering::Relaxed) > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The listener a connection was made to, for the gate's listener shares;
/// connections no listener serves (captured egress, a reload in flight)
/// share one slot of their own.
fn place(stream: &TcpStream, served: &Served) -> Place {
    let listener = stream
        .local_addr()
        .ok()
        .and_then(|local| served.listeners.listener_at(local))
        .unwrap_or(u32::MAX);
    Place {
        listener,
        listeners: served.ports.len() + 1,
    }
}

/// How long the proxy waits for connections to finish when stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// `TCP_DEFER_ACCEPT` of `listener`, in seconds as the kernel reports it.
    #[allow(
        unsafe_code,
        reason = "FFI: the SAFETY comments state each call's contract"
    )]
    fn defer_accept_of(listener: &TcpListener) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and an out-pointer to a c_int with its size.
        let done = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!(done, 0, "{}", io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn only_client_first_sockets_defer_accept_and_slots_differ() {
        let sockets = steering_sockets(false).expect("sockets");
        let mut slots: Vec<u32> = sockets.iter().map(|s| s.slot).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), sockets.len(), "one socket per slot");
        for socket in &sockets {
            let client_first = socket.slot == proxy_socket_slot(socket.local_addr.is_ipv6(), true);
            let deferred = defer_accept_of(&socket.listener) > 0;
            assert_eq!(deferred, client_first, "slot {}", socket.slot);
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)), false, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
