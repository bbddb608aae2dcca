//! End to end through the proxy: the daemon in its namespace with XDP on
//! the client-facing veth, curl, openssl and small Python clients in the
//! client namespace, backends (test-backend, nginx) in a backend namespace
//! behind the gateway. One scenario per capability of the proxy.
use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, Daemon},
    hostile::Scratch,
    netns::{BACKEND_V4, GATEWAY_V4, Topology},
    pki::Pki,
    require_root,
};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed.yaml");
const DEMO_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/credentials/dataengine-com-cert/tls.crt"
);
/// Debian's Python, which the scripts below use (stdlib only).
const PYTHON: &str = "/usr/bin/python3";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A path for a scratch file of this test process.
fn daemon_scratch_file(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("{name}-{}", std::process::id()))
        .display()
        .to_string()
}

/// A topology with a backend namespace.
fn topology() -> Topology {
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    topology
}

fn backend_ns(topology: &Topology) -> &str {
    topology.backend_ns.as_deref().unwrap_or_default()
}

/// A test-backend named `name` on `addr` in the backend namespace.
fn backend(topology: &Topology, name: &str, addr: &str, extra: &[&str]) -> Backend {
    let mut args = vec!["--name", name, "--listen", addr];
    args.extend_from_slice(extra);
    let addr: SocketAddr = addr.parse().expect("backend address");
    Backend::start(
        topology,
        backend_ns(topology),
        Path::new(TEST_BACKEND),
        &args,
        addr,
    )
}

/// The demo backend examples/seed.yaml's ServiceEntry names (127.0.0.1:18080
/// next to the gateway) and the daemon serving the seed with `extra` flags.
fn start_seed(topology: &Topology, extra: &[&str]) -> (Backend, Daemon) {
    let backend = Backend::start(
        topology,
        &topology.gateway_ns,
        Path::new(TEST_BACKEND),
        &["--name", "demo-backend", "--listen", "127.0.0.1:18080"],
        "127.0.0.1:18080".parse().expect("addr"),
    );
    (backend, daemon_on(topology, SEED, extra))
}

/// Writes `yaml` as the only config file and starts the daemon on it.
fn start(topology: &Topology, scratch: &Scratch, yaml: &str, extra: &[&str]) -> Daemon {
    let config = scratch.path.join("config.yaml");
    fs::write(&config, yaml).expect("write config");
    daemon_on(topology, &config.display().to_string(), extra)
}

/// The daemon on `config`, the topology's interface and IPv4 address, with
/// `extra` flags.
fn daemon_on(topology: &Topology, config: &str, extra: &[&str]) -> Daemon {
    gateway_tests::daemon::start_on(topology, config, extra)
}

/// `curl -sS --max-time 5 <args>` in the client namespace.
fn curl(topology: &Topology, args: &[&str]) -> Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    topology.client(&argv)
}

fn resolve(host_port: &str) -> String {
    format!("{host_port}:{GATEWAY_V4}")
}

/// The status code curl saw (`-w %{http_code}`), body discarded.
fn status(topology: &Topology, args: &[&str]) -> String {
    let mut argv = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    argv.extend_from_slice(args);
    let out = curl(topology, &argv);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Gateway `gw` in istio-system for `*.test` on port 80 (HTTP) plus
/// `servers`, and `rest` appended as more documents.
fn gateway_yaml(servers: &str, rest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ['*.test']
{servers}
---
{rest}"
    )
}

/// A STATIC ServiceEntry `name.backend` on `port` with `endpoints` (YAML flow list).
fn service_entry(name: &str, port: u16, protocol: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.backend]
  ports: [{{number: {port}, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: {endpoints}
"
    )
}

#[test]
fn seed_redirects_http_and_serves_https_from_the_backend() {
    require_root();
    let topology = topology();
    let (_backend, daemon) = start_seed(&topology, &[]);
    let out = curl(
        &topology,
        &[
            "-i",
            "--resolve",
            &resolve("dataengine.com:80"),
            "http://dataengine.com/x?y=1",
        ],
    );
    let head = text(&out);
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert!(
        head.contains("location: https://dataengine.com/x?y=1"),
        "{head}"
    );

    for version in ["--http1.1", "--http2"] {
        let out = curl(
            &topology,
            &[
                version,
                "--cacert",
                DEMO_CA,
                "--resolve",
                &resolve("dataengine.com:443"),
                "https://dataengine.com/x?y=1",
            ],
        );
        let body = text(&out);
        assert!(out.status.success(), "{version}: {body}\n{}", daemon.log());
        assert!(body.contains("backend=demo-backend"), "{body}");
        assert!(body.contains("path=/x?y=1"), "{body}");
        assert!(body.contains("header x-forwarded-proto: https"), "{body}");
        assert!(body.contains("header host: dataengine.com"), "{body}");
    }
    // Session resumption: a ticket from the first handshake resumes the second.
    let session = daemon_scratch_file("seed-session");
    let connect = format!("{GATEWAY_V4}:443");
    for (flag, expect) in [
        ("-sess_out", "New, TLSv1.3"),
        ("-sess_in", "Reused, TLSv1.3"),
    ] {
        let out = topology.client(&[
            "bash",
            "-c",
            &format!(
                "printf 'GET / HTTP/1.1\\r\\nHost: dataengine.com\\r\\nConnection: close\\r\\n\\r\\n' | timeout 5 openssl s_client -connect {connect} -servername dataengine.com -CAfile {DEMO_CA} {flag} {session} -ign_eof"
            ),
        ]);
        assert!(text(&out).contains(expect), "{flag}: {}", text(&out));
    }
    let _ = fs::remove_file(&session);
    // Access log: flushed at least every second.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /x?y=1 HTTP/2\" 200 - via_upstream")
                && l.contains("\"127.0.0.1:18080\"")
                && l.contains(" dataengine.com ")),
        "{log}"
    );
}

#[test]
fn unknown_host_is_404_and_unknown_sni_gets_an_unrecognized_name_alert() {
    require_root();
    let topology = topology();
    let (_backend, _daemon) = start_seed(&topology, &[]);
    // SNI dataengine.com, Host other.com: the server's route table lacks it.
    let code = status(
        &topology,
        &[
            "--cacert",
            DEMO_CA,
            "--resolve",
            &resolve("dataengine.com:443"),
            "-H",
            "Host: other.com",
            "https://dataengine.com/",
        ],
    );
    assert_eq!(code, "404");
    let connect = format!("{GATEWAY_V4}:443");
    let out = topology.client(&[
        "timeout",
        "5",
        "openssl",
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "other.com",
    ]);
    assert!(
        text(&out).contains("alert number 112"),
        "expected unrecognized_name: {}",
        text(&out)
    );
    let out = topology.client(&[
        "timeout",
        "5",
        "openssl",
        "s_client",
        "-connect",
        &connect,
        "-noservername",
    ]);
    assert!(
        text(&out).contains("alert number 40"),
        "no SNI and no `*` server: handshake_failure: {}",
        text(&out)
    );
}

/// `NAME.test` routed (bound to `gw`) to `NAME.backend`, a ServiceEntry
/// port of `protocol` with one endpoint on the backend address at 8080.
fn routes_to(name: &str, protocol: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {name}.backend}}}}]
---
{}",
        service_entry(
            name,
            8080,
            protocol,
            &format!("[{{address: {BACKEND_V4}}}]")
        )
    )
}

#[test]
fn mutual_tls_accepts_the_pinned_client_and_refuses_others() {
    require_root();
    let topology = topology();
    let pki = Pki::new();
    let credentials = pki.credential("api-cert", "DNS:api.test", true);
    let (good_crt, good_key) = pki.issue("good", "URI:spiffe://test/client");
    let (bad_crt, bad_key) = pki.issue("bad", "URI:spiffe://test/other");
    let _backend = backend(&topology, "api", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [api.test]
    tls:
      mode: MUTUAL
      credentialName: api-cert
      subjectAltNames: [spiffe://test/client]",
        &routes_to("api", "HTTP"),
    );
    let credentials = credentials.display().to_string();
    let daemon = start(
        &topology,
        &scratch,
        &yaml,
        &["--credentials-dir", &credentials],
    );
    let ca = pki.path("ca.crt");
    let base = ["--cacert", &ca, "--resolve", &resolve("api.test:443")];
    let with = |crt: &str, key: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--cert", crt, "--key", key, "https://api.test/"]);
        status(&topology, &args)
    };
    assert_eq!(with(&good_crt, &good_key), "200", "{}", daemon.log());
    assert_eq!(
        with(&bad_crt, &bad_key),
        "000",
        "wrong SAN must fail the handshake"
    );
    let mut none = base.to_vec();
    none.push("https://api.test/");
    assert_eq!(status(&topology, &none), "000", "no client certificate");
}

