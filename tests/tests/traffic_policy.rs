//! End to end through the proxy: Istio's traffic policy as the gateway
//! applies it, with real clients in the client namespace and test-backends
//! that can be killed, made to fail or to hang in the backend namespace.
use std::{fs, net::SocketAddr, path::Path, process::Output, time::Duration};

use gateway_tests::{
    backend::Backend,
    daemon::Daemon,
    hostile::Scratch,
    netns::{BACKEND_V4, CLIENT_V4, GATEWAY_V4, Topology},
    require_root,
};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");
/// Debian's Python, which the scripts below use (stdlib only).
const PYTHON: &str = "/usr/bin/python3";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn topology() -> Topology {
    let mut topology = Topology::new();
    topology.add_backend_namespace();
    topology
}

/// A test-backend named `name` on `addr` in the backend namespace.
fn backend(topology: &Topology, name: &str, addr: &str) -> Backend {
    let addr: SocketAddr = addr.parse().expect("backend address");
    let ns = topology.backend_ns.as_deref().unwrap_or_default();
    Backend::start(
        topology,
        ns,
        Path::new(TEST_BACKEND),
        &["--name", name, "--listen", &addr.to_string()],
        addr,
    )
}

/// The daemon serving `yaml`.
fn start(topology: &Topology, scratch: &Scratch, yaml: &str) -> Daemon {
    start_with(topology, scratch, yaml, &[])
}

/// The daemon serving `yaml`, with more flags.
fn start_with(topology: &Topology, scratch: &Scratch, yaml: &str, flags: &[&str]) -> Daemon {
    let config = scratch.path.join("config.yaml");
    fs::write(&config, yaml).expect("write config");
    gateway_tests::daemon::start_on(topology, &config.display().to_string(), flags)
}

/// A Gateway for `app.test` on port 80, a VirtualService routing it to
/// `web.backend` with `more` (YAML lines of the rule, four spaces in), and
/// a ServiceEntry for `web.backend` with one endpoint per port of `ports`
/// on the backend address.
fn config(more: &str, ports: &[u16]) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|port| format!("{{address: {BACKEND_V4}, ports: {{http: {port}}}}}"))
        .collect();
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
  - route: [{{destination: {{host: web.backend, port: {{number: 80}}}}}}]
{more}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: istio-system}}
spec:
  hosts: [web.backend]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{}]
",
        endpoints.join(", ")
    )
}

/// Sends `count` requests for `app.test` to the gateway, one at a time
/// about `pause_ms` apart, on keep-alive connections (a new one after any
/// error), and prints how many got each status (`-1`: no answer). After
/// `pause_at` requests it creates the file `marker` and pauses a second.
const LOAD: &str = r#"
import http.client, json, sys, time
host, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
pause_at, marker = int(sys.argv[4]), sys.argv[5]
seen, conn = {}, None
deadline = time.monotonic() + 30
for n in range(count):
    if time.monotonic() > deadline: break
    if n == pause_at:
        open(marker, "w").close()
        time.sleep(1)
    try:
        if conn is None: conn = http.client.HTTPConnection(host, 80, timeout=5)
        conn.request("GET", "/", headers={"Host": "app.test"})
        response = conn.getresponse(); response.read()
        status = response.status
    except Exception:
        status, conn = -1, None
    seen[status] = seen.get(status, 0) + 1
    time.sleep(pause)
print(json.dumps(seen))
"#;

#[test]
fn a_killed_endpoint_costs_the_client_nothing_under_the_default_retry_policy() {
    require_root();
    let topology = topology();
    let first = backend(&topology, "first", &format!("{BACKEND_V4}:8081"));
    let _second = backend(&topology, "second", &format!("{BACKEND_V4}:8082"));
    let scratch = Scratch::new();
    let daemon = start(&topology, &scratch, &config("", &[8081, 8082]));
    let marker = scratch.path.join("paused");
    let marker_text = marker.display().to_string();
    let outcome = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            topology.client(&[
                PYTHON,
                "-c",
                LOAD,
                GATEWAY_V4,
                "300",
                "5",
                "100",
                &marker_text,
            ])
        });
        // The endpoint dies between two requests: the client's pause.
        // Every later request round robin gives it is refused, and retried.
        // (A request in flight at the instant of death is lost, as under
        // Envoy: the default policy does not retry a reset.)
        let waited = std::time::Instant::now();
        while !marker.exists() && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(first);
        load.join().expect("the load ran")
    });
    let counts = String::from_utf8_lossy(&outcome.stdout).trim().to_string();
    let log = daemon.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("\" 503 ")).collect();
    assert_eq!(counts, "{\"200\": 300}", "{}\n{failed:#?}", text(&outcome));
    let retries = gateway_tests::daemon::stat(
        &topology,
        "cluster.outbound|80||web.backend.upstream_rq_retry",
    );
    assert!(retries > 50, "retries {retries}");
}

