use std::path::PathBuf;

use super::*;
use crate::model::{Protocol, TlsMode};

fn disk_env() -> Environment<'static> {
    Environment {
        files: &Disk,
        credentials_dir: Some(Path::new("/nonexistent")),
        unreadable_credential_drops_server: false,
    }
}

fn load(text: &str) -> Config {
    load_sources(&[(PathBuf::from("gw.yaml"), text.to_string())])
}

fn messages(config: &Config) -> Vec<String> {
    config.diagnostics.iter().map(ToString::to_string).collect()
}

const REDIRECT: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: web
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - dataengine.com
    tls:
      httpsRedirect: true
";

#[test]
fn http_server_with_https_redirect_is_decoded() {
    let config = load(REDIRECT);
    assert!(config.diagnostics.is_empty(), "{:?}", messages(&config));
    let gw = &config.model.gateways[0];
    assert_eq!(
        (gw.namespace.as_str(), gw.name.as_str()),
        ("istio-system", "web")
    );
    assert_eq!(
        gw.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let server = &gw.servers[0];
    assert_eq!(server.port.number, 80);
    assert_eq!(server.port.protocol, Protocol::Http);
    assert_eq!(server.hosts, vec!["dataengine.com".to_string()]);
    let tls = server.tls.as_ref().unwrap();
    assert!(tls.https_redirect);
    assert_eq!(tls.mode, TlsMode::Passthrough);
}

#[test]
fn every_istio_api_version_is_read_alike() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let text = REDIRECT.replace(
            "networking.istio.io/v1",
            &format!("networking.istio.io/{version}"),
        );
        assert_eq!(load(&text).model.gateways.len(), 1, "{version}");
    }
}

#[test]
fn namespace_defaults_to_default() {
    let config = load(&REDIRECT.replace("  namespace: istio-system\n", ""));
    assert_eq!(config.model.gateways[0].namespace, "default");
}

#[test]
fn invalid_protocol_is_pinned_to_its_field() {
    let config = load(&REDIRECT.replace("protocol: HTTP", "protocol: \"\""));
    assert_eq!(config.model.gateways.len(), 0);
    let first = &messages(&config)[0];
    assert!(
        first.starts_with("gw.yaml:13:17: error: Gateway istio-system/web: spec.servers[0].port.protocol: invalid protocol \"\""),
        "{first}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = REDIRECT
        .replace("protocol: HTTP", "protocol: SMTP")
        .replace("name: http", "name: \"\"");
    let config = load(&text);
    let errors: Vec<_> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.field.as_str())
        .collect();
    // In file order: `name` (line 12) before `protocol` (line 13).
    assert_eq!(
        errors,
        vec!["spec.servers[0].port.name", "spec.servers[0].port.protocol"]
    );
}

#[test]
fn empty_port_name_and_protocol_get_one_diagnostic_each_at_their_key() {
    let text = REDIRECT
        .replace("protocol: HTTP", "protocol:")
        .replace("name: http", "name:");
    assert_eq!(
        messages(&load(&text)),
        vec![
            "gw.yaml:12:7: error: Gateway istio-system/web: spec.servers[0].port.name: port name must be set",
            "gw.yaml:13:7: error: Gateway istio-system/web: spec.servers[0].port.protocol: port protocol is required",
        ]
    );
}

#[test]
fn a_duplicate_resource_is_reported_and_its_content_still_validated() {
    let second = REDIRECT.replace("name: http", "name:");
    let config = load(&format!("{REDIRECT}---\n{second}"));
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:22:9: error: Gateway istio-system/web: metadata.name: duplicate Gateway istio-system/web: first defined at gw.yaml:4:9",
            "gw.yaml:30:7: error: Gateway istio-system/web: spec.servers[0].port.name: port name must be set",
        ]
    );
    assert_eq!(config.model.gateways.len(), 1);
}

#[test]
fn a_valid_duplicate_never_reaches_the_model() {
    let config = load(&format!("{REDIRECT}---\n{REDIRECT}"));
    assert_eq!(config.diagnostics.len(), 1, "{:?}", messages(&config));
    assert_eq!(config.model.gateways.len(), 1);
}

#[test]
fn unknown_field_is_a_warning_not_silence() {
    let config = load(&REDIRECT.replace(
        "httpsRedirect: true",
        "httpsRedirect: true\n      httpRedirect: true",
    ));
    assert_eq!(config.model.gateways.len(), 1);
    let warning = &messages(&config)[0];
    assert!(
        warning.contains(
            "warning: Gateway istio-system/web: spec.servers[0].tls.httpRedirect: unknown field"
        ),
        "{warning}"
    );
}