#[test]
fn mutual_tls_refuses_a_client_certificate_the_ca_crl_revokes() {
    require_root();
    let topology = topology();
    let pki = Pki::new();
    let credentials = pki.credential("api-cert", "DNS:api.test", true);
    let (kept_crt, kept_key) = pki.issue("kept", "URI:spiffe://test/kept");
    let (revoked_crt, revoked_key) = pki.issue("revoked", "URI:spiffe://test/revoked");
    let crl = pki.revoke("revoked");
    let _backend = backend(&topology, "api", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let server = |port: u16, crl_line: &str| {
        format!(
            "  - port: {{number: {port}, name: https-{port}, protocol: HTTPS}}
    hosts: [api.test]
    tls:
      mode: MUTUAL
      credentialName: api-cert
{crl_line}"
        )
    };
    // 443 names the file; 8443 takes the credential's own `ca.crl`.
    let servers = server(443, &format!("      caCrl: {crl}\n")) + &server(8443, "");
    fs::copy(&crl, credentials.join("api-cert").join("ca.crl")).expect("copy ca.crl");
    let yaml = gateway_yaml(servers.trim_end(), &routes_to("api", "HTTP"));
    let credentials = credentials.display().to_string();
    let daemon = start(
        &topology,
        &scratch,
        &yaml,
        &["--credentials-dir", &credentials],
    );
    let ca = pki.path("ca.crt");
    for port in ["443", "8443"] {
        let host = format!("api.test:{port}");
        let resolve = resolve(&host);
        let url = format!("https://{host}/");
        let with = |crt: &str, key: &str| {
            status(
                &topology,
                &[
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "--cert",
                    crt,
                    "--key",
                    key,
                    &url,
                ],
            )
        };
        assert_eq!(
            with(&kept_crt, &kept_key),
            "200",
            "{port}: {}",
            daemon.log()
        );
        assert_eq!(
            with(&revoked_crt, &revoked_key),
            "000",
            "{port}: a revoked certificate must fail the handshake"
        );
    }
}

/// Sends a TLS ClientHello for `sni` in `pieces` separate TCP segments
/// (50 ms apart), completes the handshake trusting `ca`, sends an HTTP
/// request and prints the response.
const SPLIT_HELLO: &str = r#"
import socket, ssl, sys, time
host, port, sni, ca, pieces = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
sock = socket.create_connection((host, port), timeout=5)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def pump(first=False):
    data = outgoing.read()
    if first and data:
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            sock.sendall(data[i:i + step]); time.sleep(0.05)
    elif data:
        sock.sendall(data)
first = True
while True:
    try:
        tls.do_handshake(); pump(); break
    except ssl.SSLWantReadError:
        pump(first); first = False
        chunk = sock.recv(65536)
        if not chunk: sys.exit("closed during handshake")
        incoming.write(chunk)
tls.write(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % sni).encode()); pump()
out = b""
while True:
    try:
        data = tls.read(65536)
        if not data: break
        out += data
    except ssl.SSLWantReadError:
        chunk = sock.recv(65536)
        if not chunk: break
        incoming.write(chunk)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        break
print(out.decode(errors="replace"))
"#;

#[test]
fn passthrough_by_sni_even_with_a_split_hello_and_auto_passthrough_by_mesh_sni() {
    require_root();
    let topology = topology();
    let pki = Pki::new();
    let (a_crt, a_key) = pki.issue("a", "DNS:a.pass.test");
    let (b_crt, b_key) = pki.issue("b", "DNS:b.pass.test");
    let _a = backend(
        &topology,
        "tls-a",
        &format!("{BACKEND_V4}:8443"),
        &["--tls", &a_crt, &a_key],
    );
    let _b = backend(
        &topology,
        "tls-b",
        &format!("{BACKEND_V4}:9443"),
        &["--tls", &b_crt, &b_key],
    );
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ['*.pass.test']
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: mesh, protocol: TLS}
    hosts: ['*.mesh.test']
    tls: {mode: AUTO_PASSTHROUGH}",
        &(format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: istio-system}}
spec:
  hosts: ['*.pass.test']
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [a.pass.test]}}]
    route: [{{destination: {{host: a.backend}}}}]
  - match: [{{sniHosts: [b.pass.test]}}]
    route: [{{destination: {{host: b.backend}}}}]
---
{}---
{}",
            service_entry("a", 8443, "TLS", &format!("[{{address: {BACKEND_V4}}}]")),
            service_entry("b", 9443, "TLS", &format!("[{{address: {BACKEND_V4}}}]"))
        ) + &format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mesh, namespace: istio-system}}
spec:
  hosts: [a.mesh.test]
  location: MESH_INTERNAL
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}}}]
"
        )),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    // AUTO_PASSTHROUGH: the SNI names the mesh cluster; Istio's mTLS ALPN is required.
    let mesh = format!("{GATEWAY_V4}:15443");
    let via_sni = |alpn: &str| {
        let out = topology.client(&[
            "bash",
            "-c",
            &format!(
                "printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' | timeout 5 openssl s_client -quiet -ign_eof -connect {mesh} -servername outbound_.8443_._.a.mesh.test -alpn {alpn}"
            ),
        ]);
        text(&out)
    };
    let reached = via_sni("istio,http/1.1");
    assert!(
        reached.contains("backend=tls-a"),
        "{reached}\n{}",
        daemon.log()
    );
    let refused = via_sni("http/1.1");
    assert!(!refused.contains("backend="), "no mesh ALPN: {refused}");
    let ca = pki.path("ca.crt");
    for (sni, name) in [("a.pass.test", "tls-a"), ("b.pass.test", "tls-b")] {
        let out = curl(
            &topology,
            &[
                "--cacert",
                &ca,
                "--resolve",
                &resolve(&format!("{sni}:443")),
                &format!("https://{sni}/"),
            ],
        );
        assert!(
            text(&out).contains(&format!("backend={name}")),
            "{sni}: {}\n{}",
            text(&out),
            daemon.log()
        );
    }
    for pieces in [2, 5] {
        let out = topology.client(&[
            "timeout",
            "20",
            PYTHON,
            "-c",
            SPLIT_HELLO,
            GATEWAY_V4,
            "443",
            "b.pass.test",
            &ca,
            &pieces.to_string(),
        ]);
        assert!(
            text(&out).contains("backend=tls-b"),
            "hello in {pieces} segments: {}",
            text(&out)
        );
    }
}

#[test]
fn weighted_routes_split_within_tolerance_and_rules_match_in_order() {
    require_root();
    let topology = topology();
    let _v1 = backend(&topology, "v1", &format!("{BACKEND_V4}:8081"), &[]);
    let _v2 = backend(&topology, "v2", &format!("{BACKEND_V4}:8082"), &[]);
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: istio-system}}
spec:
  hosts: [shop.test]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /v2only}}, headers: {{x-canary: {{exact: 'yes'}}}}}}]
    route: [{{destination: {{host: shop.backend, subset: v2}}}}]
  - match: [{{uri: {{exact: /moved}}}}]
    redirect: {{uri: /new, redirectCode: 302}}
  - match: [{{uri: {{prefix: /api}}}}]
    rewrite: {{uri: /v1}}
    route: [{{destination: {{host: shop.backend, subset: v1}}}}]
  - match: [{{uri: {{regex: '/re/[a-z]+'}}}}]
    rewrite: {{uriRegexRewrite: {{match: '^/re/(.*)$', rewrite: '/\\1/done'}}}}
    route: [{{destination: {{host: shop.backend, subset: v1}}}}]
  - match: [{{uri: {{exact: /CaSe}}, ignoreUriCase: true}}, {{queryParams: {{pick: {{exact: two}}}}}}]
    route: [{{destination: {{host: shop.backend, subset: v2}}}}]
  - match: [{{uri: {{prefix: /hello}}}}]
    directResponse: {{status: 418, body: {{string: teapot}}}}
    headers: {{response: {{set: {{x-answer: direct}}}}}}
  - route:
    - {{destination: {{host: shop.backend, subset: v1}}, weight: 80}}
    - {{destination: {{host: shop.backend, subset: v2}}, weight: 20}}
    headers: {{request: {{set: {{x-added: '1'}}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop, namespace: istio-system}}
spec:
  host: shop.backend
  subsets:
  - {{name: v1, labels: {{v: '1'}}}}
  - {{name: v2, labels: {{v: '2'}}}}
---
{}",
            service_entry(
                "shop",
                8080,
                "HTTP",
                &format!(
                    "[{{address: {BACKEND_V4}, ports: {{p: 8081}}, labels: {{v: '1'}}}}, {{address: {BACKEND_V4}, ports: {{p: 8082}}, labels: {{v: '2'}}}}]"
                )
            )
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &["--access-log", "off"]);
    let resolve = resolve("shop.test:80");
    const N: usize = 200;
    let url = "http://shop.test/";
    let mut args = vec![
        "-o",
        "/dev/null",
        "-w",
        "%header{x-backend}\\n",
        "--resolve",
        &resolve,
    ];
    args.extend(std::iter::repeat_n(url, N));
    let out = curl(&topology, &args);
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let v1 = seen.lines().filter(|l| *l == "v1").count();
    let v2 = seen.lines().filter(|l| *l == "v2").count();
    assert_eq!(v1 + v2, N, "{seen}\n{}", daemon.log());
    // 80/20 over 200: mean 160, sd 5.7; 3.5 sd either side.
    assert!((140..=180).contains(&v1), "v1={v1} v2={v2}");

    let body = text(&curl(&topology, &["--resolve", &resolve, url]));
    assert!(body.contains("header x-added: 1"), "{body}");
    // Keep-alive to the backend: two client connections, one upstream connection.
    let peer = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("peer="))
            .map(str::to_string)
    };
    let canary_url = "http://shop.test/v2only/pool";
    let pooled: Vec<Option<String>> = (0..2)
        .map(|_| {
            peer(&text(&curl(
                &topology,
                &["--resolve", &resolve, "-H", "x-canary: yes", canary_url],
            )))
        })
        .collect();
    assert!(pooled[0].is_some(), "{pooled:?}");
    assert_eq!(
        pooled[0], pooled[1],
        "the upstream connection was not reused"
    );
    let canary = text(&curl(
        &topology,
        &[
            "--resolve",
            &resolve,
            "-H",
            "x-canary: yes",
            "http://shop.test/v2only/x",
        ],
    ));
    assert!(canary.contains("backend=v2"), "{canary}");
    let api = text(&curl(
        &topology,
        &["--resolve", &resolve, "http://shop.test/api/x?q=1"],
    ));
    assert!(api.contains("path=/v1/x?q=1"), "prefix rewrite: {api}");
    let re = text(&curl(
        &topology,
        &["--resolve", &resolve, "http://shop.test/re/abc?q=1"],
    ));
    assert!(re.contains("path=/abc/done?q=1"), "regex rewrite: {re}");
    for url in ["http://shop.test/case", "http://shop.test/?pick=two"] {
        let body = text(&curl(&topology, &["--resolve", &resolve, url]));
        assert!(body.contains("backend=v2"), "{url}: {body}");
    }
    let normalized = text(&curl(
        &topology,
        &[
            "--path-as-is",
            "--resolve",
            &resolve,
            "http://shop.test/a/../api/./y",
        ],
    ));
    assert!(
        normalized.contains("path=/v1/y"),
        "normalized before routing: {normalized}"
    );
    let moved = text(&curl(
        &topology,
        &["-i", "--resolve", &resolve, "http://shop.test/moved?q=1"],
    ));
    assert!(moved.starts_with("HTTP/1.1 302"), "{moved}");
    assert!(moved.contains("location: http://shop.test/new"), "{moved}");
    let teapot = text(&curl(
        &topology,
        &["-i", "--resolve", &resolve, "http://shop.test/hello"],
    ));
    assert!(teapot.starts_with("HTTP/1.1 418"), "{teapot}");
    assert!(
        teapot.contains("x-answer: direct") && teapot.ends_with("teapot"),
        "{teapot}"
    );
    let nohost = status(
        &topology,
        &["--resolve", &resolve, "-H", "Host: nope.test", url],
    );
    assert_eq!(nohost, "404");
}

