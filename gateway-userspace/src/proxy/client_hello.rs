//! Reading the TLS ClientHello before any handshake, as Envoy's
//! `tls_inspector` listener filter does: the SNI picks the passthrough
//! backend or the certificate, and on a port that serves both TLS and
//! plaintext the first bytes tell which one the client speaks.
//!
//! Incremental: the caller keeps appending what it read to one buffer and
//! calls [`inspect`] again until the answer is not [`Inspection::NeedMore`].
//! The ClientHello may span several TCP segments and several TLS records
//! (a handshake message fragmented across records is reassembled).
//!
//! Acceptance follows BoringSSL, which Envoy's inspector runs: the SNI
//! extension must hold exactly one `host_name` entry, non-empty, at most
//! 255 bytes, without NUL; the name is kept as sent (a trailing dot is
//! kept, so `example.com.` does not match `example.com`, as in Envoy) and
//! lower-cased, since DNS names compare case-insensitively. Stricter than
//! BoringSSL: the name must be printable ASCII (no Gateway host can match
//! anything else), and a malformed ALPN list is rejected instead of being
//! left to the TLS stack that would reject it a moment later.
//!
//! An SSLv2-compatible ClientHello (RFC 5246 appendix E.2) is
//! [`Malformed::SslV2`]: it is recognisably a TLS client, so it must not be
//! handed to an HTTP parser, but it has no extensions (no SNI, no ALPN) and
//! rustls cannot complete a handshake from it.

/// Largest ClientHello accepted, counted in bytes on the wire (record
/// headers included): 64 KiB, what Envoy's TLS inspector accepts
/// (`max_client_hello_size`), so a client Envoy serves is served here.
/// Real ClientHellos are under 2 KiB, or a few KiB with post-quantum key
/// shares and large ticket or certificate-authority extensions; the bound
/// is what one unauthenticated connection can make us buffer.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Largest TLS plaintext record body (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER: usize = 4;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SNI_HOST_NAME: u8 = 0;
const MAX_HOST_NAME: usize = 255;
/// TLS 1.3 in `supported_versions`.
pub const TLS13: u16 = 0x0304;

/// What the bytes read so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspection {
    /// A prefix of a plausible ClientHello: read more and ask again.
    NeedMore,
    /// Cannot be a TLS handshake: on a mixed port, serve it as plaintext.
    NotTls,
    /// A complete, well-formed ClientHello.
    Hello(ClientHello),
    /// A TLS handshake that is not a usable ClientHello: close the connection.
    Malformed(Malformed),
}

