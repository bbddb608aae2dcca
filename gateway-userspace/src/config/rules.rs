//! Istio's Gateway validation rules as pure functions over the values as
//! written (istio/istio `pkg/config/validation`). Each returns the message Istio
//! would give, so diagnostics read like `istioctl` but carry positions.
//! The `§` and rule numbers here and in `gateway.rs` and `gateway/` label the rules as the
//! notes this code was first written from numbered them; those notes are
//! not in the repository, and the tests in `gateway_rules_tests.rs` state
//! each rule in words.

/// Ciphers Istio accepts in `tls.cipherSuites` (security.go `ValidCipherSuites`).
const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// A DNS-1123 label: lower-case alphanumerics and `-`, alphanumeric at both
/// ends, at most 63 characters (Gateway `metadata.name`, namespaces).
pub(super) fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `metadata.name` of a Gateway.
pub(super) fn gateway_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid gateway name: {name:?}"))
    }
}

/// A server host, `[namespace/]dnsName` (§2.3).
pub(super) fn server_host(host: &str) -> Result<(), String> {
    let dns_name = match host.split_once('/') {
        Some((namespace, dns_name)) => {
            if namespace.is_empty() || dns_name.is_empty() {
                return Err(format!(
                    "config namespace and dnsName in host entry cannot be empty: {host:?}"
                ));
            }
            if namespace != "*" && namespace != "." && !is_dns1123_label(namespace) {
                return Err(format!("invalid namespace value {namespace:?} in gateway"));
            }
            dns_name
        }
        None => host,
    };
    wildcard_dns_name(dns_name)
}

