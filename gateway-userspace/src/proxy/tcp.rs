//! Opaque forwarding for TCP servers, TLS passthrough and TLS-terminated
//! TCP: pick a backend, connect (a PROXY header first when the cluster
//! has `proxyProtocol`; through a tunnel when the route has `tunnel`),
//! then copy bytes both ways.
//!
//! [`copy_both_ways`] is the one place bytes are copied in userspace; the
//! planned in-kernel splice (sockmap) replaces it for raw TCP streams.
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    time::Instant,
};

use super::{
    proxy_protocol::Ends,
    tunnel::{self, Duplex, TunnelError},
    upstream::{
        ConnectionSlot, Origin, TryResult, UpstreamCluster, UpstreamError, Upstreams, random,
        weighted,
    },
};
use crate::plan::{Backend, Forward};

/// A connected backend and how it was chosen.
pub struct Connected {
    /// The endpoint's connection, or the tunnel through it.
    pub stream: Box<dyn Duplex>,
    pub addr: SocketAddr,
    pub cluster: String,
    /// The cluster's `tcp.idleTimeout`, when its DestinationRule sets one.
    pub idle_timeout: Option<Duration>,
    /// Counts the connection against the cluster's `maxConnections`.
    _counted: ConnectionSlot,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("addr", &self.addr)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be forwarded; the client sees its
/// connection closed (there is no protocol to answer in).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The route's destination did not resolve to a cluster (`NC`).
    #[error("no cluster: {0}")]
    NoCluster(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The endpoint would not open the route's tunnel (`UF`, as Envoy's
    /// TCP proxy reports a failed tunnel: a pool failure).
    #[error("tunnel through {addr} not opened: {reason}")]
    Tunnel {
        addr: SocketAddr,
        reason: TunnelError,
    },
}

impl ForwardError {
    /// Envoy's response flag.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::NoCluster(_) => "NC",
            Self::Upstream(err) => err.flag(),
            Self::Tunnel { .. } => "UF",
        }
    }
}

/// Picks a weighted backend of `forward` and connects to one of its
/// endpoints, for the `downstream` connection a cluster's PROXY header
/// names (`None`: no header whatever the cluster says, as Istio writes
/// none on AUTO_PASSTHROUGH's SNI-DNAT clusters).
pub async fn connect(
    forward: &Forward,
    upstreams: &Upstreams,
    origin: Origin,
    downstream: Option<Ends>,
) -> Result<Connected, ForwardError> {
    let (backend, cluster) = cluster(&forward.0, upstreams)?;
    let endpoint = cluster.pick(origin).await?;
    // Envoy's TCP proxy has no pending queue: over `maxConnections` the
    // connection is refused at once (UO).
    let counted = cluster
        .load
        .open(&endpoint)
        .ok_or(UpstreamError::Overflow)?;
    // TLS when the cluster originates it, as for HTTP.
    let limits = &cluster.load.limits;
    let connected = super::upstream::connect(
        endpoint.addr,
        cluster.connect_timeout,
        cluster.tls.as_ref(),
        limits.keepalive.as_ref(),
        cluster
            .proxy_protocol
            .zip(downstream)
            .map(|(version, ends)| (version, Some(ends))),
    )
    .await;
    // Envoy's TCP proxy tells outlier detection of connects alone.
    cluster.observe(
        &endpoint,
        match &connected {
            Ok(_) => TryResult::Connected,
            Err(_) => TryResult::ConnectFailed,
        },
    );
    let stream = connected?;
    let stream: Box<dyn Duplex> = match &backend.tunnel {
        None => Box::new(stream),
        Some(settings) => tunnel::open(stream, settings, cluster.connect_timeout)
            .await
            .map_err(|reason| ForwardError::Tunnel {
                addr: endpoint.addr,
                reason,
            })?,
    };
    Ok(Connected {
        stream,
        addr: endpoint.addr,
        cluster: cluster.name.clone(),
        idle_timeout: limits.tcp_idle_timeout,
        _counted: counted,
    })
}

fn cluster<'a, 'b>(
    backends: &'b [Backend],
    upstreams: &'a Upstreams,
) -> Result<(&'b Backend, &'a Arc<UpstreamCluster>), ForwardError> {
    let backend = weighted(backends, |b| u64::from(b.weight.max(1)), random())
        .ok_or_else(|| ForwardError::NoCluster("the route has no destination".into()))?;
    match &backend.target {
        Ok(id) => upstreams.get(*id).map(|c| (backend, c)).ok_or_else(|| {
            ForwardError::NoCluster(format!("cluster #{} is not built", id.index()))
        }),
        Err(reason) => Err(ForwardError::NoCluster(reason.to_string())),
    }
}

/// Bytes moved by [`copy_both_ways`]: (client to backend, backend to client).
pub type Moved = (u64, u64);

/// How a forwarded connection ended, with the bytes it moved either way.
#[derive(Debug)]
pub struct Copied {
    pub moved: Moved,
    pub end: CopyEnd,
}

#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides closed.
    Closed,
    /// No byte moved either way for the idle timeout (Envoy's TCP proxy
    /// `idle_timeout`; Istio's default is one hour).
    Idle,
    Failed(std::io::Error),
}

/// Sends `prefix` (bytes already read from the client, such as a peeked
/// ClientHello) to the backend, then copies both directions until both
/// sides have closed, or until no byte has moved either way for `idle`.
/// Half-closes are passed on.
pub async fn copy_both_ways<D, U>(
    downstream: &mut D,
    prefix: &[u8],
    upstream: &mut U,
    idle: Duration,
) -> Copied
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if let Err(err) = upstream.write_all(prefix).await {
        return Copied {
            moved: (0, 0),
            end: CopyEnd::Failed(err),
        };
    }
    let counts = Counts {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        up: AtomicU64::new(prefix.len() as u64),
        down: AtomicU64::new(0),
    };
    let mut client = Watched {
        inner: downstream,
        counts: &counts,
    };
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut client, upstream);
        tokio::pin!(copy);
        loop {
            let due = counts.last() + idle;
            tokio::select! {
                copied = copy.as_mut() => {
                    break match copied {
                        Ok(_) => CopyEnd::Closed,
                        Err(err) => CopyEnd::Failed(err),
                    };
                }
                () = tokio::time::sleep_until(due) => {
                    if counts.last() + idle <= Instant::now() {
                        break CopyEnd::Idle;
                    }
                }
            }
        }
    };
    Copied {
        moved: (
            counts.up.load(Ordering::Relaxed),
            counts.down.load(Ordering::Relaxed),
        ),
        end,
    }
}

/// What moved through the client's side of a forward, and when last.
struct Counts {
    start: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Counts {
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn add(&self, count: &AtomicU64, n: usize) {
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_ms.store(ms, Ordering::Relaxed);
        }
    }
}

/// The client's stream, counting what is read from it (to the backend)
/// and written to it (from the backend): every byte moves through it.
struct Watched<'a, D: ?Sized> {
    inner: &'a mut D,
    counts: &'a Counts,
}

impl<D: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, D> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.counts
            .add(&self.counts.up, buf.filled().len() - before);
        polled
    }
}

impl<D: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, D> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.counts.add(&self.counts.down, *n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
