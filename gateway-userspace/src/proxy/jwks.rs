//! Key sets of JWT providers that name a `jwksUri` (or only an issuer:
//! OIDC discovery), fetched and refreshed as istiod's `jwks_resolver.go`
//! does: every `--jwks-refresh` (Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`,
//! 20 min); after a failure, again after 1 min (at most the refresh
//! interval), doubling up to 60 min. Until a set is fetched every token
//! of that provider fails (fail closed); a new set replaces the old whole.
use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{net::TcpStream, sync::watch};

use super::http::jwt::{JwtAuthn, KeyCell};
use crate::{files::FileSource, plan::Jwks};

/// Istio's default refresh interval.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// The first retry after a failure, and the cap of its doubling (`jwks_resolver.go`).
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(60 * 60);
/// A JWKS or discovery document larger than this is refused.
const MAX_BODY: usize = 1 << 20;
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Key sets last fetched, by URI: a reloaded configuration starts from
/// them instead of failing every token until its first fetch.
static LAST_FETCHED: LazyLock<Mutex<HashMap<String, Arc<Jwks>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The fetch tasks of one `Served`; dropping it stops them.
#[derive(Debug)]
pub struct Fetchers {
    _stop: watch::Sender<()>,
}

/// Why a fetch failed (logged; the provider keeps its previous keys).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URI {0:?}")]
    Uri(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS to {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("no jwks_uri in the OpenID configuration")]
    Discovery,
    #[error("{0}")]
    Jwks(crate::model::JwksError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Starts fetching the keys of every provider of `authn` that needs it,
/// in the current runtime (none: nothing is fetched, every token fails).
pub fn start(authn: &JwtAuthn, refresh: Duration, files: Arc<dyn FileSource>) -> Option<Fetchers> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (stop, _) = watch::channel(());
    for (provider, cell) in authn.fetched() {
        let target = match &provider.jwks {
            crate::plan::JwksSource::Uri(uri) => Target::Uri(uri.clone()),
            _ => Target::Discovery(provider.issuer.clone()),
        };
        if let Some(jwks) = LAST_FETCHED
            .lock()
            .ok()
            .and_then(|c| c.get(&target.key()).cloned())
        {
            set(cell, jwks);
        }
        let fetch = Fetch {
            target,
            timeout: provider.timeout,
            refresh,
            cell: Arc::downgrade(cell),
            files: Arc::clone(&files),
        };
        handle.spawn(fetch.run(stop.subscribe()));
    }
    Some(Fetchers { _stop: stop })
}

fn set(cell: &KeyCell, jwks: Arc<Jwks>) {
    match cell.write() {
        Ok(mut keys) => *keys = Some(jwks),
        Err(poisoned) => *poisoned.into_inner() = Some(jwks),
    }
}

#[derive(Clone, Debug)]
enum Target {
    Uri(String),
    /// OIDC discovery from this issuer.
    Discovery(String),
}

impl Target {
    fn key(&self) -> String {
        match self {
            Self::Uri(uri) => uri.clone(),
            Self::Discovery(issuer) => format!("discovery:{issuer}"),
        }
    }
}

struct Fetch {
    target: Target,
    timeout: Duration,
    refresh: Duration,
    cell: Weak<std::sync::RwLock<Option<Arc<Jwks>>>>,
    files: Arc<dyn FileSource>,
}

impl Fetch {
    async fn run(self, mut stop: watch::Receiver<()>) {
        let mut failures = 0u32;
        loop {
            let result = tokio::time::timeout(self.timeout, self.once()).await;
            let result = result.unwrap_or(Err(FetchError::Timeout(self.timeout)));
            let wait = match result {
                Ok(jwks) => {
                    let Some(cell) = self.cell.upgrade() else {
                        return;
                    };
                    let jwks = Arc::new(jwks);
                    if let Ok(mut cache) = LAST_FETCHED.lock() {
                        cache.insert(self.target.key(), Arc::clone(&jwks));
                    }
                    set(&cell, jwks);
                    failures = 0;
                    self.refresh
                }
                Err(err) => {
                    log::warn!("JWKS {}: {err}", self.target.key());
                    let first = RETRY_FIRST.min(self.refresh);
                    let wait = first.saturating_mul(1 << failures.min(6)).min(RETRY_MAX);
                    failures = failures.saturating_add(1);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn once(&self) -> Result<Jwks, FetchError> {
        let uri = match &self.target {
            Target::Uri(uri) => uri.clone(),
            Target::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let body = get(&url, self.files.as_ref()).await?;
                let document: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| FetchError::Discovery)?;
                document
                    .get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .ok_or(FetchError::Discovery)?
                    .to_string()
            }
        };
        let body = get(&uri, self.files.as_ref()).await?;
        let text = String::from_utf8_lossy(&body);
        let (jwks, problems) = Jwks::parse(&text).map_err(FetchError::Jwks)?;
        for problem in problems {
            log::warn!("JWKS {uri}: key skipped: {problem}");
        }
        Ok(jwks)
    }
}

/// One GET over HTTP/1.1, plaintext or TLS (the system's roots), its
/// body bounded.
pub async fn get(url: &str, files: &dyn FileSource) -> Result<Bytes, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Uri(url.to_string()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::Uri(url.to_string())),
    };
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Uri(url.to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FetchError::Connect(format!("{host}:{port}"), e))?;
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if https {
        let tls = tls_connector(files).map_err(|e| FetchError::Tls(host.clone(), e))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| FetchError::Tls(host.clone(), e.to_string()))?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| FetchError::Tls(host.clone(), e.to_string()))?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(stream), request).await
    }
}

