//! What the proxy serves, built once from a plan: per listener, its
//! virtual hosts, TLS servers (with their rustls configurations) or TCP
//! forward, and what every connection shares (upstreams, access log, the
//! plug-in hook: the egress capture is plugged in here).
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use rustls::ServerConfig;

use super::{
    access_log, authz, auto_passthrough,
    context::{Hook, Shared},
    egress::Egress,
    error::ProxyError,
    http::VirtualHosts,
    tls, upstream,
};
use crate::plan::{ClusterId, Forward, HostPattern, Plan, SniRoute, TlsServerKind};

/// What one listener serves.
#[derive(Debug)]
pub enum PortService {
    /// Plaintext HTTP.
    Http(Arc<VirtualHosts>),
    /// TLS servers chosen by SNI, and the plaintext HTTP servers that share
    /// the port, for connections that do not start with a TLS record.
    Tls {
        servers: Vec<TlsEntry>,
        plaintext: Option<Arc<VirtualHosts>>,
    },
    /// Opaque TCP to the first matching `tcp` route.
    Tcp(Forward),
}

/// One server of a TLS listener.
#[derive(Debug)]
pub struct TlsEntry {
    /// `Gateway ns/name spec.servers[i]`.
    pub source: String,
    pub hosts: Vec<HostPattern>,
    pub action: TlsAction,
}

/// What happens after SNI picked a TLS server.
#[derive(Debug)]
pub enum TlsAction {
    TerminateHttp {
        config: Arc<ServerConfig>,
        hosts: Arc<VirtualHosts>,
    },
    TerminateTcp {
        config: Arc<ServerConfig>,
        forward: Option<Forward>,
    },
    Passthrough(Vec<SniRoute>),
    /// AUTO_PASSTHROUGH: the SNI names one of these clusters
    /// ([`auto_passthrough::forward`]); other connections are closed and logged.
    AutoPassthrough(BTreeMap<String, ClusterId>),
}

/// Everything the proxy serves, built from one plan. Connections read it
/// through a `watch` channel, so a reload swaps one pointer.
#[derive(Debug)]
pub struct Served {
    pub shared: Arc<Shared>,
    /// By listener id.
    pub ports: HashMap<u32, Arc<PortService>>,
    /// Which listener a connection's local (address, port) reaches.
    pub listeners: ListenerMap,
}

/// The listener of a connection, from the address and port it was made
/// to (the kernel steers every listener's connections into the same
/// sockets): a listener bound to that address, else the port's listener
/// on every gateway address, as the kernel decided.
#[derive(Debug, Default)]
pub struct ListenerMap {
    bound: HashMap<(IpAddr, u16), u32>,
    any: HashMap<u16, u32>,
}

impl ListenerMap {
    fn new(plan: &Plan) -> Self {
        let mut map = Self::default();
        let served = plan
            .http
            .iter()
            .map(|l| (l.listener_id, l.bind, l.port))
            .chain(plan.tls.iter().map(|l| (l.listener_id, l.bind, l.port)))
            .chain(plan.tcp.iter().map(|l| (l.listener_id, l.bind, l.port)));
        for (id, bind, port) in served {
            match bind {
                Some(ip) => map.bound.insert((ip.to_canonical(), port), id),
                None => map.any.insert(port, id),
            };
        }
        map
    }

    /// The listener serving connections made to `local`.
    pub fn listener_at(&self, local: SocketAddr) -> Option<u32> {
        let ip = local.ip().to_canonical();
        self.bound
            .get(&(ip, local.port()))
            .or_else(|| self.any.get(&local.port()))
            .copied()
    }
}

/// Settings the plan does not carry.
#[derive(Clone, Debug)]
pub struct Options {
    pub trusted_proxies: u32,
    pub access_log: access_log::Format,
    /// The egress capture, on an egress instance: the plug-in behind
    /// the proxy's [`Hook`].
    pub egress: Option<Egress>,
    /// `--tcp-idle-timeout`: an opaque TCP or passthrough connection that
    /// moves no byte either way this long is closed.
    pub tcp_idle_timeout: std::time::Duration,
    /// `--jwks-refresh`: how often JWT providers' key sets are fetched again.
    pub jwks_refresh: std::time::Duration,
    /// Kubernetes Services' endpoints as discovered (Kubernetes mode;
    /// empty otherwise).
    pub discovery: Arc<crate::discovery::Discovery>,
    /// Where certificates and keys are read: the file system, or in
    /// Kubernetes mode the Secrets `credentialName` names.
    pub files: Arc<dyn crate::files::FileSource>,
}