#[test]
fn dns_endpoint_is_resolved_and_failures_get_503_or_504() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "dns", &format!("{BACKEND_V4}:8080"), &[]);
    // `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts.
    let hosts_dir = Path::new("/etc/netns").join(&topology.gateway_ns);
    fs::create_dir_all(&hosts_dir).expect("hosts dir");
    let _hosts = RemoveOnDrop(hosts_dir.clone());
    fs::write(
        hosts_dir.join("hosts"),
        format!("127.0.0.1 localhost\n{BACKEND_V4} svc.dns.test\n"),
    )
    .expect("write hosts");
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: dns, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /down}}}}]
    route: [{{destination: {{host: down.backend}}}}]
  - match: [{{uri: {{prefix: /delay}}}}]
    route: [{{destination: {{host: svc.dns.test}}}}]
    timeout: 300ms
  - route: [{{destination: {{host: svc.dns.test}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns, namespace: istio-system}}
spec:
  hosts: [svc.dns.test]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: DNS
---
{}",
            service_entry(
                "down",
                8099,
                "HTTP",
                &format!("[{{address: {BACKEND_V4}}}]")
            )
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let resolve = resolve("app.test:80");
    let body = text(&curl(
        &topology,
        &["--resolve", &resolve, "http://app.test/dns"],
    ));
    assert!(body.contains("backend=dns"), "{body}\n{}", daemon.log());
    let down = text(&curl(
        &topology,
        &["-i", "--resolve", &resolve, "http://app.test/down"],
    ));
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    let late = status(
        &topology,
        &["--resolve", &resolve, "http://app.test/delay/2000"],
    );
    assert_eq!(late, "504");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let log = daemon.log();
    // Istio's default retry policy tries the refused endpoint three times.
    assert!(log.contains("\" 503 UF,URX "), "{log}");
    assert!(log.contains("\" 504 UT "), "{log}");
}

/// Removes a directory on drop.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Opens a websocket through `host:port` for `authority`, sends one
/// masked text frame and prints the echoed frame's payload.
const WEBSOCKET: &str = r#"
import base64, os, socket, sys
host, port, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (authority, key)).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk: sys.exit("closed: %r" % head)
    head += chunk
status = head.split(b"\r\n")[0]
print(status.decode())
payload, mask = b"hello websocket", os.urandom(4)
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
s.sendall(frame)
rest = head.split(b"\r\n\r\n", 1)[1]
while len(rest) < len(frame):
    chunk = s.recv(4096)
    if not chunk: break
    rest += chunk
echoed = rest[6:6 + len(payload)]
print("echo:", bytes(b ^ mask[i % 4] for i, b in enumerate(echoed)).decode(errors="replace"))
"#;

#[test]
fn websocket_h2c_and_tcp_pass_through_the_gateway() {
    require_root();
    let topology = topology();
    let _http = backend(&topology, "web", &format!("{BACKEND_V4}:8080"), &[]);
    let _echo = backend(
        &topology,
        "echo",
        &format!("{BACKEND_V4}:7000"),
        &["--echo"],
    );
    let _greeter = backend(
        &topology,
        "greeter",
        &format!("{BACKEND_V4}:7001"),
        &["--banner"],
    );
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 9001, name: tcp-greeter, protocol: TCP}
    hosts: ['*']",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.backend}}}}]
  tcp:
  - match: [{{port: 9000}}]
    route: [{{destination: {{host: echo.backend}}}}]
  - match: [{{port: 9001}}]
    route: [{{destination: {{host: greeter.backend}}}}]
---
{}---
{}---
{}",
            service_entry("web", 8080, "HTTP", &format!("[{{address: {BACKEND_V4}}}]")),
            service_entry("echo", 7000, "TCP", &format!("[{{address: {BACKEND_V4}}}]")),
            service_entry(
                "greeter",
                7001,
                "TCP",
                &format!("[{{address: {BACKEND_V4}}}]")
            )
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let out = topology.client(&[
        "timeout", "20", PYTHON, "-c", WEBSOCKET, GATEWAY_V4, "80", "web.test",
    ]);
    let seen = text(&out);
    assert!(seen.contains("101"), "{seen}\n{}", daemon.log());
    assert!(seen.contains("echo: hello websocket"), "{seen}");

    let h2c = text(&curl(
        &topology,
        &[
            "--http2-prior-knowledge",
            "-i",
            "--resolve",
            &resolve("web.test:80"),
            "http://web.test/h2c",
        ],
    ));
    assert!(h2c.starts_with("HTTP/2 200"), "{h2c}");
    assert!(h2c.contains("backend=web"), "{h2c}");

    let tcp = topology.client(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{GATEWAY_V4}/9000; printf ping >&3; timeout 2 head -c 9 <&3"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&tcp.stdout),
        "echo:ping",
        "{}",
        text(&tcp)
    );
    // A server that speaks first: its greeting reaches a client that sends
    // nothing, at once (TCP listeners are accepted without waiting for
    // data, unlike HTTP and TLS ones, which the kernel holds until their
    // first bytes or about a second).
    let greeted = topology.client(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{GATEWAY_V4}/9001; timeout 0.5 head -c 14 <&3"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&greeted.stdout),
        "greeter:hello\n",
        "{}\n{}",
        text(&greeted),
        daemon.log()
    );
}

#[test]
fn trusted_proxies_decide_whether_x_forwarded_proto_skips_the_redirect() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "app", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = redirect_yaml();
    let resolve = resolve("app.test:80");
    let args = [
        "--resolve",
        resolve.as_str(),
        "-H",
        "X-Forwarded-Proto: https",
        "http://app.test/",
    ];
    {
        let _daemon = start(&topology, &scratch, &yaml, &[]);
        assert_eq!(
            status(&topology, &args),
            "301",
            "0 trusted hops: XFP ignored"
        );
    }
    let _daemon = start(&topology, &scratch, &yaml, &["--trusted-proxies", "1"]);
    assert_eq!(status(&topology, &args), "200", "a trusted hop said https");
    assert_eq!(
        status(&topology, &[args[0], args[1], args[4]]),
        "301",
        "no XFP: still redirected"
    );
}

#[test]
fn a_port_with_tls_and_plaintext_servers_tells_them_apart_per_connection() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "mixed", &format!("{BACKEND_V4}:8080"), &[]);
    let pki = Pki::new();
    let credentials = pki.credential("mixed-cert", "DNS:mixed.test", false);
    let scratch = Scratch::new();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [mixed.test]
    tls: {{mode: SIMPLE, credentialName: mixed-cert}}
  - port: {{number: 8443, name: http, protocol: HTTP}}
    hosts: [mixed.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mixed, namespace: istio-system}}
spec:
  hosts: [mixed.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: mixed.backend}}}}]
