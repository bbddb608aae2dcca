use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

fn settings(protocol: TunnelProtocol) -> TunnelSettings {
    TunnelSettings {
        protocol,
        target_host: "db.example.test".into(),
        target_port: 5432,
    }
}

/// Reads a request head (through its blank line) from the fake proxy's side.
async fn read_head(proxy: &mut DuplexStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = proxy.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "closed inside the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("utf-8 head")
}

/// A fake tunnel proxy that answers `answer` to the request it reads,
/// and hands back the request head and its side of the stream.
fn proxy(
    answer: Vec<u8>,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<(String, DuplexStream)>,
) {
    let (ours, mut theirs) = duplex(256 * 1024);
    let task = tokio::spawn(async move {
        let head = read_head(&mut theirs).await;
        theirs.write_all(&answer).await.expect("answer");
        (head, theirs)
    });
    (ours, task)
}

const SECOND: Duration = Duration::from_secs(1);

/// Awaits `future`, failing the test after five seconds.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("done in time")
}

#[tokio::test]
async fn connect_names_the_target_in_the_request_line_and_host_then_relays() {
    let (io, task) = proxy(b"HTTP/1.1 200 Connection established\r\n\r\nearly".to_vec());
    let mut tunnel = open(io, &settings(TunnelProtocol::Connect), SECOND)
        .await
        .expect("open");
    let (head, mut far) = task.await.expect("proxy");
    assert!(
        head.starts_with("CONNECT db.example.test:5432 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("host: db.example.test:5432\r\n"), "{head}");
    // Bytes the proxy sent after its head reach the client first.
    let mut early = [0u8; 5];
    within(tunnel.read_exact(&mut early))
        .await
        .expect("early bytes");
    assert_eq!(&early, b"early");
    tunnel.write_all(b"ping").await.expect("write");
    let mut ping = [0u8; 4];
    within(far.read_exact(&mut ping)).await.expect("relayed");
    assert_eq!(&ping, b"ping");
}

#[tokio::test]
async fn any_2xx_opens_a_connect_tunnel() {
    let (io, _task) = proxy(b"HTTP/1.1 201 Created\r\n\r\n".to_vec());
    assert!(
        open(io, &settings(TunnelProtocol::Connect), SECOND)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_refusal_is_reported_with_its_status() {
    let (io, _task) = proxy(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_vec());
    match open(io, &settings(TunnelProtocol::Connect), SECOND).await {
        Err(TunnelError::Refused(status)) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_malformed_answer_is_refused() {
    let (io, _task) = proxy(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec());
    assert!(matches!(
        open(io, &settings(TunnelProtocol::Connect), SECOND).await,
        Err(TunnelError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_answer_head_over_the_limit_is_refused() {
    let mut answer = b"HTTP/1.1 200 OK\r\nx-padding: ".to_vec();
    answer.extend(std::iter::repeat_n(b'a', MAX_RESPONSE_HEAD + 1024));
    answer.extend_from_slice(b"\r\n\r\n");
    let (io, _task) = proxy(answer);
    let opened = open(io, &settings(TunnelProtocol::Connect), SECOND).await;
    assert!(
        matches!(opened, Err(TunnelError::Malformed(_))),
        "{:?}",
        opened.map(|_| ())
    );
}

#[tokio::test]
async fn a_proxy_that_never_answers_times_out() {
    let (io, _far) = duplex(1024);
    let started = std::time::Instant::now();
    assert!(matches!(
        open(
            io,
            &settings(TunnelProtocol::Connect),
            Duration::from_millis(100)
        )
        .await,
        Err(TunnelError::TimedOut(_))
    ));
    assert!(started.elapsed() < SECOND);
}

#[tokio::test]
async fn post_sends_the_bytes_as_a_chunked_body_and_reads_the_answers_body() {
    let (io, task) =
        proxy(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec());
    let mut tunnel = open(io, &settings(TunnelProtocol::Post), SECOND)
        .await
        .expect("open");
    let (head, mut far) = task.await.expect("proxy");
    assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("host: db.example.test:5432\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    let mut hello = [0u8; 5];
    within(tunnel.read_exact(&mut hello))
        .await
        .expect("answer body");
    assert_eq!(&hello, b"hello");
    tunnel.write_all(b"ping").await.expect("write");
    let mut chunk = [0u8; 9];
    within(far.read_exact(&mut chunk)).await.expect("chunk");
    assert_eq!(&chunk, b"4\r\nping\r\n");
    // The client's end of stream ends the body.
    tunnel.shutdown().await.expect("shutdown");
    let mut last = [0u8; 5];
    within(far.read_exact(&mut last)).await.expect("last chunk");
    assert_eq!(&last, b"0\r\n\r\n");
}
