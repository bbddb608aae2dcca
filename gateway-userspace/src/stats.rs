//! Text rendering of the kernel counters for the admin `/stats` endpoint.
//! The counters' [`Layout`] is in `layout`.
mod layout;

pub use self::layout::{Layout, LayoutHost, LayoutListener, listener_label};

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use gateway_common::HostClass;

use crate::{connection::Counters, dataplane::Stats, plan::Plan, proxy::upstream::ClusterCounter};

/// One counter: its `/stats` name, and its Prometheus family and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub family: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// Prometheus families: (name, type, help).
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "gateway_config_servers_dropped",
        "gauge",
        "Servers of the configuration left out of the plan.",
    ),
    (
        "gateway_config_route_warnings",
        "gauge",
        "Routes served, but not as written.",
    ),
    (
        "gateway_config_reloads_total",
        "counter",
        "Configuration reloads applied.",
    ),
    (
        "gateway_config_reload_failures_total",
        "counter",
        "Configuration reloads refused; the previous configuration kept serving.",
    ),
    (
        "gateway_xdp_packets_total",
        "counter",
        "Packets seen by XDP, by the reason of their verdict.",
    ),
    (
        "gateway_xdp_bytes_total",
        "counter",
        "Bytes seen by XDP, by the reason of their verdict.",
    ),
    (
        "gateway_xdp_listener_packets_total",
        "counter",
        "Packets to each listener.",
    ),
    (
        "gateway_xdp_listener_bytes_total",
        "counter",
        "Bytes to each listener.",
    ),
    (
        "gateway_xdp_host_class_packets_total",
        "counter",
        "Data segments of HTTP and TLS listeners by what their host was.",
    ),
    (
        "gateway_xdp_unknown_host_resets_total",
        "counter",
        "Connections the kernel reset for an unknown host.",
    ),
    (
        "gateway_xdp_policy_denied_total",
        "counter",
        "Connection attempts (SYNs) XDP dropped for an AuthorizationPolicy, by policy (`allow-list`: outside an allow-listed port's source blocks).",
    ),
    (
        "gateway_xdp_host_packets_total",
        "counter",
        "Data segments naming each server host.",
    ),
    (
        "gateway_connections_total",
        "counter",
        "Connections of the proxy and the admin endpoint, by event.",
    ),
    (
        "gateway_connections_active",
        "gauge",
        "Connections of the proxy and the admin endpoint open now.",
    ),
    (
        "gateway_egress_workload_connections_total",
        "counter",
        "Connection attempts (SYNs) of each captured workload, seen by the egress guard.",
    ),
    (
        "gateway_egress_workload_refused_total",
        "counter",
        "Connection attempts of each captured workload refused in the kernel (no registry entry for the address).",
    ),
    (
        "gateway_log_dropped_lines_total",
        "counter",
        "Log lines dropped because the reader of the output (stdout: access log, stderr: daemon log) stalled.",
    ),
    (
        "gateway_dataplane_pins_restored_total",
        "counter",
        "Pinned maps and links found removed from the bpffs and pinned again.",
    ),
    (
        "gateway_dataplane_attachments_restored_total",
        "counter",
        "Kernel programs found detached (XDP, steering) and attached again.",
    ),
    (
        "gateway_dataplane_maps_memlock_bytes",
        "gauge",
        "Locked kernel memory of this instance's BPF maps (their memlock), which the process's RSS does not show.",
    ),
    (
        "envoy_cluster_upstream_rq_retry",
        "counter",
        "Retries sent to each cluster.",
    ),
    (
        "envoy_cluster_upstream_rq_retry_success",
        "counter",
        "Requests to each cluster that succeeded after a retry.",
    ),
    (
        "envoy_cluster_upstream_rq_retry_overflow",
        "counter",
        "Retries not sent: the cluster's maxRetries were in flight.",
    ),
    (
        "envoy_cluster_upstream_rq_retry_limit_exceeded",
        "counter",
        "Requests that failed retriably with no retries left.",
    ),
    (
        "envoy_cluster_upstream_rq_per_try_timeout",
        "counter",
        "Tries that ran out of their perTryTimeout.",
    ),
    (
        "envoy_cluster_upstream_rq_timeout",
        "counter",
        "Requests that ran out of their route's timeout.",
    ),
    (
        "envoy_cluster_upstream_rq_pending_overflow",
        "counter",
        "Requests refused at once (503 UO): http1MaxPendingRequests waiting or http2MaxRequests in flight.",
    ),
    (
        "envoy_cluster_upstream_cx_overflow",
        "counter",
        "Connections not opened: the cluster's maxConnections were open.",
    ),
    (
        "envoy_cluster_upstream_cx_max_requests",
        "counter",
        "Connections closed after maxRequestsPerConnection requests.",
    ),
    (
        "envoy_cluster_upstream_cx_max_duration_reached",
        "counter",
        "Connections closed at maxConnectionDuration.",
    ),
    (
        "envoy_cluster_upstream_cx_idle_timeout",
        "counter",
        "Connections closed after their idle timeout.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_active",
        "gauge",
        "Endpoints ejected by outlier detection now.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_enforced_total",
        "counter",
        "Endpoints ejected by outlier detection.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx",
        "counter",
        "Ejections for consecutive 5xx (or listed) errors.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure",
        "counter",
        "Ejections for consecutive 502, 503 or 504.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_enforced_consecutive_local_origin_failure",
        "counter",
        "Ejections for consecutive connect failures, timeouts or resets.",
    ),
    (
        "envoy_cluster_upstream_rq_mirrored",
        "counter",
        "Copies of requests sent to the cluster as a mirror.",
    ),
    (
        "envoy_cluster_upstream_rq_mirror_overflow",
        "counter",
        "Mirror copies not sent: the cluster had its most in flight.",
    ),
    (
        "envoy_cluster_outlier_detection_ejections_overflow",
        "counter",
        "Ejections not made: maxEjectionPercent of the endpoints were out.",
    ),
];

