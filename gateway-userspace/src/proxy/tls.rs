//! TLS termination with rustls: one server configuration per Gateway
//! server (certificate, versions, client verification, ALPN), chosen by SNI
//! before the handshake starts, as Envoy picks a filter chain.
use std::{io, path::Path, sync::Arc};

use rustls::{
    ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::ResolvesServerCert,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};

use super::client_cert::{PinnedVerifier, Pins};
use crate::{
    files::FileSource,
    plan::{HostPattern, ServerTls, TlsMode, TlsVersion},
};

/// ALPN offered on every terminating server, as Istio configures Envoy.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a server's TLS configuration cannot be built from files that
/// passed validation at load (they changed since, or the key type is
/// one rustls cannot sign with).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("no certificate configured")]
    NoCertificate,
    #[error("TLS version range {min:?}..{max:?} leaves no version this gateway offers")]
    NoVersion { min: String, max: String },
    #[error("client certificate verification: {0}")]
    ClientVerifier(String),
    /// ISTIO_MUTUAL origination: the mesh's workload certificates are not here.
    #[error(
        "ISTIO_MUTUAL origination needs the mesh's workload certificates, which this gateway does not have"
    )]
    NoMeshIdentity,
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls configuration for one terminating server, reading
/// its certificates from `files`.
pub fn server_config(
    tls: &ServerTls,
    files: &dyn FileSource,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(provider(&tls.cipher_suites_resolved));
    let versions = versions(tls.min_protocol_version, tls.max_protocol_version)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let mutual = matches!(tls.mode, TlsMode::Mutual | TlsMode::OptionalMutual);
    let builder = match (&tls.client_ca, mutual) {
        (Some(ca), true) => builder.with_client_cert_verifier(Arc::new(PinnedVerifier {
            inner: client_verifier(files, ca, tls.client_crl.as_deref(), tls.mode, &provider)?,
            pins: Pins::from_tls(tls),
        })),
        _ => builder.with_no_client_auth(),
    };
    let mut keys = Vec::new();
    for pair in &tls.certificates {
        let chain = read_chain(files, &pair.certificate)?;
        let key = provider
            .key_provider
            .load_private_key(read_key(files, &pair.private_key)?)?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match()?;
        keys.push(Arc::new(certified));
    }
    if keys.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    let mut config = builder.with_cert_resolver(Arc::new(ByKeyType(keys)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's suite order decides, as in Envoy.
    config.ignore_client_order = true;
    // Resumption: TLS 1.3 tickets and TLS 1.2 tickets both come from a
    // ticketer whose key rotates (every 6 hours, keeping the previous one).
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

/// A server's certificates (Istio allows one RSA and one ECDSA, through
/// `credentialNames` or `tlsCertificates`): the first whose key can sign
/// with a scheme the client offers, as Envoy picks among its certificates.
#[derive(Debug)]
struct ByKeyType(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ByKeyType {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        choose(&self.0, hello.signature_schemes()).cloned()
    }
}

/// The first key that supports one of `offered`, else the first key (the
/// handshake then fails the way it would with a single certificate).
fn choose<'a>(
    keys: &'a [Arc<CertifiedKey>],
    offered: &[rustls::SignatureScheme],
) -> Option<&'a Arc<CertifiedKey>> {
    keys.iter()
        .find(|certified| certified.key.choose_scheme(offered).is_some())
        .or_else(|| keys.first())
}

/// ring's provider with Envoy's (BoringSSL's) server preference: AES-128-GCM
/// first, then AES-256-GCM, then ChaCha20-Poly1305, for TLS 1.3 and TLS
/// 1.2 alike. The TLS 1.2 suites are limited to `cipher_suites` in their
/// given order when any are given (Envoy's `cipher_suites` governs TLS 1.2
/// only; TLS 1.3 suites are fixed).
fn provider(cipher_suites: &[rustls::CipherSuite]) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let all = std::mem::take(&mut provider.cipher_suites);
    let (mut tls13, mut tls12): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|suite| suite.version() == &rustls::version::TLS13);
    tls13.sort_by_key(|suite| preference(suite.suite()));
    tls12.sort_by_key(|suite| preference(suite.suite()));
    provider.cipher_suites = tls13;
    if cipher_suites.is_empty() {
        provider.cipher_suites.extend(tls12);
        return provider;
    }
    for wanted in cipher_suites {
        if let Some(suite) = tls12.iter().find(|s| s.suite() == *wanted) {
            provider.cipher_suites.push(*suite);
        }
    }
    provider
}