#[test]
fn per_try_timeouts_and_the_route_timeout_bound_a_hanging_backend() {
    require_root();
    let topology = topology();
    let _slow = backend(&topology, "slow", &format!("{BACKEND_V4}:8081"));
    let scratch = Scratch::new();
    let yaml = config(
        "    match: [{uri: {prefix: /delay}}]\n    timeout: 1s\n    retries: {attempts: 5, perTryTimeout: 300ms, retryOn: reset}\n",
        &[8081],
    );
    let daemon = start(&topology, &scratch, &yaml);
    let curl = |path: &str| {
        topology.client(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            "--resolve",
            &format!("app.test:80:{GATEWAY_V4}"),
            &format!("http://app.test{path}"),
        ])
    };
    // Each try hangs past its 300 ms; the third or fourth is cut by the
    // route's 1 s.
    let hanging = String::from_utf8_lossy(&curl("/delay/5000").stdout).into_owned();
    let (code, took) = hanging.split_once(' ').expect("code and time");
    let took: f64 = took.parse().expect("seconds");
    assert_eq!(code, "504", "{hanging}\n{}", daemon.log());
    assert!((1.0..2.0).contains(&took), "{took}");
    // A try that answers within its time is not retried.
    let quick = String::from_utf8_lossy(&curl("/delay/100").stdout).into_owned();
    assert!(quick.starts_with("200 "), "{quick}");
    std::thread::sleep(Duration::from_millis(1300));
    let log = daemon.log();
    assert!(log.contains("\" 504 UT "), "{log}");
}

#[test]
fn pool_overflow_gets_503_uo_while_requests_within_the_limit_succeed() {
    require_root();
    let topology = topology();
    let _slow = backend(&topology, "slow", &format!("{BACKEND_V4}:8081"));
    let scratch = Scratch::new();
    let rule = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: istio-system}