---
{}",
        service_entry(
            "mixed",
            8080,
            "HTTP",
            &format!("[{{address: {BACKEND_V4}}}]")
        )
    );
    let credentials = credentials.display().to_string();
    let daemon = start(
        &topology,
        &scratch,
        &yaml,
        &["--credentials-dir", &credentials],
    );
    let resolve = resolve("mixed.test:8443");
    let ca = pki.path("ca.crt");
    let tls = text(&curl(
        &topology,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "https://mixed.test:8443/",
        ],
    ));
    assert!(
        tls.contains("header x-forwarded-proto: https"),
        "{tls}\n{}",
        daemon.log()
    );
    let plain = text(&curl(
        &topology,
        &["--resolve", &resolve, "http://mixed.test:8443/"],
    ));
    assert!(
        plain.contains("header x-forwarded-proto: http\n"),
        "{plain}"
    );
}

#[test]
fn nginx_serves_as_a_backend() {
    require_root();
    let topology = topology();
    let scratch = Scratch::new();
    let conf = scratch.path.join("nginx.conf");
    let dir = scratch.path.display();
    fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{
    listen {BACKEND_V4}:8088;
    location / {{ return 200 \"nginx saw $http_x_forwarded_proto $host\\n\"; }}
  }}
}}
"
        ),
    )
    .expect("nginx.conf");
    let conf = conf.display().to_string();
    let _nginx = Backend::start(
        &topology,
        backend_ns(&topology),
        Path::new("nginx"),
        // One process: a worker would outlive the master the guard kills.
        &["-c", &conf, "-g", "daemon off; master_process off;"],
        format!("{BACKEND_V4}:8088").parse().expect("addr"),
    );
    let yaml = gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ngx, namespace: istio-system}}
spec:
  hosts: [ngx.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: ngx.backend}}}}]
    rewrite: {{authority: rewritten.test}}
---
{}",
            service_entry("ngx", 8088, "HTTP", &format!("[{{address: {BACKEND_V4}}}]"))
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let body = text(&curl(
        &topology,
        &["--resolve", &resolve("ngx.test:80"), "http://ngx.test/"],
    ));
    assert_eq!(body, "nginx saw http rewritten.test\n", "{}", daemon.log());
}

#[test]
fn silent_tls_clients_are_closed_while_requests_keep_flowing() {
    require_root();
    let topology = topology();
    let (_backend, daemon) = start_seed(&topology, &["--request-head-timeout", "1s"]);
    // 100 connections that never send a ClientHello, or only half of one.
    let script = format!(
        r#"
import socket, time
socks = []
for i in range(100):
    s = socket.create_connection(("{GATEWAY_V4}", 443), timeout=5)
    if i % 2: s.sendall(bytes([0x16, 3, 1, 0, 200, 1, 0]))
    socks.append(s)
time.sleep(2.5)
closed = 0
for s in socks:
    s.settimeout(0.2)
    try:
        closed += s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        closed += 0
print("closed", closed)
"#
    );
    let silent = std::thread::spawn({
        let client_ns = topology.client_ns.clone();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &client_ns, "timeout", "20", PYTHON, "-c", &script,
                ])
                .output()
                .expect("python")
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..5 {
        let code = status(
            &topology,
            &[
                "--cacert",
                DEMO_CA,
                "--resolve",
                &resolve("dataengine.com:443"),
                "https://dataengine.com/",
            ],
        );
        assert_eq!(code, "200", "{}", daemon.log());
    }
    let out = silent.join().expect("join");
    assert!(text(&out).contains("closed 100"), "{}", text(&out));
}

#[test]
fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "slow", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = slow_yaml();
    let mut daemon = start(&topology, &scratch, &yaml, &[]);
    let resolve = resolve("slow.test:80");
    let in_flight = std::thread::spawn({
        let client_ns = topology.client_ns.clone();
        move || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &client_ns,
                    "curl",
                    "-sS",
                    "--max-time",
                    "10",
                ])
                .args([
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--resolve",
                    &resolve,
                ])
                .arg("http://slow.test/delay/1500")
                .output()
                .expect("curl")
        }
    });
    // An idle keep-alive connection: draining closes it at once instead of
    // holding the shutdown for the 5 s grace period.
    let idle = format!(
        r#"
import socket, time
s = socket.create_connection(("{GATEWAY_V4}", 80), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
s.recv(65536)
start = time.time()
while s.recv(65536): pass
print("closed after %.1f" % (time.time() - start))
"#
    );
    let idle = std::thread::spawn({
        let client_ns = topology.client_ns.clone();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &client_ns, "timeout", "20", PYTHON, "-c", &idle,
                ])
                .output()
                .expect("python")
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopping = std::time::Instant::now();
    let exit = daemon.stop();
    let took = stopping.elapsed();
    let out = in_flight.join().expect("join");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        text(&out)
    );
    assert!(exit.is_some_and(|s| s.success()), "daemon exit: {exit:?}");
    let idle = idle.join().expect("join");
    assert!(text(&idle).contains("closed after"), "{}", text(&idle));
    assert!(
        took < std::time::Duration::from_secs(3),
        "shutdown took {took:?} with an idle connection open"
    );
}

#[test]
fn a_request_head_that_stalls_gets_408_and_a_silent_client_nothing() {
    require_root();
    let topology = topology();
    let scratch = Scratch::new();
    let yaml = gateway_yaml("", "");
    let daemon = start(
        &topology,
        &scratch,
        yaml.trim_end_matches("---\n"),
        &["--request-head-timeout", "1s"],
    );
    let script = format!(
        r#"
import socket
def answer(first):
    s = socket.create_connection(("{GATEWAY_V4}", 80), timeout=5)
    if first: s.sendall(first)
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk: return out
        out += chunk
print(repr(answer(b"GET / HTTP/1.1\r\nHost: a.test\r\n")))
print(repr(answer(b"")))
"#
    );
    let out = topology.client(&["timeout", "20", PYTHON, "-c", &script]);
    let seen = text(&out);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "{seen}\n{}", daemon.log());
    assert!(
        lines[0].starts_with("b'HTTP/1.1 408 Request Timeout"),
        "{seen}"
    );
    assert_eq!(lines[1], "b''", "a silent client gets no answer");
}

