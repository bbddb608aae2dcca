//! Connections to an endpoint: connect (with TLS origination), and keep
//! them alive for the next request (HTTP/1.1 one at a time, HTTP/2 shared).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper::{
    Request, Response, Version,
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, time::Instant};

use super::{UpstreamCluster, UpstreamError, error::exchange};
use crate::proxy::{
    body::ProxyBody,
    origination::{Origination, UpstreamIo},
};

#[cfg(test)]
mod tests;

/// Idle keep-alive connections kept per endpoint, and for how long.
const MAX_IDLE_PER_ENDPOINT: usize = 128;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One address of a cluster, with its share and its in-flight requests.
#[derive(Debug)]
pub struct UpstreamEndpoint {
    pub addr: SocketAddr,
    pub(super) weight: u32,
    pub(super) active: AtomicUsize,
    pub(super) pool: Mutex<Pool>,
}

#[derive(Debug, Default)]
pub(super) struct Pool {
    http1: Vec<(Instant, http1::SendRequest<ProxyBody>)>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

impl UpstreamEndpoint {
    pub(super) fn new(addr: SocketAddr, weight: u32) -> Arc<Self> {
        Arc::new(Self {
            addr,
            weight: weight.max(1),
            active: AtomicUsize::new(0),
            pool: Mutex::new(Pool::default()),
        })
    }
}

/// Counts a request against its endpoint while it is in flight, and gives
/// its HTTP/1.1 connection back to the pool when the response is done
/// (held by the response body, so nothing is spawned per request).
#[derive(Debug)]
pub struct ActiveRequest {
    endpoint: Arc<UpstreamEndpoint>,
    http1: Option<http1::SendRequest<ProxyBody>>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        let Some(sender) = self.http1.take() else {
            return;
        };
        // A body dropped before its end closes the connection; hyper says so.
        if sender.is_closed() {
            return;
        }
        if let Ok(mut pool) = self.endpoint.pool.lock() {
            if pool.http1.len() < MAX_IDLE_PER_ENDPOINT {
                pool.http1.push((Instant::now(), sender));
            }
        }
    }
}

/// Sends `req` (origin-form URI, headers ready) to `endpoint` of
/// `cluster` over `version`, reusing a pooled connection when one is idle.
pub async fn send(
    endpoint: &Arc<UpstreamEndpoint>,
    cluster: &UpstreamCluster,
    version: Version,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, ActiveRequest), UpstreamError> {
    let connect_timeout = cluster.connect_timeout;
    let tls = cluster.tls.as_ref();
    endpoint.active.fetch_add(1, Ordering::Relaxed);
    let mut active = ActiveRequest {
        endpoint: Arc::clone(endpoint),
        http1: None,
    };
    let response = if version == Version::HTTP_2 {
        send_http2(endpoint, connect_timeout, tls, req).await?
    } else {
        let (response, sender) = send_http1(endpoint, connect_timeout, tls, req).await?;
        active.http1 = Some(sender);
        response
    };
    Ok((response, active))
}

/// Connects to `addr`, wrapped in TLS when the cluster originates it (the
/// handshake within the same connect timeout).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Origination>,
) -> Result<UpstreamIo, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect { addr, reason };
    let connecting = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(UpstreamIo::Plain(stream)),
            Some(tls) => tls.connect(stream).await.map_err(|err| {
                log::warn!("upstream TLS to {addr} failed: {err}; not falling back to plaintext");
                UpstreamError::Tls {
                    addr,
                    reason: err.to_string(),
                }
            }),
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| failed(format!("timed out after {timeout:?}")))?
}

/// The response, and the connection it came on (for the pool, once the
/// response body is done).
async fn send_http1(
    endpoint: &Arc<UpstreamEndpoint>,
    connect_timeout: Duration,
    tls: Option<&Origination>,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, http1::SendRequest<ProxyBody>), UpstreamError> {
    let req = match take_idle_http1(endpoint) {
        Some(mut sender) => match sender.try_send_request(req).await {
            Ok(response) => return Ok((response, sender)),
            // The pooled connection closed before the request was written
            // (the backend's idle close racing the request): a new
            // connection takes it, as Envoy's pool never hands out a
            // connection it saw close.
            Err(mut unsent) => match unsent.take_message() {
                Some(req) => req,
                None => return Err(exchange(endpoint.addr)(unsent.into_error())),
            },
        },
        None => req,
    };
    let stream = connect(endpoint.addr, connect_timeout, tls).await?;
    let (mut sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(exchange(endpoint.addr))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            log::debug!("upstream connection ended: {err}");
        }
    });
    let response = sender
        .send_request(req)
        .await
        .map_err(exchange(endpoint.addr))?;
    Ok((response, sender))
}

/// The most recently returned connection that is ready for a request.
/// Closed and expired ones are dropped; one whose last response is still
/// being finished stays pooled for a later request.
fn take_idle_http1(endpoint: &UpstreamEndpoint) -> Option<http1::SendRequest<ProxyBody>> {
    let mut pool = endpoint.pool.lock().ok()?;
    let now = Instant::now();
    pool.http1.retain(|(since, sender)| {
        !sender.is_closed() && now.duration_since(*since) < POOL_IDLE_TIMEOUT
    });
    let at = pool
        .http1
        .iter()
        .rposition(|(_, sender)| sender.is_ready())?;
    Some(pool.http1.swap_remove(at).1)
}

async fn send_http2(
    endpoint: &Arc<UpstreamEndpoint>,
    connect_timeout: Duration,
    tls: Option<&Origination>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let shared = endpoint
        .pool
        .lock()
        .ok()
        .and_then(|pool| pool.http2.clone())
        .filter(|sender| !sender.is_closed());
    let mut sender = match shared {
        Some(sender) => sender,
        None => {
            let stream = connect(endpoint.addr, connect_timeout, tls).await?;
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(exchange(endpoint.addr))?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    log::debug!("upstream h2 connection ended: {err}");
                }
            });
            if let Ok(mut pool) = endpoint.pool.lock() {
                pool.http2 = Some(sender.clone());
            }
            sender
        }
    };
    sender
        .send_request(req)
        .await
        .map_err(exchange(endpoint.addr))
}
