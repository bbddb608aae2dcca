//! Entry points for the fuzz targets in `fuzz/`: kept here so the targets
//! stay one line and the logic is type-checked with the rest of the crate.
use std::path::{Path, PathBuf};

use crate::{
    compile,
    config::{self, Environment, MemoryFiles},
    model::Instance,
    report,
};

/// Any bytes as Istio YAML: load, validate, compile and render the plan.
/// Panics only if the pipeline has a bug.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let files = MemoryFiles::default();
    let env = Environment {
        files: &files,
        credentials_dir: Some(Path::new("/credentials")),
        unreadable_credential_drops_server: false,
    };
    let loaded = config::load_sources_with(&[(PathBuf::from("fuzz.yaml"), text)], Some(&env));
    for diagnostic in &loaded.diagnostics {
        let _ = diagnostic.to_string();
    }
    if let Ok(plan) = compile::plan(&loaded.model, &Instance::default(), &[]) {
        let _ = report::table(&plan);
        let _ = report::json(&plan);
    }
}

/// Any bytes through the YAML loader alone: it must return an error or
/// documents within its own limits, never panic, overflow the stack or
/// expand past them (libFuzzer's memory and time limits catch the rest).
pub fn yaml(data: &[u8]) {
    use crate::config::yaml::{self, MAX_DEPTH, MAX_DOCUMENT_NODES, Node, Value};
    let text = String::from_utf8_lossy(data);
    let _ = yaml::for_each_document(&text, |doc| {
        // (node, depth) pairs on an explicit stack: no recursion here either.
        let mut pending: Vec<(&Node, usize)> = vec![(&doc, 1)];
        let mut nodes = 0;
        while let Some((node, depth)) = pending.pop() {
            nodes += 1;
            assert!(depth <= MAX_DEPTH + 1, "depth {depth} past the limit");
            match &node.value {
                Value::Seq(items) => pending.extend(items.iter().map(|n| (n, depth + 1))),
                Value::Map(entries) => {
                    for (k, v) in entries {
                        pending.push((k, depth + 1));
                        pending.push((v, depth + 1));
                    }
                }
                _ => {}
            }
        }
        assert!(nodes <= MAX_DOCUMENT_NODES, "{nodes} nodes past the limit");
    });
}

/// Any bytes as the first bytes of a connection: the ClientHello inspector
/// never panics, a decided answer never changes as more bytes arrive (every
/// prefix is `NeedMore` or the same answer), and a hello's SNI and ALPN obey
/// the inspector's own rules.
pub fn client_hello(data: &[u8]) {
    use crate::proxy::client_hello::{Inspection, inspect};
    let whole = inspect(data);
    if let Inspection::Hello(hello) = &whole {
        if let Some(sni) = &hello.sni {
            assert!(
                !sni.is_empty() && sni.len() <= 255,
                "SNI length {}",
                sni.len()
            );
            assert!(
                sni.bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
                "SNI {sni:?}"
            );
        }
        assert!(hello.alpn.iter().all(|p| !p.is_empty()), "empty ALPN name");
    }
    // Every short prefix, then a sample of longer ones: all of them would
    // make a long input quadratic.
    let step = (data.len() / 64).max(1);
    let prefixes = (0..data.len().min(64)).chain((64..data.len()).step_by(step));
    for len in prefixes.chain(data.len().checked_sub(1)) {
        let partial = inspect(data.get(..len).unwrap_or_default());
        assert!(
            partial == Inspection::NeedMore || partial == whole,
            "prefix {len} gave {partial:?}, the whole input {whole:?}"
        );
    }
}

/// A route table with every kind of match and rewrite, compiled once.
fn fuzz_routes() -> &'static (
    crate::plan::HostTable,
    Vec<crate::proxy::route::CompiledRoutes>,
) {
    use std::sync::OnceLock;
    static ROUTES: OnceLock<(
        crate::plan::HostTable,
        Vec<crate::proxy::route::CompiledRoutes>,
    )> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let yaml = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: ns}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {regex: '/r/[a-z]+(/.*)?'}, headers: {x-a: {prefix: v}}}]
    rewrite: {uriRegexRewrite: {match: '^/r/([a-z]+)', rewrite: '/\\1/x'}}
    directResponse: {status: 200}
  - match: [{uri: {prefix: /P}, ignoreUriCase: true, queryParams: {q: {regex: '[0-9]+'}}}]
    redirect: {uri: /moved, authority: b.example, port: 8080, scheme: https}
  - match: [{uri: {exact: /e}, withoutHeaders: {x-b: {}}, method: {exact: GET}}]
    rewrite: {uri: /rewritten}
    directResponse: {status: 201}
  - match: [{uri: {prefix: /}, authority: {regex: '.*\\.example'}, scheme: {exact: http}}]
    directResponse: {status: 202}