#[test]
fn http2_backends_get_http2_and_the_access_log_can_be_json() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "h2", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = gateway_yaml("", &routes_to("h2", "HTTP2"));
    let daemon = start(&topology, &scratch, &yaml, &["--access-log-format", "json"]);
    let body = text(&curl(
        &topology,
        &[
            "--http1.1",
            "--resolve",
            &resolve("h2.test:80"),
            "http://h2.test/p?q=1",
        ],
    ));
    assert!(
        body.contains("version=HTTP/2.0"),
        "{body}\n{}",
        daemon.log()
    );
    assert!(body.contains("authority=h2.test"), "{body}");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"path\":\"/p?q=1\""))
        .unwrap_or_else(|| panic!("no JSON access-log line:\n{log}"));
    for field in [
        "\"response_code\":200",
        "\"protocol\":\"HTTP/1.1\"",
        "\"upstream_cluster\":\"outbound|8080||h2.backend\"",
        "\"authority\":\"h2.test\"",
        "\"response_flags\":\"-\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

/// Scrapes `/stats/prometheus` from inside the gateway namespace and
/// parses it with a Prometheus text-format parser.
fn prometheus(topology: &Topology) -> prometheus_parse::Scrape {
    std::thread::sleep(std::time::Duration::from_millis(150));
    let out = topology.gateway(&["curl", "-sf", &format!("http://{ADMIN}/stats/prometheus")]);
    assert!(out.status.success(), "{}", text(&out));
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = body.lines().map(|line| Ok(line.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// The value of the sample of `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |b| b.count)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
}

#[test]
fn prometheus_scrapes_carry_istio_request_metrics_and_kernel_counters() {
    scrapes_carry_request_metrics(&[]);
}

#[test]
fn request_metrics_are_kept_with_the_access_log_off() {
    scrapes_carry_request_metrics(&["--access-log", "off"]);
}

/// Three redirects and one proxied request, then the metrics they must
/// have left, whatever `extra` flags the daemon has.
fn scrapes_carry_request_metrics(extra: &[&str]) {
    require_root();
    let topology = topology();
    let (_backend, daemon) = start_seed(&topology, extra);
    let first = prometheus(&topology);
    let packets = |scrape: &prometheus_parse::Scrape| {
        sample(
            scrape,
            "gateway_xdp_packets_total",
            &[("reason", "listener")],
        )
        .unwrap_or(0.0)
    };
    for _ in 0..3 {
        let out = curl(
            &topology,
            &[
                "--resolve",
                &resolve("dataengine.com:80"),
                "http://dataengine.com/",
            ],
        );
        assert!(out.status.success());
    }
    let out = curl(
        &topology,
        &[
            "--cacert",
            DEMO_CA,
            "--resolve",
            &resolve("dataengine.com:443"),
            "https://dataengine.com/x",
        ],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let second = prometheus(&topology);
    assert!(packets(&second) > packets(&first), "kernel counters move");
    let redirects = sample(
        &second,
        "istio_requests_total",
        &[("response_code", "301"), ("reporter", "source")],
    );
    assert_eq!(redirects, Some(3.0));
    let proxied = sample(
        &second,
        "istio_requests_total",
        &[("response_code", "200"), ("request_protocol", "http")],
    );
    assert_eq!(proxied, Some(1.0));
    let services: Vec<&str> = second
        .samples
        .iter()
        .filter(|s| s.metric == "istio_requests_total")
        .filter_map(|s| s.labels.get("destination_service"))
        .collect();
    assert!(services.iter().any(|s| *s != "unknown"), "{services:?}");
    // Histograms: the parser folds buckets, sum and count into one sample.
    for name in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        assert_eq!(
            sample(&second, name, &[("response_code", "200")]),
            Some(1.0),
            "{name}"
        );
    }
    assert!(
        sample(
            &second,
            "gateway_connections_total",
            &[("endpoint", "proxy"), ("event", "accepted")]
        )
        .unwrap_or(0.0)
            >= 4.0
    );
}

/// Raw exchanges the hardening test makes from the client namespace: each
/// prints one line, `repr()` of what came back or a verdict, so the test
/// reads them in order.
const HARDENING: &str = r#"
import socket, struct, sys, time
host = sys.argv[1]

def exchange(data):
    s = socket.create_connection((host, 80), timeout=5)
    try:
        s.sendall(data)
    except OSError:
        pass  # the gateway may answer and close before it has read it all
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    s.close()
    return out

def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
# :method GET, :scheme http, :path /, then :authority web.test (a literal
# without indexing, name index 1): a valid header block for any stream.
BLOCK = b"\x82\x86\x84\x01\x08web.test"

def goaway_after(frames, limit):
    """Sends `frames` after the preface (stopping once the server closes),
    then reads frames until the server closes: the GOAWAY error code, or
    None, and the bytes sent."""
    s = socket.create_connection((host, 80), timeout=5)
    sent = 0
    try:
        s.sendall(PREFACE)
        for f in frames:
            s.sendall(f)
            sent += len(f)
            if sent >= limit:
                break
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    code, at = None, 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        if data[at + 3] == 7 and at + 17 <= len(data):
            code = int.from_bytes(data[at + 13:at + 17], "big")
        at += 9 + length
    return code, sent

# A request head past the 60 KB limit.
print(repr(exchange(b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")[:40]))
# Malformed heads: a space in a header name; two different Content-Lengths.
print(repr(exchange(b"GET / HTTP/1.1\r\nHost: web.test\r\nBad Name: x\r\n\r\n")[:40]))
print(repr(exchange(b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")[:40]))

# HTTP/2 rapid reset: streams opened and cancelled at once, 2,000 of them.
def rapid():
    for n in range(2000):
        stream = 2 * n + 1
        yield frame(1, 0x5, stream, BLOCK) + frame(3, 0, stream, struct.pack(">I", 8))
code, sent = goaway_after(rapid(), 1 << 30)
print("rapid-reset", code, sent)

# HTTP/2 CONTINUATION flood: one header block that never ends, 16 KB a frame.
def continuation():
    yield frame(1, 0x1, 1, BLOCK)
    for _ in range(1024):
        yield frame(9, 0, 1, b"\x00" * 16384)
code, sent = goaway_after(continuation(), 16 << 20)
print("continuation", code, sent)
"#;

#[test]
fn oversized_and_malformed_requests_and_http2_floods_are_refused_before_any_backend() {
    require_root();
    let topology = topology();
    let _web = backend(&topology, "web", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.backend}}}}]
---
{}",
            service_entry("web", 8080, "HTTP", &format!("[{{address: {BACKEND_V4}}}]"))
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let out = topology.client(&["timeout", "60", PYTHON, "-c", HARDENING, GATEWAY_V4]);
    let seen = text(&out);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 5, "{seen}\n{}", daemon.log());
    assert!(
        lines[0].starts_with("b'HTTP/1.1 431 Request Header Fields Too L"),
        "{seen}"
    );
    // 400 from the gateway itself: a backend's answer would be a 200.
    assert!(lines[1].starts_with("b'HTTP/1.1 400 Bad Request"), "{seen}");
    assert!(lines[2].starts_with("b'HTTP/1.1 400 Bad Request"), "{seen}");
    // Both floods end in a GOAWAY with ENHANCE_YOUR_CALM (0xb) from the
    // HTTP/2 server's limits (pending reset streams, the header list size),
    // the CONTINUATION flood long before the client has sent its 16 MB.
    let verdict = |line: &str| -> (Option<u32>, u64) {
        let mut words = line.split_whitespace().skip(1);
        let code = words.next().and_then(|w| w.parse().ok());
        let sent = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(u64::MAX);
        (code, sent)
    };
    let (code, _) = verdict(lines[3]);
    assert_eq!(code, Some(0xb), "rapid reset: {seen}");
    let (code, sent) = verdict(lines[4]);
    assert_eq!(code, Some(0xb), "CONTINUATION flood: {seen}");
    assert!(sent < 8 << 20, "CONTINUATION flood: {seen}");
    // Nothing of it reached the backend, and service goes on.
    let ok = text(&curl(
        &topology,
        &[
            "-s",
            "-i",
            "http://web.test/after",
            "--resolve",
            &format!("web.test:80:{GATEWAY_V4}"),
        ],
    ));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}\n{}", daemon.log());
    assert!(ok.contains("backend=web"), "{ok}");
}

/// The gateway routing `a.test` on port 80 to test-backend `web`, and TCP
/// port 9000 to an echo backend, with `extra` flags.
fn start_deadlines(
    topology: &Topology,
    scratch: &Scratch,
    extra: &[&str],
) -> (Vec<Backend>, Daemon) {
    let backends = vec![
        backend(topology, "web", &format!("{BACKEND_V4}:8080"), &[]),
        backend(topology, "echo", &format!("{BACKEND_V4}:7000"), &["--echo"]),
    ];
    let yaml = gateway_yaml(
        "  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ['*']",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: istio-system}}
spec:
  hosts: ['a.test']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.backend}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{{port: 9000}}]
    route: [{{destination: {{host: echo.backend}}}}]
---
{}---
{}",
            service_entry("web", 8080, "HTTP", &format!("[{{address: {BACKEND_V4}}}]")),
            service_entry("echo", 7000, "TCP", &format!("[{{address: {BACKEND_V4}}}]")),
        ),
    );
    let daemon = start(topology, scratch, &yaml, extra);
    (backends, daemon)
}

