//! Opaque forwarding for TCP servers, TLS passthrough and TLS-terminated
//! TCP: pick a backend, connect, then copy bytes both ways.
//!
//! [`copy_both_ways`] is the one place bytes are copied in userspace; the
//! planned in-kernel splice (sockmap) replaces it for raw TCP streams.
use std::{net::SocketAddr, sync::Arc};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    origination::UpstreamIo,
    upstream::{UpstreamCluster, UpstreamError, Upstreams, random, weighted},
};
use crate::compile::{Backend, Forward};

/// A connected backend and how it was chosen.
#[derive(Debug)]
pub struct Connected {
    pub stream: UpstreamIo,
    pub addr: SocketAddr,
    pub cluster: String,
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
}

impl ForwardError {
    /// Envoy's response flag.
    pub fn flag(&self) -> &'static str {
        match self {
            ForwardError::NoCluster(_) => "NC",
            ForwardError::Upstream(err) => err.flag(),
        }
    }
}

/// Picks a weighted backend of `forward` and connects to one of its endpoints.
pub async fn connect(forward: &Forward, upstreams: &Upstreams) -> Result<Connected, ForwardError> {
    let cluster = cluster(&forward.0, upstreams)?;
    let endpoint = cluster.pick().await?;
    // TLS when the cluster originates it, as for HTTP.
    let stream =
        super::upstream::connect(endpoint.addr, cluster.connect_timeout, cluster.tls.as_ref())
            .await?;
    Ok(Connected {
        stream,
        addr: endpoint.addr,
        cluster: cluster.name.clone(),
    })
}

fn cluster<'a>(
    backends: &[Backend],
    upstreams: &'a Upstreams,
) -> Result<&'a Arc<UpstreamCluster>, ForwardError> {
    let backend = weighted(backends, |b| u64::from(b.weight.max(1)), random())
        .ok_or_else(|| ForwardError::NoCluster("the route has no destination".into()))?;
    match &backend.target {
        Ok(name) => upstreams
            .get(name)
            .ok_or_else(|| ForwardError::NoCluster(format!("cluster {name} is not built"))),
        Err(reason) => Err(ForwardError::NoCluster(reason.to_string())),
    }
}

/// Bytes moved by [`copy_both_ways`]: (client to backend, backend to client).
pub type Moved = (u64, u64);

/// Sends `prefix` (bytes already read from the client, such as a peeked
/// ClientHello) to the backend, then copies both directions until both
/// sides have closed. Half-closes are passed on.
pub async fn copy_both_ways<D, U>(
    downstream: &mut D,
    prefix: &[u8],
    upstream: &mut U,
) -> std::io::Result<Moved>
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    upstream.write_all(prefix).await?;
    let (up, down) = tokio::io::copy_bidirectional(downstream, upstream).await?;
    Ok((up + prefix.len() as u64, down))
}
