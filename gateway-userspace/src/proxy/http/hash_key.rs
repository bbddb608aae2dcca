//! A request's consistent-hash key, as Envoy's route hash policies (which
//! Istio's `ConsistentHashToHashPolicy` sets) compute it: a header's
//! value, a cookie's, the client address, or a query parameter's; and
//! the cookie the gateway sets when the key is a cookie the request lacks
//! and the rule gives it a `ttl`.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hyper::{
    HeaderMap,
    header::{self, HeaderValue},
};

use crate::{plan::HashKey, proxy::upstream::stable_hash};

/// The key's hash, if the request has one, and a `Set-Cookie` for the
/// response when the gateway made the cookie up.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RequestHash {
    pub(super) hash: Option<u64>,
    pub(super) set_cookie: Option<HeaderValue>,
}

/// The connection's two ends, from which a generated cookie is made.
pub(super) struct Ends {
    pub(super) client: IpAddr,
    pub(super) remote: SocketAddr,
    pub(super) local: SocketAddr,
}

pub(super) fn request_hash(
    key: &HashKey,
    headers: &HeaderMap,
    query: Option<&str>,
    ends: &Ends,
) -> RequestHash {
    let hash = |value: &[u8]| RequestHash {
        hash: Some(stable_hash(value)),
        set_cookie: None,
    };
    match key {
        HashKey::Header(name) => {
            let mut values = headers.get_all(name.as_str()).iter().peekable();
            if values.peek().is_none() {
                return RequestHash::default();
            }
            let joined: Vec<u8> = values
                .flat_map(|v| v.as_bytes().iter().copied().chain([b'\n']))
                .collect();
            hash(&joined)
        }
        HashKey::SourceIp => hash(ends.client.to_string().as_bytes()),
        HashKey::QueryParameter(name) => query
            .and_then(|query| query_value(query, name))
            .map_or_else(RequestHash::default, |value| hash(value.as_bytes())),
        HashKey::Cookie {
            name,
            ttl,
            path,
            attributes,
        } => {
            if let Some(value) = cookie_value(headers, name) {
                return hash(value.as_bytes());
            }
            let Some(ttl) = ttl else {
                return RequestHash::default();
            };
            // Envoy's generated value: a hash of the connection's ends.
            let value = format!(
                "{:016x}",
                stable_hash(format!("{}{}", ends.remote, ends.local).as_bytes())
            );
            RequestHash {
                hash: Some(stable_hash(value.as_bytes())),
                set_cookie: set_cookie(name, &value, *ttl, path.as_deref(), attributes),
            }
        }
    }
}

/// The first value of query parameter `name`, as written.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

/// Envoy's `makeSetCookieValue`: `name="value"`, `Max-Age` unless the
/// ttl is 0 (a session cookie), `Path`, the attributes, `HttpOnly`.
fn set_cookie(
    name: &str,
    value: &str,
    ttl: Duration,
    path: Option<&str>,
    attributes: &[(String, String)],
) -> Option<HeaderValue> {
    let mut text = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        text.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path {
        text.push_str(&format!("; Path={path}"));
    }
    for (attribute, value) in attributes {
        if value.is_empty() {
            text.push_str(&format!("; {attribute}"));
        } else {
            text.push_str(&format!("; {attribute}={value}"));
        }
    }
    text.push_str("; HttpOnly");
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Ends {
        Ends {
            client: IpAddr::from([203, 0, 113, 9]),
            remote: SocketAddr::from(([192, 0, 2, 2], 40000)),
            local: SocketAddr::from(([192, 0, 2, 1], 80)),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn cookie(ttl: Option<Duration>) -> HashKey {
        HashKey::Cookie {
            name: "session".into(),
            ttl,
            path: Some("/".into()),
            attributes: vec![
                ("SameSite".into(), "Strict".into()),
                ("Secure".into(), String::new()),
            ],
        }
    }

    #[test]
    fn a_header_key_hashes_its_value_and_its_absence_gives_none() {
        let key = HashKey::Header("x-user".into());
        let a = request_hash(&key, &headers(&[("x-user", "alice")]), None, &ends());
        let again = request_hash(&key, &headers(&[("x-user", "alice")]), None, &ends());
        let b = request_hash(&key, &headers(&[("x-user", "bob")]), None, &ends());
        assert!(a.hash.is_some());
        assert_eq!(a, again);
        assert_ne!(a.hash, b.hash);
        assert_eq!(
            request_hash(&key, &HeaderMap::new(), None, &ends()).hash,
            None
        );
    }

    #[test]
    fn a_query_key_hashes_the_first_value_of_its_parameter() {
        let key = HashKey::QueryParameter("user".into());
        let hash = |q| request_hash(&key, &HeaderMap::new(), Some(q), &ends()).hash;
        assert_eq!(hash("a=1&user=alice&user=bob"), hash("user=alice"));
        assert_ne!(hash("user=alice"), hash("user=bob"));
        assert_eq!(hash("username=alice"), None);
    }

    #[test]
    fn the_source_ip_key_is_the_client_address() {
        let hash = request_hash(&HashKey::SourceIp, &HeaderMap::new(), None, &ends()).hash;
        assert_eq!(hash, Some(stable_hash(b"203.0.113.9")));
    }

    #[test]
    fn a_present_cookie_is_hashed_and_none_is_set() {
        let found = request_hash(
            &cookie(Some(Duration::from_secs(60))),
            &headers(&[("cookie", "a=1; session=\"abc\"")]),
            None,
            &ends(),
        );
        assert_eq!(found.hash, Some(stable_hash(b"abc")));
        assert_eq!(found.set_cookie, None);
    }

    #[test]
    fn an_absent_cookie_with_a_ttl_is_made_and_set_as_envoy_sets_it() {
        let made = request_hash(
            &cookie(Some(Duration::from_secs(60))),
            &HeaderMap::new(),
            None,
            &ends(),
        );
        let set = made.set_cookie.expect("a cookie to set");
        let text = set.to_str().expect("text");
        let value = text
            .strip_prefix("session=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(value, _)| value)
            .expect("a quoted value");
        assert_eq!(value.len(), 16);
        assert_eq!(
            text,
            format!("session=\"{value}\"; Max-Age=60; Path=/; SameSite=Strict; Secure; HttpOnly")
        );
        // The next request, carrying it, lands where this one did.
        assert_eq!(made.hash, Some(stable_hash(value.as_bytes())));
        let session = request_hash(
            &cookie(Some(Duration::ZERO)),
            &HeaderMap::new(),
            None,
            &ends(),
        );
        let session = session.set_cookie.expect("a session cookie");
        assert!(!session.to_str().expect("text").contains("Max-Age"));
    }

    #[test]
    fn an_absent_cookie_without_a_ttl_gives_no_key() {
        assert_eq!(
            request_hash(&cookie(None), &HeaderMap::new(), None, &ends()),
            RequestHash::default()
        );
    }
}