/// Python in the client namespace; returns its stdout lines.
fn python_lines(topology: &Topology, script: &str) -> Vec<String> {
    let out = topology.client(&["timeout", "30", PYTHON, "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out).lines().map(str::to_string).collect()
}

#[test]
fn request_head_connection_idle_and_stream_idle_deadlines_each_mean_one_thing() {
    require_root();
    let topology = topology();
    let scratch = Scratch::new();
    let (_backends, daemon) = start_deadlines(
        &topology,
        &scratch,
        &[
            "--request-head-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--stream-idle-timeout",
            "2s",
        ],
    );
    // A download that streams for 4 s (a chunk every 0.5 s) outlives the
    // 2 s idle timeout: bytes are moving.
    let out = curl(
        &topology,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--resolve",
            &resolve("a.test:80"),
            "http://a.test/drip/8/500",
        ],
    );
    assert_eq!(text(&out), "200 8192", "{}", daemon.log());
    // A response whose bytes stop after its head ends at the stream idle
    // timeout, about 2 s in.
    let started = std::time::Instant::now();
    let out = curl(
        &topology,
        &[
            "--resolve",
            &resolve("a.test:80"),
            "http://a.test/drip/1/8000",
        ],
    );
    let took = started.elapsed();
    assert!(!out.status.success(), "the stalled response was cut");
    assert!(
        (1_500..3_500).contains(&took.as_millis()),
        "stalled response cut after {took:?}"
    );
    // A kept-alive connection quiet after its response: closed at the idle
    // timeout (2 s), not the request-head deadline (1 s), and without a 408.
    // A next head begun and not finished: 408 a head timeout after its start.
    let script = format!(
        r#"
import socket, time
def exchange(then):
    s = socket.create_connection(("{GATEWAY_V4}", 80), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    got = b""
    while b"backend=web" not in got:
        got += s.recv(65536)
    if then: s.sendall(then)
    answered = time.monotonic()
    after = b""
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        after += chunk
    print("%.2f %r" % (time.monotonic() - answered, after[:30]))
exchange(b"")
exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
"#
    );
    let lines = python_lines(&topology, &script);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (quiet, after) = lines[0].split_once(' ').expect("two fields");
    let quiet: f64 = quiet.parse().expect("seconds");
    assert!((1.8..3.2).contains(&quiet), "idle close after {quiet} s");
    assert_eq!(after, "b''", "nothing sent to a quiet connection");
    let (partial, after) = lines[1].split_once(' ').expect("two fields");
    let partial: f64 = partial.parse().expect("seconds");
    assert!((0.8..1.8).contains(&partial), "408 after {partial} s");
    assert!(after.starts_with("b'HTTP/1.1 408"), "{after}");
    let counters = topology.gateway(&["curl", "-sf", &format!("http://{ADMIN}/stats")]);
    let counters = text(&counters);
    for (name, least) in [
        ("proxy.connections.closed_idle_timeout", 1),
        ("proxy.connections.closed_stream_idle_timeout", 1),
    ] {
        let value: u64 = counters
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {counters}"));
        assert!(value >= least, "{name} {value}");
    }
}

#[test]
fn tcp_connections_moving_no_bytes_close_at_the_tcp_idle_timeout() {
    require_root();
    let topology = topology();
    let scratch = Scratch::new();
    let (_backends, daemon) = start_deadlines(&topology, &scratch, &["--tcp-idle-timeout", "2s"]);
    let script = format!(
        r#"
import socket, time
talk = socket.create_connection(("{GATEWAY_V4}", 9000), timeout=10)
quiet = socket.create_connection(("{GATEWAY_V4}", 9000), timeout=10)
opened = time.monotonic()
for i in range(8):
    talk.sendall(b"x")
    assert talk.recv(100) == b"echo:x", "echoed"
    time.sleep(0.5)
print("talking %.2f" % (time.monotonic() - opened))
quiet.settimeout(10)
print("quiet %.2f %r" % (time.monotonic() - opened, quiet.recv(100)))
"#
    );
    let lines = python_lines(&topology, &script);
    assert_eq!(lines.len(), 2, "{lines:?}\n{}", daemon.log());
    // The talking connection lived 4 s, twice the timeout; the quiet one
    // had been closed (EOF) by then, 2 s after it opened.
    assert!(lines[0].starts_with("talking 4."), "{lines:?}");
    assert!(lines[1].ends_with("b''"), "{lines:?}");
    let script = format!(
        r#"
import socket, time
quiet = socket.create_connection(("{GATEWAY_V4}", 9000), timeout=10)
opened = time.monotonic()
quiet.recv(100)
print("%.2f" % (time.monotonic() - opened))
"#
    );
    let closed: f64 = python_lines(&topology, &script)[0]
        .parse()
        .expect("seconds");
    assert!(
        (1.8..3.0).contains(&closed),
        "quiet TCP closed after {closed} s"
    );
}

/// A backend that breaks HTTP/1.1 on purpose, by path: 10,000 response
/// headers, both `Content-Length` and chunked, a body cut short.
const BAD_BACKEND: &str = r#"
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
answers = {
    b"/many-headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(10000)) + b"content-length: 0\r\n\r\n",
    b"/both-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"/short-body": b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
}
while True:
    conn, _ = srv.accept()
    conn.settimeout(5)
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        parts = head.split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        conn.sendall(answers.get(path, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"))
    except OSError:
        pass
    conn.close()
"#;

#[test]
fn backend_faults_are_logged_as_upstream_ones_and_clients_that_give_up_as_downstream() {
    require_root();
    let topology = topology();
    let _bad = Backend::start(
        &topology,
        backend_ns(&topology),
        Path::new(PYTHON),
        &["-c", BAD_BACKEND, BACKEND_V4, "8090"],
        format!("{BACKEND_V4}:8090").parse().expect("addr"),
    );
    let _slow = backend(&topology, "slow", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let route = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {host}.backend}}}}]
---
"
        )
    };
    let yaml = gateway_yaml(
        "",
        &format!(
            "{}{}{}---\n{}",
            route("bad", "bad"),
            route("slow", "slow"),
            service_entry("bad", 8090, "HTTP", &format!("[{{address: {BACKEND_V4}}}]")),
            service_entry(
                "slow",
                8080,
                "HTTP",
                &format!("[{{address: {BACKEND_V4}}}]")
            ),
        ),
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let get = |path: &str| {
        status(
            &topology,
            &[
                "--resolve",
                &resolve("bad.test:80"),
                &format!("http://bad.test{path}"),
            ],
        )
    };
    // A head the backend broke: 502, as Envoy answers it.
    assert_eq!(get("/many-headers"), "502", "{}", daemon.log());
    assert_eq!(get("/both-lengths"), "502", "{}", daemon.log());
    get("/short-body");
    // 20 clients that give up 0.2 s into a 2 s wait for the backend.
    let script = format!(
        r#"
import socket, time
for _ in range(20):
    s = socket.create_connection(("{GATEWAY_V4}", 80), timeout=5)
    s.sendall(b"GET /delay/2000 HTTP/1.1\r\nHost: slow.test\r\n\r\n")
    time.sleep(0.2)
    s.close()
print("gave up")
"#
    );
    assert_eq!(
        python_lines(&topology, &script),
        vec!["gave up".to_string()]
    );
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let log = daemon.log();
    let line = |path: &str| {
        log.lines()
            .find(|l| l.contains(&format!("\"GET {path} HTTP/1.1\"")))
            .unwrap_or_else(|| panic!("no access-log line for {path}:\n{log}"))
            .to_string()
    };
    assert!(
        line("/many-headers").contains("\" 502 UPE "),
        "{}",
        line("/many-headers")
    );
    assert!(
        line("/both-lengths").contains("\" 502 UPE "),
        "{}",
        line("/both-lengths")
    );
    assert!(
        line("/short-body").contains(" 200 UC "),
        "{}",
        line("/short-body")
    );
    let gave_up = log
        .lines()
        .filter(|l| l.contains("\"GET /delay/2000 HTTP/1.1\" 0 DC downstream_remote_disconnect"))
        .count();
    assert_eq!(gave_up, 20, "{log}");
    // And they are counted: Istio's request counter with response code 0.
    let scrape = prometheus(&topology);
    let counted = sample(
        &scrape,
        "istio_requests_total",
        &[("response_code", "0"), ("response_flags", "DC")],
    );
    assert_eq!(counted, Some(20.0));
}

/// Sends one ClientHello for SNI `argv[3]` padded to about `argv[4]` bytes
/// (a padding extension; TLS 1.3 with an X25519 key share), split into
/// records of at most 16 KiB, and prints the first 5 bytes answered (a
/// record header: 0x16 handshake, 0x15 alert) and what followed them.
const LARGE_HELLO: &str = r#"
import os, socket, struct, sys
host, port, sni, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
def ext(kind, body): return struct.pack("!HH", kind, len(body)) + body
name = struct.pack("!BH", 0, len(sni)) + sni
exts = ext(0, struct.pack("!H", len(name)) + name)
exts += ext(43, b"\x02\x03\x04")
exts += ext(10, b"\x00\x02\x00\x1d")
exts += ext(13, b"\x00\x04\x08\x04\x04\x03")
exts += ext(51, struct.pack("!H", 36) + b"\x00\x1d\x00\x20" + os.urandom(32))
body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
pad = min(max(0, size - len(body) - len(exts) - 2 - 4 - 4), 65535 - len(exts) - 4)
exts += ext(21, b"\x00" * pad)
body += struct.pack("!H", len(exts)) + exts
message = b"\x01" + struct.pack("!I", len(body))[1:] + body
wire = b"".join(b"\x16\x03\x01" + struct.pack("!H", len(message[i:i + 16384])) + message[i:i + 16384] for i in range(0, len(message), 16384))
s = socket.create_connection((host, port), timeout=5)
s.sendall(wire)
answer = b""
while len(answer) < 5:
    chunk = s.recv(65536)
    if not chunk: break
    answer += chunk
print(len(wire), answer[:5].hex(), answer[5:40])
"#;

#[test]
fn client_hellos_up_to_64_kib_are_served_on_terminating_and_passthrough_listeners() {
    require_root();
    let topology = topology();
    let _echo = backend(
        &topology,
        "echo",
        &format!("{BACKEND_V4}:7000"),
        &["--echo"],
    );
    let pki = Pki::new();
    let credentials = pki.credential("big-cert", "DNS:big.test", false);
    let scratch = Scratch::new();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [big.test]
    tls: {{mode: SIMPLE, credentialName: big-cert}}
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [big.pass.test]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: istio-system}}
spec:
  hosts: [big.pass.test]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [big.pass.test]}}]
    route: [{{destination: {{host: echo.backend}}}}]
---
{}",
        service_entry("echo", 7000, "TLS", &format!("[{{address: {BACKEND_V4}}}]"))
    );
    let credentials = credentials.display().to_string();
    let daemon = start(
        &topology,
        &scratch,
        &yaml,
        &["--credentials-dir", &credentials],
    );
    let hello = |port: &str, sni: &str, size: &str| {
        let out = topology.client(&[
            "timeout",
            "20",
            PYTHON,
            "-c",
            LARGE_HELLO,
            GATEWAY_V4,
            port,
            sni,
            size,
        ]);
        text(&out).trim().to_string()
    };
    // A 40 KB ClientHello (three records): the terminating listener
    // answers with a handshake record (its ServerHello), not an alert.
    let terminated = hello("8443", "big.test", "40000");
    assert!(
        terminated.contains(" 160303"),
        "{terminated}\n{}",
        daemon.log()
    );
    // On the passthrough listener the whole hello reaches the backend,
    // which echoes it back behind its name.
    let passed = hello("443", "big.pass.test", "40000");
    assert!(
        passed.contains(" 6563686f3a "),
        "{passed}\n{}",
        daemon.log()
    );
    // Past 64 KiB on the wire (the largest extensions block there is, in
    // five records): the decode_error alert.
    let refused = hello("8443", "big.test", "66000");
    assert!(refused.contains(" 150303"), "{refused}");
}

// Issue 20 item 8: behaviours that no test failed on when they broke.

