//! The bodies of a request in flight, seen in its log entry: the bytes
//! each way, and the entry of a client that went away mid-response or
//! before the answer.
use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
};

use super::handle_phase::{Harness, to_backend};
use crate::proxy::{access_log::Format, testing::Backend};

#[tokio::test]
async fn the_bytes_each_way_are_logged() {
    let mut backend = Backend::start(|_| async {
        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nanswer!".to_string()
    })
    .await;
    let harness = Harness::new(&to_backend("bytes.test", backend.addr), Format::Json, false);
    let answer = harness
        .ask("POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
        .await;
    assert!(answer.ends_with("\r\n\r\nanswer!"), "{answer}");
    assert!(backend.request().await.ends_with("\r\n\r\nhello"));
    let entry = harness.entry().await;
    assert_eq!(entry["bytes_received"], 5, "{entry}");
    assert_eq!(entry["bytes_sent"], 7, "{entry}");
    assert_eq!(entry["response_flags"], "-", "{entry}");
}

#[tokio::test]
async fn a_client_leaving_mid_response_is_logged_as_gone() {
    // Half the promised body, then nothing: the response stays unfinished.
    let backend = Backend::start(|_| async {
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_string()
    })
    .await;
    let harness = Harness::new(
        &to_backend("left-mid.test", backend.addr),
        Format::Json,
        false,
    );
    let mut client = harness.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    while !got.ends_with(b"hello") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the answer in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    let entry = harness.entry().await;
    assert_eq!(entry["response_code"], 200, "{entry}");
    assert_eq!(entry["response_flags"], "DC", "{entry}");
    assert_eq!(entry["bytes_sent"], 5, "{entry}");
}

#[tokio::test]
async fn a_client_leaving_before_the_answer_is_logged_with_status_0() {
    let arrived = Arc::new(Notify::new());
    let signal = Arc::clone(&arrived);
    let backend = Backend::start(move |_| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            std::future::pending::<String>().await
        }
    })
    .await;
    let harness = Harness::new(
        &to_backend("left-early.test", backend.addr),
        Format::Json,
        false,
    );
    let mut client = harness.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("the request reaches the backend");
    drop(client);
    let entry = harness.entry().await;
    assert_eq!(entry["response_code"], 0, "{entry}");
    assert_eq!(entry["response_flags"], "DC", "{entry}");
    assert_eq!(
        entry["response_code_details"],
        "downstream_remote_disconnect"
    );
}

/// HTTP/2 frames as they cross the wire, for what only framing shows:
/// whether a message's end rides on its last frame.
mod frames {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(super) const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    const SETTINGS_ACK: &[u8] = &[0, 0, 0, 4, 1, 0, 0, 0, 0];
    pub(super) const HEADERS: u8 = 1;
    pub(super) const DATA: u8 = 0;
    pub(super) const END_STREAM: u8 = 1;

    /// A frame: its type, flags and stream, and its payload.
    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("a small frame")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// The flags and payload of the first frame of `kind` on stream 1,
    /// acknowledging the peer's settings on the way.
    pub(super) async fn first(stream: &mut TcpStream, kind: u8) -> (u8, Vec<u8>) {
        let read = async {
            loop {
                let mut head = [0u8; 9];
                stream.read_exact(&mut head).await.expect("a frame head");
                let length =
                    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let mut payload = vec![0u8; length];
                stream
                    .read_exact(&mut payload)
                    .await
                    .expect("a frame payload");
                let on = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                if head[3] == 4 && head[4] & 1 == 0 {
                    stream.write_all(SETTINGS_ACK).await.expect("write");
                }
                if head[3] == kind && on == 1 {
                    return (head[4], payload);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the frame in time")
    }
}

#[tokio::test]
async fn an_empty_answer_ends_with_its_http2_headers() {
    let backend = Backend::ok().await;
    let proxy = crate::proxy::testing::Proxy::start(|port| {
        crate::proxy::testing::http_route_yaml(port, "app.test", backend.addr)
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    // GET / for other.test (no such host: an empty 404), HPACK by hand:
    // :method GET, :scheme http, :path / indexed; :authority literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 10];
    block.extend_from_slice(b"other.test");
    let mut hello = frames::PREFACE.to_vec();
    hello.extend_from_slice(frames::SETTINGS);
    hello.extend(frames::frame(frames::HEADERS, 0x5, 1, &block));
    stream.write_all(&hello).await.expect("write");
    let (flags, _) = frames::first(&mut stream, frames::HEADERS).await;
    assert_eq!(flags & frames::END_STREAM, frames::END_STREAM, "{flags:#x}");
}

#[tokio::test]
async fn a_forwarded_body_ends_with_its_last_http2_data_frame() {
    let listener = tokio::net::TcpListener::bind((crate::proxy::testing::LOOPBACK, 0))
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("address");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _backend = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(frames::SETTINGS).await.expect("write");
        let mut preface = [0u8; 24];
        stream.read_exact(&mut preface).await.expect("preface");
        let _ = tx.send(frames::first(&mut stream, frames::DATA).await);
        // Held open until the test ends.
        std::future::pending::<()>().await;
    });
    let routes = super::upstream_phase::route_to("h2-body.test", backend, "");
    let proxy = crate::proxy::testing::Proxy::start(|port| {
        super::upstream_phase::yaml(port, &routes, &[("h2-body.test", backend, "HTTP2")], "")
    })
    .await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let (flags, payload) = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the body in time")
        .expect("the backend reads it");
    assert_eq!(payload, b"hello");
    assert_eq!(flags & frames::END_STREAM, frames::END_STREAM, "{flags:#x}");
}
