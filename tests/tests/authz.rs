//! End to end through the proxy: AuthorizationPolicy as Istio's gateway
//! enforces it, with curl in the client namespace, a test-backend behind.
//! The rules here are ones the kernel cannot decide (a trusted proxy hop,
//! paths, methods, headers), so every denial is the proxy's 403; except
//! the last test's, a DENY on a source block and a port, which XDP drops
//! before the proxy sees a connection (docs/security-policy.md, "In the
//! kernel").
use std::{fs, net::SocketAddr, path::Path, process::Output};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, Daemon},
    hostile::Scratch,
    netns::{BACKEND_V4, Topology},
    require_root,
};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");

fn topology() -> Topology {
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    topology
}

fn backend(topology: &Topology) -> Backend {
    let addr: SocketAddr = format!("{BACKEND_V4}:8081").parse().expect("address");
    let ns = topology.backend_ns.as_deref().unwrap_or_default();
    Backend::start(
        topology,
        ns,
        Path::new(TEST_BACKEND),
        &["--name", "web", "--listen", &addr.to_string()],
        addr,
    )
}

/// `app.test` on port 80 routed to the backend, an HTTPS redirect host
/// `secure.test`, and `policies` (YAML documents) after them.
fn config(policies: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [app.test]
  - port: {{number: 80, name: http-redirect, protocol: HTTP}}
    hosts: [secure.test]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.backend, port: {{number: 80}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: istio-system}}
spec:
  hosts: [web.backend]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}, ports: {{http: 8081}}}}]
{policies}"
    )
}

fn start(topology: &Topology, scratch: &Scratch, yaml: &str, flags: &[&str]) -> Daemon {
    let config = scratch.path.join("config.yaml");
    fs::write(&config, yaml).expect("write config");
    gateway_tests::daemon::start_on(topology, &config.display().to_string(), flags)
}

/// `curl` from the client namespace: status and body.
fn curl(topology: &Topology, method: &str, url: &str, headers: &[&str]) -> (String, String) {
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "--resolve",
        "app.test:80:192.0.2.1",
        "--resolve",
        "secure.test:80:192.0.2.1",
        "--resolve",
        "nowhere.test:80:192.0.2.1",
    ];
    for header in headers {
        argv.extend(["-H", header]);
    }
    argv.push(url);
    let out = topology.client(&argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The daemon's output once the access log's buffer reached it (flushed
/// at least every second).
fn flushed_log(daemon: &Daemon) -> String {
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    daemon.log()
}

fn prometheus(topology: &Topology) -> String {
    std::thread::sleep(std::time::Duration::from_millis(150));
    let out = topology.gateway(&[
        "curl",
        "-sf",
        "--max-time",
        "2",
        &format!("http://{ADMIN}/stats/prometheus"),
    ]);
    text(&out)
}

#[test]
fn an_ip_allow_list_behind_a_trusted_proxy_hop_admits_listed_clients_only() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology);
    let scratch = Scratch::new();
    // The client namespace plays the load balancer in front: with one
    // trusted hop, the client is the address it appends to X-Forwarded-For.
    let policy = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: office-only, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]
";
    let daemon = start(
        &topology,
        &scratch,
        &config(policy),
        &["--trusted-proxies", "1"],
    );
    let office = curl(
        &topology,
        "GET",
        "http://app.test/",
        &["X-Forwarded-For: 203.0.113.7"],
    );
    assert_eq!(office.0, "200", "{office:?}\n{}", daemon.log());
    let outside = curl(
        &topology,
        "GET",
        "http://app.test/",
        &["X-Forwarded-For: 198.51.100.77"],
    );
    assert_eq!(
        outside,
        ("403".to_string(), "RBAC: access denied".to_string())
    );
    // Without the header the client is the hop itself, which is not listed.
    let direct = curl(&topology, "GET", "http://app.test/", &[]);
    assert_eq!(direct.0, "403");
    // The router's own answers come after the filters: a denied client
    // gets 403 for an unknown host and for the HTTPS redirect too.
    assert_eq!(curl(&topology, "GET", "http://nowhere.test/", &[]).0, "403");
    assert_eq!(curl(&topology, "GET", "http://secure.test/", &[]).0, "403");
    let allowed_redirect = curl(
        &topology,
        "GET",
        "http://secure.test/",
        &["X-Forwarded-For: 203.0.113.7"],
    );
    assert_eq!(allowed_redirect.0, "301");

    let log = flushed_log(&daemon);
    assert!(
        log.contains(" 403 - rbac_access_denied_matched_policy[none] "),
        "{log}"
    );
    let metrics = prometheus(&topology);
    assert!(
        metrics.contains("gateway_authorization_denied_total{chain=\"http\",policy=\"none\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_authorization_allowed_total{chain=\"http\",policy=\"istio-system/office-only\"} 2"),
        "{metrics}"
    );
}

