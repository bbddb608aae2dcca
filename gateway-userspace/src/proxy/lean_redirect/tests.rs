use std::{net::SocketAddr, time::Duration};

use tokio::io::AsyncWriteExt;

use super::*;
use crate::{
    connection::Limits,
    plan::{HostPattern, HostTable, VirtualHost},
    proxy::{
        downstream::REQUEST_TIMEOUT,
        testing::{self, Backend, Proxy, exchange, http_route_yaml, read_response, read_to_close},
    },
};

fn redirecting() -> VirtualHosts {
    VirtualHosts::new(HostTable::new([VirtualHost {
        pattern: HostPattern::from_server_host("dataengine.com"),
        https_redirect: true,
        routes: Vec::new(),
    }]))
    .expect("hosts")
}

fn downstream() -> Downstream {
    Downstream {
        tls: false,
        local: SocketAddr::from(([192, 0, 2, 1], 80)),
        remote: SocketAddr::from(([192, 0, 2, 2], 40000)),
        sni: None,
        workload_interface: None,
        remote_ip: std::sync::OnceLock::new(),
    }
}

fn lean(head: &str) -> Option<Redirect> {
    redirect_of(head.as_bytes(), &redirecting(), &downstream(), true)
}

#[test]
fn a_plain_get_is_redirected_here_with_its_path_and_query() {
    let redirect = lean("GET /x?y=1 HTTP/1.1\r\nHost: dataengine.com\r\nUser-Agent: t\r\n\r\n")
        .expect("answered here");
    assert_eq!(redirect.location, "https://dataengine.com/x?y=1");
    assert!(!redirect.close);
    assert_eq!(redirect.entry.status, 301);
    assert_eq!(redirect.entry.method.as_deref(), Some("GET"));
    assert_eq!(redirect.entry.path.as_deref(), Some("/x?y=1"));
    assert_eq!(redirect.entry.user_agent.as_deref(), Some("t"));
    assert_eq!(redirect.entry.authority.as_deref(), Some("dataengine.com"));
    let closing =
        lean("HEAD / HTTP/1.1\r\nhost: DataEngine.com:80\r\nConnection: keep-alive, Close\r\n\r\n")
            .expect("answered here");
    assert!(closing.close);
    // The same location hyper's path builds (`redirect::answer`).
    assert_eq!(closing.location, "https://DataEngine.com:80/");
    assert!(lean("POST / HTTP/1.1\r\nHost: dataengine.com\r\nContent-Length: 0\r\n\r\n").is_some());
    // With the access log off, the entry has what the metrics need only.
    let quiet = redirect_of(
        b"GET / HTTP/1.1\r\nHost: dataengine.com\r\n\r\n",
        &redirecting(),
        &downstream(),
        false,
    )
    .expect("answered here");
    assert_eq!(quiet.entry.status, 301);
    assert_eq!(quiet.entry.protocol, Some("HTTP/1.1"));
    assert!(quiet.entry.method.is_none() && quiet.entry.path.is_none());
}

#[test]
fn anything_but_a_plain_redirect_goes_to_hyper() {
    for head in [
        // A body, chunked or counted.
        "POST / HTTP/1.1\r\nHost: dataengine.com\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: dataengine.com\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: dataengine.com\r\nContent-Length: +0\r\n\r\n",
        // Upgrades, 100-continue, a forwarded scheme.
        "GET / HTTP/1.1\r\nHost: dataengine.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: dataengine.com\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: dataengine.com\r\nX-Forwarded-Proto: https\r\n\r\n",
        // Other answers: 426, 400, 404.
        "GET / HTTP/1.0\r\nHost: dataengine.com\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: dataengine.com\r\nHost: dataengine.com\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: other.example\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: dataengine.com\r\n\r\n",
        // Absolute form, CONNECT, HTTP/2's preface, nonsense.
        "GET http://dataengine.com/ HTTP/1.1\r\nHost: dataengine.com\r\n\r\n",
        "CONNECT dataengine.com:443 HTTP/1.1\r\nHost: dataengine.com\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost dataengine.com\r\n\r\n",
    ] {
        assert!(lean(head).is_none(), "{head:?}");
    }
}

#[test]
fn the_entry_is_an_http_1_1_301_via_the_https_redirect() {
    let redirect = lean("GET / HTTP/1.1\r\nHost: dataengine.com\r\n\r\n").expect("answered here");
    assert_eq!(redirect.entry.protocol, Some("HTTP/1.1"));
    assert_eq!(redirect.entry.status, 301);
    assert_eq!(redirect.entry.details, Some("via_https_redirect"));
}

