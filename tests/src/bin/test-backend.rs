//! A backend for the end-to-end tests, run inside a backend namespace.
//!
//! `test-backend --name NAME --listen ADDR:PORT [--tls CERT KEY] [--echo | --banner] [--status CODE]`
//!
//! HTTP (HTTP/1.1 and h2c, or h2/http1.1 over TLS): answers 200 with a
//! text body describing the request (`backend=`, `peer=` (the connection it
//! came on), `method=`, `path=`,
//! `version=`, then `header <name>: <value>` lines), so a test can see
//! exactly what the gateway forwarded. `Upgrade: websocket` gets a 101 and
//! the upgraded bytes are echoed; `/delay/<ms>` answers that much later;
//! `/drip/<chunks>/<ms>` answers at once and sends its body as `<chunks>`
//! chunks of 1 KiB, one every `<ms>` (a slow download, or with one chunk
//! and a long wait, a response that stalls after its head). `--echo`: raw TCP echo prefixed with
//! `NAME:` (for TCP and passthrough tests); `--banner`: the same, after a
//! greeting `NAME:hello` sent first (a server that speaks first).
//! `--status CODE`: every HTTP answer gets that status (a failing backend).
//! `--proxy-protocol`: each connection starts with a PROXY header (v1 or
//! v2), read first: HTTP answers say `proxy=<source> <destination>` and
//! `peer=` is the header's source; `--echo` and `--banner` greet with
//! `NAME:proxy=<source> <destination>` first.
//! `--connect-proxy`: a minimal HTTP/1.1 CONNECT proxy: `CONNECT host:port`
//! is answered 200 and relayed to that address (with `--status CODE`,
//! answered CODE and closed instead).
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Body, Frame, Incoming},
    header,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

struct Args {
    name: String,
    listen: Vec<SocketAddr>,
    tls: Option<(String, String)>,
    echo: bool,
    banner: bool,
    /// Every HTTP answer gets this status (a backend that keeps failing).
    status: Option<hyper::StatusCode>,
    /// Connections start with a PROXY header.
    proxy_protocol: bool,
    /// A CONNECT proxy rather than a backend.
    connect_proxy: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        name: "backend".into(),
        listen: Vec::new(),
        tls: None,
        echo: false,
        banner: false,
        status: None,
        proxy_protocol: false,
        connect_proxy: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |what: &str| argv.next().ok_or(format!("{what} needs a value"));
        match arg.as_str() {
            "--name" => args.name = value("--name")?,
            "--listen" => args.listen.push(
                value("--listen")?
                    .parse()
                    .map_err(|e| format!("--listen: {e}"))?,
            ),
            "--tls" => {
                let cert = value("--tls")?;
                let key = value("--tls")?;
                args.tls = Some((cert, key));
            }
            "--echo" => args.echo = true,
            "--banner" => args.banner = true,
            "--proxy-protocol" => args.proxy_protocol = true,
            "--connect-proxy" => args.connect_proxy = true,
            "--status" => {
                let code = value("--status")?;
                args.status = Some(
                    hyper::StatusCode::from_bytes(code.as_bytes())
                        .map_err(|e| format!("--status: {e}"))?,
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.listen.is_empty() {
        return Err("--listen is required".into());
    }
    Ok(args)
}

fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(err) => {
            eprintln!("test-backend: {err}");
            std::process::exit(2);
        }
    };
    let acceptor = match &args.tls {
        Some((cert, key)) => match tls_acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(err) => {
                eprintln!("test-backend: {err}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let mut tasks = Vec::new();
    for addr in &args.listen {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("test-backend: cannot listen on {addr}: {err}");
                std::process::exit(2);
            }
        };
        let (args, acceptor) = (Arc::clone(&args), acceptor.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (args, acceptor) = (Arc::clone(&args), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(tls, args, peer).await;
                            }
                        }
                        None => serve(stream, args, peer).await,
                    }
                });
            }
        }));
    }
    println!("test-backend {} ready", args.name);
    for task in tasks {
        let _ = task.await;
    }
}

