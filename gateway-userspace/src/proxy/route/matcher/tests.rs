use std::collections::BTreeMap;

use hyper::header::{HeaderMap, HeaderValue};

use super::*;

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}
fn prefix(s: &str) -> StringMatch {
    StringMatch::Prefix(s.into())
}
fn regex(s: &str) -> StringMatch {
    StringMatch::Regex(s.into())
}

/// A request `GET http://example.com/` without headers, to adjust.
struct Req {
    method: &'static str,
    scheme: &'static str,
    authority: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
}

fn get(path_and_query: &'static str) -> Req {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    Req {
        method: "GET",
        scheme: "http",
        authority: "example.com",
        path,
        query,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: self.method,
            scheme: self.scheme,
            authority: self.authority,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            port: 80,
        }
    }
}

/// Does a table holding the single match `m` accept `req`?
fn accepts(m: HttpMatch, req: &Req) -> bool {
    let matches = [m];
    let table = CompiledRoutes::from_matches([("test", &matches[..])]).expect("compiles");
    table.select(&req.facts()).is_some()
}

fn uri(m: StringMatch) -> HttpMatch {
    HttpMatch {
        uri: Some(m),
        ..HttpMatch::default()
    }
}

fn keyed(entries: &[(&str, Option<StringMatch>)]) -> BTreeMap<String, Option<StringMatch>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn uri_exact_matches_the_whole_path_without_the_query() {
    assert!(accepts(uri(exact("/a")), &get("/a?x=1")));
    assert!(!accepts(uri(exact("/a")), &get("/a/")));
    assert!(!accepts(uri(exact("/a")), &get("/A")));
}

#[test]
fn uri_prefix_is_a_plain_string_prefix() {
    assert!(accepts(uri(prefix("/api")), &get("/api/v1")));
    // Istio VirtualService prefixes are not path-separated.
    assert!(accepts(uri(prefix("/api")), &get("/apix")));
    assert!(!accepts(uri(prefix("/api")), &get("/ap")));
    assert!(!accepts(uri(prefix("/api")), &get("/Api")));
}

#[test]
fn uri_regex_must_match_the_whole_path() {
    assert!(accepts(uri(regex("/v[0-9]+/.*")), &get("/v2/x?y")));
    assert!(!accepts(uri(regex("/v[0-9]+")), &get("/v2/x")));
    assert!(!accepts(uri(regex("v[0-9]+")), &get("/v2")));
    // An alternation is anchored as a whole, not only its last branch.
    assert!(!accepts(uri(regex("/a|/b")), &get("/ab")));
}

#[test]
fn ignore_uri_case_applies_to_exact_and_prefix_not_regex() {
    let mut m = uri(exact("/Login"));
    m.ignore_uri_case = true;
    assert!(accepts(m.clone(), &get("/LOGIN")));
    assert!(!accepts(m, &get("/LOGIN/x")));
    let mut m = uri(prefix("/Api"));
    m.ignore_uri_case = true;
    assert!(accepts(m.clone(), &get("/aPI/v1")));
    assert!(!accepts(m, &get("/ap")));
    let mut m = uri(regex("/api"));
    m.ignore_uri_case = true;
    assert!(!accepts(m, &get("/API")));
}

#[test]
fn method_scheme_and_authority_are_header_matches() {
    let m = HttpMatch {
        method: Some(exact("POST")),
        ..HttpMatch::default()
    };
    let mut post = get("/");
    post.method = "POST";
    assert!(accepts(m.clone(), &post));
    assert!(!accepts(m, &get("/")));

    let m = HttpMatch {
        scheme: Some(exact("https")),
        ..HttpMatch::default()
    };
    let mut https = get("/");
    https.scheme = "https";
    assert!(accepts(m.clone(), &https));
    assert!(!accepts(m, &get("/")));

    // The authority as sent, port included: a prefix still matches.
    let m = HttpMatch {
        authority: Some(prefix("example.com")),
        ..HttpMatch::default()
    };
    let mut with_port = get("/");
    with_port.authority = "example.com:8080";
    assert!(accepts(m.clone(), &with_port));
    let mut other = get("/");
    other.authority = "other.com";
    assert!(!accepts(m, &other));
    let exact_host = HttpMatch {
        authority: Some(exact("example.com")),
        ..HttpMatch::default()
    };
    assert!(!accepts(exact_host, &with_port));
}