spec:
  host: web.backend
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
";
    let yaml = config("", &[8081]) + rule;
    let daemon = start(&topology, &scratch, &yaml);
    let curl = |path: &str| {
        let out = topology.client(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &format!("app.test:80:{GATEWAY_V4}"),
            &format!("http://app.test{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // One request holds the one connection for a second, one waits for
    // it; the two after find the pending queue full.
    let codes = std::thread::scope(|scope| {
        let first = scope.spawn(|| curl("/delay/1000"));
        std::thread::sleep(Duration::from_millis(300));
        let second = scope.spawn(|| curl("/delay/10"));
        std::thread::sleep(Duration::from_millis(300));
        let mut late: Vec<String> = (0..2).map(|_| curl("/delay/10")).collect();
        let mut codes = vec![first.join().expect("first"), second.join().expect("second")];
        codes.append(&mut late);
        codes
    });
    assert_eq!(codes, ["200", "200", "503", "503"], "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(300));
    let log = daemon.log();
    assert_eq!(log.matches("\" 503 UO ").count(), 2, "{log}");
    let overflowed = gateway_tests::daemon::stat(
        &topology,
        "cluster.outbound|80||web.backend.upstream_rq_pending_overflow",
    );
    assert_eq!(overflowed, 2);
}

/// A test-backend answering every request with `status`.
fn failing_backend(topology: &Topology, name: &str, addr: &str, status: &str) -> Backend {
    let addr: SocketAddr = addr.parse().expect("backend address");
    let ns = topology.backend_ns.as_deref().unwrap_or_default();
    Backend::start(
        topology,
        ns,
        Path::new(TEST_BACKEND),
        &[
            "--name",
            name,
            "--listen",
            &addr.to_string(),
            "--status",
            status,
        ],
        addr,
    )
}

#[test]
fn an_endpoint_answering_5xx_is_ejected_and_comes_back() {
    require_root();
    let topology = topology();
    let _bad = failing_backend(&topology, "bad", &format!("{BACKEND_V4}:8081"), "503");
    let _good = backend(&topology, "good", &format!("{BACKEND_V4}:8082"));
    let scratch = Scratch::new();
    let rule = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: istio-system}
spec:
  host: web.backend
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 200ms, baseEjectionTime: 2s, maxEjectionPercent: 100}
";
    // No retries, so every 503 reaches the client and is counted.
    let yaml = config("    retries: {attempts: 0}\n", &[8081, 8082]) + rule;
    let daemon = start(&topology, &scratch, &yaml);
    let load = |count: &str| {
        let marker = scratch.path.join("unused");
        let out = topology.client(&[
            PYTHON,
            "-c",
            LOAD,
            GATEWAY_V4,
            count,
            "5",
            "100000",
            &marker.display().to_string(),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Round robin: the bad endpoint's third 503 ejects it; all else is 200.
    let counts = load("40");
    assert!(
        counts.contains("\"503\": 3") && counts.contains("\"200\": 37"),
        "{counts}\n{}",
        daemon.log()
    );
    let ejected = gateway_tests::daemon::stat(
        &topology,
        "cluster.outbound|80||web.backend.outlier_detection.ejections_enforced_consecutive_5xx",
    );
    assert_eq!(ejected, 1);
    assert!(daemon.log().contains("ejected for 2s"), "{}", daemon.log());
    // Back after 2 s (at the next 200 ms interval): it fails three times
    // more and goes again. (How long the second ejection lasts depends on
    // the healthy intervals between, as in Envoy: the unit tests pin it.)
    std::thread::sleep(Duration::from_millis(2500));
    let counts = load("40");
    assert!(
        counts.contains("\"503\": 3") && counts.contains("\"200\": 37"),
        "{counts}\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("returned"), "{log}");
    assert_eq!(log.matches("ejected for").count(), 2, "{log}");
}

/// A ServiceEntry `NAME.backend` over the three hashing backends, and a
/// DestinationRule hashing it by `consistent_hash`.
fn hashed_service(name: &str, consistent_hash: &str, ports: &[u16]) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|port| format!("{{address: {BACKEND_V4}, ports: {{http: {port}}}}}"))
        .collect();
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.backend]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: istio-system}}
spec:
  host: {name}.backend
  trafficPolicy:
    loadBalancer: {{consistentHash: {consistent_hash}}}
",
        endpoints.join(", ")
    )
}

/// Routes `/<name>` to `<name>.backend` for the four hash keys.
fn hashing_config(ports: &[u16]) -> String {
    let routes: String = ["header", "cookie", "source", "query"]
        .iter()
        .map(|name| {
            format!(
                "  - match: [{{uri: {{prefix: /{name}}}}}]\n    route: [{{destination: {{host: {name}.backend, port: {{number: 80}}}}}}]\n"
            )
        })
        .collect();
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
{routes}{}{}{}{}",
        hashed_service("header", "{httpHeaderName: x-user}", ports),
        hashed_service(
            "cookie",
            "{httpCookie: {name: session, ttl: 3600s, path: /}}",
            ports
        ),
        hashed_service("source", "{useSourceIp: true}", ports),
        hashed_service(
            "query",
            "{httpQueryParameterName: user, maglev: {tableSize: 65537}}",
            ports
        ),
    )
}