";
        let loaded = config::load_sources(&[(PathBuf::from("routes.yaml"), yaml.to_string())]);
        let table = compile::plan(&loaded.model, &Instance::default(), &[])
            .ok()
            .and_then(|plan| plan.http.into_iter().next())
            .map(|listener| listener.hosts)
            .unwrap_or_default();
        let compiled = table
            .hosts()
            .iter()
            .filter_map(|host| crate::proxy::route::CompiledRoutes::new(&host.routes).ok())
            .collect();
        (table, compiled)
    })
}

/// Any bytes as a request (first line `path?query`, then `name: value`
/// header lines): normalisation, route selection and the matched route's
/// rewrites and redirect never panic, and what they produce is a path.
pub fn request(data: &[u8]) {
    use crate::{
        plan::RouteAction,
        proxy::{
            rewrite::{self, RedirectRequest, RegexRewrite},
            route::RequestFacts,
        },
    };
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
                hyper::header::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
    }
    let Ok(normalized) = rewrite::normalize_path(target) else {
        return;
    };
    if target.starts_with('/') {
        assert!(normalized.starts_with('/'), "{target:?} -> {normalized:?}");
    }
    let (path, query) = match normalized.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (normalized.as_str(), None),
    };
    let (table, compiled) = fuzz_routes();
    let facts = RequestFacts {
        method: "GET",
        scheme: "http",
        authority: "a.example",
        path,
        query,
        headers: &headers,
        port: 80,
    };
    for (host, routes) in table.hosts().iter().zip(compiled) {
        let Some(selected) = routes.select(&facts) else {
            continue;
        };
        let Some(route) = host.routes.get(selected.route) else {
            panic!("selected route {} of {}", selected.route, host.routes.len());
        };
        let matched = selected
            .matched
            .and_then(|i| route.matches.get(i))
            .and_then(|m| m.uri.as_ref());
        let _ = rewrite::rewrite_uri(&normalized, matched, "/rewritten");
        if let Ok(regex) = RegexRewrite::new("^/r/([a-z]+)", "/\\1/x") {
            let _ = regex.apply(&normalized);
        }
        if let RouteAction::Redirect(redirect) = &route.action {
            let request = RedirectRequest {
                scheme: "http",
                authority: "a.example:80",
                path_and_query: &normalized,
                matched_uri: matched,
            };
            let location = rewrite::redirect_location(redirect, request, false);
            assert!(location.starts_with("https://"), "{location}");
        }
    }
}

/// Any bytes as a client certificate: the DER walk behind the SAN, SPKI
/// and hash pins never panics or reads out of bounds.
pub fn certificate(data: &[u8]) {
    let tls = crate::model::ServerTls {
        subject_alt_names: vec!["spiffe://example.org/client".into()],
        verify_certificate_spki: vec!["AAAA".into()],
        ..Default::default()
    };
    let _ = crate::proxy::client_cert::Pins::from_tls(&tls).check(data);
}

/// A copy of `HOSTS` contents, the reference classifier's table.
struct FuzzHosts(std::collections::BTreeMap<gateway_common::HostKey, gateway_common::HostValue>);

impl gateway_common::HostTable for FuzzHosts {
    fn host(&self, key: &gateway_common::HostKey) -> Option<gateway_common::HostValue> {
        self.0.get(key).copied()
    }
}

/// The hosts the `host` target matches against: exact, wildcards at two
/// depths on listener 1; listener 2's (with a catch-all) must never match.
fn fuzz_host_table() -> &'static FuzzHosts {
    use gateway_common::{HOST_ANY, HOST_EXACT, HOST_SUFFIX, HostKey, HostValue, host_hash};
    use std::sync::OnceLock;
    static TABLE: OnceLock<FuzzHosts> = OnceLock::new();
    TABLE.get_or_init(|| {
        let hosts: [(u32, u32, &str); 5] = [
            (1, HOST_EXACT, "example.com"),
            (1, HOST_SUFFIX, ".example.com"),
            (1, HOST_SUFFIX, ".b.a.example.com"),
            (2, HOST_EXACT, "other.test"),
            (2, HOST_ANY, ""),
        ];
        let entries = hosts
            .iter()
            .enumerate()
            .map(|(id, (listener, kind, name))| {
                let hash = if *kind == HOST_ANY {
                    0
                } else {
                    host_hash(name.as_bytes())
                };
                let key = HostKey {
                    listener: *listener,
                    kind: *kind,
                    hash,
                };
                let value = HostValue {
                    id: id as u32,
                    pad: 0,
                };
                (key, value)
            });
        FuzzHosts(entries.collect())
    })
}

