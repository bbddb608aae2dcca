//! The `gateway` binary's behaviour on bad input, which needs no root: the
//! configuration is read and checked before anything touches the kernel.
use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run gateway")
}

#[test]
fn invalid_config_fails_with_every_positioned_error_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bad\nspec:\n  servers:\n  - port: {number: 80, name: \"\", protocol: SMTP}\n    hosts: [a.example.com]\n",
    )
    .unwrap();
    let out = gateway(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--interface",
        "lo",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display();
    assert!(
        stderr.contains(&format!("{file}:7:44: error: Gateway default/bad: spec.servers[0].port.protocol: invalid protocol \"SMTP\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:30: error: Gateway default/bad: spec.servers[0].port.name: port name must be set")),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 2 error(s) in the configuration; nothing was started"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out = gateway(&["run", "--config", "/nonexistent.yaml", "--interface", "lo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("error: cannot read /nonexistent.yaml: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_value_is_rejected_by_name() {
    let out = gateway(&[
        "run",
        "--config",
        "x.yaml",
        "--interface",
        "lo",
        "--address",
        "not-an-ip",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("invalid value 'not-an-ip' for '--address <IP>'"),
        "{stderr}"
    );
}

/// The examples the demo serves together; `examples/` also holds
/// `seed-as-written.yaml`, which is invalid on purpose.
const GATEWAY_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/dataengine-gateway.yaml"
);
const ROUTING_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/routing.yaml");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Runs the binary from the repository root, so paths print as a user types them.
fn gateway_in_repo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .current_dir(REPO)
        .env("RUST_LOG", "info")
        .output()
        .expect("run gateway")
}

#[test]
fn check_of_the_seed_as_written_prints_every_problem_once_in_file_order() {
    let out = gateway_in_repo(&["check", "examples/seed-as-written.yaml"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\
examples/seed-as-written.yaml:23:5: error: Gateway default/istio-gateway: spec.servers[1].tls: server must have TLS settings for HTTPS/TLS protocols
examples/seed-as-written.yaml:28:9: error: Gateway default/istio-gateway: metadata.name: duplicate Gateway default/istio-gateway: first defined at examples/seed-as-written.yaml:4:9
examples/seed-as-written.yaml:35:7: error: Gateway default/istio-gateway: spec.servers[0].port.name: port name must be set
examples/seed-as-written.yaml:36:7: error: Gateway default/istio-gateway: spec.servers[0].port.protocol: port protocol is required
4 error(s), 0 warning(s)
"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(1));
}
const CREDENTIALS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/credentials");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_of_the_seed_made_valid_passes_without_warnings() {
    let out = gateway_in_repo(&["check", "examples/seed.yaml"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 error(s), 0 warning(s)\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_passes_the_shipped_examples() {
    let out = gateway(&[
        "check",
        "--credentials-dir",
        CREDENTIALS,
        GATEWAY_EXAMPLE,
        ROUTING_EXAMPLE,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with("0 error(s), 0 warning(s)\n"), "{stdout}");
}

#[test]
fn check_finds_credentials_beside_the_config_without_the_flag() {
    // From another working directory: the search is relative to the file.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", GATEWAY_EXAMPLE, ROUTING_EXAMPLE])
        .current_dir(elsewhere.path())
        .output()
        .expect("run gateway");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "0 error(s), 0 warning(s)\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_fails_only_on_errors_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let warned = write(
        &dir,
        "warn.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: w}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n    typo: 1\n",
    );
    let out = gateway(&["check", &warned]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: Gateway default/w: spec.servers[0].typo: unknown field, ignored"),
        "{stdout}"
    );
    assert_eq!(
        gateway(&["check", "--strict", &warned]).status.code(),
        Some(1)
    );
}

#[test]
fn check_with_labels_reports_servers_dropped_by_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let gw = |name: &str, protocol: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  servers:\n  - port: {{number: 8000, name: p, protocol: {protocol}}}\n    hosts: [a.example.com]\n"
        )
    };
    let path = write(
        &dir,
        "gws.yaml",
        &format!("{}---\n{}", gw("alpha", "TCP"), gw("beta", "HTTP")),
    );
    let out = gateway(&["check", "--labels", "istio=ingressgateway", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("2 of 2 Gateways select the instance istio=ingressgateway"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: Gateway default/beta: spec.servers[0]: not served"),
        "{stdout}"
    );
    assert_eq!(
        gateway(&[
            "check",
            "--strict",
            "--labels",
            "istio=ingressgateway",
            &path
        ])
        .status
        .code(),
        Some(1)
    );
}

#[test]
fn compile_prints_the_plan_as_json() {
    let out = gateway(&[
        "compile",
        "--format",
        "json",
        "--credentials-dir",
        CREDENTIALS,
        GATEWAY_EXAMPLE,
        ROUTING_EXAMPLE,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["listeners"][0]["port"], 80);
    assert_eq!(plan["listeners"][0]["kind"], "http");
    assert_eq!(plan["listeners"][0]["hosts"][0]["host"], "dataengine.com");
    assert_eq!(plan["listeners"][0]["hosts"][0]["httpsRedirect"], true);
    assert_eq!(plan["listeners"][1]["port"], 443);
}

#[test]
fn compile_serves_only_gateways_that_select_the_instance() {
    let out = gateway(&[
        "compile",
        "--format",
        "json",
        "--labels",
        "istio=egressgateway",
        "--credentials-dir",
        CREDENTIALS,
        GATEWAY_EXAMPLE,
        ROUTING_EXAMPLE,
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["listeners"], serde_json::json!([]));
}

#[test]
fn check_without_the_credentials_names_the_missing_file() {
    let out = gateway(&[
        "check",
        "--credentials-dir",
        "/nonexistent",
        GATEWAY_EXAMPLE,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("spec.servers[1].tls.credentialName: cannot read /nonexistent/dataengine-com-cert/tls.crt: No such file or directory"), "{stdout}");
}

#[test]
fn limit_flags_reject_values_that_would_disable_them() {
    for (flag, value, expected) in [
        ("--max-connections", "0", "0 is not in 1.."),
        (
            "--request-head-timeout",
            "10",
            "needs a unit: ms, s, m or h",
        ),
        ("--idle-timeout", "0s", "is not a positive duration"),
        ("--max-config-bytes", "0", "is not a positive size"),
    ] {
        let out = gateway(&[
            "run",
            "--config",
            "x.yaml",
            "--interface",
            "lo",
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}

#[test]
fn check_reports_a_file_over_the_size_limit_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "big.yaml", &"# padding\n".repeat(200));
    let out = gateway(&["check", &path, "--max-config-bytes", "1K"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{path}: error: file is 2000 bytes, over the limit of 1024 bytes (--max-config-bytes)"
        )),
        "{stdout}"
    );
}

/// A Gateway and a PeerAuthentication (a kind still refused) for it.
const GATEWAY_AND_PEER_AUTHENTICATION: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

#[test]
fn check_strict_fails_on_a_refused_kind_unless_it_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "peer.yaml", GATEWAY_AND_PEER_AUTHENTICATION);
    let out = gateway(&["check", "--strict", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{path}:10:1: error: PeerAuthentication istio-system/strict: PeerAuthentication (security.istio.io/v1) is not enforced by this gateway")),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 error(s), 0 warning(s)\n"), "{stdout}");

    let out = gateway(&[
        "check",
        "--strict",
        "--ignore-kind",
        "PeerAuthentication",
        &path,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("note: PeerAuthentication istio-system/strict: PeerAuthentication (security.istio.io/v1) is not enforced by this gateway (mutual TLS required of clients): ignored as --ignore-kind PeerAuthentication asks"),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 error(s), 0 warning(s)\n"), "{stdout}");
}

#[test]
fn run_refuses_a_refused_kind_naming_it_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "peer.yaml", GATEWAY_AND_PEER_AUTHENTICATION);
    let out = gateway(&["run", "--config", &path, "--interface", "lo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: PeerAuthentication istio-system/strict: PeerAuthentication (security.istio.io/v1) is not enforced by this gateway"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 1 error(s) in the configuration; nothing was started"),
        "{stderr}"
    );
}

/// A Gateway and an AuthorizationPolicy that allows nothing on it.
const GATEWAY_AND_ALLOW_NOTHING: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
";

#[test]
fn check_strict_accepts_an_authorization_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "authz.yaml", GATEWAY_AND_ALLOW_NOTHING);
    let out = gateway(&["check", "--strict", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with("0 error(s), 0 warning(s)\n"), "{stdout}");
}

#[test]
fn check_explains_which_rule_allows_or_denies_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let text = GATEWAY_AND_ALLOW_NOTHING.replace(
        "spec: {}\n",
        "spec:\n  rules:\n  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: istio-system}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/admin*]}}]}]\n",
    );
    let path = write(&dir, "explain.yaml", &text);
    let explain = |request: &str| {
        let out = gateway(&["check", "--explain-request", request, &path]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let allowed = explain("GET http://a.example.com/ from 203.0.113.7");
    assert!(
        allowed.contains("allowed (HTTP) by ALLOW rule ns[istio-system]-policy[allow-nothing]-rule[0] of istio-system/allow-nothing"),
        "{allowed}"
    );
    let denied = explain("POST http://a.example.com/admin/x from 203.0.113.7");
    assert!(
        denied.contains("denied (HTTP) by DENY rule ns[istio-system]-policy[no-admin]-rule[0] of istio-system/no-admin: 403 RBAC: access denied"),
        "{denied}"
    );
    let outside = explain("GET http://a.example.com/ from 192.0.2.9 via 203.0.113.7");
    assert!(
        outside.contains("denied (HTTP): ALLOW policies apply and none of their rules matches"),
        "{outside}"
    );
    let bad = gateway(&["check", "--explain-request", "GET nowhere", &path]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("expected 'METHOD SCHEME://HOST[:PORT]/PATH from CLIENT_IP [via PEER_IP]'")
    );
}

#[test]
fn check_reports_authorization_policy_errors_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = GATEWAY_AND_ALLOW_NOTHING.replace(
        "spec: {}\n",
        "spec:\n  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{}]\n",
    );
    let path = write(&dir, "custom.yaml", &text);
    let out = gateway(&["check", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{path}:14:11: error: AuthorizationPolicy istio-system/allow-nothing: spec.action: CUSTOM (external authorization) is not supported by this gateway")),
        "{stdout}"
    );
}

#[test]
fn ignore_kind_authorization_policy_is_refused_as_enforced() {
    let out = gateway(&["check", "--ignore-kind", "AuthorizationPolicy", "x.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("AuthorizationPolicy (security.istio.io) is enforced by this gateway: it needs no --ignore-kind"),
        "{stderr}"
    );
}

#[test]
fn ignore_kind_takes_only_a_refused_kind() {
    let out = gateway(&["check", "--ignore-kind", "ConfigMap", "x.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"ConfigMap\" is not a kind the gateway refuses; those are PeerAuthentication, EnvoyFilter, Sidecar, WasmPlugin, TrafficExtension"),
        "{stderr}"
    );
}

#[test]
fn check_reads_the_items_of_a_kubectl_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: web}\n  spec:\n    servers:\n    - port: {number: 80, name: http, protocol: SMTP}\n      hosts: [a.example.com]\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: settings}\n",
    );
    let out = gateway(&["check", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "{path}:9:48: error: Gateway default/web: spec.servers[0].port.protocol: invalid protocol \"SMTP\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UDP\n\
             {path}:11:3: warning: ConfigMap default/settings: ConfigMap (v1) is not read by this gateway; skipped\n\
             1 error(s), 1 warning(s)\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn kubernetes_flags_need_kubernetes_mode_and_exclude_files() {
    /// `gateway run ARGS` fails and says `needle`.
    fn refused(args: &[&str], needle: &str) {
        let out = gateway(&[&["run"], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let need = "--kubeconfig, --watch-namespace, --cluster-domain, --protect-node-addresses and --service need --kubernetes";
    let file = ["-c", "x.yaml", "-i", "lo"];
    refused(&[&["--watch-namespace", "shop"][..], &file].concat(), need);
    refused(
        &[&["--cluster-domain", "corp.example"][..], &file].concat(),
        need,
    );
    refused(&[&["--protect-node-addresses"][..], &file].concat(), need);
    refused(
        &[&["--service", "istio-system/ingress"][..], &file].concat(),
        need,
    );
    refused(
        &[
            "--kubernetes",
            "--cluster-domain",
            "corp..example",
            "-i",
            "lo",
        ],
        "\"corp..example\" is not a DNS domain",
    );
    refused(
        &["--kubernetes", "--service", "ingress", "-i", "lo"],
        "\"ingress\" is not NAMESPACE/NAME",
    );
    refused(
        &["--kubernetes", "-i", "eth9"],
        "in Kubernetes mode the gateway protects only its own addresses: name its VIPs with --address; the node's addresses on eth9 carry kubelet",
    );
    refused(
        &["--kubernetes", "-c", "x.yaml", "-i", "lo"],
        "cannot be used with",
    );
    refused(&["-i", "lo"], "--config <PATH>");
}

#[test]
fn check_with_labels_says_a_tunnel_is_not_applied_to_an_http_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "tunnel.yaml",
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: web.example.org}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.example.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-tunnel}
spec:
  host: web.example.org
  trafficPolicy:
    tunnel: {targetHost: web.example.org, targetPort: 443}
",
    );
    let out = gateway(&["check", "--labels", "istio=ingressgateway", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: VirtualService default/web spec.http[0]: DestinationRule default/web-tunnel sets tunnel for web.example.org, which Istio applies to TCP and TLS routes only"),
        "{stdout}"
    );
    assert!(stdout.contains("0 error(s), 1 warning(s)"), "{stdout}");
}
