//! How one attribute is compared, as Envoy's RBAC matchers do under
//! Istio's translation: string forms, header matchers, JWT claims (a
//! string or a list of strings), CIDR blocks.
use std::net::IpAddr;

use hyper::HeaderMap;
use serde_json::{Map, Value};

use crate::model::{RequestPrincipal, Subnet, ValueMatch, Values};

/// A string attribute against Istio's forms; `*` needs a non-empty value
/// (Istio's regex `.+`).
pub(super) fn text(form: &ValueMatch, value: &str) -> bool {
    match form {
        ValueMatch::Presence => !value.is_empty(),
        ValueMatch::Suffix(suffix) => value.ends_with(suffix.as_str()),
        ValueMatch::Prefix(prefix) => value.starts_with(prefix.as_str()),
        ValueMatch::Exact(exact) => value == exact,
    }
}

/// `hosts`: Istio's `HostMatcher`, case-insensitive, against the whole
/// authority (a port included).
pub(super) fn host(form: &ValueMatch, authority: &str) -> bool {
    let lower = |s: &str| s.to_ascii_lowercase();
    match form {
        ValueMatch::Presence => true,
        ValueMatch::Suffix(suffix) => lower(authority).ends_with(&lower(suffix)),
        ValueMatch::Prefix(prefix) => lower(authority).starts_with(&lower(prefix)),
        ValueMatch::Exact(exact) => authority.eq_ignore_ascii_case(exact),
    }
}

/// `request.headers[name]`: Envoy's header matcher, on every value of the
/// header joined with `,`; `*` is `present_match`, true for an empty value.
pub(super) fn header(form: &ValueMatch, headers: &HeaderMap, name: &str) -> bool {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    if *form == ValueMatch::Presence {
        return true;
    }
    let joined = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    text(form, &joined)
}

/// A block as Envoy's `CidrRange` compares it: the address's family must
/// be the block's; host bits in the block are masked off.
pub(super) fn cidr(block: &Subnet, address: IpAddr) -> bool {
    match (block.addr, address.to_canonical()) {
        (IpAddr::V4(net), IpAddr::V4(addr)) => {
            let bits = u32::from(block.prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(net) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(addr)) => {
            let bits = u32::from(block.prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(net) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// The claim at `path` (nested objects), matched as Istio's
/// `MetadataListValueMatcherForJWTClaims`: a string equal to one of the
/// forms, or a list containing such a string. Other JSON types never match.
pub(super) fn claim(claims: &Map<String, Value>, path: &[String], form: &ValueMatch) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut value = claims.get(first);
    for key in rest {
        value = value.and_then(|v| v.as_object()).and_then(|o| o.get(key));
    }
    match value {
        Some(Value::String(s)) => text(form, s),
        Some(Value::Array(items)) => items
            .iter()
            .any(|item| item.as_str().is_some_and(|s| text(form, s))),
        _ => false,
    }
}

/// `requestPrincipals`: the token's `iss` and `sub`, both strings.
pub(super) fn principal(claims: &Map<String, Value>, principal: &RequestPrincipal) -> bool {
    let string = |key: &str| claims.get(key).and_then(Value::as_str);
    string("iss").is_some_and(|iss| text(&principal.issuer, iss))
        && string("sub").is_some_and(|sub| text(&principal.subject, sub))
}

/// A field's values (any) and not-values (none), with `matches` comparing
/// one value.
pub(super) fn field<T>(positive: &[T], negative: &[T], matches: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&matches)) && !negative.iter().any(&matches)
}

/// A `when` condition's values and notValues.
pub(super) fn values<T>(values: &Values<T>, matches: impl Fn(&T) -> bool) -> bool {
    field(&values.values, &values.not_values, matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(text: &str) -> Subnet {
        text.parse().expect("test block")
    }

    #[test]
    fn presence_needs_a_non_empty_value_except_for_headers() {
        assert!(!text(&ValueMatch::Presence, ""));
        assert!(text(&ValueMatch::Presence, "x"));
        let mut headers = HeaderMap::new();
        headers.insert("x-empty", "".parse().expect("value"));
        assert!(header(&ValueMatch::Presence, &headers, "x-empty"));
        assert!(!header(&ValueMatch::Presence, &headers, "x-absent"));
    }

    #[test]
    fn a_header_sent_twice_is_matched_on_its_values_joined_with_commas() {
        let mut headers = HeaderMap::new();
        headers.append("x-group", "a".parse().expect("value"));
        headers.append("x-group", "b".parse().expect("value"));
        assert!(header(
            &ValueMatch::Exact("a,b".into()),
            &headers,
            "x-group"
        ));
        assert!(!header(&ValueMatch::Exact("a".into()), &headers, "x-group"));
    }

    #[test]
    fn hosts_match_case_insensitively_and_keep_the_port() {
        assert!(host(
            &ValueMatch::Exact("Example.COM".into()),
            "example.com"
        ));
        assert!(!host(
            &ValueMatch::Exact("example.com".into()),
            "example.com:8080"
        ));
        assert!(host(
            &ValueMatch::Suffix(".Example.com".into()),
            "api.example.COM"
        ));
        assert!(host(
            &ValueMatch::Prefix("example.com".into()),
            "example.com:8080"
        ));
    }

    #[test]
    fn cidr_blocks_mask_host_bits_and_never_cross_families() {
        assert!(cidr(
            &subnet("10.0.0.1/24"),
            "10.0.0.200".parse().expect("ip")
        ));
        assert!(!cidr(
            &subnet("10.0.0.0/24"),
            "10.0.1.0".parse().expect("ip")
        ));
        assert!(cidr(
            &subnet("0.0.0.0/0"),
            "203.0.113.9".parse().expect("ip")
        ));
        assert!(!cidr(&subnet("::/0"), "203.0.113.9".parse().expect("ip")));
        assert!(cidr(
            &subnet("203.0.113.9"),
            "::ffff:203.0.113.9".parse().expect("ip")
        ));
        assert!(cidr(
            &subnet("2001:db8::/32"),
            "2001:db8:ffff::1".parse().expect("ip")
        ));
        assert!(!cidr(
            &subnet("2001:db8::/32"),
            "2001:db9::1".parse().expect("ip")
        ));
    }

    #[test]
    fn claims_match_a_string_or_a_list_containing_one_and_nothing_else() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"groups":["dev","ops"],"role":"admin","n":7,"org":{"team":"edge"}}"#,
        )
        .expect("json");
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(claim(
            &claims,
            &path(&["groups"]),
            &ValueMatch::Exact("ops".into())
        ));
        assert!(claim(
            &claims,
            &path(&["role"]),
            &ValueMatch::Prefix("ad".into())
        ));
        assert!(!claim(&claims, &path(&["n"]), &ValueMatch::Presence));
        assert!(claim(
            &claims,
            &path(&["org", "team"]),
            &ValueMatch::Exact("edge".into())
        ));
        assert!(!claim(
            &claims,
            &path(&["org", "missing"]),
            &ValueMatch::Presence
        ));
    }

    #[test]
    fn a_request_principal_needs_both_iss_and_sub() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"iss":"https://idp.example"}"#).expect("json");
        assert!(!principal(&claims, &RequestPrincipal::parse("*")));
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"iss":"https://idp.example","sub":"alice"}"#).expect("json");
        assert!(principal(&claims, &RequestPrincipal::parse("*")));
        assert!(principal(
            &claims,
            &RequestPrincipal::parse("https://idp.example/alice")
        ));
        assert!(!principal(
            &claims,
            &RequestPrincipal::parse("https://idp.example/bob")
        ));
    }
}