/// What routing needs from a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// `server_name`, lower-cased; `None` when the client sent none.
    pub sni: Option<String>,
    /// ALPN protocols in the client's order (`h2`, `http/1.1`, ...).
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` of the ClientHello body (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// `supported_versions` extension, in the client's order; empty if absent.
    pub supported_versions: Vec<u16>,
}

impl ClientHello {
    /// The client can speak TLS 1.3 (it lists it in `supported_versions`,
    /// the only way TLS 1.3 is offered).
    pub fn offers_tls13(&self) -> bool {
        self.supported_versions.contains(&TLS13)
    }
}

/// Why a TLS handshake is not a usable ClientHello.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Over [`MAX_CLIENT_HELLO`] on the wire.
    #[error("ClientHello larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    /// A record of length 0 or over 2^14.
    #[error("TLS record length {0} out of range")]
    RecordLength(usize),
    /// Another record type before the ClientHello was complete.
    #[error("non-handshake record (content type {0}) inside the ClientHello")]
    Interleaved(u8),
    /// The first handshake message is some other message.
    #[error("first handshake message is type {0}, not ClientHello")]
    NotClientHello(u8),
    /// An SSLv2-format ClientHello (see the module documentation).
    #[error("SSLv2-compatible ClientHello is not supported")]
    SslV2,
    /// A field (named) is truncated or out of range.
    #[error("ClientHello field does not parse: {0}")]
    Syntax(&'static str),
    /// The same extension twice (RFC 8446 §4.2 forbids it).
    #[error("extension {0} appears twice")]
    DuplicateExtension(u16),
    /// A `server_name` BoringSSL, or our ASCII rule, refuses.
    #[error("invalid server_name: {0}")]
    ServerName(&'static str),
    /// An empty ALPN list or an empty protocol name.
    #[error("invalid ALPN extension")]
    Alpn,
}

/// Inspects the first bytes of a connection (everything read so far).
/// Bytes after the ClientHello are ignored.
pub fn inspect(buf: &[u8]) -> Inspection {
    match reassemble(buf) {
        Ok(Some(message)) => match parse_client_hello(&message) {
            Ok(hello) => Inspection::Hello(hello),
            Err(malformed) => Inspection::Malformed(malformed),
        },
        Ok(None) => Inspection::NeedMore,
        Err(Stop::NotTls) => Inspection::NotTls,
        Err(Stop::Malformed(malformed)) => Inspection::Malformed(malformed),
    }
}

enum Stop {
    NotTls,
    Malformed(Malformed),
}

impl From<Malformed> for Stop {
    fn from(malformed: Malformed) -> Self {
        Self::Malformed(malformed)
    }
}

/// Collects the ClientHello handshake message (header included) from the
/// records at the start of `buf`; `None` while it is incomplete.
fn reassemble(buf: &[u8]) -> Result<Option<Vec<u8>>, Stop> {
    if !looks_like_tls(buf)? {
        return Ok(None);
    }
    let mut message = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            // A later record's header may be partial: check what is there.
            return match buf.get(pos) {
                Some(&content_type) if content_type != CONTENT_HANDSHAKE => {
                    Err(Malformed::Interleaved(content_type).into())
                }
                _ => Ok(None),
            };
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(Malformed::Interleaved(header[0]).into());
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        // RFC 8446 §5.1: handshake records are never empty.
        if length == 0 || length > MAX_RECORD {
            return Err(Malformed::RecordLength(length).into());
        }
        if pos + RECORD_HEADER + length > MAX_CLIENT_HELLO {
            return Err(Malformed::TooLarge.into());
        }
        let body_start = pos + RECORD_HEADER;
        let available = buf.len().min(body_start + length);
        message.extend_from_slice(buf.get(body_start..available).unwrap_or_default());
        if let Some(needed) = message_length(&message)? {
            if message.len() >= needed {
                message.truncate(needed);
                return Ok(Some(message));
            }
        }
        // Past a partial record the next header is out of reach: NeedMore.
        pos = body_start + length;
    }
}

/// Decides from the first bytes alone whether this can be a TLS
/// handshake record: `Ok(true)` if so, `Ok(false)` while too few bytes
/// are in to tell an SSLv2 hello from garbage.
fn looks_like_tls(buf: &[u8]) -> Result<bool, Stop> {
    let Some(&first) = buf.first() else {
        return Ok(true);
    };
    if first & 0x80 != 0 {
        // SSLv2 record: 2-byte length with the high bit set, then
        // msg_type 1 (CLIENT-HELLO), then the offered version 3.x.
        return match (buf.get(2), buf.get(3)) {
            (Some(&1), Some(&3)) => Err(Malformed::SslV2.into()),
            (Some(&1), None) | (None, _) => Ok(false),
            _ => Err(Stop::NotTls),
        };
    }
    if first != CONTENT_HANDSHAKE {
        return Err(Stop::NotTls);
    }
    match buf.get(1) {
        // Record versions are 3.x (SSL 3.0 .. TLS 1.3's legacy 3.1/3.3).
        Some(&major) if major != 3 => Err(Stop::NotTls),
        _ => Ok(true),
    }
}

/// Length of the whole handshake message once its header is in, after
/// checking that it is a ClientHello of acceptable size.
fn message_length(message: &[u8]) -> Result<Option<usize>, Malformed> {
    match message.first() {
        Some(&msg_type) if msg_type != HANDSHAKE_CLIENT_HELLO => {
            return Err(Malformed::NotClientHello(msg_type));
        }
        _ => {}
    }
    let Some(header) = message.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    let body = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    // The message alone, without any record header, must already fit.
    if HANDSHAKE_HEADER + body + RECORD_HEADER > MAX_CLIENT_HELLO {
        return Err(Malformed::TooLarge);
    }
    Ok(Some(HANDSHAKE_HEADER + body))
}

/// Parses a complete ClientHello handshake message (RFC 8446 §4.1.2).
fn parse_client_hello(message: &[u8]) -> Result<ClientHello, Malformed> {
    let mut body = Reader(message.get(HANDSHAKE_HEADER..).unwrap_or_default());
    let legacy_version = body.u16().ok_or(Malformed::Syntax("legacy_version"))?;
    body.take(32).ok_or(Malformed::Syntax("random"))?;
    let session_id = body.vec8().ok_or(Malformed::Syntax("legacy_session_id"))?;
    if session_id.len() > 32 {
        return Err(Malformed::Syntax("legacy_session_id"));
    }
    let suites = body.vec16().ok_or(Malformed::Syntax("cipher_suites"))?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed::Syntax("cipher_suites"));
    }
    let compression = body
        .vec8()
        .ok_or(Malformed::Syntax("compression_methods"))?;
    if compression.is_empty() {
        return Err(Malformed::Syntax("compression_methods"));
    }
    let mut hello = ClientHello {
        sni: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
    };
    // TLS 1.0-1.2 clients may omit the extensions block entirely.
    if body.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader(body.vec16().ok_or(Malformed::Syntax("extensions"))?);
    if !body.is_empty() {
        return Err(Malformed::Syntax("trailing bytes after extensions"));
    }
    let mut seen = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or(Malformed::Syntax("extension"))?;
        let data = extensions.vec16().ok_or(Malformed::Syntax("extension"))?;
        if seen.contains(&kind) {
            return Err(Malformed::DuplicateExtension(kind));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.sni = Some(server_name(data)?),
            EXT_ALPN => hello.alpn = alpn(data).ok_or(Malformed::Alpn)?,
            EXT_SUPPORTED_VERSIONS => hello.supported_versions = supported_versions(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// RFC 6066 §3 `ServerNameList`, read as BoringSSL reads it: exactly one
/// `host_name` entry.
fn server_name(data: &[u8]) -> Result<String, Malformed> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16().ok_or(Malformed::ServerName("list"))?);
    let name_type = list.u8().ok_or(Malformed::ServerName("list"))?;
    let name = list.vec16().ok_or(Malformed::ServerName("list"))?;
    if !list.is_empty() || !outer.is_empty() {
        return Err(Malformed::ServerName("more than one name"));
    }
    if name_type != SNI_HOST_NAME {
        return Err(Malformed::ServerName("not a host_name"));
    }
    if name.is_empty() {
        return Err(Malformed::ServerName("empty"));
    }
    if name.len() > MAX_HOST_NAME {
        return Err(Malformed::ServerName("longer than 255 bytes"));
    }
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Malformed::ServerName("not printable ASCII"));
    }
    let name = String::from_utf8_lossy(name);
    Ok(name.to_ascii_lowercase())
}

/// RFC 7301 `ProtocolNameList`: non-empty, of non-empty names.
fn alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16()?);
    if !outer.is_empty() || list.is_empty() {
        return None;
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8()?;
        if name.is_empty() {
            return None;
        }
        protocols.push(name.to_vec());
    }
    Some(protocols)
}

/// RFC 8446 §4.2.1, ClientHello form: a u8-length list of u16 versions.
fn supported_versions(data: &[u8]) -> Result<Vec<u16>, Malformed> {
    let mut outer = Reader(data);
    let mut list = Reader(
        outer
            .vec8()
            .ok_or(Malformed::Syntax("supported_versions"))?,
    );
    if !outer.is_empty() || list.is_empty() || list.0.len() % 2 != 0 {
        return Err(Malformed::Syntax("supported_versions"));
    }
    let mut versions = Vec::new();
    while let Some(version) = list.u16() {
        versions.push(version);
    }
    Ok(versions)
}

/// A cursor over TLS wire data; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Real ClientHellos and hand-built ones, shared with the fuzz seed test.
#[cfg(test)]
pub(crate) mod samples {
    use std::sync::Arc;

    use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

    /// The first flight rustls sends for `server_name` offering `alpn`.
    pub(crate) fn rustls_hello(server_name: ServerName<'static>, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut connection =
            ClientConnection::new(Arc::new(config), server_name).expect("client connection");
        let mut wire = Vec::new();
        connection.write_tls(&mut wire).expect("write to a Vec");
        wire
    }

    /// A rustls ClientHello for `api.example.com` offering h2 and http/1.1.
    pub(crate) fn with_sni() -> Vec<u8> {
        let name = ServerName::try_from("api.example.com").expect("valid name");
        rustls_hello(name, &[b"h2", b"http/1.1"])
    }

    /// A rustls ClientHello to an IP address: no SNI, no ALPN.
    pub(crate) fn without_sni() -> Vec<u8> {
        let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        rustls_hello(ip, &[])
    }

    /// [`with_sni`]'s handshake message re-cut into two TLS records.
    pub(crate) fn split_in_two_records() -> Vec<u8> {
        let wire = with_sni();
        let message = wire.get(5..).expect("a record header");
        let (first, second) = message.split_at(message.len() / 2);
        let mut split = Vec::new();
        for fragment in [first, second] {
            split.extend([22, 3, 1]);
            split.extend(u16::try_from(fragment.len()).expect("small").to_be_bytes());
            split.extend(fragment);
        }
        split
    }
}

#[cfg(test)]
mod tests {
    use super::{samples::*, *};

    /// A minimal TLS 1.2-style ClientHello body with these extensions
    /// (`None` = no extensions block at all).
    fn body(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut b = vec![0x03, 0x03];
        b.extend([7u8; 32]);
        b.push(0); // empty session id
        b.extend([0x00, 0x02, 0x13, 0x01]); // one cipher suite
        b.extend([0x01, 0x00]); // null compression
        if let Some(extensions) = extensions {
            let mut block = Vec::new();
            for (kind, data) in extensions {
                block.extend(kind.to_be_bytes());
                block.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
                block.extend(data);
            }
            b.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
            b.extend(block);
        }
        b
    }

    fn handshake(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut m = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
        m.extend(body);
        m
    }

    /// `message` cut into records of at most `fragment` bytes.
    fn records(message: &[u8], fragment: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in message.chunks(fragment) {
            wire.extend([CONTENT_HANDSHAKE, 3, 1]);
            wire.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
            wire.extend(chunk);
        }
        wire
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![SNI_HOST_NAME];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name);
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend(entry);
        (EXT_SERVER_NAME, data)
    }

    fn hello(wire: &[u8]) -> ClientHello {
        match inspect(wire) {
            Inspection::Hello(hello) => hello,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    #[test]
    fn rustls_hello_gives_sni_alpn_and_tls13() {
        let hello = hello(&with_sni());
        assert_eq!(hello.sni.as_deref(), Some("api.example.com"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(hello.legacy_version, 0x0303);
        assert!(hello.offers_tls13());
    }

    #[test]
    fn rustls_hello_to_an_ip_has_no_sni() {
        let hello = hello(&without_sni());
        assert_eq!(hello.sni, None);
        assert!(hello.alpn.is_empty());
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        let wire = with_sni();
        for len in 0..wire.len() {
            assert_eq!(inspect(&wire[..len]), Inspection::NeedMore, "prefix {len}");
        }
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        let mut wire = with_sni();
        let expected = hello(&wire);
        wire.extend(b"\x17\x03\x03 early data");
        assert_eq!(hello(&wire), expected);
    }

    #[test]
    fn a_hello_fragmented_across_records_is_reassembled() {
        let message = handshake(&body(Some(&[sni_ext(b"a.example.com")])));
        for fragment in [1, 2, 3, 5, 40] {
            let wire = records(&message, fragment);
            assert_eq!(
                hello(&wire).sni.as_deref(),
                Some("a.example.com"),
                "{fragment}-byte records"
            );
            for len in 0..wire.len() {
                assert_eq!(inspect(&wire[..len]), Inspection::NeedMore, "prefix {len}");
            }
        }
    }

    #[test]
    fn the_real_hello_split_in_two_records_is_reassembled() {
        let split = split_in_two_records();
        assert_eq!(hello(&split), hello(&with_sni()));
        for len in 0..split.len() {
            assert_eq!(inspect(&split[..len]), Inspection::NeedMore, "prefix {len}");
        }
    }

    #[test]
    fn sni_is_lower_cased_and_a_trailing_dot_is_kept() {
        let wire = records(
            &handshake(&body(Some(&[sni_ext(b"API.Example.com.")]))),
            512,
        );
        assert_eq!(hello(&wire).sni.as_deref(), Some("api.example.com."));
    }

    #[test]
    fn hello_without_extensions_is_accepted() {
        let hello = hello(&records(&handshake(&body(None)), 512));
        assert_eq!(hello.sni, None);
        assert!(!hello.offers_tls13());
    }

    #[test]
    fn bad_server_names_are_malformed() {
        for name in [&b""[..], b"a\0b", b"caf\xc3\xa9", b"a b", &[b'a'; 256]] {
            let wire = records(&handshake(&body(Some(&[sni_ext(name)]))), 512);
            assert!(
                matches!(
                    inspect(&wire),
                    Inspection::Malformed(Malformed::ServerName(_))
                ),
                "{name:?}"
            );
        }
        let longest = [b'a'; 255];
        let wire = records(&handshake(&body(Some(&[sni_ext(&longest)]))), 512);
        assert_eq!(hello(&wire).sni.map(|s| s.len()), Some(255));
    }

    #[test]
    fn two_server_names_are_malformed() {
        let (_, mut data) = sni_ext(b"a.com");
        data.extend([SNI_HOST_NAME, 0, 1, b'b']);
        let list_len = u16::try_from(data.len() - 2).unwrap().to_be_bytes();
        data[..2].copy_from_slice(&list_len);
        let wire = records(&handshake(&body(Some(&[(EXT_SERVER_NAME, data)]))), 512);
        assert_eq!(
            inspect(&wire),
            Inspection::Malformed(Malformed::ServerName("more than one name"))
        );
    }

    #[test]
    fn duplicate_extensions_are_malformed() {
        let ext = sni_ext(b"a.com");
        let wire = records(&handshake(&body(Some(&[ext.clone(), ext]))), 512);
        assert_eq!(
            inspect(&wire),
            Inspection::Malformed(Malformed::DuplicateExtension(EXT_SERVER_NAME))
        );
    }

    #[test]
    fn alpn_list_is_read_in_order_and_bad_lists_are_malformed() {
        let good = (EXT_ALPN, vec![0, 6, 2, b'h', b'2', 2, b'h', b'3']);
        let wire = records(&handshake(&body(Some(&[good]))), 512);
        assert_eq!(hello(&wire).alpn, vec![b"h2".to_vec(), b"h3".to_vec()]);
        for bad in [
            vec![0, 0],                   // empty list
            vec![0, 1, 0],                // empty name
            vec![0, 4, 2, b'h', b'2'],    // list longer than the extension
            vec![0, 3, 2, b'h', b'2', 0], // bytes after the list
            vec![0, 3, 3, b'h', b'2'],    // name longer than the list
        ] {
            let wire = records(&handshake(&body(Some(&[(EXT_ALPN, bad.clone())]))), 512);
            assert_eq!(
                inspect(&wire),
                Inspection::Malformed(Malformed::Alpn),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn supported_versions_without_tls13_is_not_tls13() {
        let ext = (EXT_SUPPORTED_VERSIONS, vec![4, 0x03, 0x03, 0x7a, 0x7a]);
        let hello = hello(&records(&handshake(&body(Some(&[ext]))), 512));
        assert_eq!(hello.supported_versions, vec![0x0303, 0x7a7a]);
        assert!(!hello.offers_tls13());
    }

    #[test]
    fn supported_versions_must_be_one_non_empty_list_of_pairs() {
        let bad = [
            vec![0],                   // empty list
            vec![3, 0x03, 0x04, 0x03], // odd length
            vec![2, 0x03, 0x04, 0x03], // a byte after the list
            vec![4, 0x03, 0x04],       // list longer than the data
        ];
        for data in bad {
            let ext = (EXT_SUPPORTED_VERSIONS, data.clone());
            assert_eq!(
                inspect(&records(&handshake(&body(Some(&[ext]))), 512)),
                Inspection::Malformed(Malformed::Syntax("supported_versions")),
                "{data:?}"
            );
        }
    }

    #[test]
    fn truncated_fields_inside_a_complete_message_are_malformed() {
        let full = body(Some(&[sni_ext(b"a.com")]));
        for len in [0, 1, 33, 35, 38, full.len() - 1] {
            let wire = records(&handshake(&full[..len]), 512);
            assert!(
                matches!(inspect(&wire), Inspection::Malformed(_)),
                "body cut at {len}: {:?}",
                inspect(&wire)
            );
        }
    }

    #[test]
    fn plaintext_http_is_not_tls() {
        for request in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"G",
        ] {
            assert_eq!(inspect(request), Inspection::NotTls, "{request:?}");
        }
    }

    #[test]
    fn garbage_is_not_tls_and_an_empty_buffer_needs_more() {
        assert_eq!(inspect(b""), Inspection::NeedMore);
        assert_eq!(inspect(&[0x16, 0x02]), Inspection::NotTls);
        assert_eq!(inspect(&[0x00, 0x01, 0x02]), Inspection::NotTls);
        assert_eq!(inspect(&[0x80, 0x2e, 0x07]), Inspection::NotTls);
    }

    #[test]
    fn other_handshake_messages_and_records_are_malformed() {
        let mut server_hello = handshake(&body(None));
        server_hello[0] = 2;
        assert_eq!(
            inspect(&records(&server_hello, 512)),
            Inspection::Malformed(Malformed::NotClientHello(2))
        );
        // A first fragment, then an alert record instead of the rest.
        let message = handshake(&body(Some(&[sni_ext(b"a.com")])));
        let mut wire = records(&message[..10], 10);
        wire.extend([21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(
            inspect(&wire),
            Inspection::Malformed(Malformed::Interleaved(21))
        );
        // An empty record and an oversized one.
        assert_eq!(
            inspect(&[CONTENT_HANDSHAKE, 3, 1, 0, 0]),
            Inspection::Malformed(Malformed::RecordLength(0))
        );
        assert_eq!(
            inspect(&[CONTENT_HANDSHAKE, 3, 1, 0x40, 0x01]),
            Inspection::Malformed(Malformed::RecordLength(MAX_RECORD + 1))
        );
    }

    #[test]
    fn sslv2_compatible_hello_is_malformed() {
        // RFC 5246 E.2: length 0x8031, CLIENT-HELLO, version 3.1, ...
        let v2 = [0x80, 0x31, 0x01, 0x03, 0x01, 0x00, 0x18];
        assert_eq!(inspect(&v2), Inspection::Malformed(Malformed::SslV2));
        assert_eq!(inspect(&v2[..2]), Inspection::NeedMore);
        assert_eq!(inspect(&v2[..3]), Inspection::NeedMore);
    }

    #[test]
    fn an_oversized_hello_is_malformed_before_it_is_buffered() {
        // Declared at 70 KiB: refused from the handshake header alone.
        let header = [CONTENT_HANDSHAKE, 3, 1, 0x01, 0x00, 1, 0x01, 0x18, 0x00];
        assert_eq!(inspect(&header), Inspection::Malformed(Malformed::TooLarge));
        // A hello padded to exactly the 64 KiB limit on the wire (four
        // full records and a part, headers included) is inspected whole;
        // one byte more is too large.
        let wire_of = |padding: usize| {
            let message = handshake(&body(Some(&[(0xff00, vec![0; padding])])));
            records(&message, MAX_RECORD)
        };
        let fits = (60_000..65_535)
            .take_while(|padding| wire_of(*padding).len() <= MAX_CLIENT_HELLO)
            .last()
            .expect("a padding that fits");
        assert_eq!(wire_of(fits).len(), MAX_CLIENT_HELLO);
        assert!(matches!(inspect(&wire_of(fits)), Inspection::Hello(_)));
        assert_eq!(
            inspect(&wire_of(fits + 1)),
            Inspection::Malformed(Malformed::TooLarge)
        );
        // A 20 KiB hello (what 16 KiB used to refuse) is served.
        assert!(matches!(inspect(&wire_of(20 * 1024)), Inspection::Hello(_)));
        // A handshake length past 64 KiB (its top byte set) is refused too.
        let header = [CONTENT_HANDSHAKE, 3, 1, 0x01, 0x00, 1, 0x01, 0x00, 0x00];
        assert_eq!(inspect(&header), Inspection::Malformed(Malformed::TooLarge));
    }

    #[test]
    fn a_full_record_is_a_valid_start() {
        // 16,384 bytes is the largest record: a ClientHello may fill it
        // and go on in the next.
        let len = u16::try_from(MAX_RECORD).unwrap().to_be_bytes();
        let header = [CONTENT_HANDSHAKE, 3, 1, len[0], len[1]];
        assert_eq!(inspect(&header), Inspection::NeedMore);
    }

    #[test]
    fn a_partial_later_record_header_is_judged_by_its_content_type() {
        let message = handshake(&body(Some(&[sni_ext(b"a.com")])));
        let mut wire = records(&message[..10], 10);
        wire.push(CONTENT_HANDSHAKE);
        assert_eq!(inspect(&wire), Inspection::NeedMore);
        wire.pop();
        wire.push(23);
        assert_eq!(
            inspect(&wire),
            Inspection::Malformed(Malformed::Interleaved(23))
        );
    }

    #[test]
    fn cipher_suites_must_be_a_non_empty_list_of_pairs() {
        for suites in [&[0x00, 0x00][..], &[0x00, 0x03, 0x13, 0x01, 0x13]] {
            let mut b = vec![0x03, 0x03];
            b.extend([7u8; 32]);
            b.push(0);
            b.extend(suites);
            b.extend([0x01, 0x00]);
            assert_eq!(
                inspect(&records(&handshake(&b), 512)),
                Inspection::Malformed(Malformed::Syntax("cipher_suites")),
                "{suites:?}"
            );
        }
    }

    #[test]
    fn many_tiny_records_count_their_headers_against_the_limit() {
        let padding = (0xff00, vec![0; 12_000]);
        let message = handshake(&body(Some(&[padding])));
        // 1-byte records: 6 wire bytes per message byte, over 64 KiB,
        // though the message itself is 12 KB.
        assert!(message.len() < MAX_CLIENT_HELLO / 5);
        assert_eq!(
            inspect(&records(&message, 1)),
            Inspection::Malformed(Malformed::TooLarge)
        );
    }
}
