//! The Kubernetes level: a real kube-apiserver and etcd in a test
//! namespace, the deployment's manifests applied to it, and requests made
//! with the gateway service account's own permissions.
use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, Daemon},
    kube::{ApiServer, GATEWAY_ACCOUNT, GATEWAY_NAMESPACE, Identity},
    netns::{BACKEND_V4, GATEWAY_V4, Topology},
    require_root, tls_clients,
};

fn manifest(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A server with the CRDs and the gateway's RBAC applied.
fn cluster(topology: &Topology) -> ApiServer {
    let server = ApiServer::start(topology, &topology.gateway_ns);
    server.apply(topology, &manifest("crds.yaml"));
    server.apply(topology, &manifest("rbac.yaml"));
    // CRDs are served a moment after they are created.
    let out = server.kubectl(
        topology,
        Identity::Admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd",
            "--all",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_manifests_apply_to_a_real_api_server_and_serve_every_istio_version() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    // Written at one version, read at each of the three Istio serves.
    server.apply(
        &topology,
        "apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
    );
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let out = server.kubectl(
            &topology,
            Identity::Gateway,
            &[
                "get",
                &format!("gateways.{version}.networking.istio.io"),
                "-A",
                "-o",
                "jsonpath={.items[*].spec.servers[0].port.number}",
            ],
            "",
        );
        assert!(out.status.success(), "{version}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "80", "{version}");
    }
    // The DaemonSet's own namespace and the dry run of everything shipped.
    for file in ["crds.yaml", "rbac.yaml", "daemonset.yaml"] {
        let out = server.kubectl(
            &topology,
            Identity::Admin,
            &["apply", "--dry-run=server", "-f", "-"],
            &manifest(file),
        );
        assert!(out.status.success(), "{file}: {}", text(&out));
    }
}

#[test]
fn the_gateway_account_reads_secrets_only_in_its_own_namespace() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    for namespace in [GATEWAY_NAMESPACE, "default"] {
        server.apply(
            &topology,
            &format!(
                "apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: {namespace}}}
type: kubernetes.io/tls
data: {{tls.crt: \"\", tls.key: \"\"}}
"
            ),
        );
    }
    let read = |namespace: &str| {
        server.kubectl(
            &topology,
            Identity::Gateway,
            &["get", "secret", "cert", "-n", namespace, "-o", "name"],
            "",
        )
    };
    let own = read(GATEWAY_NAMESPACE);
    assert!(own.status.success(), "{}", text(&own));
    let other = read("default");
    assert!(!other.status.success());
    let refusal = text(&other);
    assert!(
        refusal.contains("Forbidden")
            && refusal.contains(&format!(
                "system:serviceaccount:{GATEWAY_NAMESPACE}:{GATEWAY_ACCOUNT}"
            )),
        "{refusal}"
    );
    // Nor may it write what it only reads, but for the status.
    let status_only = server.kubectl(
        &topology,
        Identity::Gateway,
        &[
            "auth",
            "can-i",
            "update",
            "gateways.networking.istio.io",
            "-A",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&status_only.stdout).trim(), "no");
    let status = server.kubectl(
        &topology,
        Identity::Gateway,
        &[
            "auth",
            "can-i",
            "update",
            "gateways.networking.istio.io",
            "--subresource=status",
            "-A",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "yes");
}

/// The Gateway `istio-system/gw`: port 80 for `app.test`.
const APP_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*/app.test\"]
";

/// [`APP_GATEWAY`] and a VirtualService answering `body` for `app.test`,
/// in `namespace`.
fn routed(namespace: &str, body: &str) -> String {
    format!(
        "{APP_GATEWAY}---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: app, namespace: {namespace}}}
spec:
  hosts: [app.test]
  gateways: [{GATEWAY_NAMESPACE}/gw]
  http:
  - directResponse: {{status: 200, body: {{string: \"{body}\"}}}}
"
    )
}

/// The daemon in Kubernetes mode as the gateway's service account.
fn start_daemon(topology: &Topology, server: &ApiServer) -> Daemon {
    start_daemon_with(topology, server, &["--address", GATEWAY_V4])
}

/// The daemon in Kubernetes mode with `addressing` (its `--address`,
/// `--allow-port` and `--protect-node-addresses` flags).
fn start_daemon_with(topology: &Topology, server: &ApiServer, addressing: &[&str]) -> Daemon {
    let kubeconfig = server.kubeconfig(Identity::Gateway);
    let mut args = vec![
        "--kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap_or_default(),
        "--interface",
        &topology.gateway_if,
        "--admin-address",
        ADMIN,
    ];
    args.extend_from_slice(addressing);
    Daemon::start(topology, &args)
}

/// What `app.test` answers (status and body), or curl's complaint.
fn get(topology: &Topology) -> Result<String, String> {
    let resolve = format!("app.test:80:{GATEWAY_V4}");
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        "--resolve",
        &resolve,
        "-w",
        " %{http_code}",
        "http://app.test/",
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Requests in a loop until `app.test` answers `want`; every answer on the
/// way must be `was` or `want` (no failed request). Returns how long it took.
fn until_answer(topology: &Topology, daemon: &Daemon, was: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = get(topology);
        match answer.as_deref() {
            Ok(body) if body == want => return started.elapsed(),
            Ok(body) if body == was => {}
            _ => panic!(
                "a request failed on the way from {was:?} to {want:?}: {answer:?}\n{}",
                daemon.log()
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {was:?} after 10 s:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn resources_applied_with_kubectl_are_served_and_edits_and_deletes_follow_within_a_second() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));
    let daemon = start_daemon(&topology, &server);
    assert_eq!(get(&topology).as_deref(), Ok("one 200"), "{}", daemon.log());

    server.apply(&topology, &routed("default", "two"));
    let edited = until_answer(&topology, &daemon, "one 200", "two 200");
    assert!(edited < Duration::from_secs(1), "an edit took {edited:?}");

    let out = server.kubectl(
        &topology,
        Identity::Admin,
        &["delete", "virtualservice", "app", "-n", "default"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let deleted = until_answer(&topology, &daemon, "two 200", " 404");
    assert!(
        deleted < Duration::from_secs(1),
        "a delete took {deleted:?}"
    );
    println!("edit served after {edited:?}, delete after {deleted:?}");
}

#[test]
fn an_authorization_policy_applied_with_kubectl_is_enforced_and_its_delete_lifts_it() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    let deny = format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-all, namespace: {GATEWAY_NAMESPACE}}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]
"
    );
    // A rule on the method: the proxy's to decide (403). A rule on the
    // source alone would be the kernel's, and the SYN would be dropped.
    server.apply(&topology, &routed("default", "one"));
    server.apply(&topology, &deny);
    // Present before the daemon starts: its first plan enforces it.
    let daemon = start_daemon(&topology, &server);
    assert_eq!(
        get(&topology).as_deref(),
        Ok("RBAC: access denied 403"),
        "{}",
        daemon.log()
    );
    let out = server.kubectl(
        &topology,
        Identity::Admin,
        &[
            "delete",
            "authorizationpolicy",
            "deny-all",
            "-n",
            GATEWAY_NAMESPACE,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    until_answer(&topology, &daemon, "RBAC: access denied 403", "one 200");
    server.apply(&topology, &deny);
    until_answer(&topology, &daemon, "one 200", "RBAC: access denied 403");
}

#[test]
fn an_invalid_resource_is_skipped_and_the_others_are_served() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));
    // A second Gateway whose port is out of range: skipped, logged by name.
    server.apply(
        &topology,
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: broken, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 70000, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
    );
    let daemon = start_daemon(&topology, &server);
    assert_eq!(get(&topology).as_deref(), Ok("one 200"), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("kubernetes/Gateway/default/broken"), "{log}");
    // An edit of the good one still applies beside the broken one.
    server.apply(&topology, &routed("default", "two"));
    until_answer(&topology, &daemon, "one 200", "two 200");

    // Each resource says on itself what was made of it.
    let broken = status_until(
        &server,
        &topology,
        &daemon,
        "gateway",
        "default",
        "broken",
        |s| s["conditions"][0]["status"] == "False",
    );
    assert_eq!(broken["conditions"][0]["reason"], "Invalid");
    let message = broken["validationMessages"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("spec.servers[0].port.number:"),
        "{broken}"
    );
    assert_eq!(broken["validationMessages"][0]["level"], "ERROR");
    let generation =
        object(&server, &topology, "gateway", "default", "broken")["metadata"]["generation"]
            .clone();
    assert_eq!(broken["observedGeneration"], generation);
    let good = status_until(
        &server,
        &topology,
        &daemon,
        "virtualservice",
        "default",
        "app",
        |s| s["conditions"][0]["status"] == "True",
    );
    assert_eq!(good["conditions"][0]["reason"], "Accepted", "{good}");
    // The status writes are not configuration changes: no reload for them.
    thread::sleep(Duration::from_millis(500));
    let reloads_now = reloads(&daemon);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(reloads(&daemon), reloads_now, "{}", daemon.log());
}

/// The object as the admin reads it.
fn object(
    server: &ApiServer,
    topology: &Topology,
    kind: &str,
    namespace: &str,
    name: &str,
) -> serde_json::Value {
    let out = server.kubectl(
        topology,
        Identity::Admin,
        &["get", kind, name, "-n", namespace, "-o", "json"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The object's `status` once `done` says it is what the test waits for.
fn status_until(
    server: &ApiServer,
    topology: &Topology,
    daemon: &Daemon,
    kind: &str,
    namespace: &str,
    name: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = object(server, topology, kind, namespace, name)["status"].clone();
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the status of {kind} {namespace}/{name} is still {status}:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_last_plan_serves_while_the_api_server_is_away_and_changes_are_caught_up_after() {
    require_root();
    let topology = Topology::new();
    let mut server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));
    let daemon = start_daemon(&topology, &server);
    assert_eq!(get(&topology).as_deref(), Ok("one 200"), "{}", daemon.log());

    server.stop_apiserver();
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            get(&topology).as_deref(),
            Ok("one 200"),
            "while the API server is away:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(500));
    }
    server.start_apiserver(&topology);
    server.apply(&topology, &routed("default", "two"));
    // The watch comes back on its back-off (client-go's: 0.8 s doubling
    // to 30 s), relists, and the change is served.
    let started = Instant::now();
    loop {
        match get(&topology).as_deref() {
            Ok("two 200") => break,
            Ok("one 200") => {}
            other => panic!("{other:?}:\n{}", daemon.log()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the change made after the API server came back is not served:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "caught up {:?} after the API server came back",
        started.elapsed()
    );
}

#[test]
fn a_daemon_started_before_any_gateway_serves_the_first_one_applied() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    let daemon = start_daemon(&topology, &server);
    assert!(
        daemon
            .log()
            .contains("no Gateway in the cluster selects this instance yet"),
        "{}",
        daemon.log()
    );
    server.apply(&topology, &routed("default", "one"));
    let started = Instant::now();
    while get(&topology).as_deref() != Ok("one 200") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first Gateway is not served:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");

/// The second backend address, on the backend namespace's loopback (the
/// namespace answers ARP for it on its veth).
const BACKEND_B: &str = "198.51.100.3";

/// Two test-backends, `a` at [`BACKEND_V4`] and `b` at [`BACKEND_B`],
/// both on port 8080.
fn two_backends(topology: &mut Topology) -> Vec<Backend> {
    let ns = topology.add_backend_namespace().to_string();
    let out = topology
        .exec(
            &ns,
            &["ip", "addr", "add", &format!("{BACKEND_B}/32"), "dev", "lo"],
        )
        .output()
        .expect("ip");
    assert!(out.status.success(), "{}", text(&out));
    [("a", BACKEND_V4), ("b", BACKEND_B)]
        .into_iter()
        .map(|(name, ip)| {
            let listen = format!("{ip}:8080");
            Backend::start(
                topology,
                &ns,
                std::path::Path::new(TEST_BACKEND),
                &["--name", name, "--listen", &listen],
                listen.parse().expect("an address"),
            )
        })
        .collect()
}

/// Pods `web-a` (version v1) and `web-b` (version v2) that will never run
/// (there is no kubelet): only their labels are read. A Service `name`
/// whose port 80 (`http`) targets 8080, and its EndpointSlice, written as
/// the endpoint controller would, with `endpoints` (address, Pod).
fn service_yaml(name: &str, endpoints: &[(&str, &str)]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|(ip, pod)| {
            format!(
                "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {pod}, namespace: default}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{endpoints}"
    )
}

const PODS: &str = "apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: default, labels: {app: web, version: v1}}
spec: {automountServiceAccountToken: false, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: default, labels: {app: web, version: v2}}
spec: {automountServiceAccountToken: false, containers: [{name: c, image: none}]}
";

/// A Gateway for `app.test` whose VirtualService sends `/v2` to the
/// subset v2 of `web` and the rest to `default_to` (a Service name).
fn routes_to(default_to: &str) -> String {
    format!(
        "{APP_GATEWAY}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  subsets: [{{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.test]
  gateways: [{GATEWAY_NAMESPACE}/gw]
  http:
  - match: [{{uri: {{prefix: /v2}}}}]
    route: [{{destination: {{host: web, subset: v2}}}}]
  - route: [{{destination: {{host: {default_to}}}}}]
"
    )
}

/// Which backend answered `path` of `app.test` (`backend=NAME`), or why none did.
fn backend_of(topology: &Topology, path: &str) -> Result<String, String> {
    let resolve = format!("app.test:80:{GATEWAY_V4}");
    let url = format!("http://app.test{path}");
    let out = topology.client(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "2",
        "--resolve",
        &resolve,
        &url,
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    match body.lines().next().and_then(|l| l.strip_prefix("backend=")) {
        Some(name) if out.status.success() => Ok(name.to_string()),
        _ => Err(format!("{body}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// Requests until `path` has answered from `want` only, `settled` times in
/// a row; every answer on the way must come from a backend in `allowed`.
/// Returns how long until the first of that run.
fn until_only(
    topology: &Topology,
    daemon: &Daemon,
    path: &str,
    allowed: &[&str],
    want: &str,
) -> Duration {
    let started = Instant::now();
    let (mut run, mut run_began) = (0, started);
    while run < 10 {
        let answer = backend_of(topology, path);
        match answer.as_deref() {
            Ok(name) if name == want => {
                if run == 0 {
                    run_began = Instant::now();
                }
                run += 1;
            }
            Ok(name) if allowed.contains(&name) => run = 0,
            _ => panic!("{path}: a request failed: {answer:?}\n{}", daemon.log()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} still not only {want} after 10 s:\n{}",
            daemon.log()
        );
    }
    run_began - started
}

fn reloads(daemon: &Daemon) -> usize {
    daemon.log().matches("configuration reloaded").count()
}

#[test]
fn a_services_ready_endpoints_serve_its_routes_and_follow_its_slices_without_a_reload() {
    require_root();
    let mut topology = Topology::new();
    let _backends = two_backends(&mut topology);
    let server = cluster(&topology);
    server.apply(&topology, PODS);
    server.apply(
        &topology,
        &service_yaml("web", &[(BACKEND_V4, "web-a"), (BACKEND_B, "web-b")]),
    );
    server.apply(&topology, &routes_to("web"));
    let daemon = start_daemon(&topology, &server);

    // Both endpoints take requests; the subset only the Pod labelled v2.
    // Least request (Istio's default) draws at random between idle
    // endpoints: 20 requests all on one is a 1 in 500,000 chance.
    let mut seen: Vec<String> = (0..20)
        .map(|_| backend_of(&topology, "/").unwrap_or_else(|err| panic!("{err}\n{}", daemon.log())))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"], "{}", daemon.log());
    for _ in 0..4 {
        assert_eq!(backend_of(&topology, "/v2").as_deref(), Ok("b"));
    }

    // The first lists are in the first plan: they start no reload.
    assert_eq!(reloads(&daemon), 0, "{}", daemon.log());

    // An endpoint removed from the slice gets no new request, with no reload
    // and no failed request on the way.
    let before = reloads(&daemon);
    server.apply(&topology, &service_yaml("web", &[(BACKEND_V4, "web-a")]));
    let removed = until_only(&topology, &daemon, "/", &["a", "b"], "a");
    assert!(removed < Duration::from_secs(1), "took {removed:?}");
    assert_eq!(reloads(&daemon), before, "{}", daemon.log());
    // The subset has no endpoint left: 503, not another Pod's endpoint.
    let out = topology.client(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        "--resolve",
        &format!("app.test:80:{GATEWAY_V4}"),
        "http://app.test/v2",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "503",
        "{}",
        daemon.log()
    );

    // A route moved to a Service no route named before: its watch starts
    // and lists before the new plan is served, so no request fails.
    server.apply(&topology, &service_yaml("api", &[(BACKEND_B, "web-b")]));
    server.apply(&topology, &routes_to("api"));
    let moved = until_only(&topology, &daemon, "/", &["a"], "b");
    assert!(moved < Duration::from_secs(1), "took {moved:?}");
    println!("endpoint removal served after {removed:?}, a route to a new Service after {moved:?}");
}

/// A Gateway with an HTTPS server for `secure.test` (credential
/// `secure-cert`), one on 8443 for `broken.test` (credential `broken`), and
/// plaintext `app.test`; every host answers `served`.
const SECURE_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.test]
    tls: {mode: SIMPLE, credentialName: secure-cert}
  - port: {number: 8443, name: https-broken, protocol: HTTPS}
    hosts: [broken.test]
    tls: {mode: SIMPLE, credentialName: broken}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: istio-system}
spec:
  hosts: [secure.test, broken.test, app.test]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: served}}
";

/// The status of `istio-system/gw` once it holds `count` messages.
fn gateway_messages(
    server: &ApiServer,
    topology: &Topology,
    daemon: &Daemon,
    count: usize,
) -> serde_json::Value {
    status_until(
        server,
        topology,
        daemon,
        "gateway",
        GATEWAY_NAMESPACE,
        "gw",
        |s| {
            s["validationMessages"]
                .as_array()
                .is_some_and(|m| m.len() == count)
        },
    )
}

/// `kubectl create secret tls NAME` from files, as YAML to apply (so a
/// second one replaces the first: a rotation).
fn tls_secret(server: &ApiServer, topology: &Topology, name: &str, crt: &str, key: &str) -> String {
    let cert = format!("--cert={crt}");
    let key = format!("--key={key}");
    let out = server.kubectl(
        topology,
        Identity::Admin,
        &[
            "create",
            "secret",
            "tls",
            name,
            "-n",
            GATEWAY_NAMESPACE,
            &cert,
            &key,
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subject name of the certificate a new connection to `secure.test` gets.
fn new_connection(topology: &Topology, ca: &str) -> Result<String, String> {
    let out = topology.client(&[
        "/usr/bin/python3",
        "-c",
        tls_clients::NEW_CONNECTION,
        "secure.test",
        GATEWAY_V4,
        ca,
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Tries new connections until one gets `want`; returns how long it took.
fn until_certificate(topology: &Topology, daemon: &Daemon, ca: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        if new_connection(topology, ca).as_deref() == Ok(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no new connection got {want} in 15 s: {:?}\n{}",
            new_connection(topology, ca),
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_secret_created_after_its_gateway_turns_its_server_on_and_a_rotated_one_reaches_new_connections()
 {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    let pki = gateway_tests::pki::Pki::new();
    let (crt_a, key_a) = pki.issue("cert-a", "DNS:secure.test");
    let (crt_b, key_b) = pki.issue("cert-b", "DNS:secure.test");
    let ca = pki.path("ca.crt");
    server.apply(&topology, SECURE_GATEWAY);
    // A generic Secret (Istio's `cert`/`key`) whose key is not its
    // certificate's: only its server is off.
    let (cert, key) = (
        format!("--from-file=cert={crt_a}"),
        format!("--from-file=key={key_b}"),
    );
    let out = server.kubectl(
        &topology,
        Identity::Admin,
        &[
            "create",
            "secret",
            "generic",
            "broken",
            "-n",
            GATEWAY_NAMESPACE,
            &cert,
            &key,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let daemon = start_daemon(&topology, &server);

    // No Secret yet: that server is not served, the others are.
    let log = daemon.log();
    assert!(
        log.contains("server not served")
            && log.contains("Secret istio-system/secure-cert not found"),
        "{log}"
    );
    assert!(
        log.contains("private key secret://istio-system/broken/tls.key does not match"),
        "{log}"
    );
    assert_eq!(
        topology.http_body(GATEWAY_V4, 80, "app.test").as_deref(),
        Ok("served"),
        "{}",
        daemon.log()
    );
    assert!(new_connection(&topology, &ca).is_err());
    let said = gateway_messages(&server, &topology, &daemon, 2);
    let messages = said["validationMessages"].to_string();
    assert!(
        messages.contains("server not served")
            && messages.contains("Secret istio-system/secure-cert not found"),
        "{said}"
    );

    // The Secret created: the server turns on.
    server.apply(
        &topology,
        &tls_secret(&server, &topology, "secure-cert", &crt_a, &key_a),
    );
    let created = until_certificate(&topology, &daemon, &ca, "cert-a");
    // The status now names only the broken one.
    gateway_messages(&server, &topology, &daemon, 1);

    // A connection held across the rotation keeps its certificate and
    // works; new connections get the rotated one.
    let flag = pki.path("go");
    let held = topology
        .exec(
            &topology.client_ns,
            &[
                "timeout",
                "30",
                "/usr/bin/python3",
                "-c",
                tls_clients::KEEP_OPEN,
                "secure.test",
                GATEWAY_V4,
                &ca,
                &flag,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("held client");
    thread::sleep(Duration::from_millis(500));
    server.apply(
        &topology,
        &tls_secret(&server, &topology, "secure-cert", &crt_b, &key_b),
    );
    let rotated = until_certificate(&topology, &daemon, &ca, "cert-b");
    fs::write(&flag, "go").expect("flag");
    let out = held.wait_with_output().expect("held client");
    let held_text = String::from_utf8_lossy(&out.stdout);
    assert!(
        held_text.contains("held connection certificate: cert-a"),
        "{held_text}"
    );
    assert!(
        held_text.contains("second request on the held connection: served"),
        "{held_text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The broken one is still off, and said so on every reload.
    let resolve = format!("broken.test:8443:{GATEWAY_V4}");
    let broken = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "https://broken.test:8443/",
    ]);
    assert!(!broken.status.success(), "{}", text(&broken));
    println!("a created Secret served after {created:?}, a rotated one after {rotated:?}");
}

/// The gateway's VIP on its interface, beside the node's own address
/// ([`GATEWAY_V4`]).
const VIP: &str = "192.0.2.10";

/// A process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP echo on `port` of every address of the gateway's namespace: a
/// stand-in for the CNI's overlay (VXLAN's 4789).
const UDP_ECHO: &str = "import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
";

/// Sends one datagram to `ip:port` and prints the answer, or `no answer`.
const UDP_ASK: &str = "import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b'overlay', (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(2048)[0].decode())
except socket.timeout:
    print('no answer')
";

/// Node services: TCP echoes on 10250 (kubelet) and 10255, a UDP echo on 4789.
fn node_services(topology: &Topology) -> Vec<Running> {
    let mut running = Vec::new();
    for port in ["10250", "10255"] {
        let listen = format!("0.0.0.0:{port}");
        let child = topology
            .exec(
                &topology.gateway_ns,
                &[
                    TEST_BACKEND,
                    "--name",
                    "node",
                    "--listen",
                    &listen,
                    "--echo",
                ],
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("a TCP echo");
        running.push(Running(child));
    }
    let child = topology
        .exec(
            &topology.gateway_ns,
            &["/usr/bin/python3", "-c", UDP_ECHO, "4789"],
        )
        .spawn()
        .expect("a UDP echo");
    running.push(Running(child));
    thread::sleep(Duration::from_millis(500));
    running
}

/// Whether a TCP connection to `ip:port` from the client is accepted
/// within a second.
fn tcp_open(topology: &Topology, ip: &str, port: u16) -> bool {
    let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
    topology
        .client(&["timeout", "1", "bash", "-c", &probe])
        .status
        .success()
}

fn udp_answer(topology: &Topology, ip: &str, port: u16) -> String {
    let out = topology.client(&["/usr/bin/python3", "-c", UDP_ASK, ip, &port.to_string()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn on_a_node_the_gateway_protects_its_vips_and_leaves_kubelet_and_the_overlay_alone() {
    require_root();
    let topology = Topology::new();
    let vip = format!("{VIP}/24");
    let out = topology
        .exec(
            &topology.gateway_ns,
            &["ip", "addr", "add", &vip, "dev", &topology.gateway_if],
        )
        .output()
        .expect("ip");
    assert!(out.status.success(), "{}", text(&out));
    let _node = node_services(&topology);
    let server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));

    // The VIP only: the node's address is not the gateway's.
    let mut daemon = start_daemon_with(&topology, &server, &["--address", VIP]);
    assert_eq!(
        topology.http_body(VIP, 80, "app.test").as_deref(),
        Ok("one"),
        "{}",
        daemon.log()
    );
    assert!(
        tcp_open(&topology, GATEWAY_V4, 10250),
        "kubelet:\n{}",
        daemon.log()
    );
    assert!(tcp_open(&topology, GATEWAY_V4, 10255));
    assert_eq!(udp_answer(&topology, GATEWAY_V4, 4789), "overlay");
    // On the VIP, a port no listener owns is dropped.
    assert!(!tcp_open(&topology, VIP, 10250));
    assert_eq!(udp_answer(&topology, VIP, 4789), "no answer");
    daemon.stop();

    // The node's address protected too, when asked, with the allow-list
    // the DaemonSet fills: kubelet and the overlay pass, 10255 does not.
    let daemon = start_daemon_with(
        &topology,
        &server,
        &[
            "--address",
            VIP,
            "--protect-node-addresses",
            "--allow-port",
            "10250/tcp",
            "--allow-port",
            "4789/udp",
            "--allow-port",
            "30000-32767",
        ],
    );
    assert!(
        tcp_open(&topology, GATEWAY_V4, 10250),
        "kubelet:\n{}",
        daemon.log()
    );
    assert_eq!(udp_answer(&topology, GATEWAY_V4, 4789), "overlay");
    assert!(!tcp_open(&topology, GATEWAY_V4, 10255), "{}", daemon.log());
    assert_eq!(
        topology.http_body(VIP, 80, "app.test").as_deref(),
        Ok("one"),
        "{}",
        daemon.log()
    );
}

#[test]
fn one_replica_writes_status_and_another_takes_over_when_it_stops() {
    require_root();
    let mut topology = Topology::new();
    let second_if = {
        topology.add_backend_namespace();
        let out = topology.gateway(&["ip", "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .find(|name| name.starts_with("gb"))
            .expect("the backend-facing interface")
    };
    let server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));
    let mut first = start_daemon(&topology, &server);
    // A second replica (on the other interface of the namespace).
    let kubeconfig = server.kubeconfig(Identity::Gateway);
    let second = Daemon::start(
        &topology,
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap_or_default(),
            "--interface",
            &second_if,
            "--address",
            gateway_tests::netns::GATEWAY_TO_BACKEND_V4,
            "--admin-address",
            "127.0.0.1:15001",
        ],
    );
    let lease = |server: &ApiServer| {
        object(
            server,
            &topology,
            "lease",
            GATEWAY_NAMESPACE,
            "xdp-gateway-status",
        )["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let holder = lease(&server);
    assert!(
        holder.ends_with(&format!("/{}", first.pid())),
        "{holder}:\n{}",
        first.log()
    );
    assert!(
        !second.log().contains("now the status writer"),
        "{}",
        second.log()
    );

    // The writer stops: the other takes the Lease once it expires, and
    // writes the status of what changed meanwhile.
    first.stop();
    server.apply(
        &topology,
        &routed("default", "two").replace(
            "directResponse: {status: 200",
            "directResponse: {status: 700",
        ),
    );
    let started = Instant::now();
    while !lease(&server).ends_with(&format!("/{}", second.pid())) {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the Lease was not taken over:\n{}",
            second.log()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let taken_over = started.elapsed();
    let status = status_until(
        &server,
        &topology,
        &second,
        "virtualservice",
        "default",
        "app",
        |s| s["conditions"][0]["status"] == "False",
    );
    assert!(status.to_string().contains("700"), "{status}");
    println!("the Lease was taken over {taken_over:?} after its holder stopped");
}

/// The gateway's own Service, selecting its labels, mapping port 80 to `target`.
fn gateway_service(target: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: {GATEWAY_NAMESPACE}}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {target}}}]
"
    )
}

/// What `app.test` answers on `port` of the gateway, or why not.
fn get_on(topology: &Topology, port: u16) -> Result<String, String> {
    topology.http_body(GATEWAY_V4, port, "app.test")
}

#[test]
fn a_server_on_the_gateway_services_port_listens_on_its_target_port() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    server.apply(&topology, &gateway_service(8080));
    server.apply(&topology, &routed("default", "one"));
    let daemon = start_daemon(&topology, &server);
    assert_eq!(
        get_on(&topology, 8080).as_deref(),
        Ok("one"),
        "{}",
        daemon.log()
    );
    assert!(get_on(&topology, 80).is_err(), "{}", daemon.log());
    // The Service's targetPort moves: so does the listener.
    server.apply(&topology, &gateway_service(9080));
    let started = Instant::now();
    while get_on(&topology, 9080).as_deref() != Ok("one") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not moved to 9080:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(get_on(&topology, 8080).is_err());
}

#[test]
fn a_restarted_daemon_serves_within_two_seconds() {
    require_root();
    let topology = Topology::new();
    let server = cluster(&topology);
    server.apply(&topology, &routed("default", "one"));
    let mut daemon = start_daemon(&topology, &server);
    assert_eq!(get(&topology).as_deref(), Ok("one 200"), "{}", daemon.log());
    daemon.stop();
    // From the new process's start (connect, discover, list every kind,
    // build, attach) to its first request served.
    let started = Instant::now();
    let daemon = start_daemon(&topology, &server);
    while get(&topology).as_deref() != Ok("one 200") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not served after a restart:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let served = started.elapsed();
    assert!(
        served < Duration::from_secs(2),
        "served {served:?} after the restart began"
    );
    println!("a restarted daemon served {served:?} after it was started");
}
