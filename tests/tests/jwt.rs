//! RequestAuthentication end to end: the daemon validates JWTs against a
//! key set it fetches over HTTP (a Python server beside it), curl sends
//! tokens minted here, the test backend shows what was forwarded.
use std::{
    fs,
    path::Path,
    process::Output,
    thread,
    time::{Duration, Instant, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use gateway_tests::{
    backend::Backend,
    daemon::Daemon,
    hostile::Scratch,
    netns::{BACKEND_V4, GATEWAY_V4, Topology},
    require_root,
};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");
const PYTHON: &str = "/usr/bin/python3";
const ISSUER: &str = "https://issuer.test";
/// Where the key set is served, inside the gateway's namespace.
const JWKS_ADDR: &str = "127.0.0.1:18081";

/// An ES256 key and its `kid`.
struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("an EC key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("an EC key");
        Self {
            kid: kid.into(),
            pair,
        }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])})
    }

    fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("a signature");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `ISSUER` and audience `app`, valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": "app", "exp": now() + 3600})
}

/// Writes the key set the Python server serves (a rename: never half written).
fn publish(dir: &Path, keys: &[&Key]) {
    let body = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    let tmp = dir.join("jwks.json.tmp");
    fs::write(&tmp, body.to_string()).expect("write the key set");
    fs::rename(&tmp, dir.join("jwks.json")).expect("publish the key set");
}

fn config_yaml() -> String {
    config_with("")
}

/// The configuration with `more` (YAML documents) after it.
fn config_with(more: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [app.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: app.backend}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app, namespace: istio-system}}
spec:
  hosts: [app.backend]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [app]
    jwksUri: http://{JWKS_ADDR}/jwks.json
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
{more}"
    )
}

/// curl to app.test with `args`: (status, headers and body).
fn request(topology: &Topology, args: &[&str]) -> (String, String) {
    let resolve = format!("app.test:80:{GATEWAY_V4}");
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-i",
        "-w",
        "\n%{http_code}",
        "--resolve",
        &resolve,
    ];
    argv.extend_from_slice(args);
    argv.push("http://app.test/");
    let out: Output = topology.client(&argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_string(), body.to_string())
}

fn with_token(topology: &Topology, token: &str) -> (String, String) {
    let header = format!("Authorization: Bearer {token}");
    request(topology, &["-H", &header])
}

