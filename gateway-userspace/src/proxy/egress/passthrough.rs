//! ALLOW_ANY's original-destination passthrough (Istio's
//! `PassthroughCluster`), and the read-ahead that decides, on an HTTP
//! port, between serving a request and passing the connection through.
use std::time::{Duration, Instant, SystemTime};

use tokio::{io::AsyncReadExt, net::TcpStream};

use super::PASSTHROUGH_CLUSTER;
use crate::{
    connection::with_deadlines,
    proxy::{
        access_log::Entry,
        context::{Conn, Downstream, HttpChoice, Shared},
        metrics,
        stream::{MAX_REQUEST_HEAD, head_length},
        tcp,
    },
};

/// Connect timeout towards an original destination (Istio's default).
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// ALLOW_ANY: connects to the original destination and copies both ways
/// (after `prefix`, bytes already read), as Istio's `PassthroughCluster`.
pub(super) async fn pass_through(
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
            metrics::tcp_opened(&entry);
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
    shared.finished(&mut entry);
}

/// ALLOW_ANY on an HTTP port: reads the first request head ahead; a
/// `Host` no virtual host serves (or none at all) sends the whole
/// connection to its original destination, as Istio's sidecar does for
/// unknown hosts; a served one is answered as on any HTTP port.
pub(super) async fn http_or_pass(
    mut stream: TcpStream,
    serves: &(dyn Fn(&str) -> bool + Sync),
    downstream: &Downstream,
    conn: &Conn<'_>,
) -> HttpChoice {
    let head = {
        let read = read_request_head(&mut stream);
        tokio::pin!(read);
        with_deadlines(read, conn.activity, conn.gate).await
    };
    let Ok(Ok(prefix)) = head else {
        return HttpChoice::Taken;
    };
    if !request_host(&prefix).is_some_and(|host| serves(&host)) {
        let _in_flight = conn.activity.begin();
        pass_through(stream, &prefix, downstream, conn.shared).await;
        return HttpChoice::Taken;
    }
    HttpChoice::Serve {
        stream,
        read_ahead: Some(prefix),
    }
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
}
