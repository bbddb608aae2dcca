//! Istio's extra checks on a client certificate that chained to the CA:
//! `subjectAltNames` (exact), `verifyCertificateSpki` (base64 SHA-256 of
//! the public key info) and `verifyCertificateHash` (hex SHA-256 of the
//! certificate). They run inside the handshake, so a refused client gets a
//! `bad_certificate` alert as from Envoy, never an HTTP answer.
use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use crate::plan::ServerTls;

/// What a client certificate must also satisfy; empty lists check nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    subject_alt_names: Vec<String>,
    /// Base64 (standard alphabet) SHA-256 digests of SubjectPublicKeyInfo.
    spki: Vec<String>,
    /// Lower-case hex SHA-256 digests of the whole certificate, colons removed.
    hashes: Vec<String>,
}

impl Pins {
    /// The pins a Gateway server's `tls` block asks for.
    pub fn from_tls(tls: &ServerTls) -> Self {
        Self {
            subject_alt_names: tls.subject_alt_names.clone(),
            spki: tls.verify_certificate_spki.clone(),
            hashes: tls
                .verify_certificate_hash
                .iter()
                .map(|h| h.replace(':', "").to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether no check is asked for.
    pub fn is_empty(&self) -> bool {
        self.subject_alt_names.is_empty() && self.spki.is_empty() && self.hashes.is_empty()
    }

    /// Checks `cert` (DER). SAN must match when given; of SPKI and hash,
    /// either one matching is enough (Envoy's rule when both are set).
    pub fn check(&self, cert: &[u8]) -> Result<(), &'static str> {
        let parsed = der::certificate(cert).ok_or("client certificate cannot be parsed")?;
        if !self.subject_alt_names.is_empty()
            && !parsed
                .subject_alt_names
                .iter()
                .any(|san| self.subject_alt_names.contains(san))
        {
            return Err("client certificate subject alternative names do not match");
        }
        if self.spki.is_empty() && self.hashes.is_empty() {
            return Ok(());
        }
        let spki = base64(ring::digest::digest(&ring::digest::SHA256, parsed.spki).as_ref());
        let hash = hex(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
        if self.spki.contains(&spki) || self.hashes.contains(&hash) {
            Ok(())
        } else {
            Err("client certificate matches no pinned SPKI or hash")
        }
    }
}

/// A verifier that first verifies the chain with `inner`, then the pins.
#[derive(Debug)]
pub struct PinnedVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub pins: Pins,
}

impl ClientCertVerifier for PinnedVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity).map_err(|reason| {
            log::debug!("client certificate refused: {reason}");
            Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The few X.509 fields the pins need, read with a bounds-checked DER walk.
mod der {
    /// Fields of one certificate; slices borrow the DER.
    pub(super) struct Certificate<'a> {
        /// SubjectPublicKeyInfo, tag and length included.
        pub spki: &'a [u8],
        /// dNSName, rfc822Name, URI and IP SANs as text.
        pub subject_alt_names: Vec<String>,
    }

    /// One TLV read from the front of the input: (tag, the whole element,
    /// its contents, what follows it).
    pub(super) type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

    pub(super) fn element(input: &[u8]) -> Option<Element<'_>> {
        let tag = *input.first()?;
        let first = *input.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let mut be = [0u8; 4];
            be[4 - count..].copy_from_slice(input.get(2..2 + count)?);
            (u32::from_be_bytes(be) as usize, 2 + count)
        };
        let end = header.checked_add(len)?;
        let whole = input.get(..end)?;
        let contents = input.get(header..end)?;
        let rest = input.get(end..)?;
        Some((tag, whole, contents, rest))
    }

    const SEQUENCE: u8 = 0x30;
    const EXPLICIT_VERSION: u8 = 0xa0;
    const EXTENSIONS: u8 = 0xa3;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    /// 2.5.29.17, subjectAltName.
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

