//! AUTO_PASSTHROUGH at connection time: the ClientHello's SNI names the
//! cluster as `outbound_.<port>_.<subset>_.<host>` (Istio's
//! `model.BuildDNSSrvSubsetKey`) and the bytes go there unchanged.
use std::collections::BTreeMap;

use crate::plan::{Backend, ClusterId, Forward, HostPattern};

/// The ALPN values an Istio mTLS client offers; Istio's auto-passthrough
/// filter chains match only these (`listener.go::allIstioMtlsALPNs`), so
/// that a cluster cannot be reached without mesh mTLS.
const ISTIO_MTLS_ALPNS: [&[u8]; 5] = [
    b"istio",
    b"istio-peer-exchange",
    b"istio-http/1.0",
    b"istio-http/1.1",
    b"istio-h2",
];

/// Why an SNI names no cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// Not `outbound_.<port>_.<subset>_.<host>`.
    #[error("not of the form outbound_.<port>_.<subset>_.<host>")]
    Form,
    /// The port is not a number from 1 to 65535 written as Istio writes it.
    #[error("bad port {0:?}")]
    Port(String),
    /// The subset is not a DNS label.
    #[error("bad subset {0:?}")]
    Subset(String),
    /// The host is empty or a wildcard, which names no cluster.
    #[error("bad host {0:?}")]
    Host(String),
}

/// The cluster name, `outbound|<port>|<subset>|<host>`, that an SNI names.
pub fn cluster_name(sni: &str) -> Result<String, SniError> {
    let rest = sni.strip_prefix("outbound_.").ok_or(SniError::Form)?;
    let (port, rest) = rest.split_once("_.").ok_or(SniError::Form)?;
    let (subset, host) = rest.split_once("_.").ok_or(SniError::Form)?;
    // Istio writes the port in decimal without sign or leading zero, and
    // the filter chain matches the SNI exactly.
    let canonical = !port.starts_with('0') && port.bytes().all(|b| b.is_ascii_digit());
    let port: u16 = port
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| SniError::Port(port.to_string()))?;
    if !subset
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(SniError::Subset(subset.to_string()));
    }
    if host.is_empty() || host.contains(['*', '|']) {
        return Err(SniError::Host(host.to_string()));
    }
    Ok(format!("outbound|{port}|{subset}|{host}"))
}