impl Served {
    /// Builds what every listener of `plan` serves, loading certificates.
    pub fn new(plan: &Plan, options: Options) -> Result<Self, ProxyError> {
        let jwt = super::http::jwt::JwtAuthn::new(&plan.jwt);
        let jwks_fetch = jwt.as_ref().and_then(|authn| {
            super::jwks::start(authn, options.jwks_refresh, Arc::clone(&options.files))
        });
        let shared = Arc::new(Shared {
            upstreams: upstream::Upstreams::new(
                &plan.clusters,
                &options.discovery,
                options.files.as_ref(),
            )?,
            access_log: access_log::AccessLog::new(options.access_log),
            trusted_proxies: options.trusted_proxies,
            hook: options
                .egress
                .map(|egress| Arc::new(egress) as Arc<dyn Hook>),
            tcp_idle_timeout: options.tcp_idle_timeout,
            jwt,
            jwks_fetch,
            authorizer: authz::Authorizer::new(&plan.authorization)
                .map_err(ProxyError::Authorization)?,
        });
        let mut ports = HashMap::new();
        for listener in &plan.http {
            let hosts = Arc::new(VirtualHosts::new(listener.hosts.clone())?);
            ports.insert(listener.listener_id, Arc::new(PortService::Http(hosts)));
        }
        for listener in &plan.tls {
            let mut entries = Vec::new();
            for server in &listener.servers {
                let config = |tls| {
                    tls::server_config(tls, options.files.as_ref()).map_err(|source| {
                        ProxyError::Tls {
                            server: server.source.clone(),
                            source,
                        }
                    })
                };
                let action = match &server.kind {
                    TlsServerKind::TerminateHttp { tls, hosts } => TlsAction::TerminateHttp {
                        config: config(tls)?,
                        hosts: Arc::new(VirtualHosts::new(hosts.clone())?),
                    },
                    TlsServerKind::TerminateTcp { tls, route } => TlsAction::TerminateTcp {
                        config: config(tls)?,
                        forward: route.as_ref().map(|(forward, _)| forward.clone()),
                    },
                    TlsServerKind::Passthrough { routes } => TlsAction::Passthrough(routes.clone()),
                    TlsServerKind::AutoPassthrough { clusters } => {
                        TlsAction::AutoPassthrough(clusters.clone())
                    }
                };
                let hosts = match &action {
                    TlsAction::AutoPassthrough(clusters) => {
                        auto_passthrough::server_names(&server.hosts, clusters)
                    }
                    _ => server.hosts.clone(),
                };
                entries.push(TlsEntry {
                    source: server.source.clone(),
                    hosts,
                    action,
                });
            }
            let plaintext = match &listener.plaintext {
                Some(hosts) => Some(Arc::new(VirtualHosts::new(hosts.clone())?)),
                None => None,
            };
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tls {
                    servers: entries,
                    plaintext,
                }),
            );
        }
        for listener in &plan.tcp {
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tcp(listener.route.clone())),
            );
        }
        Ok(Self {
            shared,
            ports,
            listeners: ListenerMap::new(plan),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::ListenerMap;

    #[test]
    fn a_bound_listener_wins_over_the_ports_listener_on_every_address() {
        let mut map = ListenerMap::default();
        map.any.insert(443, 1);
        map.bound.insert(("192.0.2.7".parse().unwrap(), 443), 2);
        let at = |ip: &str, port| map.listener_at(SocketAddr::new(ip.parse().unwrap(), port));
        assert_eq!(at("192.0.2.7", 443), Some(2));
        assert_eq!(at("::ffff:192.0.2.7", 443), Some(2));
        assert_eq!(at("192.0.2.8", 443), Some(1));
        assert_eq!(at("2001:db8::1", 443), Some(1));
        assert_eq!(at("192.0.2.7", 80), None);
        let _: IpAddr = "::1".parse().unwrap();
    }
}