    /// Parses `Certificate ::= SEQUENCE { tbsCertificate, ... }`.
    pub(super) fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
        let (SEQUENCE, _, cert, _) = element(der)? else {
            return None;
        };
        let (SEQUENCE, _, mut tbs, _) = element(cert)? else {
            return None;
        };
        if tbs.first() == Some(&EXPLICIT_VERSION) {
            tbs = element(tbs)?.3;
        }
        // serialNumber, signature, issuer, validity, subject.
        for _ in 0..5 {
            tbs = element(tbs)?.3;
        }
        let (SEQUENCE, spki, _, mut rest) = element(tbs)? else {
            return None;
        };
        let mut subject_alt_names = Vec::new();
        while !rest.is_empty() {
            let (tag, _, contents, next) = element(rest)?;
            rest = next;
            if tag == EXTENSIONS {
                let (SEQUENCE, _, mut extensions, _) = element(contents)? else {
                    return None;
                };
                while !extensions.is_empty() {
                    let (_, _, extension, next) = element(extensions)?;
                    extensions = next;
                    if let Some(names) = san_extension(extension) {
                        subject_alt_names.extend(names?);
                    }
                }
            }
        }
        Some(Certificate {
            spki,
            subject_alt_names,
        })
    }

    /// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }`:
    /// `None` when not the SAN extension, `Some(None)` when it is but is malformed.
    pub(super) fn san_extension(extension: &[u8]) -> Option<Option<Vec<String>>> {
        let (OID, _, oid, mut rest) = element(extension)? else {
            return None;
        };
        if oid != SAN_OID {
            return None;
        }
        Some((|| {
            if rest.first() == Some(&BOOLEAN) {
                rest = element(rest)?.3;
            }
            let (OCTET_STRING, _, value, _) = element(rest)? else {
                return None;
            };
            let (SEQUENCE, _, mut names, _) = element(value)? else {
                return None;
            };
            let mut out = Vec::new();
            while !names.is_empty() {
                let (tag, _, name, next) = element(names)?;
                names = next;
                match tag {
                    // rfc822Name [1], dNSName [2], uniformResourceIdentifier [6]: IA5String.
                    0x81 | 0x82 | 0x86 => out.push(String::from_utf8_lossy(name).into_owned()),
                    // iPAddress [7]: 4 or 16 octets.
                    0x87 => {
                        if let Ok(v4) = <[u8; 4]>::try_from(name) {
                            out.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(name) {
                            out.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
            Some(out)
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x10, 0xff]), "00ab10ff");
    }

    #[test]
    fn der_lengths_take_the_short_form_or_one_to_four_octets() {
        let short = [0x04, 0x02, 0xaa, 0xbb, 0xcc];
        let (tag, whole, contents, rest) = der::element(&short).unwrap();
        assert_eq!(
            (tag, whole, contents, rest),
            (0x04, &short[..4], &[0xaa, 0xbb][..], &[0xcc][..])
        );
        // 0x80 is BER's indefinite length, which DER forbids.
        let mut indefinite = vec![0x04, 0x80];
        indefinite.extend([0u8; 130]);
        assert!(der::element(&indefinite).is_none());
        let long_one = [0x04, 0x81, 0x01, 0xaa];
        assert_eq!(der::element(&long_one).unwrap().2, &[0xaa]);
        let long_four = [0x04, 0x84, 0x00, 0x00, 0x00, 0x01, 0xaa];
        assert_eq!(der::element(&long_four).unwrap().2, &[0xaa]);
        let long_five = [0x04, 0x85, 0x00, 0x00, 0x00, 0x00, 0x01, 0xaa];
        assert!(der::element(&long_five).is_none());
    }

    #[test]
    fn san_extension_reads_ip_addresses_and_skips_the_critical_flag() {
        let mut names = vec![0x87, 4, 192, 0, 2, 1, 0x87, 16, 0x20, 0x01, 0x0d, 0xb8];
        names.extend([0; 11]);
        names.extend([1, 0x82, 3, b'a', b'.', b'b', 0x87, 3, 1, 2, 3]);
        let mut value = vec![0x30, names.len() as u8];
        value.extend(names);
        let mut octets = vec![0x04, value.len() as u8];
        octets.extend(value);
        let expected = vec![
            "192.0.2.1".to_string(),
            "2001:db8::1".to_string(),
            "a.b".to_string(),
        ];
        let oid = [0x06, 3, 0x55, 0x1d, 0x11];
        for critical in [&[][..], &[0x01, 0x01, 0xff]] {
            let extension = [&oid[..], critical, &octets].concat();
            assert_eq!(der::san_extension(&extension), Some(Some(expected.clone())));
        }
        let other = [&[0x06, 3, 0x55, 0x1d, 0x0f][..], &octets].concat();
        assert_eq!(der::san_extension(&other), None, "not the SAN extension");
    }

    #[test]
    fn pins_come_from_the_tls_block_with_hashes_normalised() {
        let tls = ServerTls {
            subject_alt_names: vec!["spiffe://example.org/client".into()],
            verify_certificate_spki: vec!["AAAA".into()],
            verify_certificate_hash: vec!["AB:CD:0F".into()],
            ..ServerTls::default()
        };
        let pins = Pins::from_tls(&tls);
        assert_eq!(
            pins,
            Pins {
                subject_alt_names: vec!["spiffe://example.org/client".into()],
                spki: vec!["AAAA".into()],
                hashes: vec!["abcd0f".into()],
            }
        );
        assert!(Pins::from_tls(&ServerTls::default()).is_empty());
    }

    #[test]
    fn any_one_pin_makes_the_set_non_empty() {
        assert!(pins(&[], &[], &[]).is_empty());
        assert!(!pins(&["a"], &[], &[]).is_empty());
        assert!(!pins(&[], &["a"], &[]).is_empty());
        assert!(!pins(&[], &[], &["a"]).is_empty());
    }

    #[test]
    fn a_lone_spki_or_hash_pin_must_match() {
        let cert = include_bytes!("testdata/client.der");
        assert!(pins(&[], &[], &["00"]).check(cert).is_err());
        assert!(pins(&[], &["AAAA"], &[]).check(cert).is_err());
        let hash = "4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a";
        assert!(
            pins(&[], &[], &[hash]).check(cert).is_err(),
            "a foreign digest"
        );
    }

    /// The chain verifier of a MUTUAL (`optional` false) or
    /// OPTIONAL_MUTUAL server, trusting the test CA.
    fn chain_verifier(optional: bool) -> Arc<dyn ClientCertVerifier> {
        use rustls::pki_types::pem::PemObject;
        let ca = CertificateDer::from_pem_slice(include_bytes!("testdata/ec.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().unwrap()
    }

    #[test]
    fn the_pinned_verifier_asks_for_certificates_as_its_chain_verifier_does() {
        for optional in [false, true] {
            let inner = chain_verifier(optional);
            let pinned = PinnedVerifier {
                inner: Arc::clone(&inner),
                pins: pins(&["x"], &[], &[]),
            };
            assert!(pinned.offer_client_auth());
            assert_eq!(pinned.client_auth_mandatory(), !optional);
            assert!(!pinned.root_hint_subjects().is_empty());
            let subjects = |v: &dyn ClientCertVerifier| -> Vec<Vec<u8>> {
                v.root_hint_subjects()
                    .iter()
                    .map(|s| s.as_ref().to_vec())
                    .collect()
            };
            assert_eq!(subjects(&pinned), subjects(&*inner));
            assert!(!pinned.supported_verify_schemes().is_empty());
            assert_eq!(
                pinned.supported_verify_schemes(),
                inner.supported_verify_schemes()
            );
        }
        let none = PinnedVerifier {
            inner: Arc::new(rustls::server::NoClientAuth),
            pins: pins(&["x"], &[], &[]),
        };
        assert!(!none.offer_client_auth());
    }

    #[test]
    fn der_walk_never_panics_on_truncated_input() {
        let cert = include_bytes!("testdata/client.der");
        for len in 0..cert.len() {
            assert!(der::certificate(&cert[..len]).is_none(), "prefix {len}");
        }
        let parsed = der::certificate(cert).expect("full certificate parses");
        assert!(
            parsed
                .subject_alt_names
                .contains(&"spiffe://example.org/client".to_string()),
            "{:?}",
            parsed.subject_alt_names
        );
    }

    fn pins(san: &[&str], spki: &[&str], hash: &[&str]) -> Pins {
        Pins {
            subject_alt_names: san.iter().map(ToString::to_string).collect(),
            spki: spki.iter().map(ToString::to_string).collect(),
            hashes: hash.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn san_pin_matches_exactly() {
        let cert = include_bytes!("testdata/client.der");
        assert!(
            pins(&["spiffe://example.org/client"], &[], &[])
                .check(cert)
                .is_ok()
        );
        assert!(
            pins(&["spiffe://example.org/other"], &[], &[])
                .check(cert)
                .is_err()
        );
        assert!(pins(&["client.example.org"], &[], &[]).check(cert).is_ok());
        assert!(pins(&["example.org"], &[], &[]).check(cert).is_err());
    }

    #[test]
    fn hash_and_spki_pins_are_alternatives() {
        let cert = include_bytes!("testdata/client.der");
        let hash = hex(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
        let spki = include_str!("testdata/client.spki").trim();
        assert!(pins(&[], &[], &[&hash]).check(cert).is_ok());
        assert!(pins(&[], &[spki], &[]).check(cert).is_ok());
        assert!(pins(&[], &[spki], &["00"]).check(cert).is_ok());
        assert!(pins(&[], &["AAAA"], &[&hash]).check(cert).is_ok());
        assert!(pins(&[], &["AAAA"], &["00"]).check(cert).is_err());
    }
}