#[test]
fn hashed_keys_keep_their_endpoint_and_about_a_third_move_when_one_of_three_goes() {
    require_root();
    let topology = topology();
    let _backends: Vec<Backend> = [8081, 8082, 8083]
        .iter()
        .map(|port| {
            backend(
                &topology,
                &format!("b{port}"),
                &format!("{BACKEND_V4}:{port}"),
            )
        })
        .collect();
    let scratch = Scratch::new();
    let daemon = start(&topology, &scratch, &hashing_config(&[8081, 8082, 8083]));
    let resolve = format!("app.test:80:{GATEWAY_V4}");
    // The backend that answered (`backend=NAME` in its body), and the
    // response headers when asked.
    let ask = |path: &str, extra: &[&str]| -> (String, String) {
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-D",
            "-",
            "--resolve",
            &resolve,
        ];
        argv.extend_from_slice(extra);
        let url = format!("http://app.test{path}");
        argv.push(&url);
        let out = text(&topology.client(&argv));
        let backend = out
            .lines()
            .find_map(|l| l.strip_prefix("backend="))
            .unwrap_or("none")
            .to_string();
        (backend, out)
    };
    let keys: Vec<String> = (0..30).map(|k| format!("user-{k}")).collect();
    let by_header = |key: &str| ask("/header", &["-H", &format!("x-user: {key}")]).0;
    let by_query = |key: &str| ask(&format!("/query?user={key}"), &[]).0;
    let header_before: Vec<String> = keys.iter().map(|k| by_header(k)).collect();
    let query_before: Vec<String> = keys.iter().map(|k| by_query(k)).collect();
    for placed in [&header_before, &query_before] {
        let used: std::collections::BTreeSet<&String> = placed.iter().collect();
        assert!(used.len() >= 2, "keys spread: {placed:?}");
        assert!(
            !used.contains(&"none".to_string()),
            "{placed:?}\n{}",
            daemon.log()
        );
    }
    // The same key, the same endpoint.
    assert_eq!(
        keys.iter().map(|k| by_header(k)).collect::<Vec<_>>(),
        header_before
    );
    assert_eq!(
        keys.iter().map(|k| by_query(k)).collect::<Vec<_>>(),
        query_before
    );
    // One client address: one endpoint, every time.
    let sources: std::collections::BTreeSet<String> =
        (0..6).map(|_| ask("/source", &[]).0).collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    // No cookie: the gateway sets one; sent back, it keeps the endpoint.
    let (first, head) = ask("/cookie", &[]);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a Set-Cookie")
        .to_string();
    assert!(cookie.starts_with("session=\""), "{cookie}");
    for _ in 0..5 {
        assert_eq!(
            ask("/cookie", &["-H", &format!("cookie: {cookie}")]).0,
            first
        );
    }
    // The third endpoint goes (a reload without it): only its keys move.
    let config = scratch.path.join("config.yaml");
    fs::write(&config, hashing_config(&[8081, 8082])).expect("rewrite config");
    let waited = std::time::Instant::now();
    while gateway_tests::daemon::stat(&topology, "config.reloads") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (before, lookup) in [
        (&header_before, &by_header as &dyn Fn(&str) -> String),
        (&query_before, &by_query),
    ] {
        let after: Vec<String> = keys.iter().map(|k| lookup(k)).collect();
        for ((before, after), key) in before.iter().zip(&after).zip(&keys) {
            if before != "b8083" {
                assert_eq!(before, after, "{key} moved off a live endpoint");
            } else {
                assert_ne!(after, "b8083", "{key}");
            }
        }
    }
}

#[test]
fn a_mirror_gets_its_share_and_a_dead_mirror_costs_the_client_nothing() {
    require_root();
    let topology = topology();
    let _web = backend(&topology, "web", &format!("{BACKEND_V4}:8081"));
    let _shadow = backend(&topology, "shadow", &format!("{BACKEND_V4}:8082"));
    let scratch = Scratch::new();
    let mirrors = "    mirrors:
    - destination: {host: shadow.backend, port: {number: 80}}
      percentage: {value: 50}
    - destination: {host: dead.backend, port: {number: 80}}
";
    let entry = |name: &str, port: u16| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.backend]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}, ports: {{http: {port}}}}}]