/// A DNS upstream's answer is used for the refresh interval (5 s, Envoy's
/// `dns_refresh_rate` default: the system resolver gives no TTL) and then
/// asked for again, so a name that moves is followed. A cache that never
/// expires fails here.
#[test]
fn a_dns_upstream_is_resolved_again_after_the_refresh_interval() {
    require_root();
    let topology = topology();
    let _first = backend(&topology, "first", &format!("{BACKEND_V4}:8080"), &[]);
    let _second = Backend::start(
        &topology,
        &topology.gateway_ns,
        Path::new(TEST_BACKEND),
        &["--name", "second", "--listen", "127.0.0.1:8080"],
        "127.0.0.1:8080".parse().expect("addr"),
    );
    // `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts;
    // the file is rewritten in place below, so the daemon sees the change.
    let hosts_dir = Path::new("/etc/netns").join(&topology.gateway_ns);
    fs::create_dir_all(&hosts_dir).expect("hosts dir");
    let _hosts = RemoveOnDrop(hosts_dir.clone());
    let hosts = hosts_dir.join("hosts");
    let name_at = |address: &str| {
        fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n{address} svc.dns.test\n"),
        )
        .expect("write hosts");
    };
    name_at(BACKEND_V4);
    let scratch = Scratch::new();
    let yaml = gateway_yaml(
        "",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dns, namespace: istio-system}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - route: [{destination: {host: svc.dns.test}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: istio-system}
spec:
  hosts: [svc.dns.test]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
",
    );
    let daemon = start(&topology, &scratch, &yaml, &[]);
    let resolve = resolve("app.test:80");
    let ask = || {
        text(&curl(
            &topology,
            &["--resolve", &resolve, "http://app.test/"],
        ))
    };
    let before = ask();
    assert!(
        before.contains("backend=first"),
        "{before}\n{}",
        daemon.log()
    );
    name_at("127.0.0.1");
    let cached = ask();
    assert!(
        cached.contains("backend=first"),
        "within the refresh interval the last answer is used: {cached}"
    );
    std::thread::sleep(std::time::Duration::from_millis(6000));
    let after = ask();
    assert!(
        after.contains("backend=second"),
        "5 s on, the name is resolved again and its new address used: {after}\n{}",
        daemon.log()
    );
}

/// The gateway with one route, `slow.test`, to the backend named `slow`
/// (which answers `/delay/<ms>` late).
fn slow_yaml() -> String {
    gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: slow, namespace: istio-system}}
spec:
  hosts: [slow.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: slow.backend}}}}]
---
{}",
            service_entry(
                "slow",
                8080,
                "HTTP",
                &format!("[{{address: {BACKEND_V4}}}]")
            )
        ),
    )
}

/// A Gateway whose port 80 server redirects `app.test` to HTTPS (the lean
/// redirect path answers it), with a route for the HTTPS side.
fn redirect_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [app.test]
    tls: {{httpsRedirect: true}}
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
{}",
        service_entry("app", 8080, "HTTP", &format!("[{{address: {BACKEND_V4}}}]"))
    )
}

/// A TCP connection from the client namespace to the gateway's `port`.
fn connect_from_client(topology: &Topology, port: u16) -> std::net::TcpStream {
    let addr: SocketAddr = format!("{GATEWAY_V4}:{port}").parse().expect("addr");
    let stream = gateway_tests::hostile::in_netns(&topology.client_ns, move || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
            .expect("connect")
    });
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// While the daemon drains (SIGTERM), a redirect the lean path answers says
/// `connection: close`, and the connection then ends with a FIN, not a
/// reset: the client knows not to send another request on it.
#[test]
fn a_redirect_answered_while_draining_says_connection_close_and_ends_cleanly() {
    use std::io::{Read as _, Write as _};
    require_root();
    let topology = topology();
    let scratch = Scratch::new();
    let mut daemon = start(&topology, &scratch, &redirect_yaml(), &[]);
    let mut stream = connect_from_client(&topology, 80);
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read"), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 301"), "{head}");
    assert!(
        !head.contains("connection: close"),
        "kept alive before the drain: {head}"
    );
    // The next request's head is under way when the daemon is told to stop.
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: app.test\r\n")
        .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) on the pid of the daemon this test started and owns.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    stream.write_all(b"\r\n").expect("finish the head");
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(
        end.is_ok(),
        "the connection ends with a FIN, not a reset or a stall: {end:?} after {answer:?}"
    );
    assert!(
        answer.starts_with("http/1.1 301"),
        "{answer:?}\n{}",
        daemon.log()
    );
    assert!(
        answer.contains("location: https://app.test/b"),
        "{answer:?}"
    );
    assert!(
        answer.contains("\r\nconnection: close\r\n"),
        "a redirect while draining closes the connection: {answer:?}"
    );
    let exit = daemon.stop();
    assert!(exit.is_some_and(|s| s.success()), "daemon exit: {exit:?}");
}

/// The connection idle timeout counts from the end of the last request,
/// not from its start: a kept-alive connection whose request took longer
/// than the idle timeout is still open for the next request just after.
#[test]
fn the_idle_timeout_counts_from_the_end_of_the_last_request() {
    use std::io::Write as _;
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "slow", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = slow_yaml();
    // Deadlines are looked at when the one in force falls due: 1 s after
    // accept (the head deadline), then 3 s after the request began (the
    // stream idle deadline, while it is in progress).
    let daemon = start(
        &topology,
        &scratch,
        &yaml,
        &[
            "--request-head-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--stream-idle-timeout",
            "3s",
        ],
    );
    let mut stream = connect_from_client(&topology, 80);
    // 2.5 s, longer than the idle timeout. HEAD: the response has no body,
    // so no body frame moves the clock at its end; only the request's end
    // does.
    stream
        .write_all(b"HEAD /delay/2500 HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .expect("send");
    let first = gateway_tests::hostile::read_head(&mut stream).expect("first response");
    assert!(
        first.starts_with("HTTP/1.1 200"),
        "{first}\n{}",
        daemon.log()
    );
    // 1 s after the request ended (1 s before the idle timeout counted from
    // its end), and past the 3 s check, when counted from its start the
    // connection would have been closed at once.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .expect("send");
    let second = gateway_tests::hostile::read_head(&mut stream);
    assert!(
        second
            .as_ref()
            .is_ok_and(|status| status.starts_with("HTTP/1.1 200")),
        "the connection is open 1 s after a 2.5 s request with a 2 s idle timeout: {second:?}\n{}",
        daemon.log()
    );
}

/// Each request counts in the series of its own status code: a 200 and
/// then a 500 on one connection, to one service and with the same response
/// flags (none), are two series of `istio_requests_total`.
#[test]
fn each_request_counts_in_the_series_of_its_own_status_code() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "web", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = gateway_yaml("", &routes_to("web", "HTTP"));
    let daemon = start(&topology, &scratch, &yaml, &[]);
    // One curl, two URLs: the second request reuses the connection.
    let out = curl(
        &topology,
        &[
            "--resolve",
            &resolve("web.test:80"),
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            "http://web.test/status/200",
            "http://web.test/status/500",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 1\n500 0\n",
        "{}\n{}",
        text(&out),
        daemon.log()
    );
    let scrape = prometheus(&topology);
    for code in ["200", "500"] {
        assert_eq!(
            sample(
                &scrape,
                "istio_requests_total",
                &[("response_code", code), ("response_flags", "-")]
            ),
            Some(1.0),
            "one request with status {code}: {:?}",
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == "istio_requests_total")
                .map(|s| (&s.labels, &s.value))
                .collect::<Vec<_>>()
        );
    }
}

/// The root of `delegation_serves_the_delegates_rules_and_drops_a_missing_one`:
/// `/api` to the delegate team/api, `/missing` to one that does not exist,
/// `/web` to its own backend.
fn delegation_yaml() -> String {
    gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: istio-system}}
spec:
  hosts: [shop.test]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    delegate: {{name: api, namespace: team}}
    headers: {{request: {{set: {{x-root: inherited}}}}}}
  - match: [{{uri: {{prefix: /missing}}}}]
    delegate: {{name: gone, namespace: team}}
  - match: [{{uri: {{prefix: /web}}}}]
    route: [{{destination: {{host: web.backend}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:
  - match: [{{uri: {{prefix: /api/v1}}}}]
    route: [{{destination: {{host: api}}}}]
  - match: [{{uri: {{prefix: /web}}}}]
    route: [{{destination: {{host: api}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: team}}
spec:
  hosts: [api.team.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}, ports: {{http: 8081}}}}]
---
{}",
            service_entry(
                "web",
                8080,
                "HTTP",
                &format!("[{{address: {BACKEND_V4}, ports: {{p: 8082}}}}]")
            )
        ),
    )
}