#[test]
fn a_head_that_ends_before_the_blank_line_found_goes_to_hyper() {
    // Bare line feeds end this head early: what follows is not its part,
    // and hyper tells what it is.
    assert!(lean("GET / HTTP/1.1\nHost: dataengine.com\n\nX\r\n\r\n").is_none());
}

#[test]
fn connect_goes_to_hyper_whatever_its_target() {
    assert!(lean("CONNECT / HTTP/1.1\r\nHost: dataengine.com\r\n\r\n").is_none());
}

#[test]
fn a_head_is_whole_at_its_blank_line_and_not_before() {
    assert_eq!(
        head_length(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 0),
        Some(27)
    );
    assert_eq!(head_length(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
}

#[test]
fn the_search_resumes_where_the_last_read_ended() {
    // The blank line split across two reads: the first 25 bytes were
    // searched, and the end is still found.
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(head_length(&head[..25], 0), None);
    assert_eq!(head_length(head, 25), Some(27));
}

#[test]
fn the_response_is_hypers_301_byte_for_byte_but_the_date() {
    let mut out = Vec::new();
    write_response(&mut out, "https://dataengine.com/", false);
    let text = String::from_utf8(out).expect("text");
    let (before_date, date) = text.split_once("date: ").expect("a date");
    assert_eq!(
        before_date,
        "HTTP/1.1 301 Moved Permanently\r\nlocation: https://dataengine.com/\r\nserver: xdp-gateway\r\ncontent-length: 0\r\n"
    );
    assert!(date.ends_with(" GMT\r\n\r\n"), "{date:?}");
    assert!(
        httpdate::parse_http_date(date.trim_end()).is_ok(),
        "{date:?}"
    );
    let mut out = Vec::new();
    write_response(&mut out, "https://dataengine.com/", true);
    assert!(
        String::from_utf8(out)
            .expect("text")
            .contains("\r\nconnection: close\r\n")
    );
}

// The socket loop, through the proxy in-process on loopback: a Gateway
// whose plaintext port redirects `lean.test` to HTTPS.

/// A Gateway server on `port` redirecting `lean.test` to HTTPS.
fn redirect_yaml(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: redirect, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http-redirect, protocol: HTTP}}
    hosts: [\"lean.test\"]
    tls: {{httpsRedirect: true}}
"
    )
}

/// The proxy with short head timeouts, for the tests that wait for one.
async fn impatient_proxy() -> Proxy {
    let limits = Limits {
        request_head_timeout: Duration::from_millis(300),
        ..testing::limits()
    };
    Proxy::start_with(redirect_yaml, testing::options(), limits).await
}

/// Connects and sends `bytes` without yielding: the proxy runs on this
/// test's thread, so they are there before it accepts the connection, and
/// its first read (before any wait) takes them.
fn connect_with(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut stream, bytes).expect("write");
    stream.set_nonblocking(true).expect("non-blocking");
    TcpStream::from_std(stream).expect("a tokio stream")
}

/// Lets the proxy (on this test's thread) take what was sent so far before
/// the test goes on: nothing the test can await tells it has read them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// The 301 for `path` as answered here, without its `date` line.
fn moved(path: &str, close: bool) -> String {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 301 Moved Permanently\r\nlocation: https://lean.test{path}\r\nserver: xdp-gateway\r\n{connection}content-length: 0\r\n\r\n"
    )
}