"
        )
    };
    // Nothing listens on 8099: every copy to `dead` fails.
    let yaml = config(mirrors, &[8081]) + &entry("shadow", 8082) + &entry("dead", 8099);
    let daemon = start(&topology, &scratch, &yaml);
    let marker = scratch.path.join("unused").display().to_string();
    let out = topology.client(&[
        PYTHON, "-c", LOAD, GATEWAY_V4, "200", "2", "100000", &marker,
    ]);
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(counts, "{\"200\": 200}", "{}\n{}", text(&out), daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    let stat = |cluster: &str| {
        gateway_tests::daemon::stat(
            &topology,
            &format!("cluster.outbound|80||{cluster}.backend.upstream_rq_mirrored"),
        )
    };
    // 50% of 200: a binomial's 4 sigma is about 28.
    let shadowed = stat("shadow");
    assert!((72..=128).contains(&shadowed), "{shadowed}");
    assert_eq!(stat("dead"), 200);
}

/// Sends `count` requests for `app.test` to the gateway one after another
/// on keep-alive connections, and prints in order which backend answered
/// each (`x-backend`), or its status, or `-1` for no answer.
const WHO_ANSWERS: &str = r#"
import http.client, json, sys, time
host, count = sys.argv[1], int(sys.argv[2])
seen, conn = [], None
deadline = time.monotonic() + 30
for n in range(count):
    if time.monotonic() > deadline: break
    try:
        if conn is None: conn = http.client.HTTPConnection(host, 80, timeout=5)
        conn.request("GET", "/", headers={"Host": "app.test"})
        response = conn.getresponse(); response.read()
        who = response.getheader("x-backend") if response.status == 200 else str(response.status)
    except Exception:
        who, conn = "-1", None
    seen.append(who)
print(json.dumps(seen))
"#;

/// Who answered `count` requests, in order.
fn who_answers(topology: &Topology, count: usize) -> Vec<String> {
    let out = topology.client(&[PYTHON, "-c", WHO_ANSWERS, GATEWAY_V4, &count.to_string()]);
    let line = String::from_utf8_lossy(&out.stdout);
    let mut answers = Vec::new();
    for item in line.trim().trim_matches(['[', ']']).split(", ") {
        answers.push(item.trim_matches('"').to_string());
    }
    answers
}

/// Three endpoints of `web.backend` in three localities (`us/1a` on 8081,
/// `us/1b` on 8082, `eu/1a` on 8083), routed with no retries, and a
/// DestinationRule with `policy` (YAML lines of its trafficPolicy).
fn locality_config(policy: &str) -> String {
    let endpoints = [(8081, "us/1a"), (8082, "us/1b"), (8083, "eu/1a")]
        .iter()
        .map(|(port, locality)| {
            format!("{{address: {BACKEND_V4}, ports: {{http: {port}}}, locality: {locality}}}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut yaml = config("    retries: {attempts: 0}\n", &[]);
    yaml = yaml.replace("endpoints: []", &format!("endpoints: [{endpoints}]"));
    yaml + &format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: istio-system}}
spec:
  host: web.backend
  trafficPolicy:
{policy}"
    )
}

fn locality_backends(topology: &Topology) -> Vec<Backend> {
    [("near", 8081), ("zone", 8082), ("region", 8083)]
        .iter()
        .map(|(name, port)| backend(topology, name, &format!("{BACKEND_V4}:{port}")))
        .collect()
}

/// How many of `answers` are `who`.
fn share(answers: &[String], who: &str) -> usize {
    answers.iter().filter(|a| *a == who).count()
}

#[test]
fn locality_failover_prefers_the_gateways_zone_then_its_region_then_elsewhere() {
    require_root();
    let topology = topology();
    let mut backends = locality_backends(&topology);
    let scratch = Scratch::new();
    let yaml = locality_config(
        "    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}\n",
    );
    let daemon = start_with(&topology, &scratch, &yaml, &["--locality", "us/1a"]);
    let all = who_answers(&topology, 30);
    assert_eq!(share(&all, "near"), 30, "{all:?}\n{}", daemon.log());
    // The gateway's own zone dies: its three failures eject it, and the
    // rest of its region (priority 1) takes over, never the other region.
    drop(backends.remove(0));
    let after = who_answers(&topology, 30);
    let failed = after.iter().take_while(|a| *a != "zone").count();
    assert!((3..=4).contains(&failed), "{after:?}\n{}", daemon.log());
    assert_eq!(share(&after, "zone"), 30 - failed, "{after:?}");
    // Then the region dies: the other region (priority 2) serves.
    drop(backends.remove(0));
    let last = who_answers(&topology, 30);
    let failed = last.iter().take_while(|a| *a != "region").count();
    assert!((3..=4).contains(&failed), "{last:?}\n{}", daemon.log());
    assert_eq!(share(&last, "region"), 30 - failed, "{last:?}");
}

