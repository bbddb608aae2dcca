//! The HTTP phase's tests: pure ones of its headers and forwarding here,
//! and through live requests the route phase (`handle_phase`), the
//! upstream phase (`upstream_phase`), its retries (`retry_phase`), outlier
//! detection (`outlier_phase`), mirrors (`mirror_phase`), the fault and
//! CORS filters (`filter_phase`) and the log phase (`log_phase`).
mod filter_phase;
mod handle_phase;
mod log_phase;
mod mirror_phase;
mod outlier_phase;
mod retry_phase;
mod upstream_phase;

use std::{net::SocketAddr, sync::OnceLock};

use std::time::Duration;

use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};

use super::{forward::*, headers::*, *};
use crate::plan::Backend;
use crate::plan::ClusterId;
use crate::plan::HeaderOperations;

fn downstream(tls: bool) -> Downstream {
    Downstream {
        tls,
        local: SocketAddr::from(([203, 0, 113, 1], 80)),
        remote: SocketAddr::from(([203, 0, 113, 2], 40000)),
        sni: None,
        workload_interface: None,
        remote_ip: OnceLock::new(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

#[test]
fn forwarded_proto_is_the_connections_unless_a_trusted_hop_says() {
    let xfp = headers(&[("x-forwarded-proto", "https")]);
    assert_eq!(forwarded_proto(&xfp, &downstream(false), 0), "http");
    assert_eq!(forwarded_proto(&xfp, &downstream(false), 1), "https");
    assert_eq!(
        forwarded_proto(&HeaderMap::new(), &downstream(true), 1),
        "https"
    );
    let odd = headers(&[("x-forwarded-proto", "gopher")]);
    assert_eq!(forwarded_proto(&odd, &downstream(false), 1), "http");
}

#[test]
fn forwarding_headers_append_the_peer_and_set_the_scheme() {
    let mut h = headers(&[
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
    ]);
    set_forwarding_headers(&mut h, &downstream(false), "http");
    assert_eq!(h["x-forwarded-for"], "198.51.100.7,203.0.113.2");
    assert_eq!(h["x-forwarded-proto"], "http");
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "{id}");
}

#[test]
fn request_ids_are_version_4_uuids() {
    let first = uuid_v4();
    assert_ne!(first, uuid_v4());
    let text = std::str::from_utf8(&first).expect("ascii");
    let groups: Vec<&str> = text.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{text}"
    );
    assert!(
        text.bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(groups[2].starts_with('4'), "version 4: {text}");
    assert!(
        matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
        "variant: {text}"
    );
}

#[test]
fn a_clients_request_id_is_kept() {
    let mut h = headers(&[("x-request-id", "abc")]);
    set_forwarding_headers(&mut h, &downstream(true), "https");
    assert_eq!(h["x-request-id"], "abc");
    assert_eq!(h["x-forwarded-for"], "203.0.113.2");
}

#[test]
fn hop_by_hop_headers_are_removed_and_upgrade_kept_for_websocket() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "gzip"),
        ("upgrade", "websocket"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
    assert!(h.get("te").is_none() && h.get("upgrade").is_none());
    assert_eq!(h["x-kept"], "1");
    let mut ws = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    strip_hop_by_hop(&mut ws, true);
    assert_eq!(ws["upgrade"], "websocket");
    assert_eq!(ws["connection"], "upgrade");
    let mut grpc = headers(&[("te", "trailers")]);
    strip_hop_by_hop(&mut grpc, false);
    assert_eq!(grpc["te"], "trailers");
}

#[test]
fn header_operations_set_add_remove() {
    let mut h = headers(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let ops = HeaderOperations {
        set: vec![("a".into(), "2".into())],
        add: vec![("b".into(), "2".into())],
        remove: vec!["c".into()],
    };
    apply_header_operations(&mut h, &ops);
    assert_eq!(h.get_all("a").iter().collect::<Vec<_>>(), ["2"]);
    assert_eq!(h.get_all("b").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(h.get("c").is_none());
}

#[test]
fn service_time_is_the_whole_milliseconds() {
    for millis in [0, 1, 9, 10, 11, 42, 99, 100, 101, 12_345] {
        let value = millis_header(Duration::from_micros(millis * 1000 + 999));
        assert_eq!(value.to_str().ok(), Some(millis.to_string().as_str()));
    }
}

#[test]
fn the_host_is_kept_only_when_it_is_the_single_one_wanted() {
    assert!(is_only_host(&headers(&[("host", "a.test")]), "a.test"));
    assert!(!is_only_host(&headers(&[("host", "a.test")]), "b.test"));
    assert!(!is_only_host(&headers(&[]), "a.test"));
    let two = headers(&[("host", "a.test"), ("host", "a.test")]);
    assert!(!is_only_host(&two, "a.test"));
}

#[test]
fn weighted_backends_split_by_weight() {
    let backends = [
        Backend {
            weight: 90,
            target: Ok(ClusterId(0)),
            headers: Default::default(),
            tunnel: None,
        },
        Backend {
            weight: 10,
            target: Ok(ClusterId(1)),
            headers: Default::default(),
            tunnel: None,
        },
    ];
    let a = (0..10_000)
        .filter(|_| {
            pick_backend(&backends).and_then(|b| b.target.as_ref().ok()) == Some(&ClusterId(0))
        })
        .count();
    assert!((8_700..9_300).contains(&a), "{a}");
}

#[test]
fn an_upgrade_needs_both_the_upgrade_header_and_the_connection_token() {
    let both = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
    ]);
    assert!(is_upgrade(&both));
    assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    let other_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
    assert!(!is_upgrade(&other_token));
}

#[test]
fn a_websocket_handshake_still_drops_what_connection_names_besides_upgrade() {
    let mut ws = headers(&[
        ("connection", "Upgrade, x-secret"),
        ("upgrade", "websocket"),
        ("x-secret", "1"),
    ]);
    strip_hop_by_hop(&mut ws, true);
    assert!(ws.get("x-secret").is_none());
    assert_eq!(ws["upgrade"], "websocket");
}

#[test]
fn each_hop_by_hop_header_goes_without_connection_naming_it() {
    for name in [
        "transfer-encoding",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "keep-alive",
        "proxy-connection",
    ] {
        let mut h = headers(&[(name, "x"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(name).is_none(), "{name} crossed");
        assert_eq!(h["x-kept"], "1");
    }
}

#[test]
fn a_trusted_forwarded_proto_of_http_or_nonsense_is_read_as_such() {
    let http = headers(&[("x-forwarded-proto", "HTTP")]);
    assert_eq!(forwarded_proto(&http, &downstream(true), 1), "http");
    let odd = headers(&[("x-forwarded-proto", "gopher")]);
    assert_eq!(forwarded_proto(&odd, &downstream(true), 1), "https");
}

#[test]
fn a_blank_forwarded_for_is_replaced_by_the_peer() {
    let mut h = headers(&[("x-forwarded-for", " ")]);
    set_forwarding_headers(&mut h, &downstream(false), "http");
    assert_eq!(h["x-forwarded-for"], "203.0.113.2");
}

#[test]
fn every_request_id_has_version_4_and_the_rfc_4122_variant() {
    // Each id has random bits beside the fixed ones: 64 ids leave a wrong
    // bit a chance of 2^-64 to look right every time.
    for _ in 0..64 {
        let id = uuid_v4();
        assert_eq!(id[14], b'4', "{}", String::from_utf8_lossy(&id));
        assert!(
            matches!(id[19], b'8' | b'9' | b'a' | b'b'),
            "{}",
            String::from_utf8_lossy(&id)
        );
    }
}

#[test]
fn request_ids_are_random_in_both_halves() {
    let (first, second) = (uuid_v4(), uuid_v4());
    // After the variant's two bits, the second half is random too.
    assert_ne!(first[20..], second[20..]);
    assert_ne!(first[..18], second[..18]);
}

#[test]
fn the_logged_authority_is_the_uri_s_else_the_single_host() {
    let head = |uri_authority, host_headers| RequestHead {
        http10: false,
        uri_authority,
        host_headers,
        path_and_query: Some("/"),
    };
    assert_eq!(
        authority_of(&head(Some("uri.test"), &[b"host.test"])).as_deref(),
        Some("uri.test")
    );
    assert_eq!(
        authority_of(&head(None, &[b"host.test"])).as_deref(),
        Some("host.test")
    );
    assert_eq!(authority_of(&head(None, &[b"a.test", b"b.test"])), None);
    assert_eq!(authority_of(&head(None, &[])), None);
}

#[test]
fn header_text_is_a_headers_value_when_it_is_text() {
    let h = headers(&[("user-agent", "curl/8")]);
    assert_eq!(
        header_text(&h, &header::USER_AGENT).as_deref(),
        Some("curl/8")
    );
    assert_eq!(header_text(&h, &header::ACCEPT), None);
}

#[test]
fn protocols_are_named_as_envoy_logs_them() {
    assert_eq!(protocol_name(Version::HTTP_10), "HTTP/1.0");
    assert_eq!(protocol_name(Version::HTTP_11), "HTTP/1.1");
    assert_eq!(protocol_name(Version::HTTP_2), "HTTP/2");
}
