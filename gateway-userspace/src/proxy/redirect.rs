//! What the gateway answers from the request head alone, before any route
//! is looked at: bad heads, unknown hosts, the `tls.httpsRedirect` 301.
//! Pure so the Istio/Envoy contract is pinned by unit tests.
use super::route::VirtualHosts;

/// The proxy's answer to one request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Route the request within virtual host `host` (an index into
    /// [`VirtualHosts::hosts`]), for the validated `authority`.
    Proceed { authority: &'a str, host: usize },
    /// 301 with `Location`, empty body (Envoy's `require_tls: ALL`).
    Redirect { location: String },
    /// 404: no virtual host for the authority, or a virtual host with no
    /// routes (Envoy's `NR`).
    NotFound,
    /// 400: the request cannot be routed (missing or invalid authority).
    BadRequest { reason: &'static str },
    /// 426: HTTP/1.0, which Istio's gateway does not accept.
    UpgradeRequired,
}

/// The request facts the answer depends on.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// HTTP/1.0 request.
    pub http10: bool,
    /// Absolute-form or HTTP/2 `:authority`, which takes precedence over Host.
    pub uri_authority: Option<&'a str>,
    /// Every `Host` header value, in order.
    pub host_headers: &'a [&'a [u8]],
    /// `:path` including the query; `None` for authority-form (CONNECT).
    pub path_and_query: Option<&'a str>,
}

/// Decides the answer for a request on a listener serving `hosts`;
/// `already_https` is the request's effective scheme (TLS connection, or a
/// trusted hop's `X-Forwarded-Proto: https`), which skips the redirect.
pub fn answer<'a>(hosts: &VirtualHosts, head: RequestHead<'a>, already_https: bool) -> Answer<'a> {
    if head.http10 {
        return Answer::UpgradeRequired;
    }
    let authority = match (head.uri_authority, head.host_headers) {
        (Some(authority), _) => authority,
        (None, [host]) => match std::str::from_utf8(host) {
            Ok(host) => host,
            Err(_) => {
                return Answer::BadRequest {
                    reason: "invalid Host header",
                };
            }
        },
        (None, []) => {
            return Answer::BadRequest {
                reason: "missing Host header",
            };
        }
        (None, _) => {
            return Answer::BadRequest {
                reason: "multiple Host headers",
            };
        }
    };
    if !is_valid_authority(authority) {
        return Answer::BadRequest {
            reason: "invalid Host header",
        };
    }
    // Envoy answers a path that does not start with `/` (asterisk-form
    // `OPTIONS *`, HTTP/2 `:path *`) with 404 before routing
    // (`absolute_path_rejected`), and so never builds a Location from it.
    let Some(path) = head.path_and_query.filter(|path| path.starts_with('/')) else {
        return Answer::NotFound;
    };
    let Some(host) = hosts.position(authority) else {
        return Answer::NotFound;
    };
    let Some(virtual_host) = hosts.hosts().get(host) else {
        return Answer::NotFound;
    };
    if virtual_host.https_redirect && !already_https {
        // Envoy copies the authority verbatim, port included, and never invents one.
        Answer::Redirect {
            location: format!("https://{authority}{path}"),
        }
    } else if virtual_host.routes.is_empty() {
        // Envoy's 404 NR for a virtual host without routes.
        Answer::NotFound
    } else {
        Answer::Proceed { authority, host }
    }
}