#[test]
fn https_server_with_empty_tls_is_an_error() {
    let text = REDIRECT
        .replace("protocol: HTTP", "protocol: HTTPS")
        .replace("    tls:\n      httpsRedirect: true\n", "    tls:\n");
    // One error, at the `tls` key (its null value has no position of its own).
    assert_eq!(
        messages(&load(&text)),
        vec![
            "gw.yaml:16:5: error: Gateway istio-system/web: spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols"
        ]
    );
}

#[test]
fn duplicate_gateway_names_both_locations() {
    let config = load(&format!("{REDIRECT}---\n{REDIRECT}"));
    assert_eq!(config.model.gateways.len(), 1);
    let error = &messages(&config)[0];
    assert!(
        error.contains("duplicate Gateway istio-system/web: first defined at gw.yaml:4:9"),
        "{error}"
    );
    assert!(error.starts_with("gw.yaml:22:9:"), "{error}");
}

#[test]
fn routing_kinds_are_read() {
    let routing = load(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: web}\n",
    );
    assert_eq!(routing.model.destination_rules.len(), 1);
    assert!(routing.diagnostics.is_empty(), "{:?}", messages(&routing));
}

#[test]
fn other_kinds_are_warnings_counted_in_the_summary() {
    let config = load("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n");
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:1:1: warning: ConfigMap default/x: ConfigMap (v1) is not read by this gateway; skipped"
        ]
    );
    assert!(!config.has_errors());
}

#[test]
fn a_kubernetes_service_is_read_for_the_gateway_port_translation() {
    let config = load(
        "apiVersion: v1\nkind: Service\nmetadata: {name: istio-ingressgateway, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  ports:\n  - {name: http2, port: 80, targetPort: 8080}\n  - {port: 443, targetPort: https}\n  - {name: status, port: 15021}\n",
    );
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:1:1: note: Service istio-system/istio-ingressgateway is read for the gateway's port translation only: when it selects the gateway workload, a server on one of its ports listens on that port's targetPort (it maps port 80 (http2) to targetPort 8080, port 443 to targetPort https)"
        ]
    );
    let service = &config.model.kubernetes.workload_services[0];
    assert_eq!(service.ports.len(), 3);
    assert_eq!(
        service.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let bare = load("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n");
    assert_eq!(
        messages(&bare),
        vec![
            "gw.yaml:1:1: note: Service default/web is read for the gateway's port translation only: when it selects the gateway workload, a server on one of its ports listens on that port's targetPort"
        ]
    );
}

#[test]
fn yaml_syntax_error_is_positioned() {
    let config = load("kind: [Gateway\n");
    let error = &messages(&config)[0];
    assert!(error.starts_with("gw.yaml:"), "{error}");
    assert!(error.contains("error: invalid YAML"), "{error}");
}

#[test]
fn wrong_types_are_errors_not_panics() {
    let config = load(
        &REDIRECT
            .replace("number: 80", "number: eighty")
            .replace("- dataengine.com", "- {a: b}"),
    );
    let fields: Vec<_> = config
        .diagnostics
        .iter()
        .map(|d| d.field.as_str())
        .collect();
    assert!(
        fields.contains(&"spec.servers[0].port.number"),
        "{fields:?}"
    );
    assert!(fields.contains(&"spec.servers[0].hosts[0]"), "{fields:?}");
}

#[test]
fn directories_are_read_recursively_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/b.yaml"),
        REDIRECT.replace("name: web", "name: b"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        REDIRECT.replace("name: web", "name: a"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
    let config = load_paths(
        &[dir.path().to_path_buf()],
        DEFAULT_MAX_FILE_BYTES,
        &disk_env(),
        &[],
    )
    .unwrap();
    let names: Vec<_> = config
        .model
        .gateways
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn unreadable_path_is_an_error_naming_it() {
    let err = load_paths(
        &[PathBuf::from("/nonexistent/gw.yaml")],
        DEFAULT_MAX_FILE_BYTES,
        &disk_env(),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "cannot read /nonexistent/gw.yaml");
}

#[test]
fn duplicate_keys_are_an_error_not_a_silent_override() {
    let config = load(&REDIRECT.replace(
        "      number: 80\n",
        "      number: 80\n      number: 8080\n",
    ));
    let error = &messages(&config)[0];
    assert!(
        error.contains(
            "error: Gateway istio-system/web: spec.servers[0].port.number: duplicate key number"
        ),
        "{error}"
    );
}

fn write_gateway(dir: &Path, file: &str, name: &str) {
    std::fs::write(
        dir.join(file),
        REDIRECT.replace("name: web", &format!("name: {name}")),
    )
    .unwrap();
}

fn load_dir(paths: &[PathBuf]) -> Config {
    load_paths(paths, DEFAULT_MAX_FILE_BYTES, &disk_env(), &[]).unwrap()
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn symlink_loops_are_walked_once_and_files_read_once() {
    let dir = tempfile::tempdir().unwrap();
    write_gateway(dir.path(), "gw.yaml", "a");
    std::os::unix::fs::symlink(".", dir.path().join("s1")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("s2")).unwrap();
    std::os::unix::fs::symlink("gw.yaml", dir.path().join("again.yaml")).unwrap();
    let config = load_dir(&[dir.path().to_path_buf(), dir.path().join("gw.yaml")]);
    assert_eq!(config.model.gateways.len(), 1);
    assert!(config.diagnostics.is_empty(), "{:?}", messages(&config));
}

#[test]
fn a_fifo_is_reported_and_skipped_never_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    write_gateway(dir.path(), "gw.yaml", "a");
    let fifo = dir.path().join("pipe.yaml");
    mkfifo(&fifo);
    let config = load_dir(&[dir.path().to_path_buf()]);
    assert_eq!(config.model.gateways.len(), 1);
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: warning: not a regular file (a FIFO); skipped",
            fifo.display()
        )]
    );
    // Named on the command line it is an error: the operator asked for it.
    let config = load_dir(std::slice::from_ref(&fifo));
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: error: not a regular file (a FIFO); skipped",
            fifo.display()
        )]
    );
}

