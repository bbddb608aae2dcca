//! Stream wrappers under hyper and rustls: bytes already read put back in
//! front ([`Rewind`]), and a note of what arrived before the request head
//! was complete ([`Probed`]); where a request head ends ([`head_length`],
//! [`MAX_REQUEST_HEAD`]).
use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::connection::Activity;

/// Largest request head accepted; Envoy's default `max_request_headers_kb`
/// is 60. Every reader of request heads (hyper, the lean redirect path,
/// egress's read-ahead) stops here.
pub(super) const MAX_REQUEST_HEAD: usize = 60 * 1024;

/// The length of the request head at the start of `buffer`, once whole;
/// the first `searched` bytes are known to hold no complete `\r\n\r\n`,
/// so a head read in many pieces is not searched again from its start.
pub(super) fn head_length(buffer: &[u8], searched: usize) -> Option<usize> {
    let from = searched.saturating_sub(3);
    buffer[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// What a connection sent before its request head was complete.
#[derive(Debug, Default)]
pub(super) struct Probe {
    received: AtomicBool,
    /// The first bytes were the HTTP/2 preface (`PRI `).
    http2: AtomicBool,
}

impl Probe {
    pub(super) fn partial_http1(&self) -> bool {
        self.received.load(Ordering::Relaxed) && !self.http2.load(Ordering::Relaxed)
    }
}

/// Bytes already read from a stream, handed out before it is read again.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    offset: usize,
}

impl Pending {
    /// Moves what fits into `buf`; false when nothing is pending. The
    /// buffer is freed once drained.
    fn take_into(&mut self, buf: &mut tokio::io::ReadBuf<'_>) -> bool {
        let Some(rest) = self.bytes.get(self.offset..).filter(|r| !r.is_empty()) else {
            return false;
        };
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.offset += n;
        if self.offset == self.bytes.len() {
            *self = Self::default();
        }
        true
    }
}

/// Size of the first read from a connection: a whole ordinary request
/// head, so the 24-byte HTTP/2 preface check in front of hyper does not
/// cost a second read(2) for the rest of the head.
const FIRST_READ: usize = 4096;

/// `io`, noting whether any byte arrived and whether it started like HTTP/2.
/// Its first read takes up to [`FIRST_READ`] bytes whatever the caller asked
/// for, and hands the surplus out on the next reads.
pub(super) struct Probed<I> {
    inner: I,
    pub(super) probe: Arc<Probe>,
    /// Told of every byte received: it moves the connection's deadlines.
    activity: Arc<Activity>,
    /// What the first read got beyond the caller's buffer.
    surplus: Pending,
}

impl<I> Probed<I> {
    pub(super) fn new(inner: I, activity: &Arc<Activity>) -> Self {
        Self {
            inner,
            probe: Arc::new(Probe::default()),
            activity: Arc::clone(activity),
            surplus: Pending::default(),
        }
    }

    fn note(&self, fresh: &[u8]) {
        if fresh.is_empty() {
            return;
        }
        self.activity.received();
        if !self.probe.received.swap(true, Ordering::Relaxed) {
            self.probe
                .http2
                .store(fresh.starts_with(b"PRI "), Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Probed<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        if this.surplus.take_into(buf) {
            return std::task::Poll::Ready(Ok(()));
        }
        let first = !this.probe.received.load(Ordering::Relaxed);
        if first && (1..FIRST_READ).contains(&buf.remaining()) {
            let mut space = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut whole = tokio::io::ReadBuf::uninit(&mut space);
            std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut whole))?;
            let fresh = whole.filled();
            this.note(fresh);
            let n = fresh.len().min(buf.remaining());
            buf.put_slice(&fresh[..n]);
            this.surplus = Pending {
                bytes: fresh[n..].to_vec(),
                offset: 0,
            };
            return std::task::Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(buf.filled().get(before..).unwrap_or_default());
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

/// A stream that first yields bytes already read from it: the peeked
/// ClientHello is handed to rustls, or to the backend, unchanged.
pub struct Rewind {
    prefix: Pending,
    inner: TcpStream,
}

impl Rewind {
    /// `prefix` comes first, then the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Self {
            prefix: Pending {
                bytes: prefix,
                offset: 0,
            },
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
        if this.prefix.take_into(buf) {
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

#[cfg(test)]
mod tests {
    use std::{pin::Pin, task::Poll};

    use tokio::io::{AsyncReadExt, ReadBuf};

    use super::*;

    /// Yields `data` in reads of whatever size is asked, counting them.
    struct Counted {
        data: Vec<u8>,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = self.data.len().min(buf.remaining());
            let taken: Vec<u8> = self.data.drain(..n).collect();
            buf.put_slice(&taken);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_first_read_takes_the_whole_head_in_one_read() {
        let head = b"GET /some/path HTTP/1.1\r\nhost: dataengine.com\r\n\r\n".to_vec();
        let mut probed = Probed::new(
            Counted {
                data: head.clone(),
                reads: 0,
            },
            &Arc::new(Activity::new()),
        );
        let mut preface = [0u8; 24];
        probed.read_exact(&mut preface).await.unwrap();
        let mut rest = vec![0u8; 8192];
        let n = probed.read(&mut rest).await.unwrap();
        assert_eq!([&preface[..], &rest[..n]].concat(), head);
        assert_eq!(
            probed.inner.reads, 1,
            "one read of the source for the whole head"
        );
        assert!(probed.probe.partial_http1());
        assert_eq!(
            probed.read(&mut rest).await.unwrap(),
            0,
            "then the source's end"
        );
    }

    #[tokio::test]
    async fn the_http2_preface_is_noted_through_the_first_read() {
        let mut probed = Probed::new(
            Counted {
                data: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                reads: 0,
            },
            &Arc::new(Activity::new()),
        );
        let mut first = [0u8; 4];
        probed.read_exact(&mut first).await.unwrap();
        assert!(!probed.probe.partial_http1());
    }
}