async fn serve<S>(mut stream: S, args: Arc<Args>, mut peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if args.connect_proxy {
        connect_proxy(stream, args.status).await;
        return;
    }
    let mut proxied = None;
    if args.proxy_protocol {
        let Some((source, destination)) = read_proxy_header(&mut stream).await else {
            return;
        };
        if let Ok(addr) = source.parse() {
            peer = addr;
        }
        proxied = Some(format!("{source} {destination}"));
    }
    if args.echo || args.banner {
        if let Some(proxied) = &proxied {
            let greeting = format!("{}:proxy={proxied}\n", args.name);
            if stream.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
        }
        echo(stream, &args.name, args.banner).await;
        return;
    }
    let service = service_fn(move |req| {
        let name = args.name.clone();
        let fixed_status = args.status;
        let proxied = proxied.clone();
        async move {
            // `/delay/<ms>` answers late, for timeout tests.
            let delay = req
                .uri()
                .path()
                .strip_prefix("/delay/")
                .and_then(|ms| ms.parse::<u64>().ok());
            if let Some(ms) = delay {
                tokio::time::sleep(std::time::Duration::from_millis(ms.min(30_000))).await;
            }
            if let Some(drip) = Drip::of(req.uri().path()) {
                return Ok::<_, Infallible>(Response::new(drip.boxed()));
            }
            // `/status/<code>` answers with that status, for metrics tests.
            let status = req
                .uri()
                .path()
                .strip_prefix("/status/")
                .and_then(|code| hyper::StatusCode::from_bytes(code.as_bytes()).ok());
            let mut response = answer(req, &name, peer, proxied.as_deref());
            if let Some(status) = status.or(fixed_status) {
                *response.status_mut() = status;
            }
            Ok::<_, Infallible>(response.map(BodyExt::boxed))
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, name: &str, banner: bool) {
    // A server that speaks first (SMTP, MySQL): its greeting before any read.
    if banner
        && stream
            .write_all(format!("{name}:hello\n").as_bytes())
            .await
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut out = format!("{name}:").into_bytes();
                out.extend_from_slice(&buf[..n]);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A body sent as 1 KiB chunks at an interval (`/drip/<chunks>/<ms>`, at
/// most 10,000 chunks and 60 s apart).
struct Drip {
    left: u32,
    every: std::time::Duration,
    next: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Drip {
    fn of(path: &str) -> Option<Self> {
        let (chunks, ms) = path.strip_prefix("/drip/")?.split_once('/')?;
        let every = std::time::Duration::from_millis(ms.parse::<u64>().ok()?.min(60_000));
        Some(Self {
            left: chunks.parse::<u32>().ok()?.min(10_000),
            every,
            next: Box::pin(tokio::time::sleep(every)),
        })
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.next.as_mut().poll(cx));
        self.left -= 1;
        let at = tokio::time::Instant::now() + self.every;
        self.next.as_mut().reset(at);
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

fn answer(
    mut req: Request<Incoming>,
    name: &str,
    peer: SocketAddr,
    proxied: Option<&str>,
) -> Response<Full<Bytes>> {
    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut accept = key.as_bytes().to_vec();
        accept.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &accept);
        return Response::builder()
            .status(101)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-accept", base64(digest.as_ref()))
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
    }
    let mut body = format!(
        "backend={name}\npeer={peer}\nmethod={}\npath={}\nversion={:?}\n",
        req.method(),
        req.uri().path_and_query().map_or("", |p| p.as_str()),
        req.version()
    );
    if let Some(authority) = req.uri().authority() {
        body.push_str(&format!("authority={authority}\n"));
    }
    if let Some(proxied) = proxied {
        body.push_str(&format!("proxy={proxied}\n"));
    }
    for (name, value) in req.headers() {
        body.push_str(&format!(
            "header {name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    Response::builder()
        .header("x-backend", name)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
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

/// Reads a PROXY header (v1 text or v2 binary) and gives its source and
/// destination (`source:port`, `destination:port`; `unknown` for v1
/// UNKNOWN, `local` for a v2 LOCAL header).
async fn read_proxy_header<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(String, String)> {
    const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut start = [0u8; 12];
    stream.read_exact(&mut start[..6]).await.ok()?;
    if &start[..6] == b"PROXY " {
        let mut line = b"PROXY ".to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() > 107 {
                return None;
            }
            line.push(stream.read_u8().await.ok()?);
        }
        let text = String::from_utf8(line).ok()?;
        let fields: Vec<&str> = text.trim_end().split(' ').collect();
        return match fields.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Some(("unknown".into(), "unknown".into())),
            ["PROXY", "TCP4" | "TCP6", src, dst, sport, dport] => {
                let join = |ip: &str, port: &str| match ip.parse::<std::net::IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string(),
                    Err(_) => format!("{ip}:{port}"),
                };
                Some((join(src, sport), join(dst, dport)))
            }
            _ => None,
        };
    }
    stream.read_exact(&mut start[6..]).await.ok()?;
    if &start != V2 {
        return None;
    }
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.ok()?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await.ok()?;
    if head[0] == 0x20 {
        return Some(("local".into(), "local".into()));
    }
    let addr = |ip: std::net::IpAddr, port: &[u8]| {
        SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])).to_string()
    };
    match head[1] {
        0x11 if len >= 12 => {
            let src: [u8; 4] = rest[0..4].try_into().ok()?;
            let dst: [u8; 4] = rest[4..8].try_into().ok()?;
            Some((
                addr(src.into(), &rest[8..10]),
                addr(dst.into(), &rest[10..12]),
            ))
        }
        0x21 if len >= 36 => {
            let src: [u8; 16] = rest[0..16].try_into().ok()?;
            let dst: [u8; 16] = rest[16..32].try_into().ok()?;
            Some((
                addr(src.into(), &rest[32..34]),
                addr(dst.into(), &rest[34..36]),
            ))
        }
        _ => Some(("unspec".into(), "unspec".into())),
    }
}

/// A minimal CONNECT proxy: the request head (at most 8 KiB), then 200 and
/// a relay to its target, or `refuse` and a close.
async fn connect_proxy<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    refuse: Option<hyper::StatusCode>,
) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return;
        }
        let Ok(byte) = stream.read_u8().await else {
            return;
        };
        head.push(byte);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = match text.split(' ').collect::<Vec<_>>().as_slice() {
        ["CONNECT", target, ..] => (*target).to_string(),
        _ => {
            let _ = stream
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
    };
    if let Some(status) = refuse {
        let answer = format!(
            "HTTP/1.1 {} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            status.as_u16()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        return;
    }
    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
        let _ = stream
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if stream
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
}