/// Any bytes as the first data segment of a listener (the first byte
/// picks TLS or HTTP): the kernel's host classifier, run here as its host
/// reference, never panics, finds names only inside the segment, matches
/// only listener 1's hosts, and never changes a verdict once it has one
/// (a segment cut shorter gives the same verdict or none).
pub fn host(data: &[u8]) {
    use gateway_common::{HostClass, Name, classify_host, find_name};
    let Some((&selector, segment)) = data.split_first() else {
        return;
    };
    let tls = selector & 1 == 1;
    let table = fuzz_host_table();
    if let Name::At { offset, len } = find_name(segment, 0, segment.len(), tls) {
        assert!((1..=255).contains(&len), "name length {len}");
        assert!(offset + len <= segment.len(), "name past the segment");
    }
    let whole = classify_host(segment, 0, segment.len(), tls, 1, table);
    if let (HostClass::Known, Some(id)) = whole {
        assert!(id < 3, "listener 2's host {id} matched on listener 1");
    }
    let no_verdict = |class| matches!(class, HostClass::Partial | HostClass::Unrecognised);
    let step = (segment.len() / 64).max(1);
    let prefixes = (0..segment.len().min(64)).chain((64..segment.len()).step_by(step));
    for len in prefixes {
        let cut = segment.get(..len).unwrap_or_default();
        let partial = classify_host(cut, 0, cut.len(), tls, 1, table);
        assert!(
            no_verdict(partial.0) || partial == whole,
            "prefix {len} gave {partial:?}, the whole segment {whole:?}"
        );
    }
}

/// Any bytes as a JWT (first byte even) or as a fetched JSON Web Key Set
/// (first byte odd), both untrusted: the token through the JWT phase of a
/// provider with an ES256 key (from the `Authorization` header and the
/// `access_token` parameter), the key set through its parser. Neither may
/// panic; a token the key did not sign is never accepted.
pub fn jwt(data: &[u8]) {
    use std::sync::{Arc, OnceLock};

    use crate::{
        plan::{Jwks, JwksSource, JwtProvider, default_locations},
        proxy::{access_log::Entry, http::jwt::JwtAuthn},
    };
    static PHASE: OnceLock<Option<JwtAuthn>> = OnceLock::new();
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if first % 2 == 1 {
        let _ = Jwks::parse(&text);
        return;
    }
    let phase = PHASE.get_or_init(|| {
        let (set, _) = Jwks::parse(&fuzz_jwks()).ok()?;
        JwtAuthn::new(&[JwtProvider {
            issuer: "https://issuer.example".into(),
            audiences: vec!["app".into()],
            jwks: JwksSource::Inline(Arc::new(set)),
            timeout: std::time::Duration::from_secs(5),
            locations: default_locations(),
            output_payload_to_header: Some("x-payload".into()),
            forward: false,
            claim_to_headers: Vec::new(),
            space_delimited_claims: vec!["permission".into(), "scope".into()],
        }])
    });
    let Some(phase) = phase else {
        panic!("the fuzz key set does not parse");
    };
    let query: String = text
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b))
        .map(char::from)
        .collect();
    for request in [
        hyper::Request::get("/").header("authorization", format!("Bearer {text}")),
        hyper::Request::get(format!("/?access_token={query}")),
    ] {
        let Ok(mut request) = request.header("host", "a.example").body(()) else {
            continue;
        };
        let mut entry = Entry::default();
        if let Ok(Some(_)) = phase.authenticate(&mut request, "http", &mut entry) {
            panic!("a token no key of the set signed was accepted: {text:?}");
        }
    }
}

/// A key set with one fresh ES256 public key (its private half dropped):
/// nothing the fuzzer writes can carry a valid signature.
fn fuzz_jwks() -> String {
    use base64::Engine as _;
    use ring::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
    };
    let rng = SystemRandom::new();
    let Ok(pkcs8) = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng) else {
        return String::new();
    };
    let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
    else {
        return String::new();
    };
    let point = pair.public_key().as_ref();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "fuzz",
        "x": b64(&point[1..33]), "y": b64(&point[33..])}]})
    .to_string()
}

