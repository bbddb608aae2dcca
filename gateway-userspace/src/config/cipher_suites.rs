//! `tls.cipherSuites` against what the proxy's TLS library offers: rustls
//! 0.23 with the `ring` provider. Envoy's `cipherSuites` only restrict TLS
//! 1.2 (TLS 1.3 suites are not configurable there), so only the six TLS 1.2
//! suites rustls offers are mapped; every other name is unsupported here.
use rustls::CipherSuite;

/// OpenSSL names (as Istio and Envoy write them) of the TLS 1.2 suites rustls offers.
const OFFERED: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The rustls suite for one OpenSSL cipher name, if rustls offers it.
pub(super) fn rustls_suite(name: &str) -> Option<CipherSuite> {
    OFFERED
        .iter()
        .find(|(openssl, _)| *openssl == name)
        .map(|(_, suite)| *suite)
}

/// The suites of one `cipherSuites` entry: a name, or an equal-preference
/// group `[A|B]` (rustls has no equal preference, so members keep their
/// order). Names rustls does not offer come back in the second list.
pub(super) fn resolve_entry(entry: &str) -> (Vec<CipherSuite>, Vec<String>) {
    let names: Vec<&str> = match entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(group) => group.split('|').map(str::trim).collect(),
        None => vec![entry],
    };
    let mut offered = Vec::new();
    let mut unsupported = Vec::new();
    for name in names {
        match rustls_suite(name) {
            Some(suite) => offered.push(suite),
            None => unsupported.push(name.to_string()),
        }
    }
    (offered, unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_tls12_suite_maps_to_its_rustls_value() {
        assert_eq!(
            rustls_suite("ECDHE-RSA-AES128-GCM-SHA256"),
            Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
        );
        assert_eq!(
            rustls_suite("ECDHE-ECDSA-CHACHA20-POLY1305"),
            Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        );
        // Each name maps to the suite whose IANA name spells it.
        for (name, suite) in OFFERED {
            let iana = format!("{suite:?}");
            let kx = if name.contains("ECDSA") {
                "ECDSA"
            } else {
                "RSA"
            };
            assert!(iana.contains(&format!("ECDHE_{kx}_WITH")), "{name} {iana}");
            let cipher = if name.contains("CHACHA20") {
                "CHACHA20_POLY1305"
            } else if name.contains("AES128") {
                "AES_128_GCM"
            } else {
                "AES_256_GCM"
            };
            assert!(iana.contains(cipher), "{name} {iana}");
        }
        // The six distinct TLS 1.2 suites of the ring provider.
        let mut distinct: Vec<u16> = OFFERED.iter().map(|(_, s)| u16::from(*s)).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn suites_rustls_lacks_and_tls13_names_are_unsupported() {
        for name in [
            "AES128-SHA",
            "ECDHE-RSA-AES128-SHA",
            "DES-CBC3-SHA",
            "TLS13_AES_128_GCM_SHA256",
            "ALL",
        ] {
            assert_eq!(rustls_suite(name), None, "{name}");
        }
    }

    #[test]
    fn groups_resolve_member_by_member() {
        assert_eq!(
            resolve_entry(
                "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305|AES128-SHA]"
            ),
            (
                vec![
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                ],
                vec!["AES128-SHA".to_string()]
            )
        );
        assert_eq!(
            resolve_entry("ECDHE-RSA-AES256-GCM-SHA384"),
            (
                vec![CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384],
                vec![]
            )
        );
    }
}
