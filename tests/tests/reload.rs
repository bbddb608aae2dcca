//! Live reload: a running daemon takes an edited configuration (file
//! change or SIGHUP, or `gateway reload`) without a restart, a new socket
//! or a failed request, and refuses an invalid one while the old one keeps
//! serving.
use std::{
    fs,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use gateway_tests::{
    daemon::{Daemon, gateway_bin, stat},
    hostile::Scratch,
    netns::{GATEWAY_V4, Topology},
    require_root, tls_clients,
};

/// An HTTP server on `port` for `hosts`, answering each with its name.
fn gateway(servers: &[(u32, &str)]) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n",
    );
    for (index, (port, host)) in servers.iter().enumerate() {
        yaml.push_str(&format!(
            "  - port: {{number: {port}, name: http-{index}, protocol: HTTP}}\n    hosts: [\"{host}\"]\n"
        ));
    }
    for (index, (_, host)) in servers.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{index}, namespace: istio-system}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: \"{host}\"}}}}\n"
        ));
    }
    yaml
}

/// Replaces `path` the way editors and config managers do: write a new
/// file, rename it over the old one.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    fs::write(&staged, text).expect("write config");
    fs::rename(&staged, path).expect("rename config");
}

fn start(topology: &Topology, config: &Path) -> Daemon {
    start_with(topology, config, &[])
}

/// [`start`] with `extra` flags.
fn start_with(topology: &Topology, config: &Path, extra: &[&str]) -> Daemon {
    gateway_tests::daemon::start_on(topology, &config.display().to_string(), extra)
}

/// The body `host` gets on `port`, or curl's complaint.
fn get(topology: &Topology, host: &str, port: u16) -> Result<String, String> {
    topology.http_body(GATEWAY_V4, port, host)
}