/// `bytes` as text without `date` lines, which change every second.
fn dateless(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_inclusive("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect()
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_until_one_asks_to_close() {
    let proxy = Proxy::start(redirect_yaml).await;
    let mut stream = connect_with(
        proxy.addr,
        b"GET /a HTTP/1.1\r\nHost: lean.test\r\n\r\n\
          HEAD /b?c=d HTTP/1.1\r\nHost: lean.test\r\n\r\n\
          GET /e HTTP/1.1\r\nHost: lean.test\r\nConnection: close\r\n\r\n",
    );
    let answers = dateless(&read_to_close(&mut stream).await);
    assert_eq!(
        answers,
        [
            moved("/a", false),
            moved("/b?c=d", false),
            moved("/e", true)
        ]
        .concat()
    );
}

#[tokio::test]
async fn a_head_split_across_writes_is_answered_once_its_blank_line_arrives() {
    let proxy = Proxy::start(redirect_yaml).await;
    let mut stream = connect_with(proxy.addr, b"GET /split HTTP/1.1\r\nHo");
    settle().await;
    // The blank line itself split: the search resumes before the last read.
    write(&mut stream, b"st: lean.test\r\n\r").await;
    settle().await;
    write(&mut stream, b"\nGET /next HTTP/1.1\r\n").await;
    settle().await;
    write(&mut stream, b"Host: lean.test\r\nConnection: close\r\n\r\n").await;
    let answers = dateless(&read_to_close(&mut stream).await);
    assert_eq!(
        answers,
        [moved("/split", false), moved("/next", true)].concat()
    );
}

#[tokio::test]
async fn closing_after_a_301_with_bytes_still_unread_sends_the_answer_whole() {
    let proxy = Proxy::start(redirect_yaml).await;
    // More than one read takes: the rest is unread when the proxy closes,
    // which would reset the connection but for the FIN sent first.
    let mut request =
        b"GET /bye HTTP/1.1\r\nHost: lean.test\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n"
            .to_vec();
    request.extend(std::iter::repeat_n(b'x', 16 * 1024));
    let mut stream = connect_with(proxy.addr, &request);
    let answer = dateless(&read_to_close(&mut stream).await);
    assert_eq!(answer, moved("/bye", true));
}

#[tokio::test]
async fn a_request_it_does_not_answer_goes_to_hyper_with_every_byte_read_so_far() {
    let mut backend = Backend::ok().await;
    let proxy = Proxy::start(|port| {
        format!(
            "{}---\n{}",
            http_route_yaml(port, "app.test", backend.addr),
            redirect_yaml(port)
        )
    })
    .await;
    // A redirect answered here, then a request with a body for the routed
    // host, its body not all sent yet.
    let mut stream = connect_with(
        proxy.addr,
        b"GET /first HTTP/1.1\r\nHost: lean.test\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhel",
    );
    let first = read_response(&mut stream).await;
    assert_eq!(dateless(first.as_bytes()), moved("/first", false));
    settle().await;
    write(&mut stream, b"lo").await;
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    let request = backend.request().await;
    assert!(
        request.starts_with("POST /upload HTTP/1.1\r\n") && request.ends_with("\r\n\r\nhello"),
        "{request:?}"
    );
    // hyper serves the rest of the connection, redirects included.
    write(
        &mut stream,
        b"GET /after HTTP/1.1\r\nHost: lean.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let rest = dateless(&read_to_close(&mut stream).await);
    assert_eq!(rest, moved("/after", true));
    // HTTP/1.0 and an upgrade are hyper's from their first byte.
    let old = exchange(proxy.addr, b"GET / HTTP/1.0\r\nHost: lean.test\r\n\r\n").await;
    let old = String::from_utf8_lossy(&old);
    assert!(old.contains(" 426 "), "{old}");
    let upgrade = exchange(
        proxy.addr,
        b"GET /ws HTTP/1.1\r\nHost: lean.test\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n",
    )
    .await;
    assert_eq!(dateless(&upgrade), moved("/ws", true));
}

#[tokio::test]
async fn an_oversized_head_goes_to_hyper_which_refuses_it() {
    let proxy = Proxy::start(redirect_yaml).await;
    let mut head = b"GET / HTTP/1.1\r\nHost: lean.test\r\nX-Long: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD));
    let mut stream = connect_with(proxy.addr, &head);
    let answer = read_response(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn draining_closes_a_connection_waiting_for_its_next_request_at_once() {
    let proxy = Proxy::start(redirect_yaml).await;
    let mut stream = connect_with(proxy.addr, b"GET / HTTP/1.1\r\nHost: lean.test\r\n\r\n");
    let first = read_response(&mut stream).await;
    assert_eq!(dateless(first.as_bytes()), moved("/", false));
    proxy.drain();
    assert_eq!(read_to_close(&mut stream).await, b"");
}

#[tokio::test]
async fn a_request_begun_before_draining_is_answered_with_connection_close() {
    let proxy = Proxy::start(redirect_yaml).await;
    let mut stream = connect_with(proxy.addr, b"GET / HTTP/1.1\r\nHost: lean.test\r\n\r\n");
    read_response(&mut stream).await;
    write(&mut stream, b"GET /late HTTP/1.1\r\nHost: le").await;
    settle().await;
    proxy.drain();
    settle().await;
    write(&mut stream, b"an.test\r\n\r\n").await;
    let answer = dateless(&read_to_close(&mut stream).await);
    assert_eq!(answer, moved("/late", true));
}

#[tokio::test]
async fn a_request_that_came_with_the_connection_is_answered_though_draining() {
    let proxy = Proxy::start(redirect_yaml).await;
    proxy.drain();
    // The proxy reads at once what came with the handshake: answered, not
    // dropped for the drain (a race it would lose half the time).
    for _ in 0..12 {
        let mut stream = connect_with(proxy.addr, b"GET /x HTTP/1.1\r\nHost: lean.test\r\n\r\n");
        let answer = dateless(&read_to_close(&mut stream).await);
        assert_eq!(answer, moved("/x", true));
    }
}

#[tokio::test]
async fn a_partial_http1_head_gets_a_408_at_the_head_timeout_and_silence_nothing() {
    let proxy = impatient_proxy().await;
    let mut partial = connect_with(proxy.addr, b"GET / HTTP/1.1\r\nHost: lean.test\r\n");
    let mut silent = connect_with(proxy.addr, b"");
    // A partial HTTP/2 preface has no such answer: closed without a word.
    let mut preface = connect_with(proxy.addr, b"PRI * HTTP/2.0\r\n");
    let (partial, silent, preface) = tokio::join!(
        read_to_close(&mut partial),
        read_to_close(&mut silent),
        read_to_close(&mut preface)
    );
    assert_eq!(
        String::from_utf8_lossy(&partial),
        String::from_utf8_lossy(REQUEST_TIMEOUT)
    );
    assert_eq!(silent, b"");
    assert_eq!(preface, b"");
}

#[tokio::test]
async fn draining_does_not_cut_short_a_head_being_received() {
    let proxy = impatient_proxy().await;
    let mut stream = connect_with(proxy.addr, b"GET / HTTP/1.1\r\nHost: lean.test\r\n\r\n");
    read_response(&mut stream).await;
    write(&mut stream, b"GET /slow HTTP/1.1\r\n").await;
    settle().await;
    proxy.drain();
    // The head still has its time, and its 408 when that runs out.
    let answer = read_to_close(&mut stream).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(REQUEST_TIMEOUT)
    );
}

/// How many TCP segments `stream` has received (`tcpi_segs_in`).
fn segments_in(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut len =
        libc::socklen_t::try_from(size_of::<libc::tcp_info>()).expect("tcp_info's size fits");
    // SAFETY: an all-zero `tcp_info` (integers only) is valid; the kernel
    // writes at most `len` bytes into it, for the stream's open socket.
    #[allow(
        unsafe_code,
        reason = "FFI: TCP_INFO has no safe wrapper in nix or tokio"
    )]
    let (rc, info) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        );
        (rc, info)
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

#[tokio::test]
async fn the_last_answer_and_the_close_leave_in_one_segment() {
    let proxy = Proxy::start(redirect_yaml).await;
    // Kept alive: the handshake's segment, the request's ACK, the answer.
    let mut kept = connect_with(proxy.addr, b"GET / HTTP/1.1\r\nHost: lean.test\r\n\r\n");
    read_response(&mut kept).await;
    // Closed: the same, the FIN in the answer's segment (MSG_MORE).
    let mut closed = connect_with(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: lean.test\r\nConnection: close\r\n\r\n",
    );
    read_to_close(&mut closed).await;
    assert_eq!(segments_in(&closed), segments_in(&kept));
}

#[test]
fn a_line_ending_in_a_bare_lf_is_found_where_the_last_search_stopped() {
    assert!(bare_line_feed(b"\n", 0));
    assert!(bare_line_feed(b"GET / HTTP/1.1\nHost", 0));
    assert!(!bare_line_feed(b"GET / HTTP/1.1\r\nHost", 0));
    // The LF of a CRLF split across reads is not bare.
    assert!(!bare_line_feed(b"GET / HTTP/1.1\r\n", 15));
    assert!(bare_line_feed(b"GET / HTTP/1.1 \n", 15));
    assert!(!bare_line_feed(b"\nGET", 1));
}

#[tokio::test]
async fn a_head_with_bare_lf_line_ends_is_answered_by_hyper_without_waiting() {
    let proxy = impatient_proxy().await;
    let answer = exchange(
        proxy.addr,
        b"GET /lf HTTP/1.1\nHost: lean.test\nConnection: close\n\n",
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    assert!(
        answer.contains("location: https://lean.test/lf\r\n"),
        "{answer}"
    );
}
