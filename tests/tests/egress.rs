//! The egress instance (issue 9, item 1): the same binary run with
//! `--labels istio=egressgateway` serves the seed's egress Gateway, passing
//! a workload's TLS to dataengine.com through, by SNI, to the external
//! dataengine.com that the system resolver names; other names are refused.
use std::{fs, net::SocketAddr, path::Path, path::PathBuf};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, CREDENTIALS, Daemon},
    netns::{BACKEND_V4, GATEWAY_V4, Topology},
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
        fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{lines}")).expect("hosts");
        NetnsHosts(dir)
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
        &format!("{BACKEND_V4} api.external.test bad.external.test\n"),
    );
    let ca = pki.path("ca.crt");
    let wrong_ca = other_ca.path("ca.crt");
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.external.test, bad.external.test]
",
    );
    for (host, ca) in [("api.external.test", &ca), ("bad.external.test", &wrong_ca)] {
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
    tls: {{mode: SIMPLE, sni: api.external.test, caCertificates: {ca}}}
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
    let out = topology.client(&["ip", "route", "add", "198.51.100.0/24", "via", GATEWAY_V4]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