/// Asks with `token` until it gets `want` (keys are fetched at start and
/// on refresh); panics after `limit`.
fn until_status(topology: &Topology, token: &str, want: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (code, text) = with_token(topology, token);
        if code == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "still {code}, not {want}: {text}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// What one test serves: the backend, the key set's server, the daemon.
struct Served {
    _backend: Backend,
    _jwks_server: Backend,
    _daemon: Daemon,
}

/// The backend, a key set holding `key` served in the gateway's
/// namespace from `keys_dir`, and the daemon serving `yaml`.
fn serve(topology: &mut Topology, scratch: &Scratch, key: &Key, yaml: &str) -> Served {
    topology.add_backend_namespace();
    let backend_ns = topology.backend_ns.clone().unwrap_or_default();
    let backend = Backend::start(
        topology,
        &backend_ns,
        Path::new(TEST_BACKEND),
        &["--name", "app", "--listen", &format!("{BACKEND_V4}:8080")],
        format!("{BACKEND_V4}:8080").parse().expect("addr"),
    );
    let keys_dir = scratch.path.join("keys");
    fs::create_dir_all(&keys_dir).expect("keys dir");
    publish(&keys_dir, &[key]);
    let server = format!(
        "exec {PYTHON} -m http.server --bind 127.0.0.1 --directory {} 18081 2>/dev/null",
        keys_dir.display()
    );
    let jwks_server = Backend::start(
        topology,
        &topology.gateway_ns,
        Path::new("/bin/sh"),
        &["-c", &server],
        JWKS_ADDR.parse().expect("addr"),
    );
    let config = scratch.path.join("config.yaml");
    fs::write(&config, yaml).expect("write config");
    let daemon = gateway_tests::daemon::start_on(
        topology,
        &config.display().to_string(),
        &["--jwks-refresh", "2s"],
    );
    Served {
        _backend: backend,
        _jwks_server: jwks_server,
        _daemon: daemon,
    }
}

#[test]
fn an_authorization_policy_requiring_request_principals_and_a_claim_answers_403_without_them() {
    require_root();
    let mut topology = Topology::new();
    let scratch = Scratch::new();
    let key = Key::new("k1");
    // Istio's own example: a JWT required everywhere but /healthz.
    let policy = format!(
        "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: istio-system}}
spec:
  action: ALLOW
  rules:
  - from: [{{source: {{requestPrincipals: [\"{ISSUER}/*\"]}}}}]
    when: [{{key: 'request.auth.claims[groups]', values: [admins]}}]
  - to: [{{operation: {{paths: [/healthz]}}}}]
"
    );
    let _served = serve(&mut topology, &scratch, &key, &config_with(&policy));
    let admin = json!({"iss": ISSUER, "sub": "alice", "aud": "app", "groups": ["dev", "admins"], "exp": now() + 3600});
    until_status(
        &topology,
        &key.token(&admin),
        "200",
        Duration::from_secs(10),
    );

    // No token: passes JWT validation, then no principal: 403, not 401.
    let (code, text) = request(&topology, &[]);
    assert_eq!(code, "403", "{text}");
    assert!(text.ends_with("RBAC: access denied"), "{text}");
    // A valid token without the claim.
    let (code, _) = with_token(&topology, &key.token(&claims("bob")));
    assert_eq!(code, "403");
    // A token without `sub` never matches requestPrincipals.
    let no_sub = json!({"iss": ISSUER, "aud": "app", "groups": "admins", "exp": now() + 3600});
    let (code, _) = with_token(&topology, &key.token(&no_sub));
    assert_eq!(code, "403");
    // The exempt path needs no token.
    let resolve = format!("app.test:80:{GATEWAY_V4}");
    let out = topology.client(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--resolve",
        &resolve,
        "http://app.test/healthz",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn tokens_are_validated_against_the_fetched_keys_and_rotation_is_followed() {
    require_root();
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    let backend_ns = topology.backend_ns.clone().unwrap_or_default();
    let _backend = Backend::start(
        &topology,
        &backend_ns,
        Path::new(TEST_BACKEND),
        &["--name", "app", "--listen", &format!("{BACKEND_V4}:8080")],
        format!("{BACKEND_V4}:8080").parse().expect("addr"),
    );
    let scratch = Scratch::new();
    let keys_dir = scratch.path.join("keys");
    fs::create_dir_all(&keys_dir).expect("keys dir");
    let old = Key::new("old");
    publish(&keys_dir, &[&old]);
    let keys_dir_text = keys_dir.display().to_string();
    // Python's request log goes nowhere.
    let server = format!(
        "exec {PYTHON} -m http.server --bind 127.0.0.1 --directory {keys_dir_text} 18081 2>/dev/null"
    );
    let _jwks_server = Backend::start(
        &topology,
        &topology.gateway_ns,
        Path::new("/bin/sh"),
        &["-c", &server],
        JWKS_ADDR.parse().expect("addr"),
    );
    let config = scratch.path.join("config.yaml");
    fs::write(&config, config_yaml()).expect("write config");
    let _daemon: Daemon = gateway_tests::daemon::start_on(
        &topology,
        &config.display().to_string(),
        &["--jwks-refresh", "2s"],
    );

    // A valid token: forwarded, its `sub` claim as a header, the token gone.
    let text = until_status(
        &topology,
        &old.token(&claims("alice")),
        "200",
        Duration::from_secs(10),
    );
    assert!(text.contains("header x-jwt-sub: alice"), "{text}");
    assert!(!text.contains("header authorization:"), "{text}");

    // No token: passes (RequestAuthentication alone requires none).
    let (code, text) = request(&topology, &["-H", "x-jwt-sub: forged"]);
    assert_eq!(code, "200", "{text}");
    assert!(
        !text.contains("x-jwt-sub"),
        "a client's claim header is dropped: {text}"
    );

    // Signed by another key with the same kid.
    let impostor = Key::new("old");
    let (code, text) = with_token(&topology, &impostor.token(&claims("mallory")));
    assert_eq!(code, "401", "{text}");
    assert!(text.ends_with("Jwt verification fails"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains(
            "www-authenticate: bearer realm=\"http://app.test/\", error=\"invalid_token\""
        ),
        "{text}"
    );

    // Expired beyond the 60 s skew.
    let expired = json!({"iss": ISSUER, "sub": "a", "aud": "app", "exp": now() - 120});
    let (code, text) = with_token(&topology, &old.token(&expired));
    assert_eq!(code, "401", "{text}");
    assert!(text.ends_with("Jwt is expired"), "{text}");

    // Another audience.
    let elsewhere = json!({"iss": ISSUER, "sub": "a", "aud": "other", "exp": now() + 60});
    let (code, text) = with_token(&topology, &old.token(&elsewhere));
    assert_eq!(code, "403", "{text}");
    assert!(text.ends_with("Audiences in Jwt are not allowed"), "{text}");

    // Not a JWT at all.
    let (code, text) = with_token(&topology, "opaque");
    assert_eq!(code, "401", "{text}");

    // Rotation: the key set now holds only a new key; after a refresh the
    // new key's tokens pass and the removed key's fail.
    let new = Key::new("new");
    publish(&keys_dir, &[&new]);
    until_status(
        &topology,
        &new.token(&claims("bob")),
        "200",
        Duration::from_secs(10),
    );
    let (code, text) = with_token(&topology, &old.token(&claims("alice")));
    assert_eq!(code, "401", "{text}");
    assert!(
        text.ends_with("Jwks doesn't have key to match kid or alg from Jwt"),
        "{text}"
    );
}