/// What the daemon repaired in its own kernel state.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub pins_restored: AtomicU64,
    pub attachments_restored: AtomicU64,
}

/// The daemon's own losses and repairs: log lines dropped per output
/// (`log_dropped`: stdout, stderr) and what `daemon` counts; and the
/// kernel memory of its maps (`memlock`), when it could be read.
pub fn daemon_samples(
    log_dropped: [u64; 2],
    daemon: &DaemonCounters,
    memlock: Option<u64>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for (output, dropped) in ["stdout", "stderr"].into_iter().zip(log_dropped) {
        out.push(sample(
            format!("log.{output}.dropped_lines"),
            "gateway_log_dropped_lines_total",
            vec![("output", output.to_string())],
            dropped,
        ));
    }
    out.push(sample(
        "dataplane.pins_restored".into(),
        "gateway_dataplane_pins_restored_total",
        vec![],
        daemon.pins_restored.load(Ordering::Relaxed),
    ));
    out.push(sample(
        "dataplane.attachments_restored".into(),
        "gateway_dataplane_attachments_restored_total",
        vec![],
        daemon.attachments_restored.load(Ordering::Relaxed),
    ));
    out.extend(memlock.map(memlock_sample));
    out
}

/// The locked kernel memory of an instance's maps.
pub fn memlock_sample(bytes: u64) -> Sample {
    sample(
        "dataplane.maps_memlock_bytes".into(),
        "gateway_dataplane_maps_memlock_bytes",
        vec![],
        bytes,
    )
}

/// Whether the samples of `family` are gauges (a level, not a count).
pub fn is_gauge(family: &str) -> bool {
    FAMILIES
        .iter()
        .any(|(name, kind, _)| *name == family && *kind == "gauge")
}

/// The egress guard's per-workload counters, by workload address and
/// captured interface (`interfaces` names them).
pub fn workload_samples(
    workloads: &[crate::dataplane::Workload],
    interfaces: &std::collections::BTreeMap<u32, String>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for workload in workloads {
        let interface = interfaces
            .get(&workload.ifindex)
            .cloned()
            .unwrap_or_else(|| workload.ifindex.to_string());
        let labels = vec![
            ("workload", workload.addr.to_string()),
            ("interface", interface.clone()),
        ];
        let key = format!("egress.workload.{}.{interface}", workload.addr);
        out.push(sample(
            format!("{key}.connections"),
            "gateway_egress_workload_connections_total",
            labels.clone(),
            workload.counters.connections,
        ));
        out.push(sample(
            format!("{key}.refused"),
            "gateway_egress_workload_refused_total",
            labels,
            workload.counters.refused,
        ));
    }
    out
}

