//! Tunneling a forwarded connection through its endpoint (DestinationRule
//! `tunnel`), as Envoy's TCP proxy does with Istio's `tunneling_config`
//! over HTTP/1.1 (`source/common/tcp_proxy/upstream.cc`, `HttpUpstream`):
//! `CONNECT host:port` with `host: host:port`, or with `protocol: POST`
//! (`use_post`) `POST /` with the same `host` and the client's bytes as
//! its chunked body, the answer's body being the backend's bytes. The
//! bytes flow only after the answer's head: a 2xx opens the tunnel
//! (`isValidResponse`), anything else, a malformed answer, one whose head
//! exceeds [`MAX_RESPONSE_HEAD`], or none within the cluster's connect
//! timeout closes the client's connection (Envoy's `UF`).
use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use hyper::{
    Method, Request, StatusCode,
    body::{Body, Frame, Incoming},
    client::conn::http1,
    header::HOST,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::mpsc,
};

use crate::plan::{TunnelProtocol, TunnelSettings};

/// The most a tunnel proxy's answer head may take (Envoy's default
/// `max_response_headers_kb`, 60 KiB).
pub const MAX_RESPONSE_HEAD: usize = 60 * 1024;

/// Client bytes queued towards a POST tunnel at most (each one read).
const POST_QUEUE: usize = 4;

/// Why a tunnel did not open; the client's connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the tunnel proxy refused with {0}")]
    Refused(StatusCode),
    #[error("the tunnel proxy's answer is malformed or too large: {0}")]
    Malformed(String),
    #[error("no answer from the tunnel proxy within {0:?}")]
    TimedOut(Duration),
}

/// A byte stream both ways: the tunnel, once open.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Asks the tunnel proxy on `io` for the tunnel `settings` name and waits
/// (at most `timeout`) for its answer's head.
pub async fn open<S>(
    io: S,
    settings: &TunnelSettings,
    timeout: Duration,
) -> Result<Box<dyn Duplex>, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::time::timeout(timeout, exchange(io, settings))
        .await
        .map_err(|_| TunnelError::TimedOut(timeout))?
}

fn malformed(err: impl std::fmt::Display) -> TunnelError {
    TunnelError::Malformed(err.to_string())
}

async fn exchange<S>(io: S, settings: &TunnelSettings) -> Result<Box<dyn Duplex>, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority = settings.authority();
    let opened = Arc::new(AtomicBool::new(false));
    let io = Bounded {
        inner: io,
        read: 0,
        opened: Arc::clone(&opened),
    };
    let (mut sender, connection) = http1::Builder::new()
        .handshake::<_, TunnelBody>(TokioIo::new(io))
        .await
        .map_err(malformed)?;
    let (method, uri, body, queue) = match settings.protocol {
        TunnelProtocol::Connect => (Method::CONNECT, authority.as_str(), TunnelBody(None), None),
        TunnelProtocol::Post => {
            let (queue, bytes) = mpsc::channel(POST_QUEUE);
            (Method::POST, "/", TunnelBody(Some(bytes)), Some(queue))
        }
    };
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            log::debug!("tunnel connection ended: {err}");
        }
    });
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, authority.as_str())
        .body(body)
        .map_err(malformed)?;
    let response = sender.send_request(request).await.map_err(malformed)?;
    if !response.status().is_success() {
        return Err(TunnelError::Refused(response.status()));
    }
    opened.store(true, Ordering::Relaxed);
    match queue {
        None => {
            let upgraded = hyper::upgrade::on(response).await.map_err(malformed)?;
            Ok(Box::new(TokioIo::new(upgraded)))
        }
        Some(queue) => Ok(Box::new(PostTunnel {
            queue: Some(queue),
            reserving: None,
            answer: response.into_body(),
            pending: Bytes::new(),
        })),
    }
}

/// The proxy's side until its answer's head is accepted: at most
/// [`MAX_RESPONSE_HEAD`] bytes are read (hyper's own buffer limit is
/// looser), then an error ends the exchange.
struct Bounded<S> {
    inner: S,
    read: usize,
    opened: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.opened.load(Ordering::Relaxed) {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let left = MAX_RESPONSE_HEAD.saturating_sub(self.read);
        if left == 0 {
            return Poll::Ready(Err(io::Error::other(format!(
                "no answer head within {MAX_RESPONSE_HEAD} bytes"
            ))));
        }
        let mut chunk = [0u8; 4096];
        let most = left.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..most]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
        buf.put_slice(limited.filled());
        self.read += limited.filled().len();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request's body: none for CONNECT, the client's bytes for POST
/// (unknown length, so hyper sends it chunked, as Envoy's codec does).
struct TunnelBody(Option<mpsc::Receiver<Bytes>>);

impl Body for TunnelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.0 {
            None => Poll::Ready(None),
            Some(bytes) => bytes.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

type Reserving = Pin<
    Box<dyn Future<Output = Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>> + Send>,
>;

/// A POST tunnel as a byte stream: writes become the request body's
/// chunks, reads the answer body's bytes; shutting down ends the body.
struct PostTunnel {
    queue: Option<mpsc::Sender<Bytes>>,
    reserving: Option<Reserving>,
    answer: Incoming,
    pending: Bytes,
}

impl AsyncWrite for PostTunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.reserving.is_none() {
            let Some(queue) = &this.queue else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            this.reserving = Some(Box::pin(queue.clone().reserve_owned()));
        }
        let Some(reserving) = this.reserving.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let permit = ready!(reserving.as_mut().poll(cx));
        this.reserving = None;
        match permit {
            Ok(permit) => {
                permit.send(Bytes::copy_from_slice(buf));
                Poll::Ready(Ok(buf.len()))
            }
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queue = None;
        self.reserving = None;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for PostTunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.answer).poll_frame(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
