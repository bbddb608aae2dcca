//! What every phase of a connection is handed: what the whole proxy shares
//! ([`Shared`]), the connection itself ([`Downstream`], [`Conn`]), and the
//! one hook through which a plug-in takes the connections the gateway's
//! listeners do not serve ([`Hook`]; the egress capture is the plug-in).
use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use hyper::header::HeaderValue;
use tokio::{net::TcpStream, sync::watch};

use super::{
    access_log::{AccessLog, Entry},
    metrics,
    upstream::{Origin, Upstreams},
};
use crate::connection::{Activity, Gate};

/// What every connection of the proxy shares.
#[derive(Debug)]
pub struct Shared {
    pub upstreams: Upstreams,
    /// The plug-in for connections no listener claims (the egress
    /// capture, on an egress instance).
    pub hook: Option<Arc<dyn Hook>>,
    pub access_log: AccessLog,
    /// `--trusted-proxies`: hops in front of the gateway whose
    /// `X-Forwarded-Proto`/`X-Forwarded-For` are believed (Istio's `numTrustedProxies`).
    pub trusted_proxies: u32,
    /// Opaque TCP and passthrough connections moving no bytes this long are closed.
    pub tcp_idle_timeout: std::time::Duration,
    /// The JWT phase (RequestAuthentication); `None`: no provider.
    pub jwt: Option<super::http::jwt::JwtAuthn>,
    /// Fetches the JWT providers' key sets; dropped with this, which stops it.
    pub jwks_fetch: Option<super::jwks::Fetchers>,
    /// The AuthorizationPolicies' RBAC engines, per chain.
    pub authorizer: super::authz::Authorizer,
}

impl Shared {
    /// The log phase: a request or connection has finished; the plug-in
    /// that claimed it completes its entry, then it is logged and counted.
    pub fn finished(&self, entry: &mut Entry) {
        if let (Some(hook), Some(_)) = (&self.hook, &entry.workload_interface) {
            hook.log(entry);
        }
        self.access_log.log(entry);
        metrics::record(entry);
    }

    /// Whether security filters (JWT validation, authorization) run on
    /// HTTP requests: then the router's own answers wait for them and the
    /// lean redirect path, which answers from the head alone, is not used.
    pub fn filters_requests(&self) -> bool {
        self.jwt.is_some() || !self.authorizer.http.is_empty()
    }

    /// The plug-in that claimed `downstream`, if one did.
    pub fn hook_of(&self, downstream: &Downstream) -> Option<&dyn Hook> {
        downstream
            .workload_interface
            .as_ref()
            .and(self.hook.as_deref())
    }
}

/// The connection a request arrived on.
#[derive(Clone, Debug)]
pub struct Downstream {
    /// Terminated TLS (`https`) or plaintext.
    pub tls: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub sni: Option<String>,
    /// Set when a plug-in claimed the connection ([`Hook::claim`]): the
    /// label its log lines carry (egress: the captured workload's interface).
    pub workload_interface: Option<Arc<str>>,
    /// `remote`'s address as a header value, made at the connection's
    /// first forwarded request and reused by the others.
    pub remote_ip: OnceLock<HeaderValue>,
}

impl Downstream {
    /// Where the connection was going: a captured workload's original
    /// destination (a plug-in claimed it), else the gateway's own address.
    pub(super) fn origin(&self) -> Origin {
        match self.workload_interface {
            Some(_) => Origin::Captured(self.local),
            None => Origin::Listener(self.local),
        }
    }

    /// The client's address as an `X-Forwarded-For` value.
    pub(super) fn remote_ip_header(&self) -> HeaderValue {
        self.remote_ip
            .get_or_init(|| {
                HeaderValue::from_maybe_shared(bytes::Bytes::from(self.remote.ip().to_string()))
                    .unwrap_or_else(|_| HeaderValue::from_static("-"))
            })
            .clone()
    }

    /// Whether the request's authority must be kept in its entry even with
    /// the access log off: a claimed connection's metrics are labelled by it.
    pub(super) fn keeps_authority(&self) -> bool {
        self.workload_interface.is_some()
    }
}

/// What a connection is served with, whatever its kind.
pub struct Conn<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) gate: &'a Gate,
    pub(super) activity: &'a Arc<Activity>,
    /// Flips to true when the daemon stops: HTTP connections finish the
    /// request in progress and close (GOAWAY for HTTP/2).
    pub(super) drain: watch::Receiver<bool>,
}

/// A plug-in's work on a connection, boxed so the hook is object safe.
pub type HookFuture<'a, T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a plug-in decided for a claimed connection to an HTTP port.
pub enum HttpChoice {
    /// Serve it as on any HTTP port, after the bytes the plug-in read
    /// ahead (if it read any).
    Serve {
        stream: TcpStream,
        read_ahead: Option<Vec<u8>>,
    },
    /// The plug-in took the connection (or it ended).
    Taken,
}

/// The narrow hook between the gateway's own path (accept, TLS/SNI,
/// route, upstream, log) and a plug-in that serves connections made to
/// addresses that are not the gateway's, as linkerd2-proxy's outbound
/// stands beside its inbound. The gateway path calls it at four points
/// and never asks what the plug-in is; each method is called only for a
/// connection the plug-in claimed.
pub trait Hook: Send + Sync + fmt::Debug {
    /// Accept: claims the connection made to `local` from `remote` (or
    /// not), with the label its log lines carry.
    fn claim(&self, local: SocketAddr, remote: SocketAddr) -> Option<Arc<str>>;

    /// No listener serves the connection's port.
    fn unserved_port<'a>(
        &'a self,
        stream: TcpStream,
        downstream: Downstream,
        conn: Conn<'a>,
    ) -> HookFuture<'a>;

    /// The ClientHello (`prefix`, the bytes read) names no server of the
    /// port. The stream comes back when the gateway's own answer (an
    /// alert) is still to be sent.
    fn unknown_sni<'a>(
        &'a self,
        stream: TcpStream,
        prefix: &'a [u8],
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, Option<TcpStream>>;

    /// An HTTP port: serve the connection here or take it; `serves` says
    /// whether a host (without port) is one of the port's virtual hosts.
    fn http<'a>(
        &'a self,
        stream: TcpStream,
        serves: &'a (dyn Fn(&str) -> bool + Sync),
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, HttpChoice>;

    /// Log: completes the entry of a claimed connection (its verdict).
    fn log(&self, entry: &mut Entry);
}