#[test]
fn devices_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    let config = load_dir(&[dir.path().to_path_buf()]);
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: warning: not a regular file (a character device); skipped",
            dir.path().join("zero.yaml").display()
        )]
    );
    let config = load_dir(&[PathBuf::from("/dev/zero")]);
    assert_eq!(
        messages(&config),
        vec!["/dev/zero: error: not a regular file (a character device); skipped"]
    );
}

#[test]
fn files_over_the_size_limit_are_errors_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    write_gateway(dir.path(), "gw.yaml", "a");
    let size = std::fs::metadata(dir.path().join("gw.yaml")).unwrap().len();
    let config = load_paths(&[dir.path().to_path_buf()], size - 1, &disk_env(), &[]).unwrap();
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: error: file is {size} bytes, over the limit of {} bytes (--max-config-bytes)",
            dir.path().join("gw.yaml").display(),
            size - 1
        )]
    );
    let config = load_paths(&[dir.path().to_path_buf()], size, &disk_env(), &[]).unwrap();
    assert_eq!(config.model.gateways.len(), 1);
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), b"kind: \xff\n").unwrap();
    let config = load_dir(&[dir.path().to_path_buf()]);
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: error: not UTF-8 text (invalid byte at offset 6)",
            dir.path().join("bad.yaml").display()
        )]
    );
}

#[test]
fn an_error_diagnostic_means_has_errors() {
    let config = load(&REDIRECT.replace("protocol: HTTP", "protocol: HTTP3"));
    assert!(config.has_errors(), "{:?}", messages(&config));
}

#[test]
fn only_istio_networking_api_versions_are_read() {
    for api_version in ["networking.istio.io/v2", "example.com/v1"] {
        let config = load(&REDIRECT.replace("networking.istio.io/v1", api_version));
        assert!(config.model.gateways.is_empty(), "{api_version}");
        assert_eq!(
            messages(&config),
            vec![format!(
                "gw.yaml:1:1: warning: Gateway istio-system/web: Gateway ({api_version}) is not read by this gateway; skipped"
            )]
        );
    }
}

#[test]
fn load_from_disk_reads_the_given_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_gateway(dir.path(), "gw.yaml", "a");
    let config = load_from_disk(
        &[dir.path().to_path_buf()],
        Some(Path::new("/nonexistent")),
        DEFAULT_MAX_FILE_BYTES,
        &[],
    )
    .unwrap();
    assert_eq!(config.model.gateways.len(), 1);
}

#[test]
fn only_directories_and_yaml_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write_gateway(dir.path(), "gw.yaml", "a");
    std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
    std::os::unix::fs::symlink("missing", dir.path().join("gone.txt")).unwrap();
    let config = load_dir(&[dir.path().to_path_buf()]);
    assert_eq!(config.model.gateways.len(), 1);
    assert!(config.diagnostics.is_empty(), "{:?}", messages(&config));
}

#[test]
fn a_dangling_yaml_symlink_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gone.yaml");
    std::os::unix::fs::symlink("missing.yaml", &link).unwrap();
    let config = load_dir(&[dir.path().to_path_buf()]);
    assert_eq!(
        messages(&config),
        vec![format!(
            "{}: warning: cannot read: No such file or directory (os error 2)",
            link.display()
        )]
    );
}

#[test]
fn reading_a_fifo_directly_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    mkfifo(&fifo);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(walk::read_text(&fifo, 100)));
    let result = receive
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("read_text waited for a writer");
    assert_eq!(
        result,
        Err("not a regular file (a FIFO); skipped".to_string())
    );
}

