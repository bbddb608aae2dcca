//! The gateway's header work on a request and its response: hop-by-hop
//! headers, `X-Forwarded-For`/`-Proto` and `X-Request-Id`, a route's header
//! operations, `x-envoy-upstream-service-time`, and the texts the log
//! entry takes from a request's head.
use std::{net::IpAddr, time::Duration};

use hyper::{
    HeaderMap, Version,
    header::{self, HeaderName, HeaderValue},
};

use crate::{
    plan::HeaderOperations,
    proxy::{context::Downstream, redirect::RequestHead, upstream},
};

/// Whether the request's only `Host` is `authority` already (kept as it
/// is, in its place, without a new value).
pub(super) fn is_only_host(headers: &HeaderMap, authority: &str) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    matches!(
        (hosts.next(), hosts.next()),
        (Some(host), None) if host.as_bytes() == authority.as_bytes()
    )
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

pub(super) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy, except the
/// upgrade handshake of a websocket, which must reach the backend.
///
/// One pass over the names a message has finds what goes: most messages
/// carry none of these but `connection`, and looking each candidate up by
/// name (hashing it, twice per request) cost more than the pass.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let connection = headers.get_all(header::CONNECTION);
    let named_by_connection = |name: &HeaderName| {
        connection.iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',').map(str::trim).any(|token| {
                    token.eq_ignore_ascii_case(name.as_str())
                        && !(keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
                })
            })
        })
    };
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let hop = if name == header::CONNECTION || name == header::UPGRADE {
            !keep_upgrade
        } else if name == header::TE {
            // `te: trailers` is what gRPC needs; anything else goes.
            headers
                .get(header::TE)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        } else {
            name == header::TRANSFER_ENCODING
                || name == header::PROXY_AUTHENTICATE
                || name == header::PROXY_AUTHORIZATION
                || name == header::TRAILER
                || name.as_str() == "keep-alive"
                || name.as_str() == "proxy-connection"
        };
        if hop || named_by_connection(name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme the request was made with: the connection's, unless a
/// trusted hop in front (`--trusted-proxies` >= 1) says otherwise (Envoy's
/// `use_remote_address` with `xff_num_trusted_hops`).
pub(super) fn forwarded_proto(
    headers: &HeaderMap,
    downstream: &Downstream,
    trusted: u32,
) -> &'static str {
    let own = if downstream.tls { "https" } else { "http" };
    if trusted == 0 {
        return own;
    }
    match headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
        Some(v) if v.eq_ignore_ascii_case(b"https") => "https",
        Some(v) if v.eq_ignore_ascii_case(b"http") => "http",
        _ => own,
    }
}

/// The client's address as Envoy takes it at a gateway: the peer, or with
/// `trusted` proxies in front, the address that many hops before the peer
/// in `X-Forwarded-For` (after the peer was appended to it); the peer when
/// the header is shorter or unreadable.
pub(super) fn client_address(headers: &HeaderMap, downstream: &Downstream, trusted: u32) -> IpAddr {
    if trusted == 0 {
        return downstream.remote.ip();
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    usize::try_from(trusted)
        .ok()
        .and_then(|n| hops.len().checked_sub(n + 1))
        .and_then(|at| hops.get(at)?.parse().ok())
        .unwrap_or_else(|| downstream.remote.ip())
}

/// What Envoy sets at an Istio gateway: `X-Forwarded-For` gains the peer
/// address, `X-Forwarded-Proto` is the scheme decided above, and a request
/// without `X-Request-Id` gets a fresh UUIDv4 (Istio keeps a client's id).
pub(super) fn set_forwarding_headers(
    headers: &mut HeaderMap,
    downstream: &Downstream,
    proto: &'static str,
) {
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            HeaderValue::from_str(&format!("{existing},{}", downstream.remote.ip())).ok()
        }
        _ => Some(downstream.remote_ip_header()),
    };
    if let Some(value) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if !headers.contains_key(&X_REQUEST_ID) {
        if let Ok(value) = HeaderValue::from_bytes(&uuid_v4()) {
            headers.insert(X_REQUEST_ID.clone(), value);
        }
    }
}

/// A random (version 4) UUID, in its 36-character text form.
pub(super) fn uuid_v4() -> [u8; 36] {
    let (a, b) = (upstream::random(), upstream::random());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    let bytes = (u128::from(a) << 64 | u128::from(b)).to_be_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            at += 1; // a dash
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    text
}

/// `set` replaces, `add` appends, `remove` deletes (Istio `Headers.HeaderOperations`).
pub(super) fn apply_header_operations(headers: &mut HeaderMap, ops: &HeaderOperations) {
    for (name, value) in &ops.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
}

pub(super) fn authority_of(head: &RequestHead<'_>) -> Option<String> {
    head.uri_authority
        .map(str::to_string)
        .or_else(|| match head.host_headers {
            [one] => std::str::from_utf8(one).ok().map(str::to_string),
            _ => None,
        })
}

pub(super) fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(super) fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// `x-envoy-upstream-service-time`. Times under 100 ms, nearly all of
/// them, are slices of one static text: no allocation per response.
pub(super) fn millis_header(elapsed: Duration) -> HeaderValue {
    const SMALL: &str = "0123456789\
        10111213141516171819202122232425262728293031323334353637383940414243444546474849\
        50515253545556575859606162636465666768697071727374757677787980818283848586878889\
        90919293949596979899";
    let millis = elapsed.as_millis();
    let small = match usize::try_from(millis) {
        Ok(digit @ 0..=9) => SMALL.get(digit..=digit),
        Ok(two @ 10..=99) => SMALL.get(10 + 2 * (two - 10)..12 + 2 * (two - 10)),
        _ => None,
    };
    match small {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
    }
}
