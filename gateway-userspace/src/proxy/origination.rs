//! TLS origination: a DestinationRule `tls` with mode SIMPLE or MUTUAL on a
//! cluster makes the gateway speak TLS to its endpoints (Istio's "egress
//! TLS origination"), so a workload sends plain HTTP and the request leaves
//! encrypted. The server is verified against `caCertificates` or, without
//! it, the system's roots; by `subjectAltNames` when given, else by the SNI
//! (`sni`, else the host); revoked certificates refused with `caCrl`. With
//! `insecureSkipVerify` the certificate is not verified, as Istio then sets
//! no validation context (the handshake is still signed by its key). A
//! failure is the request's 503, never a fallback to plaintext.
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::tls::{TlsSetupError, read_chain, read_crls, read_key};
use crate::{
    files::FileSource,
    plan::{ClientTls, ClientTlsMode, Cluster},
};

/// The system's trusted roots (Debian's `ca-certificates`).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a cluster's connections are wrapped in TLS.
pub struct Origination {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The origination `cluster`'s policy asks for (`None` for plaintext);
/// `alpn` is the protocol the cluster speaks (`h2` or `http/1.1`);
/// certificates are read from `files`.
pub fn origination(
    cluster: &Cluster,
    alpn: &[u8],
    files: &dyn FileSource,
) -> Result<Option<Origination>, TlsSetupError> {
    let Some(tls) = &cluster.policy.tls else {
        return Ok(None);
    };
    let mutual = match tls.mode {
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
        // Mesh identities this gateway does not have: `check` refuses it,
        // and were it to get here, no connection rather than plaintext.
        ClientTlsMode::IstioMutual => return Err(TlsSetupError::NoMeshIdentity),
        ClientTlsMode::Disable => return Ok(None),
    };
    let sni = tls.sni.clone().unwrap_or_else(|| cluster.host.clone());
    let server_name = ServerName::try_from(sni.clone()).map_err(|_| TlsSetupError::Pem {
        path: "sni".into(),
        reason: format!("{sni:?} is not a server name"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // `insecureSkipVerify`: no chain and no name checked.
    let webpki = if tls.insecure_skip_verify {
        None
    } else {
        let mut roots = RootCertStore::empty();
        let ca = tls.ca_certificates.as_deref().unwrap_or(SYSTEM_ROOTS);
        for cert in read_chain(files, ca)? {
            roots.add(cert)?;
        }
        let builder =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
        let builder = match &tls.ca_crl {
            Some(crl) => builder.with_crls(read_crls(files, crl)?),
            None => builder,
        };
        Some(
            builder
                .build()
                .map_err(|err| TlsSetupError::ClientVerifier(err.to_string()))?,
        )
    };
    let verifier = Arc::new(SanVerifier::new(
        webpki,
        provider.signature_verification_algorithms,
        tls,
    )?);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (mutual, &tls.client_certificate, &tls.private_key) {
        (true, Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_chain(files, cert)?, read_key(files, key)?)?
        }
        (true, _, _) => return Err(TlsSetupError::NoCertificate),
        (false, _, _) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Some(Origination {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    }))
}

impl Origination {
    /// Wraps a connected `stream` in TLS to the server.
    pub async fn connect(&self, stream: TcpStream) -> io::Result<UpstreamIo> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), stream)
            .await?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }
}

/// Verifies the server's chain with webpki, and its name against the
/// DestinationRule's `subjectAltNames` when it has any (Istio's rule),
/// else against the SNI; with no webpki verifier (`insecureSkipVerify`)
/// neither. The handshake's signature is checked against the
/// certificate's key either way.
#[derive(Debug)]
struct SanVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    names: Vec<ServerName<'static>>,
}

impl SanVerifier {
    fn new(
        inner: Option<Arc<WebPkiServerVerifier>>,
        algorithms: WebPkiSupportedAlgorithms,
        tls: &ClientTls,
    ) -> Result<Self, TlsSetupError> {
        let names = tls
            .subject_alt_names
            .iter()
            .map(|san| {
                ServerName::try_from(san.clone()).map_err(|_| TlsSetupError::Pem {
                    path: "subjectAltNames".into(),
                    reason: format!("{san:?} is not a DNS name or IP address"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner,
            algorithms,
            names,
        })
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.names.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = None;
        for name in &self.names {
            match inner.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
                Ok(verified) => return Ok(verified),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no subjectAltNames".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An upstream connection, plain or TLS, as one type for hyper.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{files::Disk, plan::TrafficPolicy};

    fn cluster(mode: &str) -> Cluster {
        Cluster {
            name: "outbound|443||web.example".into(),
            host: "web.example".into(),
            port: 443,
            subset: None,
            protocol: None,
            endpoints: Vec::new(),
            discovered: None,
            locality: Default::default(),
            original_destination: None,
            policy: TrafficPolicy {
                tls: Some(ClientTls {
                    mode: ClientTlsMode::parse(mode).expect("a mode"),
                    ..ClientTls::default()
                }),
                ..TrafficPolicy::default()
            },
        }
    }

    #[test]
    fn istio_mutual_never_falls_back_to_plaintext() {
        assert!(matches!(
            origination(&cluster("ISTIO_MUTUAL"), b"http/1.1", &Disk),
            Err(TlsSetupError::NoMeshIdentity)
        ));
        assert!(matches!(
            origination(&cluster("DISABLE"), b"http/1.1", &Disk),
            Ok(None)
        ));
    }
}
