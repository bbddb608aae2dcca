//! The client's request body, kept while it is small enough that a retry
//! can send it again. Each try reads a copy: the copy first replays what
//! earlier tries read, then reads on from the client (keeping what it
//! reads), so a retry works even when the client is still sending. A body
//! larger than the limit is still forwarded, but no longer kept, and the
//! request is then not retried (Envoy's buffer limit for retries).
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::{
    HeaderMap,
    body::{Body, Frame, SizeHint},
};

use crate::proxy::body::ProxyBody;

/// How much of a request body is kept for retries: Envoy's default
/// `per_connection_buffer_limit_bytes` (1 MiB), which Istio leaves as it
/// is on gateway listeners (only its EDGE profile lowers it to 32 KiB).
pub(super) const RETRY_BUFFER_LIMIT: usize = 1024 * 1024;

/// What every copy of one request body shares.
struct Kept {
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    limit: usize,
    /// More than `limit` was read: `frames` no longer holds the whole body.
    overflowed: bool,
    /// The client's body has ended.
    complete: bool,
    /// The client's body, while no copy is reading it.
    source: Option<ProxyBody>,
    hint: SizeHint,
}

/// The kept body of one request, from which each try takes a copy.
#[derive(Clone)]
pub(super) struct Replay {
    kept: Arc<Mutex<Kept>>,
}

impl Replay {
    pub(super) fn new(body: ProxyBody, limit: usize) -> Self {
        let hint = body.size_hint();
        Self {
            kept: Arc::new(Mutex::new(Kept {
                frames: Vec::new(),
                trailers: None,
                size: 0,
                limit,
                overflowed: false,
                complete: false,
                source: Some(body),
                hint,
            })),
        }
    }

    /// Whether another try can get the whole body.
    pub(super) fn replayable(&self) -> bool {
        self.kept.lock().is_ok_and(|kept| !kept.overflowed)
    }

    /// A body for the next try.
    pub(super) fn copy(&self) -> TryBody {
        TryBody {
            kept: Arc::clone(&self.kept),
            replayed: 0,
            trailers_sent: false,
            reading: None,
        }
    }
}

/// One try's body.
pub(super) struct TryBody {
    kept: Arc<Mutex<Kept>>,
    /// Kept frames this copy has sent.
    replayed: usize,
    trailers_sent: bool,
    /// The client's body, taken from `Kept::source` while this copy reads it.
    reading: Option<ProxyBody>,
}

impl Drop for TryBody {
    fn drop(&mut self) {
        if let (Some(source), Ok(mut kept)) = (self.reading.take(), self.kept.lock()) {
            kept.source = Some(source);
        }
    }
}

impl Body for TryBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Ok(mut kept) = this.kept.lock() else {
            return Poll::Ready(None);
        };
        if !kept.overflowed {
            if let Some(frame) = kept.frames.get(this.replayed) {
                this.replayed += 1;
                return Poll::Ready(Some(Ok(Frame::data(frame.clone()))));
            }
        }
        if kept.complete {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(kept.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        if this.reading.is_none() {
            // Tries run one after another: the copy of a finished try has
            // given the source back.
            this.reading = kept.source.take();
        }
        let Some(source) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(source).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    kept.size += data.len();
                    if kept.size > kept.limit {
                        kept.overflowed = true;
                        kept.frames = Vec::new();
                    } else if !kept.overflowed {
                        kept.frames.push(data.clone());
                        this.replayed += 1;
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    kept.trailers = Some(trailers.clone());
                    this.trailers_sent = true;
                }
            }
            Poll::Ready(None) => {
                kept.complete = true;
                this.trailers_sent = true;
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let Ok(kept) = self.kept.lock() else {
            return true;
        };
        if !kept.overflowed && self.replayed < kept.frames.len() {
            return false;
        }
        if kept.complete {
            return self.trailers_sent || kept.trailers.is_none();
        }
        // The client's body may know it has ended before it is read to
        // its end (a content length reached): HTTP/2 then ends the stream
        // with the last data frame.
        match (&self.reading, &kept.source) {
            (Some(source), _) | (None, Some(source)) => source.is_end_stream(),
            (None, None) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.kept.lock().map(|kept| kept.hint).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn streamed(chunks: &[&'static str], trailer: bool) -> ProxyBody {
        let mut frames: Vec<Result<Frame<Bytes>, hyper::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailer {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("a value"));
            frames.push(Ok(Frame::trailers(trailers)));
        }
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn read(copy: TryBody) -> (String, Option<HeaderMap>) {
        let collected = copy.collect().await.expect("a body");
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        (String::from_utf8_lossy(&bytes).into_owned(), trailers)
    }

    #[tokio::test]
    async fn a_retry_gets_the_whole_body_and_its_trailers_again() {
        let replay = Replay::new(streamed(&["ab", "cd", "ef"], true), 100);
        let first = read(replay.copy()).await;
        assert_eq!(first.0, "abcdef");
        assert!(replay.replayable());
        let second = read(replay.copy()).await;
        assert_eq!(second.0, "abcdef");
        assert_eq!(second.1, first.1);
        assert!(second.1.is_some());
    }

    #[tokio::test]
    async fn a_retry_after_a_try_that_read_part_of_the_body_reads_on_from_the_client() {
        let replay = Replay::new(streamed(&["ab", "cd", "ef"], false), 100);
        let mut first = replay.copy();
        let frame = first.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok().as_deref(), Some(&b"ab"[..]));
        drop(first);
        assert_eq!(read(replay.copy()).await.0, "abcdef");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_forwarded_whole_but_not_replayable() {
        let replay = Replay::new(streamed(&["abcd", "efgh", "ij"], false), 6);
        assert_eq!(read(replay.copy()).await.0, "abcdefghij");
        assert!(!replay.replayable());
    }

    #[tokio::test]
    async fn a_body_at_the_limit_stays_replayable() {
        let replay = Replay::new(streamed(&["abc", "def"], false), 6);
        assert_eq!(read(replay.copy()).await.0, "abcdef");
        assert!(replay.replayable());
        assert_eq!(read(replay.copy()).await.0, "abcdef");
    }
}