const PEER_AUTHENTICATION: &str = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: istio-system
spec: {}
";

#[test]
fn a_refused_kind_is_an_error_naming_the_kind() {
    let config = load(PEER_AUTHENTICATION);
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:1:1: error: PeerAuthentication istio-system/strict: PeerAuthentication (security.istio.io/v1) is not enforced by this gateway (mutual TLS required of clients): serving without it would let through what it denies, so the configuration is refused; --ignore-kind PeerAuthentication accepts that risk"
        ]
    );
}

#[test]
fn every_security_control_kind_is_an_error() {
    for (api_version, kind) in [
        ("security.istio.io/v1alpha1", "AuthorizationPolicy"),
        ("security.istio.io/v1alpha1", "RequestAuthentication"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("networking.istio.io/v1", "Sidecar"),
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
        ("extensions.istio.io/v1alpha1", "TrafficExtension"),
    ] {
        let config = load(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n"
        ));
        assert!(config.has_errors(), "{kind}: {:?}", messages(&config));
        assert_eq!(config.diagnostics[0].resource, format!("{kind} default/x"));
    }
}

#[test]
fn an_authorization_policy_in_a_version_istio_does_not_serve_is_an_error() {
    let config = load(
        "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {}\n",
    );
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:1:1: error: AuthorizationPolicy default/x: apiVersion: AuthorizationPolicy (security.istio.io/v1alpha1) is not a version this gateway reads (v1, v1beta1): serving without it would let through what it denies, so the configuration is refused"
        ]
    );
}

#[test]
fn an_ignored_kind_is_a_note_saying_what_is_served() {
    let ignored: Vec<IgnoredKind> = vec!["PeerAuthentication".parse().unwrap()];
    let sources = [(PathBuf::from("gw.yaml"), PEER_AUTHENTICATION.to_string())];
    let config = load_sources_ignoring(&sources, None, &ignored);
    assert!(!config.has_errors(), "{:?}", messages(&config));
    assert_eq!(
        messages(&config),
        vec![
            "gw.yaml:1:1: note: PeerAuthentication istio-system/strict: PeerAuthentication (security.istio.io/v1) is not enforced by this gateway (mutual TLS required of clients): ignored as --ignore-kind PeerAuthentication asks, so what it would deny is served"
        ]
    );
    // Ignoring one kind leaves the others refused.
    let other =
        "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: x}\nspec: {}\n"
            .to_string();
    let config = load_sources_ignoring(&[(PathBuf::from("gw.yaml"), other)], None, &ignored);
    assert!(config.has_errors(), "{:?}", messages(&config));
}

/// What `kubectl get gateways,peerauthentications -o yaml` prints.
const KUBECTL_LIST: &str = "\
apiVersion: v1
kind: List
metadata:
  resourceVersion: \"\"
items:
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata:
    name: web
    namespace: istio-system
  spec:
    servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: [a.example.com]
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata:
    name: deny-all
    namespace: istio-system
  spec: {}
";

#[test]
fn a_kubectl_list_is_unwrapped_and_each_item_read() {
    let config = load(KUBECTL_LIST);
    assert_eq!(config.model.gateways.len(), 1, "{:?}", messages(&config));
    assert_eq!(config.model.gateways[0].name, "web");
    let errors: Vec<String> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}:{} {}", d.line, d.col, d.resource))
        .collect();
    assert_eq!(
        errors,
        vec!["15:3 PeerAuthentication istio-system/deny-all"],
        "the item is refused where it is written"
    );
}

#[test]
fn typed_and_nested_lists_are_unwrapped_and_an_empty_one_warns() {
    let typed = KUBECTL_LIST.replace("kind: List", "kind: GatewayList");
    assert_eq!(load(&typed).model.gateways.len(), 1);
    let nested = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: networking.istio.io/v1\n    kind: DestinationRule\n    metadata: {name: d}\n    spec: {host: web}\n";
    let config = load(nested);
    assert_eq!(
        config.model.destination_rules.len(),
        1,
        "{:?}",
        messages(&config)
    );
    assert!(config.diagnostics.is_empty(), "{:?}", messages(&config));
    let empty = load("apiVersion: v1\nkind: List\n");
    assert_eq!(
        messages(&empty),
        vec!["gw.yaml:1:1: warning: items: List (v1) has no items; nothing read"]
    );
}

#[test]
fn a_duplicate_across_a_list_and_a_document_is_found() {
    let config = load(&format!("{KUBECTL_LIST}---\n{}", REDIRECT));
    assert!(
        messages(&config).iter().any(
            |m| m.contains("duplicate Gateway istio-system/web: first defined at gw.yaml:9:11")
        ),
        "{:?}",
        messages(&config)
    );
}