/// RFC 3986 `host [ ":" port ]` characters: unreserved, sub-delims, `:`,
/// brackets for IPv6 literals and `%` for escapes. Rejects `/`, `?`, `#`,
/// `@` and whitespace so a Host header cannot smuggle a path into `Location`.
fn is_valid_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{HostPattern, HostTable, VirtualHost};

    fn dataengine() -> VirtualHosts {
        VirtualHosts::new(HostTable::new([VirtualHost {
            pattern: HostPattern::from_server_host("dataengine.com"),
            https_redirect: true,
            routes: Vec::new(),
        }]))
        .expect("hosts")
    }

    fn head<'a>(hosts: &'a [&'a [u8]], path: &'a str) -> RequestHead<'a> {
        RequestHead {
            http10: false,
            uri_authority: None,
            host_headers: hosts,
            path_and_query: Some(path),
        }
    }

    #[test]
    fn redirect_keeps_host_path_and_query_verbatim() {
        let answer = answer(&dataengine(), head(&[b"dataengine.com"], "/x?y=1"), false);
        assert_eq!(
            answer,
            Answer::Redirect {
                location: "https://dataengine.com/x?y=1".into()
            }
        );
    }

    #[test]
    fn redirect_keeps_the_port_of_the_host_header() {
        let answer = answer(&dataengine(), head(&[b"DataEngine.com:8080"], "/"), false);
        assert_eq!(
            answer,
            Answer::Redirect {
                location: "https://DataEngine.com:8080/".into()
            }
        );
    }

    #[test]
    fn undeclared_host_is_not_found_not_redirected() {
        assert_eq!(
            answer(&dataengine(), head(&[b"other.com"], "/"), false),
            Answer::NotFound
        );
    }

    #[test]
    fn absolute_form_authority_wins_over_host_header() {
        let mut h = head(&[b"other.com"], "/a");
        h.uri_authority = Some("dataengine.com");
        assert_eq!(
            answer(&dataengine(), h, false),
            Answer::Redirect {
                location: "https://dataengine.com/a".into()
            }
        );
    }

    #[test]
    fn missing_host_is_a_bad_request() {
        assert!(matches!(
            answer(&dataengine(), head(&[], "/"), false),
            Answer::BadRequest { .. }
        ));
    }

    #[test]
    fn duplicate_host_headers_are_a_bad_request() {
        let hosts: &[&[u8]] = &[b"dataengine.com", b"dataengine.com"];
        assert!(matches!(
            answer(&dataengine(), head(hosts, "/"), false),
            Answer::BadRequest { .. }
        ));
    }

    #[test]
    fn host_with_path_characters_is_a_bad_request() {
        let star = VirtualHosts::new(HostTable::new([VirtualHost {
            pattern: HostPattern::Any,
            https_redirect: true,
            routes: Vec::new(),
        }]))
        .expect("hosts");
        for bad in [&b"evil.com/x"[..], b"a@b.com", b"a b", b""] {
            assert!(
                matches!(
                    answer(&star, head(&[bad], "/"), false),
                    Answer::BadRequest { .. }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn http10_gets_upgrade_required() {
        let mut h = head(&[b"dataengine.com"], "/");
        h.http10 = true;
        assert_eq!(answer(&dataengine(), h, false), Answer::UpgradeRequired);
    }

    #[test]
    fn host_without_redirect_has_no_routes_yet() {
        let plain = VirtualHosts::new(HostTable::new([VirtualHost {
            pattern: HostPattern::from_server_host("plain.com"),
            https_redirect: false,
            routes: Vec::new(),
        }]))
        .expect("hosts");
        assert_eq!(
            answer(&plain, head(&[b"plain.com"], "/"), false),
            Answer::NotFound
        );
    }

    #[test]
    fn host_with_query_or_fragment_is_a_bad_request() {
        let star = VirtualHosts::new(HostTable::new([VirtualHost {
            pattern: HostPattern::Any,
            https_redirect: true,
            routes: Vec::new(),
        }]))
        .expect("hosts");
        for bad in [&b"evil.com?x"[..], b"evil.com#x"] {
            assert_eq!(
                answer(&star, head(&[bad], "/"), false),
                Answer::BadRequest {
                    reason: "invalid Host header"
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn asterisk_form_is_404_as_envoy_answers_it_never_a_location() {
        for path in ["*", "x", ""] {
            assert_eq!(
                answer(&dataengine(), head(&[b"dataengine.com:8443"], path), false),
                Answer::NotFound,
                "{path:?}"
            );
        }
    }

    fn routed() -> VirtualHosts {
        use crate::plan::{Route, RouteAction};
        let table = HostTable::new([VirtualHost {
            pattern: HostPattern::from_server_host("dataengine.com"),
            https_redirect: true,
            routes: vec![Route {
                source: "VirtualService a/b spec.http[0]".into(),
                matches: Vec::new(),
                action: RouteAction::DirectResponse {
                    status: 200,
                    body: None,
                },
                catch_all: true,
                request_headers: Default::default(),
                response_headers: Default::default(),
                fault: None,
                cors: None,
            }],
        }]);
        VirtualHosts::new(table).expect("hosts")
    }

    #[test]
    fn a_request_already_on_https_is_routed_not_redirected() {
        let h = head(&[b"dataengine.com:8443"], "/x");
        assert_eq!(
            answer(&routed(), h, true),
            Answer::Proceed {
                authority: "dataengine.com:8443",
                host: 0
            }
        );
        assert!(matches!(
            answer(&routed(), h, false),
            Answer::Redirect { .. }
        ));
    }

    #[test]
    fn https_without_routes_is_404_not_a_loop() {
        assert_eq!(
            answer(&dataengine(), head(&[b"dataengine.com"], "/"), true),
            Answer::NotFound
        );
    }
}
