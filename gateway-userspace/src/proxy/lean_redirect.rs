//! The `tls.httpsRedirect` 301, the whole job of most gateways' plaintext
//! port, answered without hyper: read a request head, decide with the same
//! [`redirect::answer`] hyper's path uses, write the 301, and go on with
//! the next request on the connection. Building hyper's connection, request
//! and response for an answer that needs none of them is most of the
//! proxy's own CPU time per redirect.
//!
//! Only the plainest requests are answered here: HTTP/1.1 in origin form,
//! no body, no `Upgrade`, `Expect` or `X-Forwarded-Proto`, and an answer
//! that is the redirect. Anything else (another answer, HTTP/1.0 or
//! HTTP/2, a body, a malformed or oversized head) goes to hyper with every
//! byte read so far put back, and hyper serves the rest of the connection
//! exactly as it would have served all of it.
use std::{
    cell::RefCell,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Instant, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    access_log::Entry,
    // A head longer than the limit goes to hyper, which answers it (431).
    context::{Conn, Downstream},
    downstream::{draining, serve_http},
    http::{SERVER_HEADER, VirtualHosts},
    redirect::{self, Answer, RequestHead},
    stream::{MAX_REQUEST_HEAD, Probed, Rewind, head_length},
};
use crate::connection::{Expiry, with_deadlines};

/// Headers looked at per request; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Bytes asked for per read: a whole ordinary request head.
const READ_SIZE: usize = 4096;

/// Whether a line of `buffer` past `searched` ends in a bare LF. Hyper
/// accepts such heads (RFC 9112 §2.2 lets a recipient), but the search for
/// `\r\n\r\n` here would never find their end and the client would wait
/// for the head timeout: they go to hyper.
fn bare_line_feed(buffer: &[u8], searched: usize) -> bool {
    // Each LF with the byte before it (none before the first byte).
    (searched..buffer.len())
        .filter(|&at| buffer[at] == b'\n')
        .any(|at| at == 0 || buffer[at - 1] != b'\r')
}

/// How the lean loop ended.
enum Next {
    /// The connection is done (closed by the client, or `Connection: close`).
    Close,
    /// A request this module does not answer: hyper takes the connection.
    HandOver,
}

/// Serves a plaintext HTTP connection: redirects here, the rest by hyper.
pub(super) async fn serve(
    mut stream: TcpStream,
    downstream: Downstream,
    hosts: &Arc<VirtualHosts>,
    mut conn: Conn<'_>,
) {
    let mut buffer = Vec::with_capacity(READ_SIZE);
    let (activity, gate) = (conn.activity, conn.gate);
    let outcome = {
        let lean = answer_redirects(&mut stream, &mut buffer, &downstream, hosts, &mut conn);
        tokio::pin!(lean);
        with_deadlines(lean, activity, gate).await
    };
    match outcome {
        Ok(Ok(Next::HandOver)) => {
            let raw = Some(stream.as_raw_fd());
            let stream = Probed::new(Rewind::new(buffer, stream), activity);
            serve_http(stream, raw, downstream, hosts, conn).await;
        }
        Ok(Ok(Next::Close)) | Ok(Err(_)) | Err(Expiry::Idle | Expiry::StreamIdle) => {}
        Err(Expiry::Head) => {
            // Part of an HTTP/1 head, not all of it in time: Envoy's 408
            // (a partial HTTP/2 preface is closed without a word, as by hyper).
            if !buffer.is_empty() && !buffer.starts_with(b"PRI ") {
                let _ = stream.try_write(super::downstream::REQUEST_TIMEOUT);
            }
        }
    }
}

/// Answers requests while they are redirects; returns when the connection
/// ends or a request needs hyper (its bytes, and any after them, left in
/// `buffer`).
async fn answer_redirects(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    downstream: &Downstream,
    hosts: &VirtualHosts,
    conn: &mut Conn<'_>,
) -> std::io::Result<Next> {
    let mut response = Vec::with_capacity(256);
    // A client that sends its request with the handshake's last ACK has
    // it here already: take it now rather than after the reactor's next
    // turn reports the new socket readable.
    read_now(stream, buffer)?;
    loop {
        // Where the search for the head's end resumes: each read only
        // looks at what it added (a head dribbled in small segments would
        // otherwise be scanned again from the start after every read).
        let mut searched = 0;
        let head_len = loop {
            if let Some(len) = head_length(buffer, searched) {
                break len;
            }
            if bare_line_feed(buffer, searched) {
                return Ok(Next::HandOver);
            }
            searched = buffer.len();
            if buffer.len() >= MAX_REQUEST_HEAD {
                return Ok(Next::HandOver);
            }
            let read = tokio::select! {
                read = stream.read_buf(buffer) => read?,
                () = draining(&mut conn.drain), if buffer.is_empty() => return Ok(Next::Close),
            };
            if read == 0 {
                // Closed between requests, or within a head hyper would
                // have refused the same way: nothing to answer.
                return Ok(Next::Close);
            }
            // A next request has begun: its head is due, not the idle timeout.
            conn.activity.received();
        };
        let started = Instant::now();
        let logging = conn.shared.access_log.enabled();
        let Some(redirect) = redirect_of(&buffer[..head_len], hosts, downstream, logging) else {
            return Ok(Next::HandOver);
        };
        let request = conn.activity.begin();
        let close = redirect.close || *conn.drain.borrow();
        response.clear();
        write_response(&mut response, &redirect.location, close);
        // The last answer on the connection waits for the close (MSG_MORE),
        // so answer and FIN leave in one segment instead of two.
        let sent = if close {
            send_more(stream, &response)
        } else {
            0
        };
        stream.write_all(&response[sent..]).await?;
        drop(request);
        let mut entry = redirect.entry;
        entry.downstream_local = Some(downstream.local);
        entry.downstream_remote = Some(downstream.remote);
        entry.workload_interface = downstream.workload_interface.clone();
        entry.duration = started.elapsed();
        conn.shared.finished(&mut entry);
        buffer.drain(..head_len);
        if close {
            // Bytes the client sent after asking to close would turn the
            // close into a reset that could overtake the answer: a FIN
            // first then. Otherwise the close itself sends the FIN.
            if !buffer.is_empty() {
                let _ = stream.shutdown().await;
            }
            return Ok(Next::Close);
        }
    }
}