/// Waits until `host` on `port` answers with its name; panics after 10 s.
fn wait_served(topology: &Topology, daemon: &Daemon, host: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(topology, host, port).as_deref() != Ok(host) {
        assert!(
            Instant::now() < deadline,
            "{host}:{port} never served: {}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon serving `a.example` on port 80 from a config file in `scratch`.
fn serving_a_example(topology: &Topology, scratch: &Scratch) -> (std::path::PathBuf, Daemon) {
    let config = scratch.path.join("gateway.yaml");
    fs::write(&config, gateway(&[(80, "a.example")])).expect("write config");
    let daemon = start(topology, &config);
    wait_served(topology, &daemon, "a.example", 80);
    (config, daemon)
}

/// `gateway reload` for the topology's interface; fails the test if it fails.
fn gateway_reload(topology: &Topology) {
    let out = topology
        .exec(
            &topology.gateway_ns,
            &[
                &gateway_bin().display().to_string(),
                "reload",
                "--interface",
                &topology.gateway_if,
            ],
        )
        .output()
        .expect("gateway reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits up to 10 s for the daemon to count an applied reload.
fn wait_reloaded(topology: &Topology, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(topology, "config.reloads") == 0 {
        assert!(Instant::now() < deadline, "no reload: {}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to 15 s for the daemon to count a refused reload.
fn wait_reload_refused(topology: &Topology, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while stat(topology, "config.reload_failures") == 0 {
        assert!(
            Instant::now() < deadline,
            "no reload attempted: {}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon's listening sockets, as `ss` prints their local addresses.
fn listening(topology: &Topology, daemon: &Daemon) -> Vec<String> {
    let out = topology.gateway(&["ss", "-Hltnp"]);
    let pid = format!("pid={},", daemon.pid());
    let mut sockets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&pid))
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
        .collect();
    sockets.sort();
    sockets
}

/// A client in its own process asking for `host` on port 80 in a loop
/// (bounded: 600 requests or 60 s), one status code per line.
struct Loop {
    child: Child,
}

impl Loop {
    fn start(topology: &Topology, host: &str) -> Self {
        let script = format!(
            "end=$((SECONDS+60)); for i in $(seq 1 600); do [ $SECONDS -ge $end ] && break; \
             curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 3 --resolve {host}:80:{GATEWAY_V4} http://{host}/; done"
        );
        let child = topology
            .exec(&topology.client_ns, &["bash", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client loop");
        Self { child }
    }

    /// Stops the loop and returns the status codes it saw.
    fn finish(mut self) -> Vec<String> {
        use std::io::Read as _;
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut text);
        }
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_edited_configuration_adds_a_listener_and_a_host_without_a_restart_or_a_failed_request() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (config, daemon) = serving_a_example(&topology, &scratch);
    assert!(
        get(&topology, "b.example", 79).is_err(),
        "no listener on 79 yet"
    );
    let sockets_before = listening(&topology, &daemon);
    let port_80_before = stat(&topology, "xdp.listener.*_80_tcp.packets");

    let client = Loop::start(&topology, "a.example");
    thread::sleep(Duration::from_millis(1500));
    // Port 79 sorts before 80: the new listener must not take port 80's
    // counter slot.
    replace(
        &config,
        &gateway(&[(80, "a.example"), (80, "c.example"), (79, "b.example")]),
    );
    wait_served(&topology, &daemon, "b.example", 79);
    wait_served(&topology, &daemon, "c.example", 80);
    thread::sleep(Duration::from_millis(500));
    let codes = client.finish();

    assert!(codes.len() >= 5, "the client loop ran: {codes:?}");
    assert!(
        codes.iter().all(|code| code == "200"),
        "every request through the change was served: {codes:?}\n{}",
        daemon.log()
    );
    assert_eq!(
        listening(&topology, &daemon),
        sockets_before,
        "no new socket"
    );
    assert_eq!(stat(&topology, "config.reloads"), 1, "{}", daemon.log());
    assert_eq!(stat(&topology, "config.reload_failures"), 0);
    assert!(
        stat(&topology, "xdp.listener.*_79_tcp.packets") > 0,
        "the kernel counts the new listener"
    );
    assert!(
        // Each request sends the listener at least a SYN, an ACK, the
        // request and a FIN: counted in one slot before and after.
        stat(&topology, "xdp.listener.*_80_tcp.packets") >= port_80_before + 4 * codes.len() as u64,
        "port 80 kept its counters"
    );
}

#[test]
fn an_invalid_configuration_changes_nothing_and_is_counted() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (config, daemon) = serving_a_example(&topology, &scratch);
    // A port number Istio refuses.
    replace(
        &config,
        &gateway(&[(80, "a.example"), (70000, "b.example")]),
    );
    wait_reload_refused(&topology, &daemon);
    assert_eq!(get(&topology, "a.example", 80).as_deref(), Ok("a.example"));
    assert_eq!(stat(&topology, "config.reloads"), 0);
    let log = daemon.log();
    assert!(
        log.contains("gateway.yaml:"),
        "errors in the check format: {log}"
    );
    assert!(
        log.contains("configuration reload refused (1 error(s) in the configuration); still serving the previous configuration"),
        "{log}"
    );
}

#[test]
fn a_configuration_over_a_kernel_limit_is_refused_whole_and_changes_nothing() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (config, daemon) = serving_a_example(&topology, &scratch);
    // A new listener on 8081, and 16,385 hosts on port 80: one more than
    // the kernel's host table holds.
    let mut yaml = gateway(&[(80, "a.example"), (8081, "b.example")]);
    let hosts: Vec<String> = (0..16_384).map(|i| format!("\"h{i}.example\"")).collect();
    yaml = yaml.replacen(
        "hosts: [\"a.example\"]",
        &format!("hosts: [\"a.example\", {}]", hosts.join(", ")),
        1,
    );
    // `check` and `compile` refuse it, naming the limit and the Gateway.
    let staged = scratch.path.join("big.yaml");
    fs::write(&staged, &yaml).expect("write");
    for command in ["check", "compile"] {
        let out = std::process::Command::new(gateway_bin())
            .arg(command)
            .arg(&staged)
            .output()
            .expect("run gateway");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{command} accepted it: {said}");
        assert!(
            said.contains("16386 server hosts exceed the kernel host table's 16384")
                && said.contains(&format!(
                    "port 80 (16385 hosts, from Gateway istio-system/gw at {}:1)",
                    staged.display()
                )),
            "{command}: {said}"
        );
    }
    replace(&config, &yaml);
    wait_reload_refused(&topology, &daemon);
    // Nothing of it went live: no listener on 8081, the old one serves.
    assert!(
        get(&topology, "b.example", 8081).is_err(),
        "the refused listener serves: {}",
        daemon.log()
    );
    assert_eq!(get(&topology, "a.example", 80).as_deref(), Ok("a.example"));
    assert_eq!(stat(&topology, "config.reloads"), 0);
    assert!(
        daemon.log().contains("16386 server hosts exceed"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_half_written_file_that_empties_a_listener_is_not_applied_until_asked() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (config, daemon) = serving_a_example(&topology, &scratch);
    // A copy that stalls at a document boundary: the Gateway arrived, its
    // VirtualService not yet. Written in place, not renamed.
    let whole = gateway(&[(80, "a.example")]);
    let cut = whole.split("---\n").next().expect("the Gateway document");
    fs::write(&config, cut).expect("write the first part");
    wait_reload_refused(&topology, &daemon);
    assert_eq!(get(&topology, "a.example", 80).as_deref(), Ok("a.example"));
    assert_eq!(stat(&topology, "config.reloads"), 0);
    assert!(
        daemon
            .log()
            .contains("listener *:80 is still declared but would answer nothing"),
        "{}",
        daemon.log()
    );
    // The operator asks for it: applied, the host has no route any more.
    gateway_reload(&topology);
    wait_reloaded(&topology, &daemon);
    // No VirtualService: 404 with an empty body.
    assert_eq!(get(&topology, "a.example", 80).as_deref(), Ok(""));
}

#[test]
fn a_change_is_applied_only_once_the_files_have_settled() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (config, daemon) = serving_a_example(&topology, &scratch);
    // A copy writing a second server in pieces about 1.6 s apart: each
    // piece is seen by two polls a second apart (which used to be enough
    // to apply it), but none stays for the 2 s settle time.
    let full = gateway(&[(80, "a.example"), (80, "b.example")]);
    let written = Instant::now();
    for end in [
        full.len() / 4,
        full.len() / 2,
        3 * full.len() / 4,
        full.len(),
    ] {
        fs::write(&config, &full[..end]).expect("write part");
        assert_eq!(
            stat(&topology, "config.reload_failures"),
            0,
            "{}",
            daemon.log()
        );
        assert_eq!(stat(&topology, "config.reloads"), 0, "{}", daemon.log());
        thread::sleep(Duration::from_millis(1_300));
    }
    wait_served(&topology, &daemon, "b.example", 80);
    let took = written.elapsed();
    assert_eq!(stat(&topology, "config.reloads"), 1);
    assert_eq!(stat(&topology, "config.reload_failures"), 0);
    eprintln!("written in 4 pieces, served {took:?} after the first");
}

#[test]
fn a_long_compile_runs_beside_the_proxy_not_on_its_only_worker() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let config = scratch.path.join("gateway.yaml");
    fs::write(&config, gateway(&[(80, "a.example")])).expect("write config");
    let daemon = start_with(&topology, &config, &["--workers", "1"]);
    wait_served(&topology, &daemon, "a.example", 80);
    // 16,000 hosts, each with its own VirtualService: a compile of about
    // two seconds in the debug build.
    let mut servers = vec![(80, "a.example".to_string())];
    servers.extend((0..16_000).map(|i| (80, format!("h{i}.example"))));
    let servers: Vec<(u32, &str)> = servers.iter().map(|(p, h)| (*p, h.as_str())).collect();
    replace(&config, &gateway(&servers));
    // Redirect-free round trips on new connections while it compiles.
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stat(&topology, "config.reloads") == 0 {
        assert!(
            Instant::now() < deadline,
            "never reloaded: {}",
            daemon.log()
        );
        let addr = std::net::SocketAddr::new(GATEWAY_V4.parse().expect("address"), 80);
        let took = gateway_tests::hostile::in_netns(&topology.client_ns, move || {
            gateway_tests::hostile::fresh_round_trip(addr, "a.example")
        })
        .expect("served during the reload");
        slowest = slowest.max(took);
    }
    // The reload's log line, once the log has caught up.
    let compiled = |log: &str| -> Option<f64> {
        log.lines().find_map(|line| {
            let rest = line.split("read and compiled in ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
    };
    let logged = Instant::now();
    let compiled_ms = loop {
        if let Some(ms) = compiled(&daemon.log()) {
            break ms;
        }
        assert!(
            logged.elapsed() < Duration::from_secs(3),
            "no reload line: {}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    eprintln!("reload compiled in {compiled_ms} ms; slowest request meanwhile {slowest:?}");
    // Requests wait at most for the map writes (the one step left on the
    // main loop: about a quarter second for 16,000 hosts in the debug
    // build), never for the compile.
    assert!(
        compiled_ms > 800.0,
        "the compile was too quick to tell ({compiled_ms} ms)"
    );
    assert!(
        slowest.as_secs_f64() * 1000.0 < compiled_ms / 4.0,
        "a request waited {slowest:?} while the reload compiled for {compiled_ms} ms"
    );
}

#[test]
fn gateway_reload_and_sighup_reread_the_configuration() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let (_config, daemon) = serving_a_example(&topology, &scratch);
    gateway_reload(&topology);
    wait_reloaded(&topology, &daemon);
    assert!(daemon.log().contains("SIGHUP: reloading the configuration"));
    // With no daemon on the interface, one clear sentence.
    let out = topology
        .exec(
            &topology.gateway_ns,
            &[
                &gateway_bin().display().to_string(),
                "reload",
                "--interface",
                "nosuch0",
            ],
        )
        .output()
        .expect("gateway reload");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no gateway is running on interface nosuch0"),
        "{stderr}"
    );
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_and_held_ones_stay_up() {
    require_root();
    let topology = Topology::new();
    let scratch = Scratch::new();
    let pki = gateway_tests::pki::Pki::new();
    let (crt_a, key_a) = pki.issue("cert-a", "DNS:tls.example");
    let (crt_b, key_b) = pki.issue("cert-b", "DNS:tls.example");
    let (crt, key) = (scratch.path.join("tls.crt"), scratch.path.join("tls.key"));
    fs::copy(&crt_a, &crt).expect("crt");
    fs::copy(&key_a, &key).expect("key");
    let config = scratch.path.join("gateway.yaml");
    fs::write(
        &config,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [tls.example]\n    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: istio-system}}\nspec:\n  hosts: [tls.example]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: served}}}}\n",
            crt.display(),
            key.display()
        ),
    )
    .expect("config");
    let daemon = start(&topology, &config);
    let ca = pki.path("ca.crt");
    let flag = scratch.path.join("go");
    let python = "/usr/bin/python3";
    let held = topology
        .exec(
            &topology.client_ns,
            &[
                "timeout",
                "30",
                python,
                "-c",
                tls_clients::KEEP_OPEN,
                "tls.example",
                GATEWAY_V4,
                &ca,
            ],
        )
        .arg(&flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("held client");
    thread::sleep(Duration::from_millis(500));
    // Renew: new files renamed over the old ones, as cert-manager does.
    let staged = scratch.path.join("staged");
    fs::copy(&crt_b, &staged).expect("stage crt");
    fs::rename(&staged, &crt).expect("crt");
    fs::copy(&key_b, &staged).expect("stage key");
    fs::rename(&staged, &key).expect("key");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&topology, "config.reloads") == 0 {
        assert!(Instant::now() < deadline, "no reload: {}", daemon.log());
    }
    let fresh = topology.client(&[
        python,
        "-c",
        tls_clients::NEW_CONNECTION,
        "tls.example",
        GATEWAY_V4,
        &ca,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&fresh.stdout).trim(),
        "cert-b",
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    fs::write(&flag, "go").expect("flag");
    let out = held.wait_with_output().expect("held client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("held connection certificate: cert-a"),
        "{text}"
    );
    assert!(
        text.contains("second request on the held connection: served"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
