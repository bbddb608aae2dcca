//! The egress plug-in: what the proxy does with captured connections
//! (those a workload made to an address that is not the gateway's),
//! behind the gateway path's one [`Hook`]. It names the workload's
//! interface for the log, refuses what the egress Gateway does not serve
//! under REGISTRY_ONLY, passes it to its original destination under
//! ALLOW_ANY (Istio's `PassthroughCluster`, `passthrough.rs`), and gives
//! every claimed entry its verdict at the log phase. What the egress
//! Gateway serves goes through the gateway path like any other traffic.
mod passthrough;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::SystemTime,
};

use tokio::net::TcpStream;

use super::{
    access_log::Entry,
    context::{Conn, Downstream, Hook, HookFuture, HttpChoice, Shared},
};

/// Istio's name for the cluster of ALLOW_ANY's original destinations.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Which of the captured interfaces (indexes offered) a workload's
/// address sends from; the daemon answers it from the kernel's
/// per-workload counters.
pub type InterfaceLookup =
    Arc<dyn Fn(IpAddr, &mut dyn Iterator<Item = u32>) -> Option<u32> + Send + Sync>;

/// `outboundTrafficPolicy.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutboundPolicy {
    /// Only what the registry and the egress Gateway name (Istio's
    /// REGISTRY_ONLY): the kernel refuses unknown addresses, the proxy
    /// unknown hosts and ports.
    RegistryOnly,
    /// Anything (Istio's ALLOW_ANY): what the egress Gateway does not
    /// serve goes to its original destination untouched.
    AllowAny,
}

/// What the proxy knows of the egress capture.
#[derive(Clone)]
pub struct Egress {
    pub policy: OutboundPolicy,
    /// The gateway's own addresses: connections to them are not captured.
    pub gateway_addresses: Vec<IpAddr>,
    /// Captured interfaces by index; each name is shared by the
    /// connections from it, not copied per connection.
    pub interfaces: BTreeMap<u32, Arc<str>>,
    /// Which interface a workload's packets came in on, from the kernel's
    /// per-workload counters (read by the daemon).
    pub workloads: Option<InterfaceLookup>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("policy", &self.policy)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// Whether a connection made to `local` was captured from a workload.
    pub fn captured(&self, local: SocketAddr) -> bool {
        let ip = local.ip().to_canonical();
        !self
            .gateway_addresses
            .iter()
            .any(|a| a.to_canonical() == ip)
    }

    /// The name of the interface the workload at `remote` sends from.
    pub fn interface_of(&self, remote: IpAddr) -> Option<Arc<str>> {
        let index = match (&self.workloads, self.interfaces.len()) {
            (_, 1) => self.interfaces.keys().next().copied(),
            (Some(workloads), _) => {
                workloads(remote.to_canonical(), &mut self.interfaces.keys().copied())
            }
            (None, _) => None,
        };
        index.and_then(|index| self.interfaces.get(&index)).cloned()
    }
}

/// What an egress log line and counter call the outcome.
pub fn verdict(entry: &Entry) -> &'static str {
    if entry.upstream_cluster.as_deref() == Some(PASSTHROUGH_CLUSTER) {
        "passthrough"
    } else if entry.flags.contains(&"NR") || entry.details == Some(REFUSED) {
        "refused"
    } else {
        "allowed"
    }
}

/// `%RESPONSE_CODE_DETAILS%` of a connection refused at the proxy.
const REFUSED: &str = "egress_refused";

/// Why the proxy refused a captured connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No egress Gateway server on the destination port.
    UnservedPort,
    /// The ClientHello named no host the port's servers accept.
    UnknownSni(Option<String>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnservedPort => write!(f, "no egress Gateway server on this port"),
            Self::UnknownSni(Some(sni)) => {
                write!(f, "SNI {sni} is not a host of the egress Gateway")
            }
            Self::UnknownSni(None) => write!(f, "no SNI, and no default server"),
        }
    }
}

/// Logs and counts a refusal at the proxy (the caller closes or resets).
fn refused(shared: &Shared, downstream: &Downstream, refusal: &Refusal) {
    log::warn!(
        "egress refused at the proxy: workload {} on {} -> {}: {refusal} (outboundTrafficPolicy REGISTRY_ONLY)",
        downstream.remote.ip().to_canonical(),
        downstream.workload_interface.as_deref().unwrap_or("-"),
        downstream.local
    );
    shared.finished(&mut Entry {
        start: Some(SystemTime::now()),
        flags: vec!["NR"],
        details: Some(REFUSED),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        workload_interface: downstream.workload_interface.clone(),
        ..Entry::default()
    });
}

impl Hook for Egress {
    fn claim(&self, local: SocketAddr, remote: SocketAddr) -> Option<Arc<str>> {
        // A captured connection always names its interface; "-" when the
        // guard has not seen the workload.
        self.captured(local).then(|| {
            self.interface_of(remote.ip())
                .unwrap_or_else(|| Arc::from("-"))
        })
    }

    fn unserved_port<'a>(
        &'a self,
        stream: TcpStream,
        downstream: Downstream,
        conn: Conn<'a>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            match self.policy {
                OutboundPolicy::AllowAny => {
                    let _in_flight = conn.activity.begin();
                    passthrough::pass_through(stream, &[], &downstream, conn.shared).await;
                }
                OutboundPolicy::RegistryOnly => {
                    refused(conn.shared, &downstream, &Refusal::UnservedPort);
                    let _ = stream.set_zero_linger();
                }
            }
        })
    }

    fn unknown_sni<'a>(
        &'a self,
        stream: TcpStream,
        prefix: &'a [u8],
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, Option<TcpStream>> {
        Box::pin(async move {
            if self.policy == OutboundPolicy::AllowAny {
                let _in_flight = conn.activity.begin();
                passthrough::pass_through(stream, prefix, downstream, conn.shared).await;
                return None;
            }
            let refusal = Refusal::UnknownSni(downstream.sni.clone());
            refused(conn.shared, downstream, &refusal);
            // The gateway's own alert follows.
            Some(stream)
        })
    }

    fn http<'a>(
        &'a self,
        stream: TcpStream,
        serves: &'a (dyn Fn(&str) -> bool + Sync),
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, HttpChoice> {
        Box::pin(async move {
            match self.policy {
                OutboundPolicy::AllowAny => {
                    passthrough::http_or_pass(stream, serves, downstream, conn).await
                }
                OutboundPolicy::RegistryOnly => HttpChoice::Serve {
                    stream,
                    read_ahead: None,
                },
            }
        })
    }

    fn log(&self, entry: &mut Entry) {
        entry.verdict = Some(verdict(entry));
    }
}

#[cfg(test)]
mod tests;