#[test]
fn delegation_serves_the_delegates_rules_and_drops_a_missing_one() {
    require_root();
    let topology = topology();
    let _api = backend(&topology, "api", &format!("{BACKEND_V4}:8081"), &[]);
    let _web = backend(&topology, "web", &format!("{BACKEND_V4}:8082"), &[]);
    let scratch = Scratch::new();
    let yaml = delegation_yaml();
    // `check` names the missing delegate where the root names it, and the
    // delegate rule that conflicts with the root's match.
    let config = scratch.path.join("config.yaml");
    fs::write(&config, &yaml).expect("write config");
    let check = Command::new(gateway_tests::daemon::gateway_bin())
        .args(["check", "--labels", "istio=ingressgateway"])
        .arg(&config)
        .output()
        .expect("run gateway check");
    let said = text(&check);
    assert!(
        said.contains(&format!(
            "{}:22:15: warning: VirtualService istio-system/root: spec.http[1].delegate: delegate VirtualService team/gone not found: as in Istio, this rule is dropped",
            config.display()
        )),
        "{said}"
    );
    assert!(
        said.contains("warning: VirtualService istio-system/root spec.http[0] -> team/api spec.http[1]: match[0] conflicts with every match of the root rule"),
        "{said}"
    );
    // `compile` shows the merged route under both names.
    let compiled = Command::new(gateway_tests::daemon::gateway_bin())
        .args(["compile", "--labels", "istio=ingressgateway"])
        .arg(&config)
        .output()
        .expect("run gateway compile");
    assert!(
        text(&compiled)
            .contains("VirtualService istio-system/root spec.http[0] -> team/api spec.http[0]"),
        "{}",
        text(&compiled)
    );
    let daemon = daemon_on(&topology, &config.display().to_string(), &[]);
    let get = |path: &str| {
        let url = format!("http://shop.test{path}");
        let out = curl(
            &topology,
            &["-i", "--resolve", &resolve("shop.test:80"), &url],
        );
        text(&out)
    };
    let delegated = get("/api/v1/x");
    assert!(
        delegated.starts_with("HTTP/1.1 200"),
        "{delegated}\n{}",
        daemon.log()
    );
    assert!(delegated.contains("backend=api"), "{delegated}");
    assert!(delegated.contains("path=/api/v1/x"), "{delegated}");
    assert!(
        delegated.contains("header x-root: inherited"),
        "the root rule's headers go to the delegate's rules that set none: {delegated}"
    );
    // Under /api but matched by no delegate rule: nothing else serves it.
    assert!(get("/api/other").starts_with("HTTP/1.1 404"));
    // The missing delegate's rule is dropped: its match is not served.
    let missing = get("/missing/x");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let web = get("/web");
    assert!(web.contains("backend=web"), "{web}");
}

/// A VirtualService `name` for `name.test` with the `http` rules given
/// (YAML flow items at list indentation), all to `name.backend`.
fn policy_yaml(name: &str, http: &str) -> String {
    gateway_yaml(
        "",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.test]
  gateways: [gw]
  http:
{http}
---
{}",
            service_entry(name, 8080, "HTTP", &format!("[{{address: {BACKEND_V4}}}]"))
        ),
    )
}

#[test]
fn fault_aborts_hold_their_share_delays_wait_and_both_are_flagged_and_counted() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "faulty", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = policy_yaml(
        "faulty",
        "  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: faulty.backend}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: faulty.backend}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: faulty.backend}}]
  - route: [{destination: {host: faulty.backend}}]",
    );
    let daemon = start(&topology, &scratch, &yaml, &["--access-log-format", "json"]);
    let resolve = resolve("faulty.test:80");

    // 50% over 400 requests: mean 200, sd 10; ±40 (10 points) is 4 sd, a
    // false failure about once in 16,000 runs (±8 points, 3.2 sd, failed
    // once in CI with 233).
    const N: usize = 400;
    let url = "http://faulty.test/abort";
    let mut args = vec!["-w", "%{http_code}\\n", "--resolve", &resolve];
    // Each URL gets its own `-o`: curl writes the others' bodies to stdout.
    for _ in 0..N {
        args.extend(["-o", "/dev/null", url]);
    }
    let out = curl(&topology, &args);
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let aborted = codes.lines().filter(|c| *c == "503").count();
    let passed = codes.lines().filter(|c| *c == "200").count();
    assert_eq!(aborted + passed, N, "{codes}\n{}", daemon.log());
    eprintln!("{aborted} of {N} requests aborted");
    assert!(
        (160..=240).contains(&aborted),
        "aborted {aborted} of {N}: outside 50% ± 10 points"
    );

    let abort_body = text(&curl(
        &topology,
        &["-i", "--resolve", &resolve, "http://faulty.test/grpc"],
    ));
    assert!(abort_body.starts_with("HTTP/1.1 200"), "{abort_body}");
    assert!(abort_body.contains("fault filter abort"), "{abort_body}");
    let grpc = text(&curl(
        &topology,
        &[
            "-i",
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "--data-binary",
            "",
            "--resolve",
            &resolve,
            "http://faulty.test/grpc/Svc/M",
        ],
    ))
    .to_ascii_lowercase();
    assert!(grpc.starts_with("http/2 200"), "{grpc}");
    assert!(grpc.contains("\ngrpc-status: 14\r"), "{grpc}");
    assert!(
        grpc.contains("\ngrpc-message: fault filter abort\r"),
        "{grpc}"
    );
    assert!(!grpc.contains("x-backend"), "the backend answered: {grpc}");

    // A fixed delay, measured: each request takes at least the delay.
    let mut times = Vec::new();
    for _ in 0..5 {
        let out = curl(
            &topology,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_total}",
                "--resolve",
                &resolve,
                "http://faulty.test/delay",
            ],
        );
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, seconds) = line.split_once(' ').expect("code and time");
        assert_eq!(code, "200", "{line}");
        times.push(seconds.parse::<f64>().expect("seconds"));
    }
    let undelayed = curl(
        &topology,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "--resolve",
            &resolve,
            "http://faulty.test/plain",
        ],
    );
    let undelayed: f64 = String::from_utf8_lossy(&undelayed.stdout)
        .parse()
        .expect("seconds");
    eprintln!("delayed requests took {times:?} s; one without the fault {undelayed} s");
    assert!(times.iter().all(|t| (0.3..1.3).contains(t)), "{times:?}");
    assert!(undelayed < 0.3, "{undelayed}");

    std::thread::sleep(std::time::Duration::from_millis(1300));
    let log = daemon.log();
    let flags_of = |path: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.starts_with('{') && l.contains(&format!("\"path\":\"{path}\"")))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
                format!(
                    "{} {}",
                    v["response_code"],
                    v["response_flags"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let abort_lines = flags_of("/abort");
    assert_eq!(abort_lines.len(), N, "{log}");
    assert_eq!(
        abort_lines.iter().filter(|l| *l == "503 FI").count(),
        aborted
    );
    assert_eq!(abort_lines.iter().filter(|l| *l == "200 -").count(), passed);
    assert!(flags_of("/delay").iter().all(|l| l == "200 DI"), "{log}");
    assert_eq!(flags_of("/delay").len(), 5);

    let scrape = prometheus(&topology);
    assert_eq!(
        sample(&scrape, "envoy_http_fault_aborts_injected", &[]),
        Some((aborted + 2) as f64)
    );
    assert_eq!(
        sample(&scrape, "envoy_http_fault_delays_injected", &[]),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "istio_requests_total",
            &[("response_flags", "FI"), ("response_code", "503")]
        ),
        Some(aborted as f64)
    );
}

#[test]
fn a_cors_preflight_from_an_allowed_origin_is_answered_and_another_origins_is_not() {
    require_root();
    let topology = topology();
    let _backend = backend(&topology, "cors", &format!("{BACKEND_V4}:8080"), &[]);
    let scratch = Scratch::new();
    let yaml = policy_yaml(
        "cors",
        "  - corsPolicy:
      allowOrigins: [{exact: 'https://app.example'}, {regex: 'https://[a-z]+\\.dev\\.example'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-backend]
      maxAge: 1h
      allowCredentials: true
    route: [{destination: {host: cors.backend}}]",
    );
    let daemon = start(&topology, &scratch, &yaml, &["--access-log-format", "json"]);
    let resolve = resolve("cors.test:80");
    let ask = |method: &str, origin: &str| {
        let origin = format!("origin: {origin}");
        let mut args = vec!["-i", "-X", method, "-H", &origin, "--resolve", &resolve];
        if method == "OPTIONS" {
            args.extend(["-H", "access-control-request-method: POST"]);
        }
        args.push("http://cors.test/things");
        text(&curl(&topology, &args)).to_ascii_lowercase()
    };

    let allowed = ask("OPTIONS", "https://app.example");
    assert!(
        allowed.starts_with("http/1.1 200"),
        "{allowed}\n{}",
        daemon.log()
    );
    for line in [
        "access-control-allow-origin: https://app.example",
        "access-control-allow-methods: get,post",
        "access-control-allow-headers: x-token",
        "access-control-max-age: 3600",
        "access-control-allow-credentials: true",
        "content-length: 0",
    ] {
        assert!(
            allowed.contains(&format!("\n{line}\r")),
            "{line}: {allowed}"
        );
    }
    assert!(
        !allowed.contains("x-backend"),
        "the backend answered: {allowed}"
    );
    let by_regex = ask("OPTIONS", "https://team.dev.example");
    assert!(
        by_regex.contains("\naccess-control-allow-origin: https://team.dev.example\r"),
        "{by_regex}"
    );

    let other = ask("OPTIONS", "https://evil.example");
    assert!(
        other.contains("\nx-backend: cors\r"),
        "not forwarded: {other}"
    );
    assert!(!other.contains("access-control-allow"), "{other}");

    let actual = ask("GET", "https://app.example");
    assert!(actual.contains("\nx-backend: cors\r"), "{actual}");
    assert!(
        actual.contains("\naccess-control-allow-origin: https://app.example\r"),
        "{actual}"
    );
    assert!(
        actual.contains("\naccess-control-expose-headers: x-backend\r"),
        "{actual}"
    );
    assert!(
        actual.contains("\naccess-control-allow-credentials: true\r"),
        "{actual}"
    );

    std::thread::sleep(std::time::Duration::from_millis(1300));
    let log = daemon.log();
    let answered = log
        .lines()
        .filter(|l| {
            l.contains("\"method\":\"OPTIONS\"")
                && l.contains("\"response_code_details\":\"cors_response\"")
        })
        .count();
    assert_eq!(answered, 2, "{log}");
}