/// BoringSSL's order: AES-128-GCM, AES-256-GCM, ChaCha20 (ECDSA before RSA
/// within TLS 1.2 only matters for which certificate is chosen, and that is
/// decided by the client's signature schemes).
fn preference(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// TLS versions in `[min, max]`; Istio's default minimum at a gateway is 1.2,
/// and rustls offers nothing older.
fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsSetupError> {
    let low = min
        .filter(|v| *v != TlsVersion::Auto)
        .unwrap_or(TlsVersion::V1_2);
    let high = max
        .filter(|v| *v != TlsVersion::Auto)
        .unwrap_or(TlsVersion::V1_3);
    let offered: Vec<&'static SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (low..=high).contains(v))
    .map(|(_, v)| v)
    .collect();
    if offered.is_empty() {
        return Err(TlsSetupError::NoVersion {
            min: low.name().to_string(),
            max: high.name().to_string(),
        });
    }
    Ok(offered)
}

/// Verifies client certificates against the CA and, with a revocation
/// list, refuses revoked ones (every certificate of the chain checked,
/// and one whose issuer has no list in the file refused: Envoy's rule
/// that a chain with any list must have one for every CA).
fn client_verifier(
    files: &dyn FileSource,
    ca_path: &str,
    crl_path: Option<&str>,
    mode: TlsMode,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(files, ca_path)? {
        roots
            .add(cert)
            .map_err(|err| TlsSetupError::ClientVerifier(format!("{ca_path}: {err}")))?;
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = match crl_path {
        Some(path) => builder.with_crls(read_crls(files, path)?),
        None => builder,
    };
    let builder = if mode == TlsMode::OptionalMutual {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|err| TlsSetupError::ClientVerifier(err.to_string()))
}

fn read(files: &dyn FileSource, path: &str) -> Result<Vec<u8>, TlsSetupError> {
    files
        .read(Path::new(path))
        .map_err(|source| TlsSetupError::Read {
            path: path.to_string(),
            source,
        })
}

pub(super) fn read_chain(
    files: &dyn FileSource,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(files, path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|err| TlsSetupError::Pem {
            path: path.to_string(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Pem {
            path: path.to_string(),
            reason: "no PEM certificate".into(),
        });
    }
    Ok(chain)
}

/// The certificate revocation lists of a PEM file (at least one).
pub(super) fn read_crls(
    files: &dyn FileSource,
    path: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    let pem = read(files, path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|err| TlsSetupError::Pem {
                path: path.to_string(),
                reason: err.to_string(),
            })?;
    if crls.is_empty() {
        return Err(TlsSetupError::Pem {
            path: path.to_string(),
            reason: "no PEM certificate revocation list".into(),
        });
    }
    Ok(crls)
}

pub(super) fn read_key(
    files: &dyn FileSource,
    path: &str,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(files, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| TlsSetupError::Pem {
        path: path.to_string(),
        reason: err.to_string(),
    })
}

/// The entry of `servers` whose hosts match `sni` most specifically, as
/// Envoy's filter-chain match does: exact name, then longest `*.suffix`,
/// then a `*` server, which also takes clients that send no SNI
/// ([`crate::plan::best_match`], the one host precedence rule).
pub fn select<'a, T>(
    servers: &'a [T],
    hosts: impl Fn(&T) -> &[HostPattern],
    sni: Option<&str>,
) -> Option<&'a T> {
    crate::plan::best_match(servers, hosts, sni)
}

/// A fatal TLS alert record, sent before any handshake message of ours.
pub fn alert(description: AlertDescription) -> [u8; 7] {
    let version = ProtocolVersion::TLSv1_2.to_array();
    [0x15, version[0], version[1], 0, 2, 2, description as u8]
}

/// The alerts the listener sends itself, before rustls is involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AlertDescription {
    /// No server for this client (no SNI and no `*` server).
    HandshakeFailure = 40,
    /// The bytes were a TLS record but not a ClientHello we can read.
    DecodeError = 50,
    /// The SNI names no server on this port (RFC 6066 §3).
    UnrecognizedName = 112,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::files::Disk;

    fn patterns(hosts: &[&str]) -> Vec<HostPattern> {
        hosts
            .iter()
            .map(|h| HostPattern::from_server_host(h))
            .collect()
    }

    fn pick(servers: &[Vec<HostPattern>], sni: Option<&str>) -> Option<usize> {
        select(servers, |s| s.as_slice(), sni).map(|chosen| {
            servers
                .iter()
                .position(|s| std::ptr::eq(s, chosen))
                .unwrap_or(99)
        })
    }

    #[test]
    fn exact_sni_beats_wildcards_and_star() {
        let servers = vec![
            patterns(&["*"]),
            patterns(&["*.example.com"]),
            patterns(&["a.example.com"]),
        ];
        assert_eq!(pick(&servers, Some("a.example.com")), Some(2));
        assert_eq!(pick(&servers, Some("b.example.com")), Some(1));
        assert_eq!(pick(&servers, Some("other.org")), Some(0));
    }

    #[test]
    fn longest_wildcard_wins_whatever_the_order() {
        let servers = vec![patterns(&["*.com"]), patterns(&["*.example.com"])];
        assert_eq!(pick(&servers, Some("a.example.com")), Some(1));
        let reversed = vec![patterns(&["*.example.com"]), patterns(&["*.com"])];
        assert_eq!(pick(&reversed, Some("a.example.com")), Some(0));
    }

    #[test]
    fn no_sni_only_reaches_a_star_server() {
        let servers = vec![patterns(&["a.example.com"])];
        assert_eq!(pick(&servers, None), None);
        let with_star = vec![patterns(&["a.example.com"]), patterns(&["*"])];
        assert_eq!(pick(&with_star, None), Some(1));
    }

    #[test]
    fn unknown_sni_without_star_matches_nothing() {
        let servers = vec![patterns(&["a.example.com", "*.b.example.com"])];
        assert_eq!(pick(&servers, Some("example.com")), None);
        assert_eq!(pick(&servers, Some("b.example.com")), None);
    }

    #[test]
    fn version_range_defaults_to_tls12_and_13() {
        use TlsVersion::{Auto, V1_0, V1_1, V1_2, V1_3};
        let v =
            |min, max| versions(min, max).map(|v| v.iter().map(|v| v.version).collect::<Vec<_>>());
        let both = [ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3];
        assert_eq!(v(None, None).unwrap(), both);
        assert_eq!(v(Some(Auto), Some(Auto)).unwrap(), both);
        assert_eq!(v(Some(V1_3), None).unwrap(), [ProtocolVersion::TLSv1_3]);
        assert_eq!(
            v(Some(V1_0), Some(V1_2)).unwrap(),
            [ProtocolVersion::TLSv1_2]
        );
        assert!(v(Some(V1_0), Some(V1_1)).is_err());
    }

    #[test]
    fn cipher_suites_limit_tls12_in_order_and_keep_tls13() {
        use rustls::CipherSuite as C;
        let p = provider(&[
            C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ]);
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            [
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            ]
        );
        assert_eq!(
            p.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .count(),
            3
        );
    }

    fn certified(cert: &str, key: &str) -> Arc<CertifiedKey> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proxy/testdata/");
        let chain = read_chain(&Disk, &format!("{dir}{cert}")).expect("chain");
        let key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(read_key(&Disk, &format!("{dir}{key}")).expect("key"))
            .expect("signing key");
        Arc::new(CertifiedKey::new(chain, key))
    }

    #[test]
    fn the_certificate_is_chosen_by_the_schemes_the_client_offers() {
        use rustls::SignatureScheme as S;
        let rsa = certified("rsa.crt", "rsa.key");
        let ec = certified("ec.crt", "ec.key");
        let keys = [Arc::clone(&rsa), Arc::clone(&ec)];
        let chosen = |offered: &[S]| choose(&keys, offered).map(|k| k.cert.clone());
        assert_eq!(chosen(&[S::ECDSA_NISTP256_SHA256]), Some(ec.cert.clone()));
        assert_eq!(chosen(&[S::RSA_PSS_SHA256]), Some(rsa.cert.clone()));
        assert_eq!(
            chosen(&[S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256]),
            Some(rsa.cert.clone()),
            "both offered: the configured order decides"
        );
        assert_eq!(chosen(&[S::ED25519]), Some(rsa.cert.clone()));
        assert!(choose(&[], &[S::RSA_PSS_SHA256]).is_none());
    }

    #[test]
    fn suites_follow_boringssl_preference_aes128_first() {
        use rustls::CipherSuite as C;
        let order: Vec<C> = provider(&[])
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            order[..3],
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(order.len(), 9);
        assert!(matches!(
            order[3],
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        ));
    }

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proxy/testdata/");

    #[test]
    fn tls12_suites_follow_boringssl_preference_aes128_then_aes256_then_chacha() {
        use rustls::CipherSuite as C;
        let tls12: Vec<C> = provider(&[])
            .cipher_suites
            .iter()
            .skip(3)
            .map(|s| s.suite())
            .collect();
        let rank = |suite: &C| {
            [
                (C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0),
                (C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 0),
                (C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, 1),
                (C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, 1),
                (C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, 2),
                (C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, 2),
            ]
            .iter()
            .find(|(s, _)| s == suite)
            .map(|(_, rank)| *rank)
        };
        let ranks: Vec<_> = tls12.iter().map(rank).collect();
        assert_eq!(
            ranks,
            [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)]
        );
    }

    #[test]
    fn a_chain_file_gives_every_certificate_it_holds() {
        assert_eq!(
            read_chain(&Disk, &format!("{TESTDATA}rsa.crt"))
                .expect("chain")
                .len(),
            1
        );
        let dir = std::env::temp_dir().join(format!("gateway-tls-chain-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let both = dir.join("both.crt");
        let pem = [
            fs::read(format!("{TESTDATA}rsa.crt")).expect("rsa"),
            fs::read(format!("{TESTDATA}ec.crt")).expect("ec"),
        ]
        .concat();
        fs::write(&both, pem).expect("write");
        let chain = read_chain(&Disk, &both.to_string_lossy()).expect("chain");
        let not_pem = dir.join("key-only.pem");
        fs::write(&not_pem, "no certificate here\n").expect("write");
        let refused = read_chain(&Disk, &not_pem.to_string_lossy());
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(chain.len(), 2);
        assert!(matches!(refused, Err(TlsSetupError::Pem { .. })));
    }

    #[test]
    fn only_optional_mutual_lets_a_client_without_a_certificate_in() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = format!("{TESTDATA}ec.crt");
        let mutual =
            client_verifier(&Disk, &ca, None, TlsMode::Mutual, &provider).expect("verifier");
        let optional = client_verifier(&Disk, &ca, None, TlsMode::OptionalMutual, &provider)
            .expect("verifier");
        assert!(mutual.client_auth_mandatory());
        assert!(!optional.client_auth_mandatory());
    }

    /// A server of `mode` with the RSA test certificate (and the EC one as
    /// the client CA), handshaking with a client that offers no certificate.
    fn handshake_without_client_certificate(mode: TlsMode) -> Result<(), rustls::Error> {
        let tls = ServerTls {
            mode,
            certificates: vec![crate::model::CertificateFiles {
                certificate: format!("{TESTDATA}rsa.crt"),
                private_key: format!("{TESTDATA}rsa.key"),
            }],
            client_ca: Some(format!("{TESTDATA}ec.crt")),
            ..ServerTls::default()
        };
        let server_config = server_config(&tls, &Disk).expect("server config");
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("app.test").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name)?;
        let mut server = rustls::ServerConnection::new(server_config)?;
        for _ in 0..10 {
            let mut flight = Vec::new();
            client.write_tls(&mut flight).expect("client flight");
            server.read_tls(&mut flight.as_slice()).expect("to server");
            server.process_new_packets()?;
            let mut flight = Vec::new();
            server.write_tls(&mut flight).expect("server flight");
            client.read_tls(&mut flight.as_slice()).expect("to client");
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish in ten flights");
    }

    /// Accepts any server certificate: these tests are about the server's
    /// side of the handshake.
    #[derive(Debug)]
    struct AnyServer;

    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    #[test]
    fn a_server_presents_its_certificate_and_mutual_tls_demands_the_clients() {
        assert_eq!(
            handshake_without_client_certificate(TlsMode::Simple),
            Ok(())
        );
        assert_eq!(
            handshake_without_client_certificate(TlsMode::OptionalMutual),
            Ok(())
        );
        assert!(handshake_without_client_certificate(TlsMode::Mutual).is_err());
    }

    #[test]
    fn unrecognized_name_alert_is_a_fatal_alert_record() {
        assert_eq!(
            alert(AlertDescription::UnrecognizedName),
            [0x15, 3, 3, 0, 2, 2, 112]
        );
    }
}
