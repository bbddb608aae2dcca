//! `gateway check --explain-request`: which AuthorizationPolicy rule
//! would allow or deny one request, decided by the engine the proxy runs.
use std::{fmt::Write as _, net::IpAddr, str::FromStr};

use anyhow::Context as _;
use gateway_userspace::{
    plan::Plan,
    proxy::authz::{Attributes, Authorizer, Decision, HttpAttributes},
};
use hyper::{HeaderMap, header::HeaderName, header::HeaderValue};
use serde_json::{Map, Value};

/// `METHOD SCHEME://HOST[:PORT]/PATH from CLIENT [via PEER]`. `http` and
/// `https` are judged on the HTTP chain (`https` sends HOST as SNI),
/// `tcp` and `tls` on the TCP chain (`tls` sends HOST as SNI); the port
/// is the listener's (`ports`, `destination.port`). `via` is the proxy
/// hop in front (the peer, `ipBlocks`); without it the client is the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplainRequest {
    method: String,
    scheme: Scheme,
    authority: String,
    host: String,
    port: u16,
    path: String,
    client: IpAddr,
    peer: IpAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Tcp,
    Tls,
}

impl FromStr for ExplainRequest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SHAPE: &str =
            "expected 'METHOD SCHEME://HOST[:PORT]/PATH from CLIENT_IP [via PEER_IP]'";
        let words: Vec<&str> = text.split_whitespace().collect();
        let (method, url, client, peer) = match words.as_slice() {
            [method, url, "from", client] => (*method, *url, *client, None),
            [method, url, "from", client, "via", peer] => (*method, *url, *client, Some(*peer)),
            _ => return Err(format!("{text:?}: {SHAPE}")),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?}: no scheme; {SHAPE}"))?;
        let (scheme, default_port) = match scheme {
            "http" => (Scheme::Http, 80),
            "https" => (Scheme::Https, 443),
            "tcp" => (Scheme::Tcp, 0),
            "tls" => (Scheme::Tls, 443),
            other => return Err(format!("scheme {other:?}: use http, https, tcp or tls")),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("port {port:?} in {url:?} is not a port number"))?,
            ),
            _ => (authority, default_port),
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{url:?}: a host and a port are needed"));
        }
        let address = |text: &str| {
            text.parse::<IpAddr>()
                .map_err(|_| format!("{text:?} is not an IP address"))
        };
        let client = address(client)?;
        Ok(Self {
            method: method.to_string(),
            scheme,
            authority: authority.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            // Envoy's `url_path`: no query, no fragment.
            path: path.split(['?', '#']).next().unwrap_or("/").to_string(),
            client,
            peer: peer.map(address).transpose()?.unwrap_or(client),
        })
    }
}

/// A `--explain-header 'Name: value'`.
pub(crate) fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected 'Name: value'"))?;
    let name = HeaderName::from_str(name.trim()).map_err(|e| format!("{name:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("{value:?}: {e}"))?;
    Ok((name, value))
}

/// The decision on `request` under `plan`'s policies, as text.
pub(crate) fn explain(
    plan: &Plan,
    request: &ExplainRequest,
    headers: &[(HeaderName, HeaderValue)],
    claims: Option<&str>,
) -> anyhow::Result<String> {
    let authorizer =
        Authorizer::new(&plan.authorization).context("AuthorizationPolicy path templates")?;
    let claims: Option<Map<String, Value>> = claims
        .map(serde_json::from_str)
        .transpose()
        .context("--explain-claims: a JSON object of the verified token's payload")?;
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        header_map.append(name.clone(), value.clone());
    }
    let http = matches!(request.scheme, Scheme::Http | Scheme::Https);
    let sni =
        matches!(request.scheme, Scheme::Https | Scheme::Tls).then_some(request.host.as_str());
    let attributes = Attributes {
        peer: request.peer,
        remote: request.client,
        local: std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), request.port),
        sni,
        http: http.then_some(HttpAttributes {
            authority: &request.authority,
            method: &request.method,
            path: &request.path,
            headers: &header_map,
            jwt: claims.as_ref(),
        }),
    };
    let (chain, engine) = if http {
        ("HTTP", &authorizer.http)
    } else {
        ("TCP", &authorizer.tcp)
    };
    let mut out = String::new();
    if engine.is_empty() {
        let _ = writeln!(
            out,
            "allowed: no AuthorizationPolicy applies to this gateway's {chain} chain"
        );
        return Ok(out);
    }
    let decision = engine.decide(&attributes);
    write_decision(&mut out, chain, &decision);
    Ok(out)
}

fn write_decision(out: &mut String, chain: &str, decision: &Decision) {
    match (&decision.denied, &decision.allowed_by) {
        (Some(denied), _) if denied.id == gateway_userspace::proxy::authz::NO_POLICY => {
            let _ = writeln!(
                out,
                "denied ({chain}): ALLOW policies apply and none of their rules matches: 403 RBAC: access denied (rbac_access_denied_matched_policy[none])"
            );
        }
        (Some(denied), _) => {
            let _ = writeln!(
                out,
                "denied ({chain}) by DENY rule {} of {}: 403 RBAC: access denied",
                denied.id, denied.policy
            );
        }
        (None, Some(allowed)) => {
            let _ = writeln!(
                out,
                "allowed ({chain}) by ALLOW rule {} of {}",
                allowed.id, allowed.policy
            );
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "allowed ({chain}): no DENY rule matches and no ALLOW policy applies"
            );
        }
    }
    if let Some(audited) = &decision.audited {
        let _ = writeln!(
            out,
            "audited by AUDIT rule {} of {}",
            audited.id, audited.policy
        );
    }
    match &decision.dry_run {
        Some(Some(would)) => {
            let _ = writeln!(
                out,
                "dry-run: would be denied by {} of {}",
                would.id, would.policy
            );
        }
        Some(None) => {
            let _ = writeln!(out, "dry-run: would be allowed");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_names_method_url_client_and_peer() {
        let r: ExplainRequest =
            "GET https://Web.example:8443/a/b?q=1 from 203.0.113.7 via 192.0.2.1"
                .parse()
                .expect("parses");
        assert_eq!(r.method, "GET");
        assert_eq!(r.scheme, Scheme::Https);
        assert_eq!((r.host.as_str(), r.port), ("Web.example", 8443));
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.client, "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(r.peer, "192.0.2.1".parse::<IpAddr>().expect("ip"));
        let plain: ExplainRequest = "GET http://web from 2001:db8::7".parse().expect("parses");
        assert_eq!((plain.port, plain.path.as_str()), (80, "/"));
        assert_eq!(plain.peer, plain.client);
    }

    #[test]
    fn a_bad_request_line_says_what_is_expected() {
        for bad in [
            "GET https://web/",
            "GET ftp://web/ from 192.0.2.1",
            "GET https://web:http/ from 192.0.2.1",
            "GET https://web/ from nowhere",
            "GET tcp://db from 192.0.2.1",
        ] {
            let err = bad.parse::<ExplainRequest>().expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
