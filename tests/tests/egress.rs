//! The egress instance (issue 9, item 1): the same binary run with
//! `--labels istio=egressgateway` serves the seed's egress Gateway, passing
//! a workload's TLS to dataengine.com through, by SNI, to the external
//! dataengine.com that the system resolver names; other names are refused.
use std::{fs, net::SocketAddr, path::Path, path::PathBuf};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, CREDENTIALS, Daemon},
    netns::{BACKEND_V4, BACKEND_V6, GATEWAY_TO_BACKEND_V6, GATEWAY_V4, GATEWAY_V6, Topology},
    pki::Pki,
    require_root,
};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed.yaml");

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` binds over `/etc/hosts`
/// for the processes it starts in `<ns>`; removed on drop.
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn new(ns: &str, lines: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(&dir).expect("/etc/netns dir");
        let hosts = Self(dir);
        hosts.update(lines);
        hosts
    }

    /// Rewrites the file in place: the bind mount of a running process
    /// sees the same file, so its next lookup finds the new lines.
    fn update(&self, lines: &str) {
        fs::write(
            self.0.join("hosts"),
            format!("127.0.0.1 localhost\n{lines}"),
        )
        .expect("hosts");
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A topology whose backend namespace plays "outside", and that namespace.
fn with_outside() -> (Topology, String) {
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    let outside = topology.backend_ns.clone().expect("outside namespace");
    (topology, outside)
}

/// A test-backend named `name` outside, on `port`, with TLS when given
/// its certificate and key.
fn outside_server(
    topology: &Topology,
    outside: &str,
    name: &str,
    port: u16,
    tls: Option<(&str, &str)>,
) -> (Backend, SocketAddr) {
    let addr: SocketAddr = format!("{BACKEND_V4}:{port}").parse().expect("addr");
    let listen = addr.to_string();
    let mut args = vec!["--name", name, "--listen", &listen];
    if let Some((crt, key)) = tls {
        args.extend(["--tls", crt, key]);
    }
    let backend = Backend::start(topology, outside, Path::new(TEST_BACKEND), &args, addr);
    (backend, addr)
}

/// The egress instance on the topology's interface, serving `config`,
/// with `extra` flags.
fn egress_daemon(topology: &Topology, config: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--config",
        config,
        "--labels",
        "istio=egressgateway",
        "--interface",
        &topology.gateway_if,
        "--address",
        GATEWAY_V4,
        "--admin-address",
        ADMIN,
        "--credentials-dir",
        CREDENTIALS,
    ];
    args.extend_from_slice(extra);
    Daemon::start(topology, &args)
}

/// The workload's route to the outside goes through the gateway's node,
/// as a pod's would.
fn route_outside_via_gateway(topology: &Topology) {
    let out = topology.client(&["ip", "route", "add", "198.51.100.0/24", "via", GATEWAY_V4]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second outside address no ServiceEntry names.
const UNKNOWN_V4: &str = "198.51.100.3";

/// Gives the outside namespace `UNKNOWN_V4` too (on its loopback: the
/// namespace answers for it on its link as well).
fn add_unknown_address(topology: &Topology, outside: &str) {
    let out = topology
        .exec(
            outside,
            &[
                "ip",
                "addr",
                "add",
                &format!("{UNKNOWN_V4}/32"),
                "dev",
                "lo",
            ],
        )
        .output()
        .expect("ip addr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test-backend at `addr` outside.
fn outside_server_at(
    topology: &Topology,
    outside: &str,
    name: &str,
    addr: &str,
    tls: Option<(&str, &str)>,
) -> Backend {
    let listen = addr.to_string();
    let mut args = vec!["--name", name, "--listen", &listen];
    if let Some((crt, key)) = tls {
        args.extend(["--tls", crt, key]);
    }
    let addr: SocketAddr = addr.parse().expect("addr");
    Backend::start(topology, outside, Path::new(TEST_BACKEND), &args, addr)
}

/// curl from the workload with `args`; (exit code, stdout, stderr).
fn workload_curl(topology: &Topology, args: &[&str]) -> (Option<i32>, String, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    let out = topology.client(&argv);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An egress Gateway serving dataengine.com by TLS passthrough on 443
/// and by HTTP on 80, both to the external dataengine.com.
const HTTP_AND_TLS: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [dataengine.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [dataengine.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dataengine, namespace: istio-system}
spec:
  hosts: [dataengine.com]
  gateways: [egress]
  tls:
  - match: [{port: 443, sniHosts: [dataengine.com]}]
    route: [{destination: {host: dataengine.com, port: {number: 443}}}]
  http:
  - route: [{destination: {host: dataengine.com, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dataengine, namespace: istio-system}
spec:
  hosts: [dataengine.com]
  location: MESH_EXTERNAL
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
";

/// `HTTP_AND_TLS` written to a scratch file.
fn http_and_tls_config() -> (gateway_tests::hostile::Scratch, String) {
    let scratch = gateway_tests::hostile::Scratch::new();
    let path = scratch.path.join("egress.yaml");
    fs::write(&path, HTTP_AND_TLS).expect("config");
    let path = path.display().to_string();
    (scratch, path)
}

#[test]
fn the_egress_instance_passes_a_workloads_tls_through_to_the_external_host() {
    require_root();
    let (topology, outside_ns) = with_outside();
    // "Outside": dataengine.com with a certificate of its own CA.
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let _outside = outside_server(
        &topology,
        &outside_ns,
        "external-dataengine",
        443,
        Some((&crt, &key)),
    );
    // The gateway's resolver: dataengine.com is the outside server.
    let _hosts = NetnsHosts::new(
        &topology.gateway_ns,
        &format!("{BACKEND_V4} dataengine.com\n"),
    );
    let daemon = egress_daemon(&topology, SEED, &[]);
    let resolve = format!("dataengine.com:443:{GATEWAY_V4}");
    let ca = pki.path("ca.crt");
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "https://dataengine.com/from-the-workload",
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    // The external server's own certificate (its CA) and its answer: the
    // gateway passed the TLS through without terminating it.
    assert!(body.contains("backend=external-dataengine"), "{body}");
    assert!(body.contains("path=/from-the-workload"), "{body}");
    // A name the egress Gateway does not serve gets nowhere.
    let other = format!("other.example:443:{GATEWAY_V4}");
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-k",
        "--resolve",
        &other,
        "https://other.example/",
    ]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn plain_http_leaves_the_egress_gateway_as_verified_tls() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let pki = Pki::new();
    let (crt, key) = pki.issue("external-api", "DNS:api.external.test");
    let other_ca = Pki::new();
    let _outside = outside_server(
        &topology,
        &outside_ns,
        "external-api",
        443,
        Some((&crt, &key)),
    );
    let _hosts = NetnsHosts::new(
        &topology.gateway_ns,
        &format!(
            "{BACKEND_V4} api.external.test bad.external.test revoked.external.test any.external.test\n"
        ),
    );
    let ca = pki.path("ca.crt");
    let wrong_ca = other_ca.path("ca.crt");
    // The same server certificate, revoked in a list only one rule names.
    let crl = pki.revoke("external-api");
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.external.test, bad.external.test, revoked.external.test, any.external.test]
",
    );
    let trusted = format!("caCertificates: {ca}");
    let untrusted = format!("caCertificates: {wrong_ca}");
    let revoked = format!("caCertificates: {ca}, caCrl: {crl}");
    // Signed by a CA neither named nor a system root: only not verifying
    // lets it through.
    let unverified = "insecureSkipVerify: true".to_string();
    for (host, verify) in [
        ("api.external.test", &trusted),
        ("bad.external.test", &untrusted),
        ("revoked.external.test", &revoked),
        ("any.external.test", &unverified),
    ] {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: istio-system}}
spec:
  hosts: [{host}]
  gateways: [egress]
  http:
  - route: [{{destination: {{host: {host}, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: istio-system}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: istio-system}}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: api.external.test, {verify}}}
"
        ));
    }
    let scratch = gateway_tests::hostile::Scratch::new();
    let config = scratch.path.join("egress.yaml");
    fs::write(&config, yaml).expect("config");
    let daemon = egress_daemon(&topology, &config.display().to_string(), &[]);
    let get = |host: &str| {
        let resolve = format!("{host}:80:{GATEWAY_V4}");
        topology.client(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\nstatus=%{http_code}",
            "--resolve",
            &resolve,
            &format!("http://{host}/plain"),
        ])
    };
    let out = get("api.external.test");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("status=200"), "{body}\n{}", daemon.log());
    assert!(body.contains("backend=external-api"), "{body}");
    assert!(body.contains("path=/plain"), "{body}");
    // A certificate the DestinationRule's CA did not sign: 503, logged,
    // never sent in plaintext.
    let out = get("bad.external.test");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("status=503"), "{body}");
    assert!(body.contains("TLS error"), "{body}");
    assert!(!body.contains("backend=external-api"), "{body}");
    assert!(
        daemon.log().contains("upstream TLS to")
            && daemon.log().contains("not falling back to plaintext"),
        "{}",
        daemon.log()
    );
    // Revoked in the rule's caCrl: refused like an untrusted one.
    let body = String::from_utf8_lossy(&get("revoked.external.test").stdout).to_string();
    assert!(body.contains("status=503"), "{body}");
    assert!(!body.contains("backend=external-api"), "{body}");
    // insecureSkipVerify: served although no CA vouches for it.
    let body = String::from_utf8_lossy(&get("any.external.test").stdout).to_string();
    assert!(body.contains("status=200"), "{body}\n{}", daemon.log());
    assert!(body.contains("backend=external-api"), "{body}");
}

#[test]
fn a_workloads_outbound_https_is_captured_in_the_kernel_and_passed_through() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let _outside = outside_server(
        &topology,
        &outside_ns,
        "external-dataengine",
        443,
        Some((&crt, &key)),
    );
    // The workload: its own resolver names the external address, and its
    // route to it goes through the gateway's node, as a pod's would.
    let names = format!("{BACKEND_V4} dataengine.com\n");
    let _workload_hosts = NetnsHosts::new(&topology.client_ns, &names);
    let _gateway_hosts = NetnsHosts::new(&topology.gateway_ns, &names);
    route_outside_via_gateway(&topology);
    let daemon = egress_daemon(&topology, SEED, &["--egress-from", &topology.gateway_if]);
    // The workload connects to dataengine.com as it would without a
    // gateway; the kernel hands the connection to the egress instance.
    let ca = pki.path("ca.crt");
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        &ca,
        "https://dataengine.com/unaware",
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(body.contains("backend=external-dataengine"), "{body}");
    // The external server saw the gateway's connection, not the workload's.
    assert!(body.contains("peer=198.51.100.1:"), "{body}");
    // A port the egress Gateway does not serve: reset at once by the
    // proxy, not left to time out.
    let started = std::time::Instant::now();
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{BACKEND_V4}:8080/"),
    ]);
    // Depending on when the reset meets curl: refused (7), reset while
    // sending (55) or receiving (56); never a timeout (28).
    assert!(
        matches!(out.status.code(), Some(7 | 55 | 56)),
        "{:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn excluded_destinations_are_routed_as_before_never_captured() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let (_outside, outside_addr) = outside_server(&topology, &outside_ns, "direct", 8080, None);
    // Plain routing between the workload and the outside, through the
    // gateway's node.
    for (ns, argv) in [
        (
            &topology.client_ns,
            vec!["ip", "route", "add", "198.51.100.0/24", "via", GATEWAY_V4],
        ),
        (
            &outside_ns,
            vec!["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1"],
        ),
        (
            &topology.gateway_ns,
            vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ),
    ] {
        let out = topology.exec(ns, &argv).output().expect("setup");
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _daemon = egress_daemon(
        &topology,
        SEED,
        &[
            "--egress-from",
            &topology.gateway_if,
            "--egress-exclude",
            "198.51.100.0/28",
        ],
    );
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{outside_addr}/direct"),
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The outside server saw the workload itself: routed, not proxied.
    assert!(body.contains("peer=192.0.2.2:"), "{body}");
}

#[test]
fn a_forbidden_address_is_refused_fast_in_the_kernel_logged_and_counted() {
    require_root();
    let (topology, outside_ns) = with_outside();
    add_unknown_address(&topology, &outside_ns);
    let unknown = format!("{UNKNOWN_V4}:8080");
    let _unknown = outside_server_at(&topology, &outside_ns, "unregistered", &unknown, None);
    let _gateway_hosts = NetnsHosts::new(
        &topology.gateway_ns,
        &format!("{BACKEND_V4} dataengine.com\n"),
    );
    route_outside_via_gateway(&topology);
    let daemon = egress_daemon(&topology, SEED, &["--egress-from", &topology.gateway_if]);
    let started = std::time::Instant::now();
    let (code, _, stderr) = workload_curl(&topology, &[&format!("http://{unknown}/")]);
    // Refused (7) by the kernel's reset to the SYN, at once.
    assert_eq!(code, Some(7), "{stderr}\n{}", daemon.log());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let line = format!(
        "egress refused in the kernel: workload 192.0.2.2 on {} -> {unknown}: no ServiceEntry resolves to this address",
        topology.gateway_if
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !daemon.log().contains(&line) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(daemon.log().contains(&line), "{}", daemon.log());
    let key = format!("egress.workload.192.0.2.2.{}", topology.gateway_if);
    assert_eq!(
        gateway_tests::daemon::stat(&topology, &format!("{key}.refused")),
        1
    );
    assert_eq!(
        gateway_tests::daemon::stat(&topology, &format!("{key}.connections")),
        1
    );
    // The same counters from the pinned maps, without the daemon.
    let gateway = gateway_tests::daemon::gateway_bin().display().to_string();
    let out = topology.gateway(&[&gateway, "stats", "--interface", &topology.gateway_if]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{key}.refused 1\n")), "{text}");
    // The gateway's own connections are never captured: the same address
    // answers the gateway.
    let out = topology.gateway(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{unknown}/own"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backend=unregistered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_forbidden_host_on_an_allowed_address_is_refused_at_the_proxy_by_sni_and_by_host() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com,DNS:evil.example");
    let tls_at = format!("{BACKEND_V4}:443");
    let http_at = format!("{BACKEND_V4}:80");
    let _tls = outside_server_at(
        &topology,
        &outside_ns,
        "cdn-tls",
        &tls_at,
        Some((&crt, &key)),
    );
    let _http = outside_server_at(&topology, &outside_ns, "cdn-http", &http_at, None);
    // One address serves both names, as a CDN's does.
    let names = format!("{BACKEND_V4} dataengine.com evil.example\n");
    let _workload_hosts = NetnsHosts::new(&topology.client_ns, &names);
    let _gateway_hosts = NetnsHosts::new(&topology.gateway_ns, &names);
    route_outside_via_gateway(&topology);
    let (_scratch, config) = http_and_tls_config();
    let daemon = egress_daemon(&topology, &config, &["--egress-from", &topology.gateway_if]);
    let ca = pki.path("ca.crt");
    let (code, body, stderr) =
        workload_curl(&topology, &["--cacert", &ca, "https://dataengine.com/ok"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", daemon.log());
    assert!(body.contains("backend=cdn-tls"), "{body}");
    let (code, body, _) = workload_curl(&topology, &["--cacert", &ca, "https://evil.example/"]);
    assert_ne!(code, Some(0), "{body}");
    assert!(!body.contains("backend="), "{body}");
    let by_sni = format!(
        "egress refused at the proxy: workload 192.0.2.2 on {} -> {tls_at}: SNI evil.example is not a host of the egress Gateway",
        topology.gateway_if
    );
    assert!(daemon.log().contains(&by_sni), "{}", daemon.log());
    let (_, body, _) = workload_curl(
        &topology,
        &["-w", "\nstatus=%{http_code}", "http://dataengine.com/ok"],
    );
    assert!(
        body.contains("status=200") && body.contains("backend=cdn-http"),
        "{body}"
    );
    let (_, body, _) = workload_curl(
        &topology,
        &["-w", "\nstatus=%{http_code}", "http://evil.example/"],
    );
    assert!(body.contains("status=404"), "{body}");
    assert!(!body.contains("backend="), "{body}");
    // The access log names the workload's interface and the verdict, and
    // the per-host counter has the refusal.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let log = daemon.log();
    let refused_line = log
        .lines()
        .find(|l| l.contains("\"evil.example\"") && l.contains(" 404 NR "))
        .unwrap_or_default();
    assert!(
        refused_line.ends_with(&format!(" {} refused", topology.gateway_if)),
        "{log}"
    );
    let out = topology.gateway(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        &format!("http://{ADMIN}/stats/prometheus"),
    ]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    for (host, verdict) in [("evil.example", "refused"), ("dataengine.com", "allowed")] {
        let series = format!(
            "gateway_egress_decisions_total{{workload=\"192.0.2.2\",interface=\"{}\",host=\"{host}\",verdict=\"{verdict}\"}} 2",
            topology.gateway_if
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}

#[test]
fn allow_any_passes_unknown_addresses_hosts_and_ports_to_their_original_destination() {
    require_root();
    let (topology, outside_ns) = with_outside();
    add_unknown_address(&topology, &outside_ns);
    let pki = Pki::new();
    let (crt, key) = pki.issue("unknown", "DNS:unknown.example");
    let tls_at = format!("{UNKNOWN_V4}:443");
    let http_at = format!("{UNKNOWN_V4}:80");
    let other_at = format!("{UNKNOWN_V4}:8443");
    let _tls = outside_server_at(
        &topology,
        &outside_ns,
        "any-tls",
        &tls_at,
        Some((&crt, &key)),
    );
    let _http = outside_server_at(&topology, &outside_ns, "any-http", &http_at, None);
    let _other = outside_server_at(&topology, &outside_ns, "any-port", &other_at, None);
    let _workload_hosts = NetnsHosts::new(
        &topology.client_ns,
        &format!("{UNKNOWN_V4} unknown.example\n"),
    );
    let _gateway_hosts = NetnsHosts::new(
        &topology.gateway_ns,
        &format!("{BACKEND_V4} dataengine.com\n"),
    );
    route_outside_via_gateway(&topology);
    let (_scratch, config) = http_and_tls_config();
    let daemon = egress_daemon(
        &topology,
        &config,
        &[
            "--egress-from",
            &topology.gateway_if,
            "--outbound-traffic-policy",
            "allow-any",
        ],
    );
    let ca = pki.path("ca.crt");
    for (args, backend) in [
        (
            vec!["--cacert", ca.as_str(), "https://unknown.example/"],
            "any-tls",
        ),
        (vec!["http://unknown.example/"], "any-http"),
        (vec!["http://unknown.example:8443/"], "any-port"),
    ] {
        let (code, body, stderr) = workload_curl(&topology, &args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}\n{}", daemon.log());
        assert!(body.contains(&format!("backend={backend}")), "{body}");
        // Through the gateway: the server saw the gateway's address.
        assert!(body.contains("peer=198.51.100.1:"), "{body}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let log = daemon.log();
    let passthrough = log
        .lines()
        .filter(|l| l.contains("PassthroughCluster") && l.ends_with(" passthrough"))
        .count();
    assert_eq!(passthrough, 3, "{log}");
}

/// An egress Gateway whose destinations are PASSTHROUGH (Envoy's
/// ORIGINAL_DST): passthru.example, a STATIC entry whose endpoint (the
/// decoy) Istio wipes, and none.example, a NONE entry whose port 81 has
/// `targetPort: 8081`; tcp.example and tls.example, NONE entries on TCP
/// port 9000 and, passed through by SNI, TLS port 443.
fn passthrough_config() -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [passthru.example]
  - port: {number: 81, name: http-none, protocol: HTTP}
    hosts: [none.example]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: [tcp.example]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [tls.example]
    tls: {mode: PASSTHROUGH}
",
    );
    // (name, the VirtualService's rules, the ServiceEntry's spec lines)
    let destinations = [
        (
            "passthru",
            "http:\n  - route: [{destination: {host: passthru.example, port: {number: 80}}}]",
            "addresses: [198.51.100.3]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 198.51.100.2}]",
        ),
        (
            "none",
            "http:\n  - route: [{destination: {host: none.example, port: {number: 81}}}]",
            "ports: [{number: 81, name: http, protocol: HTTP, targetPort: 8081}]\n  resolution: NONE",
        ),
        (
            "tcp",
            "tcp:\n  - match: [{port: 9000}]\n    route: [{destination: {host: tcp.example, port: {number: 9000}}}]",
            "ports: [{number: 9000, name: tcp, protocol: TCP}]\n  resolution: NONE",
        ),
        (
            "tls",
            "tls:\n  - match: [{port: 443, sniHosts: [tls.example]}]\n    route: [{destination: {host: tls.example, port: {number: 443}}}]",
            "ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: NONE",
        ),
    ];
    for (name, rules, entry) in destinations {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.example]
  gateways: [egress]
  {rules}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.example]
  location: MESH_EXTERNAL
  {entry}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: istio-system}}
spec:
  host: {name}.example
  trafficPolicy:
    loadBalancer: {{simple: PASSTHROUGH}}
"
        ));
    }
    yaml
}

#[test]
fn passthrough_sends_a_captured_request_to_its_original_destination_and_a_listeners_gets_503() {
    require_root();
    let (topology, outside_ns) = with_outside();
    add_unknown_address(&topology, &outside_ns);
    let _decoy = outside_server_at(
        &topology,
        &outside_ns,
        "decoy",
        &format!("{BACKEND_V4}:80"),
        None,
    );
    let _original = outside_server_at(
        &topology,
        &outside_ns,
        "original-80",
        &format!("{UNKNOWN_V4}:80"),
        None,
    );
    let _target = outside_server_at(
        &topology,
        &outside_ns,
        "original-8081",
        &format!("{UNKNOWN_V4}:8081"),
        None,
    );
    let _tcp = outside_server_at(
        &topology,
        &outside_ns,
        "original-9000",
        &format!("{UNKNOWN_V4}:9000"),
        None,
    );
    let pki = Pki::new();
    let (crt, key) = pki.issue("tls-example", "DNS:tls.example");
    let _tls = outside_server_at(
        &topology,
        &outside_ns,
        "original-443",
        &format!("{UNKNOWN_V4}:443"),
        Some((&crt, &key)),
    );
    let ca = pki.path("ca.crt");
    let _workload_hosts = NetnsHosts::new(
        &topology.client_ns,
        &format!("{UNKNOWN_V4} passthru.example none.example tls.example\n"),
    );
    route_outside_via_gateway(&topology);
    let scratch = gateway_tests::hostile::Scratch::new();
    let config = scratch.path.join("passthrough.yaml");
    fs::write(&config, passthrough_config()).expect("config");
    let config = config.display().to_string();
    let daemon = egress_daemon(&topology, &config, &["--egress-from", &topology.gateway_if]);
    // Captured: the workload's own destination, not the entry's endpoint.
    // TLS passed through by SNI: the server's own certificate, at the
    // workload's destination.
    let (code, body, stderr) =
        workload_curl(&topology, &["--cacert", &ca, "https://tls.example/d"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", daemon.log());
    assert!(body.contains("backend=original-443"), "{body}");
    for (url, backend) in [
        ("http://passthru.example/a", "original-80"),
        // NONE's `targetPort`: the original address at port 8081.
        ("http://none.example:81/b", "original-8081"),
        // A TCP route: the connection, forwarded as bytes.
        ("http://198.51.100.3:9000/c", "original-9000"),
    ] {
        let (code, body, stderr) = workload_curl(&topology, &["-w", "\nstatus=%{http_code}", url]);
        assert_eq!(code, Some(0), "{url}: {stderr}\n{}", daemon.log());
        assert!(
            body.contains(&format!("backend={backend}")) && body.contains("status=200"),
            "{url}: {body}\n{}",
            daemon.log()
        );
        // Through the gateway's proxy: the server saw the gateway's address.
        assert!(body.contains("peer=198.51.100.1:"), "{body}");
    }
    // The gateway's own address: no original destination, a 503 at once,
    // never a connection to itself.
    let own = format!("passthru.example:80:{GATEWAY_V4}");
    let started = std::time::Instant::now();
    let (code, body, stderr) = workload_curl(
        &topology,
        &[
            "-w",
            "\nstatus=%{http_code}",
            "--resolve",
            &own,
            "http://passthru.example/own",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{}", daemon.log());
    assert!(
        body.contains("status=503") && body.contains("no healthy upstream"),
        "{body}\n{}",
        daemon.log()
    );
    assert!(!body.contains("backend="), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // TCP to the gateway's own address: closed, nothing forwarded.
    let (code, body, _) = workload_curl(&topology, &[&format!("http://{GATEWAY_V4}:9000/own-tcp")]);
    assert_ne!(code, Some(0), "{body}");
    assert!(!body.contains("backend="), "{body}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let log = daemon.log();
    let tcp_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"- - -\"") && l.contains(&format!(" {GATEWAY_V4}:9000 ")))
        .collect();
    assert_eq!(tcp_lines.len(), 1, "{log}");
    assert!(tcp_lines[0].contains(" 0 UH "), "{log}");
    assert!(
        log.contains(&format!(
            "cluster outbound|80||passthru.example: PASSTHROUGH has no original destination for a connection to the gateway's own address {GATEWAY_V4}:80"
        )),
        "{log}"
    );
    let own_lines: Vec<&str> = log.lines().filter(|l| l.contains("/own")).collect();
    assert_eq!(own_lines.len(), 1, "one request, no loop: {log}");
    assert!(own_lines[0].contains("\" 503 UH "), "{log}");
}

#[test]
fn a_dns_change_is_followed_by_the_kernel_and_the_proxy() {
    require_root();
    let (topology, outside_ns) = with_outside();
    add_unknown_address(&topology, &outside_ns);
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let old_at = format!("{BACKEND_V4}:443");
    let new_at = format!("{UNKNOWN_V4}:443");
    let _old = outside_server_at(
        &topology,
        &outside_ns,
        "old-address",
        &old_at,
        Some((&crt, &key)),
    );
    let _new = outside_server_at(
        &topology,
        &outside_ns,
        "new-address",
        &new_at,
        Some((&crt, &key)),
    );
    let before = format!("{BACKEND_V4} dataengine.com\n");
    let workload_hosts = NetnsHosts::new(&topology.client_ns, &before);
    let gateway_hosts = NetnsHosts::new(&topology.gateway_ns, &before);
    route_outside_via_gateway(&topology);
    let daemon = egress_daemon(&topology, SEED, &["--egress-from", &topology.gateway_if]);
    let ca = pki.path("ca.crt");
    let (_, body, stderr) = workload_curl(&topology, &["--cacert", &ca, "https://dataengine.com/"]);
    assert!(
        body.contains("backend=old-address"),
        "{body}{stderr}\n{}",
        daemon.log()
    );
    // dataengine.com moves: the workload's resolver and the gateway's say so.
    let after = format!("{UNKNOWN_V4} dataengine.com\n");
    workload_hosts.update(&after);
    gateway_hosts.update(&after);
    // Within a DNS refresh (5 s) the kernel allows the new address and
    // the proxy sends there; until then the new address is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let (_, body, stderr) =
            workload_curl(&topology, &["--cacert", &ca, "https://dataengine.com/"]);
        if body.contains("backend=new-address") {
            last.clear();
            break;
        }
        last = format!("{body}{stderr}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        last.is_empty(),
        "never reached the new address: {last}\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains(&format!(
            "egress: dataengine.com resolves to {UNKNOWN_V4} (was {BACKEND_V4})"
        )),
        "{}",
        daemon.log()
    );
    // The old address is no longer the registry's: refused in the kernel.
    let pin_old = format!("dataengine.com:443:{BACKEND_V4}");
    let (code, _, stderr) = workload_curl(
        &topology,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &pin_old,
            "https://dataengine.com/",
        ],
    );
    assert_eq!(code, Some(7), "{stderr}");
}

#[test]
fn an_egress_daemon_killed_outright_captures_again_when_restarted() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let tls_at = format!("{BACKEND_V4}:443");
    let _outside = outside_server_at(
        &topology,
        &outside_ns,
        "external",
        &tls_at,
        Some((&crt, &key)),
    );
    let names = format!("{BACKEND_V4} dataengine.com\n");
    let _workload_hosts = NetnsHosts::new(&topology.client_ns, &names);
    let _gateway_hosts = NetnsHosts::new(&topology.gateway_ns, &names);
    route_outside_via_gateway(&topology);
    let capture = ["--egress-from", topology.gateway_if.as_str()];
    let mut first = egress_daemon(&topology, SEED, &capture);
    first.kill();
    // Its capture rules are still there; the new daemon takes them over.
    let second = egress_daemon(&topology, SEED, &capture);
    let ca = pki.path("ca.crt");
    let (code, body, stderr) = workload_curl(
        &topology,
        &["--cacert", &ca, "https://dataengine.com/again"],
    );
    assert_eq!(code, Some(0), "{stderr}\n{}", second.log());
    assert!(body.contains("backend=external"), "{body}");
}

#[test]
fn ipv6_workloads_are_captured_and_refused_as_ipv4_ones_are() {
    require_root();
    let (topology, outside_ns) = with_outside();
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let tls_at = format!("[{BACKEND_V6}]:443");
    let _outside = outside_server_at(
        &topology,
        &outside_ns,
        "external-v6",
        &tls_at,
        Some((&crt, &key)),
    );
    let names = format!("{BACKEND_V6} dataengine.com\n");
    let _workload_hosts = NetnsHosts::new(&topology.client_ns, &names);
    let _gateway_hosts = NetnsHosts::new(&topology.gateway_ns, &names);
    let out = topology.client(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:1::/64",
        "via",
        GATEWAY_V6,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = egress_daemon(&topology, SEED, &["--egress-from", &topology.gateway_if]);
    let ca = pki.path("ca.crt");
    let (code, body, stderr) = workload_curl(
        &topology,
        &["-6", "--cacert", &ca, "https://dataengine.com/v6"],
    );
    assert_eq!(code, Some(0), "{stderr}\n{}", daemon.log());
    assert!(body.contains("backend=external-v6"), "{body}");
    // Through the gateway: the server saw the gateway's IPv6 address.
    assert!(
        body.contains(&format!("peer=[{GATEWAY_TO_BACKEND_V6}]:")),
        "{body}"
    );
    // An IPv6 address no ServiceEntry resolves to: the kernel's reset.
    let started = std::time::Instant::now();
    let (code, _, stderr) = workload_curl(&topology, &["-k", "https://[2001:db8:1::9]/"]);
    assert_eq!(code, Some(7), "{stderr}\n{}", daemon.log());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let line = format!(
        "egress refused in the kernel: workload 2001:db8::2 on {} -> [2001:db8:1::9]:443",
        topology.gateway_if
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !daemon.log().contains(&line) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(daemon.log().contains(&line), "{}", daemon.log());
}