async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<Bytes, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(http)?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    Ok(body.to_bytes())
}

fn tls_connector(files: &dyn FileSource) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let chain = super::tls::read_chain(files, SYSTEM_ROOTS).map_err(|e| e.to_string())?;
    for cert in chain {
        // A system bundle may hold certificates webpki cannot read.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::start;
    use crate::{
        model::test_keys::{TestKey, jwks},
        plan::{JwksSource, JwtProvider, default_locations},
        proxy::http::jwt::JwtAuthn,
    };

    /// A loopback server answering every request with `body` (as it is at
    /// the time), or the OpenID document when the path asks for it.
    async fn serve(body: Arc<Mutex<String>>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = Arc::clone(&body);
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let text = if head.starts_with("GET /.well-known/openid-configuration") {
                        format!("{{\"jwks_uri\": \"http://{addr}/keys\"}}")
                    } else {
                        body.lock().unwrap().clone()
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn provider(issuer: String, jwks: JwksSource) -> JwtProvider {
        JwtProvider {
            issuer,
            audiences: Vec::new(),
            jwks,
            timeout: Duration::from_secs(2),
            locations: default_locations(),
            output_payload_to_header: None,
            forward: false,
            claim_to_headers: Vec::new(),
            space_delimited_claims: Vec::new(),
        }
    }

    /// The kid of the provider's keys once they are `want` (bounded wait).
    async fn wait_for_kid(authn: &JwtAuthn, want: &str) {
        for _ in 0..200 {
            let (_, cell) = authn.fetched().next().unwrap();
            let kid = cell
                .read()
                .unwrap()
                .as_ref()
                .and_then(|k| k.keys[0].kid.clone());
            if kid.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("keys never became {want}");
    }

    #[tokio::test]
    async fn keys_are_fetched_and_replaced_on_refresh() {
        let body = Arc::new(Mutex::new(jwks(&[&TestKey::es256("first")])));
        let addr = serve(Arc::clone(&body)).await;
        let uri = format!("http://{addr}/keys");
        let authn = JwtAuthn::new(&[provider("i".into(), JwksSource::Uri(uri))]).unwrap();
        let _fetchers = start(
            &authn,
            Duration::from_millis(100),
            Arc::new(crate::files::Disk),
        );
        wait_for_kid(&authn, "first").await;
        *body.lock().unwrap() = jwks(&[&TestKey::es256("second")]);
        wait_for_kid(&authn, "second").await;
    }

    #[tokio::test]
    async fn https_uses_the_system_roots() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proxy/testdata/");
        let chain = CertificateDer::pem_file_iter(format!("{testdata}jwks-localhost.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{testdata}jwks-localhost.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = jwks(&[&TestKey::es256("tls")]);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0; 4096];
                    let _ = stream.read(&mut buf).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        let url = format!("https://localhost:{port}/keys");
        // The test CA stands in for the system's bundle.
        let roots = |file: &str| {
            let pem = std::fs::read(format!("{testdata}{file}")).unwrap();
            crate::files::MemoryFiles(std::collections::BTreeMap::from([(
                super::SYSTEM_ROOTS.into(),
                pem,
            )]))
        };
        let fetched = super::get(&url, &roots("jwks-ca.crt")).await.unwrap();
        let text = String::from_utf8_lossy(&fetched);
        assert!(text.contains("\"kid\":\"tls\""), "{text}");
        // A server no root vouches for is not trusted.
        assert!(matches!(
            super::get(&url, &roots("rsa.crt")).await,
            Err(super::FetchError::Tls(..))
        ));
    }

    #[tokio::test]
    async fn an_issuer_alone_is_discovered() {
        let body = Arc::new(Mutex::new(jwks(&[&TestKey::ed25519("found")])));
        let addr = serve(body).await;
        let issuer = format!("http://{addr}/");
        let authn = JwtAuthn::new(&[provider(issuer, JwksSource::Discovery)]).unwrap();
        let _fetchers = start(
            &authn,
            Duration::from_secs(60),
            Arc::new(crate::files::Disk),
        );
        wait_for_kid(&authn, "found").await;
    }

    #[tokio::test]
    async fn a_bad_document_leaves_the_previous_keys() {
        let body = Arc::new(Mutex::new(jwks(&[&TestKey::es256("good")])));
        let addr = serve(Arc::clone(&body)).await;
        let uri = format!("http://{addr}/bad-keys");
        let authn = JwtAuthn::new(&[provider("i".into(), JwksSource::Uri(uri))]).unwrap();
        let _fetchers = start(
            &authn,
            Duration::from_millis(50),
            Arc::new(crate::files::Disk),
        );
        wait_for_kid(&authn, "good").await;
        *body.lock().unwrap() = "{\"keys\": []}".into();
        tokio::time::sleep(Duration::from_millis(300)).await;
        wait_for_kid(&authn, "good").await;
    }
}