#[test]
fn locality_distribute_sends_each_locality_its_share_and_none_to_unlisted_ones() {
    require_root();
    let topology = topology();
    let _backends = locality_backends(&topology);
    let scratch = Scratch::new();
    let yaml = locality_config(
        "    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us/*
          to: {us/1a: 80, eu/*: 20}
",
    );
    let daemon = start_with(&topology, &scratch, &yaml, &["--locality", "us/1a"]);
    let answers = who_answers(&topology, 500);
    assert_eq!(answers.len(), 500, "{answers:?}");
    let (near, zone, region) = (
        share(&answers, "near"),
        share(&answers, "zone"),
        share(&answers, "region"),
    );
    // 20 % of 500 is 100 with a standard deviation of 8.9: within 4 sd.
    assert_eq!(near + region, 500, "{answers:?}\n{}", daemon.log());
    assert_eq!(zone, 0, "us/1b is in no `to` locality");
    assert!((64..=136).contains(&region), "eu/1a got {region} of 500");
}

/// A test-backend named `name` on `addr` with `flags`.
fn backend_with(topology: &Topology, name: &str, addr: &str, flags: &[&str]) -> Backend {
    let addr: SocketAddr = addr.parse().expect("backend address");
    let ns = topology.backend_ns.as_deref().unwrap_or_default();
    let listen = addr.to_string();
    let mut args = vec!["--name", name, "--listen", &listen];
    args.extend_from_slice(flags);
    Backend::start(topology, ns, Path::new(TEST_BACKEND), &args, addr)
}

/// A Gateway with an HTTP server for `app.test` on 80 and TCP servers on
/// 9000 and 9001; `app.test` routed to `web.backend`, 9000 to
/// `tcp1.backend`, 9001 to `tcp2.backend`; each host a ServiceEntry on
/// the backend address at its port; then `more` documents.
fn l4_config(web: u16, tcp1: u16, tcp2: u16, more: &str) -> String {
    let entry = |name: &str, port: u16, protocol: &str| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: istio-system}}
spec:
  hosts: [{name}.backend]
  ports: [{{number: {port}, name: p{port}, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_V4}}}]
"
        )
    };
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [app.test]
  - port: {{number: 9000, name: tcp1, protocol: TCP}}
    hosts: ['*']
  - port: {{number: 9001, name: tcp2, protocol: TCP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: istio-system}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.backend}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: l4, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{{port: 9000}}]
    route: [{{destination: {{host: tcp1.backend}}}}]
  - match: [{{port: 9001}}]
    route: [{{destination: {{host: tcp2.backend}}}}]
{}{}{}{more}",
        entry("web", web, "HTTP"),
        entry("tcp1", tcp1, "TCP"),
        entry("tcp2", tcp2, "TCP"),
    )
}

/// A DestinationRule for `host` with `policy` (YAML lines four spaces in).
fn rule(name: &str, policy: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: istio-system}}
spec:
  host: {name}.backend
  trafficPolicy:
{policy}"
    )
}

/// What a client connection to `port` of the gateway that sends `send`
/// reads back within `wait` seconds (and whether the read ended before it).
fn tcp_exchange(topology: &Topology, port: u16, send: &str, wait: &str) -> String {
    let out = topology.client(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{GATEWAY_V4}/{port}; printf '{send}' >&3; timeout {wait} cat <&3; echo \"[exit $?]\""),
    ]);
    text(&out)
}

#[test]
fn proxy_protocol_names_the_client_to_the_backend_over_http_and_tcp() {
    require_root();
    let topology = topology();
    let _web = backend_with(
        &topology,
        "web",
        &format!("{BACKEND_V4}:8081"),
        &["--proxy-protocol"],
    );
    let _v1 = backend_with(
        &topology,
        "tcp1",
        &format!("{BACKEND_V4}:7001"),
        &["--echo", "--proxy-protocol"],
    );
    let _v2 = backend_with(
        &topology,
        "tcp2",
        &format!("{BACKEND_V4}:7002"),
        &["--echo", "--proxy-protocol"],
    );
    let scratch = Scratch::new();
    let more = rule("web", "    proxyProtocol: {}\n")
        + &rule("tcp1", "    proxyProtocol: {version: V1}\n")
        + &rule("tcp2", "    proxyProtocol: {version: V2}\n");
    let daemon = start(&topology, &scratch, &l4_config(8081, 7001, 7002, &more));
    // Two requests on one client connection, then one on another.
    let curl = |urls: &[&str]| {
        let resolve = format!("app.test:80:{GATEWAY_V4}");
        let mut argv = vec!["curl", "-sS", "--max-time", "5", "--resolve", &resolve];
        argv.extend_from_slice(urls);
        text(&topology.client(&argv))
    };
    let proxied = |body: &str| -> Vec<String> {
        body.lines()
            .filter_map(|l| l.strip_prefix("proxy="))
            .map(str::to_string)
            .collect()
    };
    let same = proxied(&curl(&["http://app.test/a", "http://app.test/b"]));
    let other = proxied(&curl(&["http://app.test/c"]));
    assert_eq!(same.len(), 2, "{same:?}\n{}", daemon.log());
    assert_eq!(
        same[0], same[1],
        "one client connection, one upstream connection"
    );
    assert!(
        same[0].starts_with(&format!("{CLIENT_V4}:"))
            && same[0].ends_with(&format!(" {GATEWAY_V4}:80")),
        "{same:?}"
    );
    assert_eq!(other.len(), 1, "{other:?}");
    assert_ne!(
        other[0], same[0],
        "another client connection: its own header"
    );
    for (port, version) in [(9000, "v1"), (9001, "v2")] {
        let seen = tcp_exchange(&topology, port, "ping", "1");
        let name = if port == 9000 { "tcp1" } else { "tcp2" };
        assert!(
            seen.contains(&format!("{name}:proxy={CLIENT_V4}:"))
                && seen.contains(&format!(" {GATEWAY_V4}:{port}\n{name}:ping")),
            "{version}: {seen}\n{}",
            daemon.log()
        );
    }
}

#[test]
fn a_tcp_route_tunnels_through_a_connect_proxy_and_a_refusal_closes_the_client() {
    require_root();
    let topology = topology();
    let _echo = backend_with(
        &topology,
        "echo",
        &format!("{BACKEND_V4}:7000"),
        &["--echo"],
    );
    let _proxy = backend_with(
        &topology,
        "proxy",
        &format!("{BACKEND_V4}:3128"),
        &["--connect-proxy"],
    );
    let _refusing = backend_with(
        &topology,
        "refusing",
        &format!("{BACKEND_V4}:3129"),
        &["--connect-proxy", "--status", "403"],
    );
    let scratch = Scratch::new();
    let tunnel = format!("    tunnel: {{targetHost: {BACKEND_V4}, targetPort: 7000}}\n");
    let more = rule("tcp1", &tunnel) + &rule("tcp2", &tunnel);
    let daemon = start(&topology, &scratch, &l4_config(8080, 3128, 3129, &more));
    // Only the proxy's CONNECT reaches the echo backend's port: the bytes
    // coming back prove the tunnel.
    let seen = tcp_exchange(&topology, 9000, "ping", "1");
    assert!(seen.starts_with("echo:ping"), "{seen}\n{}", daemon.log());
    // The refusing proxy: the client's connection is closed with nothing
    // (a reset when the unread `ping` is still queued), well before the
    // 3 s the client waits (`timeout` exits 124).
    let refused = tcp_exchange(&topology, 9001, "ping", "3");
    assert!(
        !refused.contains("[exit 124]") && !refused.contains("echo:"),
        "{refused}"
    );
    // The access log reaches stdout within a second.
    std::thread::sleep(Duration::from_millis(1300));
    let log = daemon.log();
    assert!(
        log.contains("tunnel through") && log.contains("refused with 403 Forbidden"),
        "{log}"
    );
    assert!(log.contains("\"- - -\" 0 UF "), "{log}");
}