/// Sends what the socket takes now of `bytes` with `MSG_MORE` (held until
/// the close or the next send), and returns how much that was.
fn send_more(stream: &TcpStream, bytes: &[u8]) -> usize {
    use nix::sys::socket::{MsgFlags, send};
    // nix names no MSG_MORE; the bit is the kernel's.
    let flags = MsgFlags::from_bits_retain(libc::MSG_MORE)
        | MsgFlags::MSG_DONTWAIT
        | MsgFlags::MSG_NOSIGNAL;
    send(stream.as_raw_fd(), bytes, flags).unwrap_or(0)
}

/// Reads what has arrived, without waiting: nothing (`EAGAIN`) is fine.
fn read_now(stream: &TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    use nix::{
        errno::Errno,
        sys::socket::{MsgFlags, recv},
    };
    let mut chunk = [0u8; READ_SIZE];
    match recv(stream.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            Ok(())
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Headers whose handling is hyper's: a chunked body, a protocol upgrade,
/// `100-continue`, and the forwarded scheme (trusted or not by hop count).
const NEEDS_HYPER: [&str; 4] = [
    "transfer-encoding",
    "upgrade",
    "expect",
    "x-forwarded-proto",
];

/// A redirect to answer, and the access-log entry for it.
struct Redirect {
    location: String,
    /// The client asked to close (`Connection: close`).
    close: bool,
    /// For the metrics, and with its text fields for the access log when
    /// that is on.
    entry: Entry,
}

/// The redirect `head` gets, if it is one of the plain requests answered
/// here; `None` sends it to hyper.
fn redirect_of(
    head: &[u8],
    hosts: &VirtualHosts,
    downstream: &Downstream,
    logging: bool,
) -> Option<Redirect> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    if request.version != Some(1) {
        return None;
    }
    let (method, path) = (request.method?, request.path?);
    // At most two Host values matter (none, one, or too many): no allocation.
    let mut host_values: [&[u8]; 2] = [b"", b""];
    let mut hosts_seen = 0;
    let mut close = false;
    let mut user_agent = None;
    for header in request.headers.iter() {
        let name = header.name;
        if NEEDS_HYPER.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            // A body, or a length hyper would refuse: hyper's to handle.
            if header.value.trim_ascii() != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("host") {
            if let Some(slot) = host_values.get_mut(hosts_seen) {
                *slot = header.value;
            }
            hosts_seen += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("user-agent") {
            user_agent = std::str::from_utf8(header.value).ok();
        }
    }
    if !path.starts_with('/') || method == "CONNECT" {
        return None;
    }
    let request_head = RequestHead {
        http10: false,
        uri_authority: None,
        host_headers: &host_values[..hosts_seen.min(2)],
        path_and_query: Some(path),
    };
    let Answer::Redirect { location } = redirect::answer(hosts, request_head, downstream.tls)
    else {
        return None;
    };
    let mut entry = Entry {
        protocol: Some("HTTP/1.1"),
        status: 301,
        details: Some("via_https_redirect"),
        ..Entry::default()
    };
    if logging {
        entry.start = Some(SystemTime::now());
        entry.method = Some(method.to_string());
        entry.path = Some(path.to_string());
        entry.user_agent = user_agent.map(str::to_string);
        entry.authority = host_values[..hosts_seen.min(1)]
            .first()
            .and_then(|host| std::str::from_utf8(host).ok())
            .map(str::to_string);
    }
    Some(Redirect {
        location,
        close,
        entry,
    })
}

/// The 301 as hyper writes the same response: the same header names,
/// values and order.
fn write_response(out: &mut Vec<u8>, location: &str, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 301 Moved Permanently\r\nlocation: ");
    out.extend_from_slice(location.as_bytes());
    out.extend_from_slice(b"\r\nserver: ");
    out.extend_from_slice(SERVER_HEADER.as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ncontent-length: 0\r\ndate: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The `date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn with_date(use_it: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        use_it(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests;
