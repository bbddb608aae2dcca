//! The egress instance's decisions on captured connections (those made
//! to an address that is not the gateway's): the workload's interface for
//! the log, refusals of what the egress Gateway does not serve under
//! REGISTRY_ONLY, and the original-destination passthrough of ALLOW_ANY
//! (Istio's `PassthroughCluster`).
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use std::os::fd::AsRawFd;

use tokio::{io::AsyncReadExt, net::TcpStream};

use super::{
    access_log::Entry,
    downstream::{Conn, MAX_REQUEST_HEAD, head_length, serve_http},
    http::{Downstream, Shared, VirtualHosts},
    stream::{Probed, Rewind},
    tcp,
};
use crate::{connection::with_deadlines, dataplane::Workloads};

/// Istio's name for the cluster of ALLOW_ANY's original destinations.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Connect timeout towards an original destination (Istio's default).
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The kernel's per-workload counters, which also say which
    /// interface a workload's packets came in on.
    pub workloads: Option<Workloads>,
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
                workloads.interface_of(remote.to_canonical(), self.interfaces.keys().copied())
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
            Refusal::UnservedPort => write!(f, "no egress Gateway server on this port"),
            Refusal::UnknownSni(Some(sni)) => {
                write!(f, "SNI {sni} is not a host of the egress Gateway")
            }
            Refusal::UnknownSni(None) => write!(f, "no SNI, and no default server"),
        }
    }
}

/// Logs and counts a refusal at the proxy (the caller closes or resets).
pub fn refused(shared: &Shared, downstream: &Downstream, refusal: &Refusal) {
    log::warn!(
        "egress refused at the proxy: workload {} on {} -> {}: {refusal} (outboundTrafficPolicy REGISTRY_ONLY)",
        downstream.remote.ip().to_canonical(),
        downstream.workload_interface.as_deref().unwrap_or("-"),
        downstream.local
    );
    shared.finished(&Entry {
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

/// ALLOW_ANY: connects to the original destination and copies both ways
/// (after `prefix`, bytes already read), as Istio's `PassthroughCluster`.
pub async fn pass_through(
    mut client: TcpStream,
    prefix: &[u8],
    downstream: &Downstream,
    shared: &Shared,
) {
    let started = Instant::now();
    let target = downstream.local;
    let mut entry = Entry {
        start: Some(SystemTime::now()),
        upstream_cluster: Some(PASSTHROUGH_CLUSTER.to_string()),
        downstream_local: Some(downstream.local),
        downstream_remote: Some(downstream.remote),
        sni: downstream.sni.clone(),
        workload_interface: downstream.workload_interface.clone(),
        ..Entry::default()
    };
    let connect = tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(target));
    match connect.await {
        Ok(Ok(mut upstream)) => {
            let _ = upstream.set_nodelay(true);
            entry.upstream_host = Some(target);
            super::metrics::tcp_opened(&entry);
            let copied =
                tcp::copy_both_ways(&mut client, prefix, &mut upstream, shared.tcp_idle_timeout)
                    .await;
            (entry.bytes_received, entry.bytes_sent) = copied.moved;
            if let tcp::CopyEnd::Failed(_) = copied.end {
                entry.flags.push("UC");
            }
        }
        Ok(Err(err)) => {
            log::debug!("{}: passthrough to {target}: {err}", downstream.remote);
            entry.flags.push("UF");
            let _ = client.set_zero_linger();
        }
        Err(_) => {
            entry.flags.push("UF");
            let _ = client.set_zero_linger();
        }
    }
    entry.duration = started.elapsed();
    shared.finished(&entry);
}

/// ALLOW_ANY on an HTTP port: reads the first request head ahead; a
/// `Host` no virtual host serves (or none at all) sends the whole
/// connection to its original destination, as Istio's sidecar does for
/// unknown hosts; a served one is answered as on any HTTP port.
pub(super) async fn serve_http_or_pass(
    mut stream: TcpStream,
    downstream: Downstream,
    hosts: &Arc<VirtualHosts>,
    conn: Conn<'_>,
) {
    let head = {
        let read = read_request_head(&mut stream);
        tokio::pin!(read);
        with_deadlines(read, conn.activity, conn.gate).await
    };
    let Ok(Ok(prefix)) = head else {
        return;
    };
    let served = request_host(&prefix).is_some_and(|host| hosts.lookup(&host).is_some());
    if !served {
        let _in_flight = conn.activity.begin();
        pass_through(stream, &prefix, &downstream, conn.shared).await;
        return;
    }
    let raw = Some(stream.as_raw_fd());
    let stream = Probed::new(Rewind::new(prefix, stream), conn.activity);
    serve_http(stream, raw, downstream, hosts, conn).await;
}

/// Reads until the end of the first request head, the size limit or the
/// end of the stream, whichever comes first.
async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let searched = buffer.len();
        let read = stream.read(&mut chunk).await?;
        buffer.extend_from_slice(&chunk[..read]);
        let complete = head_length(&buffer, searched).is_some();
        if read == 0 || complete || buffer.len() >= MAX_REQUEST_HEAD {
            return Ok(buffer);
        }
    }
}

/// The `Host` of an HTTP/1 request head, without its port.
fn request_host(head: &[u8]) -> Option<String> {
    match gateway_common::http_host(head, 0, head.len()) {
        gateway_common::Name::At { offset, len } => head
            .get(offset..offset + len)
            .map(|name| String::from_utf8_lossy(name).into_owned()),
        gateway_common::Name::Absent(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_a_request_head_is_read_without_its_port() {
        let head = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: Unknown.Example:8080\r\n\r\n";
        assert_eq!(request_host(head).as_deref(), Some("Unknown.Example"));
        assert_eq!(request_host(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
    }

    #[test]
    fn verdicts_follow_the_entry() {
        let mut entry = Entry::default();
        assert_eq!(verdict(&entry), "allowed");
        entry.flags.push("NR");
        assert_eq!(verdict(&entry), "refused");
        entry.upstream_cluster = Some(PASSTHROUGH_CLUSTER.into());
        assert_eq!(verdict(&entry), "passthrough");
    }
}