#[test]
fn headers_must_be_present_and_match() {
    let m = HttpMatch {
        headers: keyed(&[("x-env", Some(exact("prod")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/").header("x-env", "prod")));
    assert!(!accepts(m.clone(), &get("/").header("x-env", "dev")));
    assert!(!accepts(m, &get("/")));
}

#[test]
fn header_presence_only_needs_the_header() {
    for presence in [None, Some(regex("*"))] {
        let m = HttpMatch {
            headers: keyed(&[("x-debug", presence)]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/").header("x-debug", "")));
        assert!(!accepts(m, &get("/")));
    }
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let m = HttpMatch {
        headers: keyed(&[("x-tag", Some(exact("a,b")))]),
        ..HttpMatch::default()
    };
    let both = get("/").header("x-tag", "a").header("x-tag", "b");
    assert!(accepts(m.clone(), &both));
    assert!(!accepts(m, &get("/").header("x-tag", "a")));
    let m = HttpMatch {
        headers: keyed(&[("x-tag", Some(regex("a,.*")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &both));
}

#[test]
fn header_regex_is_a_full_match() {
    let m = HttpMatch {
        headers: keyed(&[("user-agent", Some(regex(".*Mobile.*")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &get("/").header("user-agent", "X Mobile Y")));
    let m = HttpMatch {
        headers: keyed(&[("user-agent", Some(regex("Mobile")))]),
        ..HttpMatch::default()
    };
    assert!(!accepts(m, &get("/").header("user-agent", "X Mobile Y")));
}

#[test]
fn without_headers_accepts_when_the_header_does_not_match() {
    let m = HttpMatch {
        without_headers: keyed(&[("x-env", Some(exact("prod")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/").header("x-env", "dev")));
    assert!(!accepts(m.clone(), &get("/").header("x-env", "prod")));
    // Missing counts as "": it does not equal "prod".
    assert!(accepts(m, &get("/")));
}

#[test]
fn without_headers_reads_a_missing_header_as_empty() {
    // `.*` matches "", so even a request without the header is refused.
    let m = HttpMatch {
        without_headers: keyed(&[("x-env", Some(regex(".*")))]),
        ..HttpMatch::default()
    };
    assert!(!accepts(m.clone(), &get("/")));
    assert!(!accepts(m, &get("/").header("x-env", "x")));
}

#[test]
fn without_headers_presence_only_needs_the_header_absent() {
    for presence in [None, Some(regex("*"))] {
        let m = HttpMatch {
            without_headers: keyed(&[("x-debug", presence)]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/")));
        assert!(!accepts(m, &get("/").header("x-debug", "1")));
    }
}

#[test]
fn pseudo_header_names_read_the_request_line() {
    let m = HttpMatch {
        headers: keyed(&[(":path", Some(exact("/a?b=1")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/a?b=1")));
    assert!(!accepts(m, &get("/a")));
    let m = HttpMatch {
        headers: keyed(&[(":method", Some(exact("GET")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &get("/")));
    let m = HttpMatch {
        headers: keyed(&[(":scheme", Some(exact("http")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &get("/")));
    let m = HttpMatch {
        headers: keyed(&[(":authority", Some(exact("example.com")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &get("/")));
}

#[test]
fn invalid_header_names_are_never_present() {
    let m = HttpMatch {
        headers: keyed(&[("bad name", None)]),
        ..HttpMatch::default()
    };
    assert!(!accepts(m, &get("/")));
    let m = HttpMatch {
        without_headers: keyed(&[("bad name", None)]),
        ..HttpMatch::default()
    };
    assert!(accepts(m, &get("/")));
}

#[test]
fn query_params_match_the_first_value_undecoded() {
    let m = HttpMatch {
        query_params: keyed(&[("v", Some(exact("1")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/?a=x&v=1")));
    assert!(accepts(m.clone(), &get("/?v=1&v=2")));
    assert!(!accepts(m.clone(), &get("/?v=2&v=1")));
    assert!(!accepts(m.clone(), &get("/?v=2")));
    assert!(!accepts(m.clone(), &get("/")));
    // Not percent-decoded, as Envoy's route matcher reads it.
    assert!(!accepts(m, &get("/?v=%31")));
    let encoded = HttpMatch {
        query_params: keyed(&[("v", Some(exact("a%20b")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(encoded, &get("/?v=a%20b")));
}

#[test]
fn query_params_by_prefix_and_regex() {
    let m = HttpMatch {
        query_params: keyed(&[("id", Some(prefix("ab")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/?id=abc")));
    assert!(!accepts(m, &get("/?id=xab")));
    let m = HttpMatch {
        query_params: keyed(&[("id", Some(regex("[0-9]+")))]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/?id=42")));
    assert!(!accepts(m, &get("/?id=42x")));
}

#[test]
fn query_param_presence_only_needs_the_name() {
    for presence in [None, Some(regex("*"))] {
        let m = HttpMatch {
            query_params: keyed(&[("debug", presence)]),
            ..HttpMatch::default()
        };
        assert!(accepts(m.clone(), &get("/?debug")));
        assert!(accepts(m.clone(), &get("/?x=1&debug=")));
        assert!(!accepts(m.clone(), &get("/?debugx=1")));
        assert!(!accepts(m, &get("/")));
    }
}

#[test]
fn query_parsing_follows_envoy_parse_parameters() {
    let pairs = |q| Query::parse(Some(q)).0;
    assert_eq!(pairs("a=1&b"), vec![("a", "1"), ("b", "")]);
    assert_eq!(pairs("a=1=2"), vec![("a", "1=2")]);
    assert_eq!(pairs("a&&b"), vec![("a", ""), ("", ""), ("b", "")]);
    assert_eq!(pairs("&a"), vec![("", ""), ("a", "")]);
    assert_eq!(pairs("a&"), vec![("a", "")]);
    assert!(pairs("").is_empty());
    assert!(Query::parse(None).0.is_empty());
}

#[test]
fn all_fields_of_a_match_must_accept() {
    let m = HttpMatch {
        uri: Some(prefix("/api")),
        method: Some(exact("GET")),
        headers: keyed(&[("x-env", Some(exact("prod")))]),
        query_params: keyed(&[("v", None)]),
        ..HttpMatch::default()
    };
    assert!(accepts(m.clone(), &get("/api?v").header("x-env", "prod")));
    assert!(!accepts(m.clone(), &get("/api?v").header("x-env", "dev")));
    assert!(!accepts(m.clone(), &get("/api").header("x-env", "prod")));
    assert!(!accepts(m, &get("/web?v").header("x-env", "prod")));
}

#[test]
fn first_route_in_order_wins_and_matches_are_ored() {
    let admin = [uri(prefix("/admin")), uri(exact("/login"))];
    let api = [uri(prefix("/api"))];
    let api_v2 = [uri(prefix("/api/v2"))];
    let all: [HttpMatch; 0] = [];
    let table = CompiledRoutes::from_matches([
        ("admin", &admin[..]),
        ("api", &api[..]),
        ("api-v2 (shadowed)", &api_v2[..]),
        ("catch-all", &all[..]),
    ])
    .expect("compiles");
    let select = |path| table.select(&get(path).facts());
    let at = |route, matched| {
        Some(Selected {
            route,
            matched: Some(matched),
        })
    };
    assert_eq!(select("/admin/x"), at(0, 0));
    assert_eq!(select("/login"), at(0, 1));
    assert_eq!(select("/api/v2/x"), at(1, 0));
    assert_eq!(
        select("/other"),
        Some(Selected {
            route: 3,
            matched: None
        })
    );
}

#[test]
fn no_route_matches_gives_none() {
    let api = [uri(prefix("/api"))];
    let table = CompiledRoutes::from_matches([("api", &api[..])]).expect("compiles");
    assert_eq!(table.select(&get("/web").facts()), None);
    let empty = CompiledRoutes::from_matches([]).expect("compiles");
    assert_eq!(empty.select(&get("/").facts()), None);
}

#[test]
fn a_bad_regex_names_its_route() {
    let bad = [uri(regex("(unclosed"))];
    let err = CompiledRoutes::from_matches([("VirtualService ns/vs spec.http[0]", &bad[..])])
        .expect_err("does not compile");
    assert_eq!(err.route, "VirtualService ns/vs spec.http[0]");
    assert_eq!(err.pattern, "(unclosed");
}