/// The SNI that names `cluster` (`outbound|<port>|<subset>|<host>`).
pub fn sni_of(cluster: &str) -> Option<String> {
    let mut parts = cluster.splitn(4, '|');
    let (Some("outbound"), Some(port), Some(subset), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(format!("outbound_.{port}_.{subset}_.{host}"))
}

/// The names an AUTO_PASSTHROUGH server answers: its hosts and, as exact
/// names, the SNI of each cluster it reaches. Istio's filter chains match
/// these SNIs exactly, so they beat other servers' wildcards and reach the
/// server even when its hosts are exact service names.
pub fn server_names(
    hosts: &[HostPattern],
    clusters: &BTreeMap<String, ClusterId>,
) -> Vec<HostPattern> {
    let exact = clusters
        .keys()
        .filter_map(|c| sni_of(c))
        .map(HostPattern::Exact);
    hosts.iter().cloned().chain(exact).collect()
}

/// Where an AUTO_PASSTHROUGH connection goes: the cluster its SNI names,
/// if the server may reach it and the client offers an Istio mTLS ALPN;
/// otherwise nowhere (the connection is closed, as Envoy finds no filter chain).
pub fn forward(
    sni: Option<&str>,
    alpn: &[Vec<u8>],
    reachable: &BTreeMap<String, ClusterId>,
) -> Option<Forward> {
    if !alpn
        .iter()
        .any(|p| ISTIO_MTLS_ALPNS.contains(&p.as_slice()))
    {
        return None;
    }
    let name = cluster_name(sni?).ok()?;
    let id = *reachable.get(&name)?;
    Some(Forward(vec![Backend {
        weight: 1,
        target: Ok(id),
        headers: Default::default(),
        // Istio builds AUTO_PASSTHROUGH chains with `tunnelingconfig.Skip`.
        tunnel: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_with_or_without_subset_names_the_cluster() {
        assert_eq!(
            cluster_name("outbound_.8080_._.svc.ns.svc.cluster.local"),
            Ok("outbound|8080||svc.ns.svc.cluster.local".into())
        );
        assert_eq!(
            cluster_name("outbound_.443_.v1_.api.example.com"),
            Ok("outbound|443|v1|api.example.com".into())
        );
    }

    #[test]
    fn cluster_and_sni_names_round_trip() {
        for cluster in [
            "outbound|8080||a.ns.svc.cluster.local",
            "outbound|1|v-2|b.local",
        ] {
            let sni = sni_of(cluster).unwrap();
            assert_eq!(cluster_name(&sni), Ok(cluster.to_string()));
        }
        assert_eq!(sni_of("inbound|80||a.local"), None);
        assert_eq!(sni_of("outbound|80|a.local"), None);
    }

    #[test]
    fn ports_must_be_written_as_istio_writes_them() {
        for port in ["0", "65536", "080", "+80", "-1", "", "http"] {
            let sni = format!("outbound_.{port}_._.a.local");
            assert_eq!(
                cluster_name(&sni),
                Err(SniError::Port(port.into())),
                "{sni}"
            );
        }
    }

    #[test]
    fn missing_parts_are_not_the_form() {
        for sni in [
            "a.ns.svc.cluster.local",
            "inbound_.80_._.a.local",
            "outbound_.80",
            "outbound_.80_.a.local",
            "outbound.80_._.a.local",
        ] {
            assert_eq!(cluster_name(sni), Err(SniError::Form), "{sni}");
        }
    }

    #[test]
    fn wildcard_empty_and_odd_names_are_refused() {
        assert_eq!(
            cluster_name("outbound_.80_._.*.local"),
            Err(SniError::Host("*.local".into()))
        );
        assert_eq!(
            cluster_name("outbound_.80_._."),
            Err(SniError::Host(String::new()))
        );
        assert_eq!(
            cluster_name("outbound_.80_.v|1_.a.local"),
            Err(SniError::Subset("v|1".into()))
        );
        assert_eq!(
            cluster_name("outbound_.80_.*_.a.local"),
            Err(SniError::Subset("*".into()))
        );
    }

    #[test]
    fn cluster_snis_pick_the_server_over_wildcards_and_despite_exact_hosts() {
        let clusters = BTreeMap::from([(
            "outbound|80||a.apps.svc.cluster.local".to_string(),
            ClusterId(0),
        )]);
        let servers = vec![
            vec![HostPattern::from_server_host("*.svc.cluster.local")],
            server_names(
                &[HostPattern::from_server_host("a.apps.svc.cluster.local")],
                &clusters,
            ),
        ];
        let chosen = crate::proxy::tls::select(
            &servers,
            |s| s.as_slice(),
            Some("outbound_.80_._.a.apps.svc.cluster.local"),
        );
        assert!(chosen.is_some_and(|s| std::ptr::eq(s, &servers[1])));
    }

    fn istio() -> Vec<Vec<u8>> {
        vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()]
    }

    #[test]
    fn only_reachable_clusters_are_forwarded_to() {
        let reachable = BTreeMap::from([("outbound|80|v1|a.local".to_string(), ClusterId(0))]);
        let forward = forward(Some("outbound_.80_.v1_.a.local"), &istio(), &reachable);
        assert_eq!(
            forward,
            Some(Forward(vec![Backend {
                weight: 1,
                target: Ok(ClusterId(0)),
                headers: Default::default(),
                tunnel: None,
            }]))
        );
        assert_eq!(
            super::forward(Some("outbound_.80_._.a.local"), &istio(), &reachable),
            None
        );
        assert_eq!(super::forward(None, &istio(), &reachable), None);
    }

    #[test]
    fn clients_without_an_istio_mtls_alpn_are_not_forwarded() {
        let reachable = BTreeMap::from([("outbound|80||a.local".to_string(), ClusterId(0))]);
        let sni = Some("outbound_.80_._.a.local");
        assert_eq!(forward(sni, &[b"h2".to_vec()], &reachable), None);
        assert_eq!(forward(sni, &[], &reachable), None);
        assert!(forward(sni, &[b"istio-h2".to_vec()], &reachable).is_some());
    }
}