/// A host name that may start with a whole `*` label (or be exactly `*`).
fn wildcard_dns_name(name: &str) -> Result<(), String> {
    if name == "*" {
        return Ok(());
    }
    if !name.contains('.') {
        return Err(format!("short names (non FQDN) are not allowed: {name:?}"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.contains('*') || (name.starts_with('*') && !name.starts_with("*.")) {
        let first_label = name.split('.').next().unwrap_or_default();
        if first_label.contains('*') && first_label != "*" {
            return Err(format!("partial wildcard {name:?} not allowed"));
        }
        return Err(format!(
            "domain name {name:?} invalid (wildcard must be the whole left-most label)"
        ));
    }
    fqdn(rest).map_err(|why| format!("domain name {name:?} invalid ({why})"))
}

/// RFC 1123 host name: labels of letters, digits and `-`, at most 63
/// characters each and 255 in all; the top-level label is not all digits;
/// a trailing dot is accepted.
fn fqdn(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 255 {
        return Err("longer than 255 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > 63 {
            return Err("a label is empty or longer than 63 characters");
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return Err("a label has characters other than letters, digits and '-'");
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err("a label starts or ends with '-'");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the top-level domain is all digits");
    }
    Ok(())
}

/// `tunnel.targetHost`: an FQDN or an IP address (Istio's
/// `validateTunnelSettings`, with `ValidateFQDN` and `ValidateIPAddress`).
pub(super) fn tunnel_target_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() {
        return Err(
            "tunnel target host must be valid FQDN or IP address: empty domain name not allowed"
                .into(),
        );
    }
    fqdn(host).map_err(|why| {
        format!("tunnel target host must be valid FQDN or IP address: {host:?} ({why})")
    })
}

/// `bind`: an IP address or a Unix socket `unix:///abs/path` / `unix://@name`.
pub(super) enum Bind {
    Ip(std::net::IpAddr),
    Unix(String),
}

/// Parses and checks `bind` (§10.4).
pub(super) fn bind(text: &str) -> Result<Bind, String> {
    if let Some(path) = text.strip_prefix("unix://") {
        unix_address(path)?;
        return Ok(Bind::Unix(path.to_string()));
    }
    text.parse()
        .map(Bind::Ip)
        .map_err(|_| format!("{text} is not a valid IP"))
}

/// The part of a `unix://` address after the scheme: an abstract name
/// (`@name`) or an absolute path to a file (Istio's `ValidateUnixAddress`).
pub(super) fn unix_address(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
        return Err(format!("{path} is not an absolute path to a file"));
    }
    Ok(())
}

/// A ServiceEntry host, as Istio checks it (`ValidateWildcardDomain`, then
/// `ValidatePartialWildCard` as a warning): a first label that is a
/// partial wildcard (`*x`, `*-x`) is valid, with the warning returned.
/// Everything else as [`service_host`]; `*` alone is the caller's to refuse.
pub(super) fn service_entry_host(host: &str) -> Result<Option<String>, String> {
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if first == "*" || !first.starts_with('*') {
        return service_host(host).map(|()| None);
    }
    // Istio's wildcard label: `*` then an optional `-`, then a DNS-1123 label.
    let label = first
        .strip_prefix("*-")
        .or_else(|| first.strip_prefix('*'))
        .unwrap_or(first);
    let label_ok = first.len() <= 63
        && !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if !label_ok {
        return Err(format!(
            "domain name {host:?} invalid (label {first:?} invalid)"
        ));
    }
    if let Some(rest) = rest {
        fqdn(rest).map_err(|why| format!("domain name {host:?} invalid ({why})"))?;
    }
    Ok(Some(format!(
        "partial wildcard {host:?}: Istio only warns; it matches every name that ends in {:?}",
        host.strip_prefix('*').unwrap_or(host)
    )))
}

/// Milliseconds of a protobuf/Go duration (`1h`, `5m`, `1.5s`, `100ms`, `10us`);
/// `None` if it does not parse or is negative.
pub fn duration_millis(text: &str) -> Option<f64> {
    let units: [(&str, f64); 6] = [
        ("ms", 1.0),
        ("us", 0.001),
        ("ns", 0.000_001),
        ("h", 3_600_000.0),
        ("m", 60_000.0),
        ("s", 1000.0),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

/// A VirtualService / ServiceEntry / DestinationRule host: a DNS name that
/// may start with a `*` label, `*` alone, a short name, or an IP address.
pub(super) fn service_host(host: &str) -> Result<(), String> {
    if host == "*" || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if !host.contains('.') {
        // Short names are resolved relative to the resource's namespace, and
        // must be a DNS label as Istio's validateDNS1123Labels checks it.
        return fqdn(host).map_err(|why| format!("host {host:?} invalid ({why})"));
    }
    wildcard_dns_name(host)
}

/// A gateway reference in `VirtualService.spec.gateways`, resolved to
/// `namespace/name` (or `mesh`); a legacy FQDN comes with a warning.
pub(super) fn gateway_reference(
    reference: &str,
    vs_namespace: &str,
) -> Result<(String, Option<String>), String> {
    if reference == "mesh" {
        return Ok(("mesh".into(), None));
    }
    if let Some((namespace, name)) = reference.split_once('/') {
        // Istio's validateGatewayNames: `./name` is not a shorthand here.
        if !is_dns1123_label(namespace) {
            return Err(format!("invalid value for namespace: {namespace:?}"));
        }
        if !is_dns1123_label(name) {
            return Err(format!("invalid value for gateway name: {name:?}"));
        }
        return Ok((format!("{namespace}/{name}"), None));
    }
    if let Some((name, rest)) = reference.split_once('.') {
        let namespace = rest.split('.').next().unwrap_or_default();
        if is_dns1123_label(name) && is_dns1123_label(namespace) {
            return Ok((
                format!("{namespace}/{name}"),
                Some(format!(
                    "using legacy gatewayName format {reference:?}; write {namespace}/{name}"
                )),
            ));
        }
        return Err(format!("invalid gateway {reference:?}"));
    }
    if is_dns1123_label(reference) {
        Ok((format!("{vs_namespace}/{reference}"), None))
    } else {
        Err(format!("invalid gateway {reference:?}"))
    }
}

/// Warnings for `tls.cipherSuites` (§10.5 rule 3): unknown names and duplicates.
pub(super) fn cipher_suite_warnings(suites: &[&str]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for suite in suites {
        let passthrough =
            suite.starts_with(|c: char| !c.is_ascii_alphanumeric()) || *suite == "ALL";
        if !passthrough && !VALID_CIPHER_SUITES.contains(suite) {
            warnings.push(format!("ignoring invalid cipher suite {suite:?}"));
        } else if seen.contains(suite) {
            warnings.push(format!("ignoring duplicate cipher suite {suite:?}"));
        }
        seen.push(suite);
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_name_must_be_a_dns1123_label() {
        assert!(gateway_name("istio-gateway").is_ok());
        for bad in ["", "Gateway", "gw.example", "-gw", "gw-", &"a".repeat(64)] {
            assert!(gateway_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_namespace_and_name_must_not_be_empty() {
        for bad in ["/a.example.com", "ns/"] {
            assert_eq!(
                server_host(bad),
                Err(format!(
                    "config namespace and dnsName in host entry cannot be empty: {bad:?}"
                ))
            );
        }
    }

    #[test]
    fn host_namespace_is_star_dot_or_a_label() {
        for ok in ["*/a.example.com", "./a.example.com", "prod/a.example.com"] {
            assert!(server_host(ok).is_ok(), "{ok}");
        }
        assert!(server_host("Prod/a.example.com").is_err());
        assert!(server_host("~/a.example.com").is_err());
    }

    #[test]
    fn short_names_are_rejected() {
        assert_eq!(
            server_host("localhost"),
            Err("short names (non FQDN) are not allowed: \"localhost\"".into())
        );
        assert!(
            server_host("2001:db8::1").is_err(),
            "IPv6 literals have no dot"
        );
    }

    #[test]
    fn star_alone_and_ipv4_literals_are_allowed() {
        assert!(server_host("*").is_ok());
        assert!(server_host("ns/*").is_ok());
        assert!(server_host("192.0.2.1").is_ok());
    }

    #[test]
    fn only_a_whole_leftmost_wildcard_label_is_allowed() {
        assert!(server_host("*.example.com").is_ok());
        for partial in ["*example.com", "foo*.com", "*-x.example.com"] {
            let err = server_host(partial).unwrap_err();
            assert!(err.starts_with("partial wildcard"), "{partial}: {err}");
        }
        assert_eq!(
            server_host("foo.*.example.com"),
            Err("domain name \"foo.*.example.com\" invalid (wildcard must be the whole left-most label)".into())
        );
    }

    #[test]
    fn labels_follow_rfc1123() {
        assert!(
            server_host("UPPER.example.com").is_ok(),
            "upper case is accepted"
        );
        assert!(
            server_host("a.example.com.").is_ok(),
            "trailing dot is accepted"
        );
        assert!(server_host("a_b.example.com").is_err());
        assert!(server_host("-a.example.com").is_err());
        assert!(server_host(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(server_host("a..com").is_err());
    }

    #[test]
    fn name_and_label_length_limits_are_inclusive() {
        // Three 63-character labels, then one of `last` characters and `.com`.
        let name = |last: usize| {
            let label = "a".repeat(63);
            format!("{label}.{label}.{label}.{}.com", "b".repeat(last))
        };
        assert_eq!(name(59).len(), 255);
        assert_eq!(server_host(&name(59)), Ok(()));
        assert_eq!(
            server_host(&name(60)),
            Err(format!(
                "domain name {:?} invalid (longer than 255 characters)",
                name(60)
            ))
        );
    }

    #[test]
    fn top_level_domain_must_not_be_all_digits() {
        assert!(server_host("example.123").is_err());
    }

    #[test]
    fn bind_accepts_ips_and_unix_sockets() {
        assert!(matches!(bind("192.0.2.1"), Ok(Bind::Ip(_))));
        assert!(matches!(bind("2001:db8::1"), Ok(Bind::Ip(_))));
        assert!(matches!(bind("unix:///var/run/gw.sock"), Ok(Bind::Unix(_))));
        assert!(matches!(bind("unix://@abstract"), Ok(Bind::Unix(_))));
    }

    #[test]
    fn bind_rejects_hostnames_cidrs_and_relative_sockets() {
        assert_eq!(
            bind("gw.example.com").err(),
            Some("gw.example.com is not a valid IP".into())
        );
        assert!(bind("192.0.2.0/24").is_err());
        assert_eq!(
            bind("unix://").err(),
            Some("unix address must not be empty".into())
        );
        assert!(bind("unix://relative/path").is_err());
        assert!(bind("unix:///dir/").is_err());
    }

    #[test]
    fn service_entry_hosts_may_have_a_partial_wildcard_with_a_warning() {
        for (host, suffix) in [("*x", "x"), ("*-api.example.com", "-api.example.com")] {
            let warning = service_entry_host(host).unwrap().unwrap();
            assert!(
                warning.starts_with(&format!("partial wildcard {host:?}")),
                "{warning}"
            );
            assert!(warning.ends_with(&format!("{suffix:?}")), "{warning}");
        }
        assert_eq!(service_entry_host("*.example.com"), Ok(None));
        assert_eq!(service_entry_host("web.example.com"), Ok(None));
        for bad in [
            "*-",
            "**.example.com",
            "*x_y.example.com",
            "*x.*.com",
            "*x.example.123",
        ] {
            assert!(service_entry_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_go_units() {
        assert_eq!(duration_millis("1.5s"), Some(1500.0));
        assert_eq!(duration_millis("100ms"), Some(100.0));
        assert_eq!(duration_millis("2m"), Some(120_000.0));
        assert_eq!(duration_millis("5"), None);
        assert_eq!(duration_millis("-1s"), None);
    }

    #[test]
    fn gateway_references_resolve_to_namespace_and_name() {
        assert_eq!(
            gateway_reference("gw", "apps"),
            Ok(("apps/gw".into(), None))
        );
        assert_eq!(
            gateway_reference("istio-system/gw", "apps"),
            Ok(("istio-system/gw".into(), None))
        );
        assert_eq!(gateway_reference("mesh", "apps"), Ok(("mesh".into(), None)));
    }

    #[test]
    fn dot_is_not_a_namespace_in_a_gateway_reference() {
        assert_eq!(
            gateway_reference("./gw", "apps"),
            Err("invalid value for namespace: \".\"".into())
        );
    }

    #[test]
    fn legacy_gateway_fqdn_warns() {
        let (resolved, warning) =
            gateway_reference("gw.istio-system.svc.cluster.local", "apps").unwrap();
        assert_eq!(resolved, "istio-system/gw");
        assert!(warning.is_some());
    }

    #[test]
    fn legacy_gateway_fqdn_needs_a_valid_name_and_namespace() {
        for bad in ["gw.Istio_System.svc", "Gw.istio-system.svc"] {
            assert_eq!(
                gateway_reference(bad, "apps"),
                Err(format!("invalid gateway {bad:?}"))
            );
        }
    }

    #[test]
    fn wildcard_gateway_references_are_rejected() {
        assert!(gateway_reference("ns/*", "apps").is_err());
        assert!(gateway_reference("*/gw", "apps").is_err());
    }

    #[test]
    fn service_hosts_allow_short_names_ips_and_wildcards() {
        for ok in [
            "reviews",
            "reviews.prod.svc.cluster.local",
            "*.example.com",
            "192.0.2.1",
            "*",
        ] {
            assert!(service_host(ok).is_ok(), "{ok}");
        }
        for bad in ["a_b", "*a.example.com", "foo.*.com"] {
            assert!(service_host(bad).is_err(), "{bad}");
        }
        // Short names Istio rejects: an all-digit top-level domain, a label
        // that starts or ends with '-', one longer than 63 characters.
        for (bad, why) in [
            ("123", "the top-level domain is all digits"),
            ("-web", "a label starts or ends with '-'"),
            ("web-", "a label starts or ends with '-'"),
        ] {
            assert_eq!(
                service_host(bad),
                Err(format!("host {bad:?} invalid ({why})"))
            );
        }
        assert!(service_host(&"a".repeat(64)).is_err());
    }

    #[test]
    fn invalid_and_duplicate_cipher_suites_warn() {
        let warnings =
            cipher_suite_warnings(&["AES128-SHA", "NOT-A-CIPHER", "AES128-SHA", "!RC4", "ALL"]);
        assert_eq!(
            warnings,
            vec![
                "ignoring invalid cipher suite \"NOT-A-CIPHER\"".to_string(),
                "ignoring duplicate cipher suite \"AES128-SHA\"".to_string(),
            ]
        );
    }
}