#[cfg(test)]
mod tests {
    /// Runs `target` on every seed of `fuzz/corpus/<name>`; returns how many.
    fn run_seeds(name: &str, target: fn(&[u8])) -> usize {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(name);
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).expect("corpus") {
            target(&std::fs::read(entry.expect("entry").path()).expect("seed"));
            seeds += 1;
        }
        seeds
    }

    #[test]
    fn the_seed_corpus_passes_through_the_pipeline() {
        let seeds = run_seeds("config", super::config);
        assert!(seeds >= 4, "the committed corpus has {seeds} seeds");
    }

    #[test]
    fn the_yaml_seed_corpus_passes_through_the_loader() {
        let seeds = run_seeds("yaml", super::yaml);
        assert!(seeds >= 5, "the committed corpus has {seeds} seeds");
    }

    #[test]
    fn the_request_target_has_routes_to_reach_and_seeds_that_reach_them() {
        let (table, compiled) = super::fuzz_routes();
        assert_eq!(table.hosts().len(), 1);
        assert_eq!(table.hosts()[0].routes.len(), 4);
        assert_eq!(compiled.len(), 1);
        assert!(run_seeds("request", super::request) >= 3);
    }

    #[test]
    fn the_certificate_seeds_are_certificates() {
        assert!(run_seeds("certificate", super::certificate) >= 2);
    }

    #[test]
    fn the_host_seeds_reach_every_verdict() {
        use gateway_common::{HostClass, classify_host};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/host");
        let hello = |sni: &str| {
            let mut seed = vec![1u8];
            let name =
                rustls::pki_types::ServerName::try_from(sni.to_string()).expect("valid name");
            seed.extend(crate::proxy::client_hello::samples::rustls_hello(
                name,
                &[b"h2"],
            ));
            seed
        };
        let request = |head: &str| [b"\0".as_slice(), head.as_bytes()].concat();
        let seeds = [
            ("tls-exact.bin", hello("example.com"), HostClass::Known),
            (
                "tls-deep-wildcard.bin",
                hello("c.b.a.example.com"),
                HostClass::Known,
            ),
            ("tls-unknown.bin", hello("other.test"), HostClass::Unknown),
            (
                "http-host.bin",
                request("GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: A.Example.com:80\r\n\r\n"),
                HostClass::Known,
            ),
            (
                "http-no-host.bin",
                request("GET / HTTP/1.0\r\n\r\n"),
                HostClass::NoHost,
            ),
            (
                "http-ipv6.bin",
                request("GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"),
                HostClass::Unknown,
            ),
        ];
        for (name, seed, class) in seeds {
            let segment = &seed[1..];
            let (got, _) = classify_host(
                segment,
                0,
                segment.len(),
                seed[0] == 1,
                1,
                super::fuzz_host_table(),
            );
            assert_eq!(got, class, "{name}");
            if std::env::var_os("GATEWAY_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).expect("corpus dir");
                std::fs::write(dir.join(name), &seed).expect("seed");
            }
        }
        assert!(run_seeds("host", super::host) >= 6);
    }

    #[test]
    fn the_client_hello_seed_corpus_passes_through_the_inspector() {
        let seeds = run_seeds("client_hello", super::client_hello);
        assert!(seeds >= 3, "the committed corpus has {seeds} seeds");
    }

    /// The committed seeds are real ClientHellos: regenerate them with
    /// `GATEWAY_WRITE_SEEDS=1 cargo test -p gateway-userspace --lib fuzzing`.
    #[test]
    fn the_client_hello_seeds_are_real_hellos() {
        use crate::proxy::client_hello::{Inspection, inspect, samples};
        let seeds = [
            ("rustls-sni-alpn.bin", samples::with_sni()),
            ("rustls-no-sni.bin", samples::without_sni()),
            (
                "rustls-sni-two-records.bin",
                samples::split_in_two_records(),
            ),
        ];
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/client_hello");
        for (name, hello) in seeds {
            assert!(matches!(inspect(&hello), Inspection::Hello(_)), "{name}");
            if std::env::var_os("GATEWAY_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).expect("corpus dir");
                std::fs::write(dir.join(name), &hello).expect("seed");
            }
            let committed = std::fs::read(dir.join(name)).expect("committed seed");
            assert!(
                matches!(inspect(&committed), Inspection::Hello(_)),
                "{name}"
            );
        }
    }
}
