//! A traffic policy's `connectionPool`: the TCP and HTTP limits, timeouts
//! and keepalives, checked as Istio's `validateConnectionPool` checks them.
use std::time::Duration;

use super::{at_least_a_millisecond, positive};
use crate::{
    config::{
        common::{count, duration},
        decode::{Decoder, field, join},
        yaml::Node,
    },
    model::{ConnectionPool, H2UpgradePolicy, TcpKeepalive},
};

/// `connectionPool.http.h2UpgradePolicy` values (case-sensitive enum).
const H2_UPGRADE_POLICIES: &[&str] = &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];

/// `trafficPolicy.connectionPool`; `None` on an error.
pub(super) fn connection_pool(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<ConnectionPool> {
    let entries = d.mapping(node, path, &["tcp", "http"])?;
    let mut pool = ConnectionPool::default();
    if let Some(tcp) = field(entries, "tcp") {
        let tcp_path = join(path, "tcp");
        let t = d
            .mapping(
                tcp,
                &tcp_path,
                &[
                    "maxConnections",
                    "connectTimeout",
                    "tcpKeepalive",
                    "maxConnectionDuration",
                    "idleTimeout",
                ],
            )
            .unwrap_or_default();
        pool.max_connections = positive(d, t, "maxConnections", &tcp_path);
        pool.connect_timeout = duration(d, t, "connectTimeout", &tcp_path);
        pool.max_connection_duration = duration(d, t, "maxConnectionDuration", &tcp_path);
        pool.tcp_idle_timeout = duration(d, t, "idleTimeout", &tcp_path);
        pool.tcp_keepalive = field(t, "tcpKeepalive")
            .and_then(|n| tcp_keepalive(d, n, &join(&tcp_path, "tcpKeepalive")));
    }
    if let Some(http) = field(entries, "http") {
        let http_path = join(path, "http");
        let h = d
            .mapping(
                http,
                &http_path,
                &[
                    "http1MaxPendingRequests",
                    "http2MaxRequests",
                    "maxRequestsPerConnection",
                    "maxRetries",
                    "idleTimeout",
                    "h2UpgradePolicy",
                    "useClientProtocol",
                    "maxConcurrentStreams",
                    "http2KeepAlive",
                ],
            )
            .unwrap_or_default();
        pool.http2_keepalive = field(h, "http2KeepAlive")
            .and_then(|node| http2_keep_alive(d, node, &join(&http_path, "http2KeepAlive")));
        pool.http1_max_pending_requests = positive(d, h, "http1MaxPendingRequests", &http_path);
        pool.http2_max_requests = positive(d, h, "http2MaxRequests", &http_path);
        pool.max_requests_per_connection = count(d, h, "maxRequestsPerConnection", &http_path);
        pool.max_retries = count(d, h, "maxRetries", &http_path);
        pool.idle_timeout = duration(d, h, "idleTimeout", &http_path);
        pool.max_concurrent_streams = count(d, h, "maxConcurrentStreams", &http_path);
        if let Some(node) = field(h, "h2UpgradePolicy") {
            let policy_path = join(&http_path, "h2UpgradePolicy");
            if let Some(policy) = d.string(node, &policy_path) {
                if let Some(parsed) = H2UpgradePolicy::parse(&policy) {
                    pool.h2_upgrade_policy = Some(parsed);
                } else {
                    d.error(
                        node,
                        &policy_path,
                        format!(
                            "invalid h2UpgradePolicy {policy:?}, supported are {}",
                            H2_UPGRADE_POLICIES.join(", ")
                        ),
                    );
                }
            }
        }
        pool.use_client_protocol = d.flag(h, "useClientProtocol", &http_path);
    }
    Some(pool)
}

/// `connectionPool.http.http2KeepAlive` (new in Istio 1.31): `interval` and
/// `timeout` are both required, each a duration of at least 1ms.
fn http2_keep_alive(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<(Duration, Duration)> {
    let entries = d.mapping(node, path, &["interval", "timeout"])?;
    let mut both = Vec::new();
    for name in ["interval", "timeout"] {
        match field(entries, name) {
            None => d.error(
                node,
                &join(path, name),
                format!("http2 keepalive {name} is required"),
            ),
            Some(_) => {
                at_least_a_millisecond(d, entries, name, path);
                both.extend(duration(d, entries, name, path));
            }
        }
    }
    match both[..] {
        [interval, timeout] => Some((interval, timeout)),
        _ => None,
    }
}

/// `connectionPool.tcp.tcpKeepalive`: `probes`, `time`, `interval`
/// (durations of at least 1ms, as Istio validates them).
fn tcp_keepalive(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<TcpKeepalive> {
    let entries = d.mapping(node, path, &["probes", "time", "interval"])?;
    for name in ["time", "interval"] {
        if field(entries, name).is_some() {
            at_least_a_millisecond(d, entries, name, path);
        }
    }
    Some(TcpKeepalive {
        probes: count(d, entries, "probes", path).filter(|n| *n > 0),
        time: duration(d, entries, "time", path),
        interval: duration(d, entries, "interval", path),
    })
}
