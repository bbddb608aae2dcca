use std::net::SocketAddr;

use super::*;
use crate::plan::{HostPattern, HostTable, VirtualHost};

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