/// Every counter of the configuration, the kernel (`stats`) and each kind
/// of listener's connections (`proxy`, `admin`), in a stable order.
pub fn samples(
    stats: &Stats,
    plan: &Plan,
    reloads: &ReloadCounters,
    connections: &[(&str, &Counters)],
) -> Vec<Sample> {
    let mut out = Vec::new();
    // What the configuration lost in the merge or binding (Istio's
    // pilot_total_rejected_configs, but per gateway instance).
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    out.push(sample(
        "config.servers_dropped".into(),
        "gateway_config_servers_dropped",
        vec![],
        plan.dropped.len() as u64,
    ));
    out.push(sample(
        "config.route_warnings".into(),
        "gateway_config_route_warnings",
        vec![],
        plan.warnings.len() as u64,
    ));
    out.push(sample(
        "config.reloads".into(),
        "gateway_config_reloads_total",
        vec![],
        load(&reloads.applied),
    ));
    out.push(sample(
        "config.reload_failures".into(),
        "gateway_config_reload_failures_total",
        vec![],
        load(&reloads.failed),
    ));
    out.extend(kernel_samples(stats, &Layout::of(plan)));
    for (prefix, counters) in connections {
        let events = [
            ("accepted", load(&counters.accepted)),
            ("active", counters.active.load(Ordering::Relaxed) as u64),
            ("rejected_over_limit", load(&counters.rejected)),
            ("rejected_per_source", load(&counters.rejected_per_source)),
            (
                "rejected_listener_share",
                load(&counters.rejected_listener_share),
            ),
            ("closed_head_timeout", load(&counters.head_timeouts)),
            ("closed_idle_timeout", load(&counters.idle_timeouts)),
            (
                "closed_stream_idle_timeout",
                load(&counters.stream_idle_timeouts),
            ),
            ("accept_errors", load(&counters.accept_errors)),
        ];
        for (event, value) in events {
            let (family, labels) = if event == "active" {
                (
                    "gateway_connections_active",
                    vec![("endpoint", (*prefix).to_string())],
                )
            } else {
                (
                    "gateway_connections_total",
                    vec![
                        ("endpoint", (*prefix).to_string()),
                        ("event", event.to_string()),
                    ],
                )
            };
            out.push(sample(
                format!("{prefix}.connections.{event}"),
                family,
                labels,
                value,
            ));
        }
    }
    out
}

/// The kernel's counters (`stats`), named by `layout`.
pub fn kernel_samples(stats: &Stats, layout: &Layout) -> Vec<Sample> {
    let mut out = Vec::new();
    for (slot, name) in &layout.policies {
        let counter = stats
            .policies
            .iter()
            .find(|(s, _)| s == slot)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        out.push(sample(
            format!("xdp.policy.{name}.denied"),
            "gateway_xdp_policy_denied_total",
            vec![("policy", name.clone())],
            counter.packets,
        ));
    }
    for (reason, counter) in &stats.reasons {
        let name = reason.name();
        let labels = vec![("reason", name.to_string())];
        out.push(sample(
            format!("xdp.reason.{name}.packets"),
            "gateway_xdp_packets_total",
            labels.clone(),
            counter.packets,
        ));
        out.push(sample(
            format!("xdp.reason.{name}.bytes"),
            "gateway_xdp_bytes_total",
            labels,
            counter.bytes,
        ));
    }
    for listener in &layout.listeners {
        let counter = stats
            .listeners
            .iter()
            .find(|(id, _)| *id == listener.id)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let label = listener.label.clone();
        let labels = vec![("listener", label.clone())];
        out.push(sample(
            format!("xdp.listener.{label}.packets"),
            "gateway_xdp_listener_packets_total",
            labels.clone(),
            counter.packets,
        ));
        out.push(sample(
            format!("xdp.listener.{label}.bytes"),
            "gateway_xdp_listener_bytes_total",
            labels,
            counter.bytes,
        ));
        if !listener.names_hosts {
            continue;
        }
        // What the first data segments said about the host (TLS SNI, HTTP Host).
        for class in HostClass::ALL {
            let counter = stats
                .host_classes
                .iter()
                .find(|(id, c, _)| *id == listener.id && *c == class)
                .map(|(_, _, c)| *c)
                .unwrap_or_default();
            let name = class.name();
            out.push(sample(
                format!("xdp.listener.{label}.host_class.{name}.packets"),
                "gateway_xdp_host_class_packets_total",
                vec![("listener", label.clone()), ("class", name.to_string())],
                counter.packets,
            ));
        }
        if listener.resets {
            let resets = stats
                .resets
                .iter()
                .find(|(id, _)| *id == listener.id)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            out.push(sample(
                format!("xdp.listener.{label}.unknown_host_resets"),
                "gateway_xdp_unknown_host_resets_total",
                vec![("listener", label.clone())],
                resets.packets,
            ));
        }
        for host in layout.hosts.iter().filter(|h| h.listener_id == listener.id) {
            let counter = stats
                .hosts
                .iter()
                .find(|(id, _)| *id == host.id)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let pattern = host.pattern.clone();
            out.push(sample(
                format!("xdp.listener.{label}.host.{pattern}.packets"),
                "gateway_xdp_host_packets_total",
                vec![("listener", label.clone()), ("host", pattern)],
                counter.packets,
            ));
        }
    }
    out
}

/// One sample (the arguments in [`Sample`]'s field order).
/// The proxy's per-cluster counters under Envoy's names:
/// `cluster.<name>.<stat>`, and `envoy_cluster_<stat>{cluster_name}`.
pub fn cluster_samples(clusters: &[(String, Vec<(ClusterCounter, u64)>)]) -> Vec<Sample> {
    let mut out = Vec::new();
    for (cluster, values) in clusters {
        for (counter, value) in values {
            let Some(family) = cluster_family(*counter) else {
                continue;
            };
            out.push(sample(
                format!("cluster.{cluster}.{}", counter.name()),
                family,
                vec![("cluster_name", cluster.clone())],
                *value,
            ));
        }
    }
    out
}

