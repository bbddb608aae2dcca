//! The bodies of a request in flight: the client's body counted as it is
//! forwarded, the backend's holding its endpoint's in-flight count, and
//! the response body that writes the access-log entry when it ends (or is
//! dropped: the client went away).
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::proxy::{access_log::Entry, body::ProxyBody, context::Shared, upstream};

/// Counts the bytes of a body as they pass.
pub(super) struct Counted<B> {
    pub(super) inner: B,
    pub(super) count: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps the endpoint's in-flight count until the response body is done.
pub(super) struct Holding<B> {
    pub(super) inner: B,
    pub(super) _active: upstream::ActiveRequest,
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The access-log entry of a request whose response is still streaming.
pub(super) struct Pending {
    pub(super) entry: Entry,
    pub(super) started: Instant,
    pub(super) received: Arc<AtomicU64>,
    pub(super) shared: Arc<Shared>,
}

/// Writes the entry when the response body ends, or is dropped early
/// (the client went away: Envoy's `DC`).
pub(super) struct Logged {
    pub(super) inner: ProxyBody,
    pub(super) pending: Option<Pending>,
}

/// How a response body ended.
#[derive(Clone, Copy)]
pub(super) enum BodyEnd {
    Complete,
    /// The client went away first (Envoy's `DC`).
    Downstream,
    /// The backend's body failed: cut short (`UC`) or malformed (`UPE`).
    Upstream {
        protocol: bool,
    },
}

impl Logged {
    fn finish(&mut self, end: BodyEnd) {
        if let Some(mut pending) = self.pending.take() {
            match end {
                BodyEnd::Complete => {}
                BodyEnd::Downstream => pending.entry.flags.push("DC"),
                BodyEnd::Upstream { protocol } => {
                    let (flag, details) = if protocol {
                        (
                            "UPE",
                            "upstream_reset_after_response_started{protocol_error}",
                        )
                    } else {
                        (
                            "UC",
                            "upstream_reset_after_response_started{connection_termination}",
                        )
                    };
                    pending.entry.flags.push(flag);
                    pending.entry.details = Some(details);
                }
            }
            pending.finish();
        }
    }
}

impl Pending {
    fn finish(mut self) {
        self.entry.duration = self.started.elapsed();
        self.entry.bytes_received = self.received.load(Ordering::Relaxed);
        self.shared.finished(&mut self.entry);
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(pending)) = (frame.data_ref(), self.pending.as_mut()) {
                    pending.entry.bytes_sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(None) => self.finish(BodyEnd::Complete),
            // Only a backend's body can fail: the gateway's own are whole.
            Poll::Ready(Some(Err(err))) => {
                let protocol = upstream::protocol_error(err);
                self.finish(BodyEnd::Upstream { protocol });
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let end = if self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::Downstream
        };
        self.finish(end);
    }
}

/// The log entry of a request not answered yet. A client that goes away
/// first (the request's future is dropped) still gets its line and its
/// metrics: status 0, `DC`, as Envoy logs it.
pub(super) struct Unanswered(pub(super) Option<Pending>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut pending) = self.0.take() {
            pending.entry.status = 0;
            pending.entry.flags.push("DC");
            pending.entry.details = Some("downstream_remote_disconnect");
            pending.finish();
        }
    }
}