#[test]
fn path_method_and_header_rules_deny_and_allow_as_istio_orders_them() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology);
    let scratch = Scratch::new();
    let policies = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-writes, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST, DELETE], paths: [/admin/*, '/api/{*}/secrets']}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: teams, namespace: istio-system}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {paths: [/public*]}}]
  - to: [{operation: {notMethods: [DELETE]}}]
    when:
    - key: request.headers[x-team]
      values: [edge, core]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-api, namespace: istio-system}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: [/api/*]}}]
";
    let daemon = start(&topology, &scratch, &config(policies), &[]);
    let team = "x-team: edge";
    let cases = [
        ("GET", "/public/index.html", None, "200"),
        ("GET", "/private", None, "403"),
        ("GET", "/private", Some(team), "200"),
        ("POST", "/admin/users", Some(team), "403"),
        ("POST", "/api/v1/secrets", Some(team), "403"),
        ("POST", "/api/v1/other", Some(team), "200"),
        ("DELETE", "/private", Some(team), "403"),
        ("GET", "/private", Some("x-team: other"), "403"),
    ];
    for (method, path, header, expected) in cases {
        let headers: Vec<&str> = header.into_iter().collect();
        let (code, body) = curl(
            &topology,
            method,
            &format!("http://app.test{path}"),
            &headers,
        );
        assert_eq!(
            code,
            expected,
            "{method} {path} {header:?}: {body}\n{}",
            daemon.log()
        );
    }
    let log = flushed_log(&daemon);
    assert!(
        log.contains(
            "rbac_access_denied_matched_policy[ns[istio-system]-policy[no-admin-writes]-rule[0]]"
        ),
        "{log}"
    );
    assert!(
        log.contains("authorization audit: ns[istio-system]-policy[audit-api]-rule[0] matched"),
        "{log}"
    );
}

#[test]
fn a_dry_run_policy_is_logged_and_never_enforced() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology);
    let scratch = Scratch::new();
    let policy = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-everything
  namespace: istio-system
  annotations: {istio.io/dry-run: \"true\"}
spec:
  action: DENY
  rules: [{}]
";
    let daemon = start(&topology, &scratch, &config(policy), &[]);
    assert_eq!(curl(&topology, "GET", "http://app.test/", &[]).0, "200");
    let log = flushed_log(&daemon);
    assert!(
        log.contains("would be denied by ns[istio-system]-policy[deny-everything]-rule[0]"),
        "{log}"
    );
}

#[test]
fn a_policy_added_by_reload_applies_to_the_next_request() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology);
    let scratch = Scratch::new();
    let daemon = start(&topology, &scratch, &config(""), &[]);
    assert_eq!(curl(&topology, "GET", "http://app.test/x", &[]).0, "200");
    let deny = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-x, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/x]}}]}]
";
    fs::write(scratch.path.join("config.yaml"), config(deny)).expect("write config");
    let reload = topology.gateway(&["kill", "-HUP", &daemon.pid().to_string()]);
    assert!(reload.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut code = String::new();
    while std::time::Instant::now() < deadline {
        code = curl(&topology, "GET", "http://app.test/x", &[]).0;
        if code == "403" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(code, "403", "{}", daemon.log());
    assert_eq!(curl(&topology, "GET", "http://app.test/y", &[]).0, "200");
}

/// The value of the Prometheus sample whose line starts with `series`.
fn sample_value(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_deny_on_a_source_block_drops_the_connection_attempt_in_xdp_and_counts_it() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology);
    let scratch = Scratch::new();
    // A second client address, the one the policy denies.
    let client_if = format!("cl{}", &topology.gateway_if[2..]);
    let added = topology.client(&["ip", "addr", "add", "192.0.2.3/24", "dev", &client_if]);
    assert!(added.status.success(), "{}", text(&added));
    let policy = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: block-one, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [192.0.2.3/32]}}]
    to: [{operation: {ports: ['80']}}]
";
    let daemon = start(&topology, &scratch, &config(policy), &[]);
    let fetch = |source: &str| {
        topology.client(&[
            "curl",
            "-sS",
            "--connect-timeout",
            "2",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            source,
            "--resolve",
            "app.test:80:192.0.2.1",
            "http://app.test/",
        ])
    };
    let allowed = fetch("192.0.2.2");
    assert_eq!(
        String::from_utf8_lossy(&allowed.stdout),
        "200",
        "{}\n{}",
        text(&allowed),
        daemon.log()
    );
    // Dropped in XDP: no answer at all, so curl's connect times out (28),
    // where the proxy would have closed or answered 403.
    let denied = fetch("192.0.2.3");
    assert_eq!(denied.status.code(), Some(28), "{}", text(&denied));
    let metrics = prometheus(&topology);
    let drops = sample_value(
        &metrics,
        "gateway_xdp_policy_denied_total{policy=\"istio-system/block-one\"}",
    );
    assert!(drops.is_some_and(|n| n >= 1), "{metrics}");
    let reason = sample_value(
        &metrics,
        "gateway_xdp_packets_total{reason=\"policy_denied\"}",
    );
    assert_eq!(reason, drops, "{metrics}");
    // The proxy never saw the denied client: no access-log line for it.
    let log = flushed_log(&daemon);
    assert!(!log.contains("192.0.2.3"), "{log}");
}