/// The Prometheus family of a cluster counter.
fn cluster_family(counter: ClusterCounter) -> Option<&'static str> {
    FAMILIES.iter().map(|(name, ..)| *name).find(|name| {
        name.strip_prefix("envoy_cluster_") == Some(counter.name().replace('.', "_").as_str())
    })
}

fn sample(
    name: String,
    family: &'static str,
    labels: Vec<(&'static str, String)>,
    value: u64,
) -> Sample {
    Sample {
        name,
        family,
        labels,
        value,
    }
}

/// One `name value` line per sample: stable names for scripts and tests.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for sample in samples {
        let _ = writeln!(out, "{} {}", sample.name, sample.value);
    }
    out
}

/// The samples in Prometheus' text exposition format, each family once
/// with its help and type, then the proxy's Istio metrics.
pub fn render_prometheus(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (family, kind, help) in FAMILIES {
        let members: Vec<&Sample> = samples.iter().filter(|s| s.family == *family).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for sample in members {
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", crate::proxy::metrics::escape(value)))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(out, "{family} {}", sample.value);
            } else {
                let _ = writeln!(out, "{family}{{{}}} {}", labels.join(","), sample.value);
            }
        }
    }
    crate::proxy::metrics::render(&mut out);
    out
}

/// Configuration reloads since start: applied, and refused (the previous
/// configuration kept serving).
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub applied: AtomicU64,
    pub failed: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DroppedServer;

    #[test]
    fn dropped_servers_and_route_warnings_are_counted() {
        let plan = Plan {
            listeners: Vec::new(),
            local_addrs: Vec::new(),
            http: Vec::new(),
            tls: Vec::new(),
            tcp: Vec::new(),
            clusters: Vec::new(),
            dropped: vec![DroppedServer {
                gateway: "ns/gw".into(),
                server: 1,
                reason: "conflict".into(),
            }],
            warnings: vec!["a".into(), "b".into()],
            host_ids: Default::default(),
            jwt: Vec::new(),
            authorization: Default::default(),
            ip_policy: Default::default(),
        };
        let text = render(&samples(
            &Stats::default(),
            &plan,
            &ReloadCounters::default(),
            &[],
        ));
        assert!(
            text.starts_with("config.servers_dropped 1\nconfig.route_warnings 2\n"),
            "{text}"
        );
    }

    #[test]
    fn the_maps_memlock_is_a_gauge_in_both_renderings() {
        let samples = daemon_samples([0, 0], &DaemonCounters::default(), Some(6_659_304));
        assert!(
            render(&samples).contains("\ndataplane.maps_memlock_bytes 6659304\n"),
            "{}",
            render(&samples)
        );
        let prometheus = render_prometheus(&samples);
        assert!(
            prometheus.contains(
                "# TYPE gateway_dataplane_maps_memlock_bytes gauge\ngateway_dataplane_maps_memlock_bytes 6659304\n"
            ),
            "{prometheus}"
        );
        assert!(is_gauge("gateway_dataplane_maps_memlock_bytes"));
        assert!(!is_gauge("gateway_xdp_packets_total"));
        let unread = daemon_samples([0, 0], &DaemonCounters::default(), None);
        assert!(!render(&unread).contains("memlock"));
    }

    #[test]
    fn policy_drops_are_counted_per_policy_in_both_renderings_and_survive_the_layout_file() {
        let layout = Layout {
            policies: vec![
                (0, "allow-list".into()),
                (1, "istio-system/deny-bad".into()),
            ],
            ..Layout::default()
        };
        let layout = Layout::from_json(&layout.to_json()).expect("round trip");
        let stats = Stats {
            policies: vec![(
                1,
                gateway_common::Counter {
                    packets: 3,
                    bytes: 180,
                },
            )],
            ..Stats::default()
        };
        let samples = kernel_samples(&stats, &layout);
        let text = render(&samples);
        assert!(
            text.contains("xdp.policy.istio-system/deny-bad.denied 3\n"),
            "{text}"
        );
        assert!(text.contains("xdp.policy.allow-list.denied 0\n"), "{text}");
        let prometheus = render_prometheus(&samples);
        assert!(
            prometheus
                .contains("gateway_xdp_policy_denied_total{policy=\"istio-system/deny-bad\"} 3\n"),
            "{prometheus}"
        );
    }

    #[test]
    fn a_layout_file_without_policies_still_reads() {
        let old = r#"{"listeners": [], "hosts": []}"#;
        assert_eq!(Layout::from_json(old), Some(Layout::default()));
    }
}
