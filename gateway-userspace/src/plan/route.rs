//! What a listener does with a request or connection: HTTP routes and
//! their actions, TLS servers, weighted backends.
use std::{collections::BTreeMap, time::Duration};

use super::{ClusterId, HostTable, PerMillion, RetryPolicy, Unresolved};
use crate::model::{
    CorsPolicy, DestinationHeaders, HeaderOperations, HostPattern, HttpFault, HttpMatch,
    HttpRedirect, ServerTls, TunnelSettings,
};

/// Weighted backends. A share whose backend could not be resolved answers
/// 503 on an HTTP route; on a TCP or TLS forward its connections are closed.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward(pub Vec<Backend>);

/// One weighted share of a [`Forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub weight: u32,
    /// The cluster, or why there is none.
    pub target: Result<ClusterId, Unresolved>,
    /// The destination's own header operations (HTTP routes only).
    pub headers: DestinationHeaders,
    /// TCP and TLS routes only: each connection is tunneled through the
    /// endpoint (DestinationRule `tunnel`, as Istio's
    /// `tunnelingconfig.Apply` picks it for the route).
    pub tunnel: Option<TunnelSettings>,
}

/// One HTTP route of a virtual host, in evaluation order.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `VirtualService ns/name spec.http[i]`, followed by ` -> ns/delegate
    /// spec.http[j]` for a delegate's rule merged with the root's.
    pub source: String,
    /// OR'ed; empty matches every request.
    pub matches: Vec<HttpMatch>,
    pub action: RouteAction,
    pub catch_all: bool,
    /// `headers.request` of the rule, whatever the action.
    pub request_headers: HeaderOperations,
    /// `headers.response` of the rule, whatever the action.
    pub response_headers: HeaderOperations,
    /// `fault` of the rule, whatever the action: Istio puts it in the
    /// route's per-filter config and Envoy's fault filter reads it from
    /// the route, a redirect or direct response included.
    pub fault: Option<HttpFault>,
    /// `corsPolicy` of a forwarding rule only: Envoy's CORS filter does
    /// nothing on a route without a route entry (redirect, direct
    /// response), so the binder leaves it out there.
    pub cors: Option<CorsPolicy>,
}

/// What a matched HTTP route does.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    Forward {
        backends: Forward,
        rewrite_uri: Option<String>,
        /// (RE2 pattern, substitution with `\1` groups) for the path.
        rewrite_uri_regex: Option<(String, String)>,
        rewrite_authority: Option<String>,
        /// None: no timeout, as in Istio. Bounds all tries together.
        timeout: Option<Duration>,
        /// None: a single try (`attempts: 0`).
        retry: Option<RetryPolicy>,
        /// Where copies of the requests go (`mirror`, `mirrors`).
        mirrors: Vec<Mirror>,
    },
    Redirect(HttpRedirect),
    DirectResponse {
        status: u16,
        body: Option<String>,
    },
}

/// One mirror of a route: its cluster (or why there is none) and the
/// share of requests copied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    pub target: Result<ClusterId, Unresolved>,
    pub share: PerMillion,
}

/// A passthrough SNI entry.
#[derive(Clone, Debug, PartialEq)]
pub struct SniRoute {
    pub sni: HostPattern,
    pub source: String,
    pub forward: Forward,
}

/// One server of a TLS listener.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsServer {
    /// `Gateway ns/name spec.servers[i]`.
    pub source: String,
    /// SNI names this server answers (`*` answers clients without SNI too).
    pub hosts: Vec<HostPattern>,
    pub kind: TlsServerKind,
}

/// What happens on a TLS server after SNI picked it.
#[derive(Clone, Debug, PartialEq)]
pub enum TlsServerKind {
    /// HTTPS terminated here, then HTTP routing.
    TerminateHttp { tls: ServerTls, hosts: HostTable },
    /// TLS terminated here, then the first VirtualService `tcp` route.
    TerminateTcp {
        tls: ServerTls,
        route: Option<(Forward, String)>,
    },
    /// Not terminated: VirtualService `tls` routes pick the backend by SNI.
    Passthrough { routes: Vec<SniRoute> },
    /// AUTO_PASSTHROUGH: the SNI (`outbound_.<port>_.<subset>_.<host>`)
    /// names the cluster; only these clusters (by name) can be named.
    AutoPassthrough {
        clusters: BTreeMap<String, ClusterId>,
    },
}
