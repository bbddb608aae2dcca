//! Request mirroring (`mirror`, `mirrors`): a copy of a routed request
//! sent to each mirror whose share draws it, as Envoy's request mirror
//! policies under Istio's translation send it: the authority with
//! `-shadow` appended, fire and forget (its answer is read and thrown
//! away; it never delays or fails the client's request). A request body is
//! kept whole (up to the retry buffer's 1 MiB) to be sent to the mirrors;
//! a larger one goes to the route alone. Each mirror cluster has at most
//! `upstream::MAX_MIRRORS_IN_FLIGHT` copies in flight, each within a time
//! limit, so a slow mirror cannot pile them up.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, Uri, Version,
    body::{Body, Frame},
    header::{self, HeaderValue},
};

use super::headers::strip_hop_by_hop;
use crate::{
    plan::Mirror,
    proxy::{
        body::ProxyBody,
        context::Shared,
        upstream::{self, ClusterCounter, Origin, UpstreamCluster, UpstreamProtocol},
    },
};

/// How long a copy may take when its route sets no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(60);

/// The mirror clusters whose share drew this request.
pub(super) fn chosen(shared: &Shared, mirrors: &[Mirror]) -> Vec<Arc<UpstreamCluster>> {
    mirrors
        .iter()
        .filter(|mirror| mirror.share.chooses(upstream::random()))
        .filter_map(|mirror| mirror.target.as_ref().ok())
        .filter_map(|id| shared.upstreams.get(*id).cloned())
        .collect()
}

/// What a copy is made of: the request as the route's backend gets it.
pub(super) struct Shadow {
    pub(super) method: Method,
    /// The path and query after the route's rewrites.
    pub(super) path: String,
    pub(super) authority: String,
    pub(super) headers: HeaderMap,
    pub(super) timeout: Option<Duration>,
    /// Where the connection was going: a copy to an original-destination
    /// cluster goes to the same place (Envoy's shadow shares the
    /// downstream connection).
    pub(super) origin: Origin,
}

/// Sends a copy of the request to each of `clusters`, in the background.
pub(super) fn send_copies(clusters: Vec<Arc<UpstreamCluster>>, copy: &Shadow, body: &Bytes) {
    for cluster in clusters {
        let Some(in_flight) = cluster.start_mirror() else {
            cluster.counters.add(ClusterCounter::MirrorOverflow);
            continue;
        };
        let Some(req) = copy_request(copy, &cluster, body.clone()) else {
            continue;
        };
        let limit = copy.timeout.unwrap_or(MIRROR_TIMEOUT);
        let origin = copy.origin;
        tokio::spawn(async move {
            let _in_flight = in_flight;
            cluster.counters.add(ClusterCounter::Mirrored);
            let sent = async {
                let endpoint = cluster.pick(origin).await.ok()?;
                let version = req.version();
                let (response, active) = upstream::send(&endpoint, &cluster, version, req)
                    .await
                    .ok()?;
                // Read to its end, so the connection can be used again.
                let _ = response.into_body().collect().await;
                drop(active);
                Some(())
            };
            if tokio::time::timeout(limit, sent).await.is_err() {
                log::debug!("mirror to {} timed out after {limit:?}", cluster.name);
            }
        });
    }
}

/// The copy for `cluster`: its protocol, the shadow authority, the body.
fn copy_request(
    copy: &Shadow,
    cluster: &UpstreamCluster,
    body: Bytes,
) -> Option<Request<ProxyBody>> {
    let authority = shadow_authority(&copy.authority);
    let version = match cluster.protocol {
        UpstreamProtocol::Http2 => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let uri = if version == Version::HTTP_2 {
        Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(copy.path.as_str())
            .build()
    } else {
        Uri::builder().path_and_query(copy.path.as_str()).build()
    };
    let mut req = Request::new(full(body));
    *req.method_mut() = copy.method.clone();
    *req.uri_mut() = uri.ok()?;
    *req.version_mut() = version;
    let headers = req.headers_mut();
    headers.clone_from(&copy.headers);
    strip_hop_by_hop(headers, false);
    headers.remove(header::HOST);
    if version != Version::HTTP_2 {
        headers.insert(header::HOST, HeaderValue::from_str(&authority).ok()?);
    }
    Some(req)
}

/// Envoy's shadow host: `-shadow` after the host, before any port.
pub(super) fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

/// A whole body as a [`ProxyBody`].
pub(super) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The client's body read for the mirrors: whole, or (over `limit`, or cut
/// short) what was read and the rest still to come, for the route alone.
pub(super) enum Kept {
    Whole(Bytes),
    TooLarge(ProxyBody),
    Broken,
}

/// Reads `body` to its end when it fits in `limit`.
pub(super) async fn keep<B>(mut body: B, limit: usize) -> Kept
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    let mut read: Vec<Bytes> = Vec::new();
    let mut size = 0;
    loop {
        match body.frame().await {
            None => {
                let mut whole = bytes::BytesMut::with_capacity(size);
                for chunk in read {
                    whole.extend_from_slice(&chunk);
                }
                return Kept::Whole(whole.freeze());
            }
            Some(Err(_)) => return Kept::Broken,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    read.push(data);
                    if size > limit {
                        let prefix = futures_util::stream::iter(
                            read.into_iter()
                                .map(|d| Ok::<_, hyper::Error>(Frame::data(d))),
                        );
                        let rest = http_body_util::BodyStream::new(body);
                        let chained = futures_util::StreamExt::chain(prefix, rest);
                        return Kept::TooLarge(
                            http_body_util::StreamBody::new(chained).boxed_unsync(),
                        );
                    }
                }
                // Trailers: a whole body ends here (they are not copied).
                Err(_) => continue,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_authority_gets_its_suffix_before_any_port() {
        assert_eq!(shadow_authority("app.test"), "app.test-shadow");
        assert_eq!(shadow_authority("app.test:8080"), "app.test-shadow:8080");
        assert_eq!(
            shadow_authority("[2001:db8::1]:80"),
            "[2001:db8::1]-shadow:80"
        );
        assert_eq!(shadow_authority("192.0.2.1"), "192.0.2.1-shadow");
    }

    fn streamed(chunks: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_kept_whole_and_a_larger_one_forwarded_whole() {
        match keep(streamed(&["ab", "cd"]), 4).await {
            Kept::Whole(bytes) => assert_eq!(bytes, "abcd"),
            _ => panic!("kept whole"),
        }
        match keep(streamed(&["ab", "cd", "ef"]), 4).await {
            Kept::TooLarge(body) => {
                let bytes = body.collect().await.expect("the body").to_bytes();
                assert_eq!(bytes, "abcdef", "nothing lost for the route");
            }
            _ => panic!("too large"),
        }
    }
}
