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

#[test]
fn the_egress_instance_passes_a_workloads_tls_through_to_the_external_host() {
    require_root();
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    let outside_ns = topology.backend_ns.clone().expect("outside namespace");
    // "Outside": dataengine.com with a certificate of its own CA.
    let pki = Pki::new();
    let (crt, key) = pki.issue("dataengine", "DNS:dataengine.com");
    let outside_addr: SocketAddr = format!("{BACKEND_V4}:443").parse().expect("addr");
    let _outside = Backend::start(
        &topology,
        &outside_ns,
        Path::new(TEST_BACKEND),
        &[
            "--name",
            "external-dataengine",
            "--listen",
            &outside_addr.to_string(),
            "--tls",
            &crt,
            &key,
        ],
        outside_addr,
    );
    // The gateway's resolver: dataengine.com is the outside server.
    let _hosts = NetnsHosts::new(
        &topology.gateway_ns,
        &format!("{BACKEND_V4} dataengine.com\n"),
    );
    let daemon = Daemon::start(
        &topology,
        &[
            "--config",
            SEED,
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
        ],
    );
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
