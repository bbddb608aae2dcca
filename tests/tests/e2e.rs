//! End to end: the daemon in one namespace with XDP on its veth, curl in
//! another, exactly as a client on the network would see the gateway.
use std::{fs, time::Duration};

use gateway_tests::{
    backend::Backend,
    daemon::{ADMIN, CREDENTIALS, Daemon, EXAMPLE, run_to_completion, start_example, stat},
    netns::{CLIENT_V4, GATEWAY_V4, GATEWAY_V6, Topology},
    require_root,
};

const TEST_BACKEND: &str = env!("CARGO_BIN_EXE_test-backend");
const NO_LISTENER: &str = "xdp.reason.no_listener.packets";
const ALLOWED_PORT: &str = "xdp.reason.allowed_port.packets";
const LISTENER_80: &str = "xdp.listener.*_80_tcp.packets";

fn start(topology: &Topology) -> Daemon {
    start_example(topology, &[], None)
}

/// Response status line and headers (lower-cased names) of a curl request.
fn curl_head(topology: &Topology, args: &[&str]) -> (String, Vec<(String, String)>) {
    let mut argv = vec![
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--max-time",
        "5",
    ];
    argv.extend_from_slice(args);
    let out = topology.client(&argv);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default().trim().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn http_request_gets_the_exact_https_redirect() {
    require_root();
    let topology = Topology::new();
    let daemon = start(&topology);
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let (status, headers) = curl_head(
        &topology,
        &["--resolve", &resolve, "http://dataengine.com/x?y=1"],
    );
    assert_eq!(status, "HTTP/1.1 301 Moved Permanently", "{}", daemon.log());
    assert_eq!(
        header(&headers, "location"),
        Some("https://dataengine.com/x?y=1")
    );
    assert_eq!(header(&headers, "content-length"), Some("0"));
}

#[test]
fn redirect_works_over_ipv6_and_keeps_the_host_port() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let url = format!("http://[{GATEWAY_V6}]/a/b?c=d");
    let (status, headers) = curl_head(&topology, &["-H", "Host: www.dataengine.com:80", &url]);
    assert_eq!(status, "HTTP/1.1 301 Moved Permanently");
    assert_eq!(
        header(&headers, "location"),
        Some("https://www.dataengine.com:80/a/b?c=d")
    );
}

#[test]
fn h2c_prior_knowledge_gets_the_same_redirect() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let (status, headers) = curl_head(
        &topology,
        &[
            "--http2-prior-knowledge",
            "--resolve",
            &resolve,
            "http://dataengine.com/x?y=1",
        ],
    );
    assert_eq!(status, "HTTP/2 301");
    assert_eq!(
        header(&headers, "location"),
        Some("https://dataengine.com/x?y=1")
    );
}

#[test]
fn undeclared_host_gets_404_not_a_redirect() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let url = format!("http://{GATEWAY_V4}/");
    let (status, headers) = curl_head(&topology, &["-H", "Host: other.example", &url]);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(header(&headers, "location"), None);
}

#[test]
fn connect_to_unlisted_port_times_out_and_counts_a_drop() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let before = stat(&topology, NO_LISTENER);
    let url = format!("http://{GATEWAY_V4}:8081/");
    let out = topology.client(&["curl", "-sS", "--connect-timeout", "2", &url]);
    // curl exit 28 = timed out; 7 would mean the SYN reached the stack and was refused.
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stat(&topology, NO_LISTENER);
    assert!(
        after > before,
        "drop counter did not rise: {before} -> {after}"
    );
}

#[test]
fn listener_port_traffic_is_passed_and_counted() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let drops_before = stat(&topology, NO_LISTENER);
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    for _ in 0..3 {
        let (status, _) = curl_head(
            &topology,
            &["--resolve", &resolve, "http://dataengine.com/"],
        );
        assert_eq!(status, "HTTP/1.1 301 Moved Permanently");
    }
    assert!(
        stat(&topology, LISTENER_80) >= 3 * 3,
        "SYN, request and ACKs of three connections"
    );
    assert_eq!(
        stat(&topology, NO_LISTENER),
        drops_before,
        "no listener traffic was dropped"
    );
}

#[test]
fn ping_still_works_on_the_gateway_address() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let out = topology.client(&["ping", "-c", "1", "-W", "2", GATEWAY_V4]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn second_instance_on_the_same_interface_is_refused() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let config = std::env::temp_dir().join(format!("{}-second.yaml", topology.gateway_ns));
    let text = fs::read_to_string(EXAMPLE)
        .expect("example")
        .replace("number: 80", "number: 8082")
        .replace("number: 443", "number: 8443");
    fs::write(&config, text).expect("write config");
    let out = run_to_completion(
        &topology,
        &[
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--interface",
            &topology.gateway_if,
            "--address",
            GATEWAY_V4,
            "--admin-address",
            "127.0.0.1:15001",
            "--credentials-dir",
            CREDENTIALS,
        ],
        Duration::from_secs(20),
    );
    let _ = fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "already serves interface {}; stop it first",
            topology.gateway_if
        )),
        "{stderr}"
    );
}

#[test]
fn unknown_interface_is_one_clear_sentence() {
    require_root();
    let topology = Topology::new();
    let out = run_to_completion(
        &topology,
        &[
            "run",
            "--config",
            EXAMPLE,
            "--interface",
            "nosuch0",
            "--credentials-dir",
            CREDENTIALS,
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: no network interface named \"nosuch0\" (see `ip link`)"),
        "{stderr}"
    );
}

#[test]
fn sigterm_detaches_the_program_and_exits_cleanly() {
    require_root();
    let topology = Topology::new();
    let mut daemon = start(&topology);
    let attached = topology.gateway(&["ip", "link", "show", "dev", &topology.gateway_if]);
    assert!(
        String::from_utf8_lossy(&attached.stdout).contains("xdp"),
        "XDP not attached"
    );
    let status = daemon.stop().expect("daemon was running");
    assert!(status.success(), "exit status {status}:\n{}", daemon.log());
    let detached = topology.gateway(&["ip", "link", "show", "dev", &topology.gateway_if]);
    assert!(
        !String::from_utf8_lossy(&detached.stdout).contains("xdp"),
        "XDP still attached"
    );
    assert!(
        daemon.log().contains("XDP detached from"),
        "{}",
        daemon.log()
    );
}

#[test]
fn asterisk_form_gets_404_never_a_malformed_location() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let url = format!("http://{GATEWAY_V4}/");
    let (status, headers) = curl_head(
        &topology,
        &[
            "-X",
            "OPTIONS",
            "--request-target",
            "*",
            "-H",
            "Host: dataengine.com:8443",
            &url,
        ],
    );
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(header(&headers, "location"), None);
}

#[test]
fn admin_refuses_methods_other_than_get_and_head() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let out = topology.gateway(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &format!("http://{ADMIN}/stats"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
}

#[test]
fn an_address_not_on_the_interface_is_refused_naming_both() {
    require_root();
    let topology = Topology::new();
    let out = run_to_completion(
        &topology,
        &[
            "run",
            "--config",
            EXAMPLE,
            "--interface",
            &topology.gateway_if,
            "--address",
            "198.51.100.7",
            "--credentials-dir",
            CREDENTIALS,
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--address 198.51.100.7 is not an address of interface {}",
            topology.gateway_if
        )),
        "{stderr}"
    );
}

#[test]
fn the_ssh_port_reaches_the_host_unless_the_allow_list_is_none() {
    require_root();
    let topology = Topology::new();
    let url = format!("telnet://{GATEWAY_V4}:22");
    let connect = || topology.client(&["curl", "-sS", "--connect-timeout", "2", &url]);
    {
        let daemon = start(&topology);
        let before = stat(&topology, ALLOWED_PORT);
        let out = connect();
        // curl exit 7 = refused: nothing listens on 22 in the test namespace,
        // so the host's stack answered the SYN, which XDP let through.
        assert_eq!(
            out.status.code(),
            Some(7),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = stat(&topology, ALLOWED_PORT);
        assert!(after > before, "allowed-port counter: {before} -> {after}");
        assert!(
            daemon.log().contains("(--allow-port): 22"),
            "{}",
            daemon.log()
        );
        assert!(!daemon.log().contains("default route"), "{}", daemon.log());
    }
    // Make the gateway's veth the namespace's default route, then allow nothing.
    let route = topology.gateway(&["ip", "route", "add", "default", "via", CLIENT_V4]);
    assert!(route.status.success(), "{route:?}");
    let daemon = start_example(&topology, &["--allow-port", "none"], None);
    let out = connect();
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|line| line.contains("carries the host's default route"))
        .unwrap_or_else(|| panic!("no lock-out warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
}

#[test]
fn the_kernel_resets_an_unknown_host_when_asked_and_still_serves_known_ones() {
    require_root();
    let topology = Topology::new();
    let _daemon = start_example(&topology, &["--reset-unknown-hosts", "80"], None);
    let url = format!("http://{GATEWAY_V4}/");
    let started = std::time::Instant::now();
    let out = topology.client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-H",
        "Host: other.example",
        &url,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // curl 56: failure receiving data, here "Connection reset by peer":
    // the stack answered the client's retransmission with a reset.
    assert_eq!(out.status.code(), Some(56), "{stderr}");
    assert!(stderr.contains("reset"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "reset only after {:?}",
        started.elapsed()
    );
    assert_eq!(
        stat(&topology, "xdp.listener.*_80_tcp.unknown_host_resets"),
        1
    );
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let (status, _) = curl_head(
        &topology,
        &["--resolve", &resolve, "http://dataengine.com/"],
    );
    assert_eq!(status, "HTTP/1.1 301 Moved Permanently");
    assert_eq!(
        stat(&topology, "xdp.listener.*_80_tcp.unknown_host_resets"),
        1
    );
}

#[test]
fn listener_connections_are_steered_to_the_proxy_which_binds_no_listener_port() {
    require_root();
    let topology = Topology::new();
    // Another server already on the listener's port, on every address:
    // binding per port would have failed; steering takes the gateway's
    // addresses from it, and leaves it loopback.
    let _squatter = Backend::start(
        &topology,
        &topology.gateway_ns,
        std::path::Path::new(TEST_BACKEND),
        &["--name", "squatter", "--listen", "0.0.0.0:80"],
        "127.0.0.1:80".parse().expect("addr"),
    );
    let daemon = start(&topology);
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let (status, _) = curl_head(
        &topology,
        &["--resolve", &resolve, "http://dataengine.com/"],
    );
    assert_eq!(
        status, "HTTP/1.1 301 Moved Permanently",
        "the proxy answered"
    );
    // The daemon's listening sockets: loopback ones only, none on a
    // listener's port.
    let sockets = topology.gateway(&["ss", "-Hltnp"]);
    let text = String::from_utf8_lossy(&sockets.stdout);
    let pid = format!("pid={},", daemon.pid());
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&pid)).collect();
    assert!(!ours.is_empty(), "{text}");
    for line in &ours {
        let local = line.split_whitespace().nth(3).unwrap_or_default();
        assert!(
            local.starts_with("127.0.0.1:") || local.starts_with("[::1]:"),
            "the daemon listens on {local}: {text}"
        );
        assert!(
            !local.ends_with(":80") && !local.ends_with(":443"),
            "the daemon bound a listener port: {text}"
        );
    }
}

#[test]
fn gateway_stats_reads_the_pinned_counters_and_reports_rates() {
    require_root();
    let topology = Topology::new();
    let _daemon = start(&topology);
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let watch = topology
        .exec(
            &topology.gateway_ns,
            &[
                &gateway_tests::daemon::gateway_bin().display().to_string(),
                "stats",
                "--interface",
                &topology.gateway_if,
                "--watch",
                "1",
                "--count",
                "2",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gateway stats --watch");
    for _ in 0..10 {
        let (status, _) = curl_head(
            &topology,
            &["--resolve", &resolve, "http://dataengine.com/"],
        );
        assert_eq!(status, "HTTP/1.1 301 Moved Permanently");
        std::thread::sleep(Duration::from_millis(150));
    }
    let out = watch
        .wait_with_output()
        .expect("gateway stats exits after 2 reports");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("xdp.listener.*_80_tcp.packets "))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(2)?
                .trim_end_matches("/s")
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(rates.len(), 2, "{text}");
    assert!(rates.iter().any(|r| *r > 0.0), "{text}");
}

#[test]
fn kernel_events_reach_the_log_only_with_ebpf_log() {
    require_root();
    for (flags, expect) in [(&["--ebpf-log", "debug"][..], true), (&[][..], false)] {
        let topology = Topology::new();
        let daemon = start_example(&topology, flags, None);
        let url = format!("http://{GATEWAY_V4}:8081/");
        let _ = topology.client(&["curl", "-sS", "--connect-timeout", "1", &url]);
        let _ = curl_head(
            &topology,
            &[
                "-H",
                "Host: other.example",
                &format!("http://{GATEWAY_V4}/"),
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        let log = daemon.log();
        for event in [
            "dropped: a connection attempt to a port no listener owns",
            "a host no server accepts",
        ] {
            assert_eq!(log.contains(event), expect, "{flags:?} {event}:\n{log}");
        }
    }
}

/// Sends `requests` on one connection from the client namespace, one write
/// each with a pause between, and returns everything the gateway answered
/// (Debian's Python, stdlib only).
fn one_connection(topology: &Topology, requests: &[&str]) -> String {
    let script = format!(
        "import socket, sys, time\n\
         s = socket.create_connection(('{GATEWAY_V4}', 80), timeout=5)\n\
         for r in sys.argv[1:]:\n\
         \x20   s.sendall(r.encode())\n\
         \x20   time.sleep(0.2)\n\
         s.shutdown(socket.SHUT_WR)\n\
         out = b''\n\
         while True:\n\
         \x20   d = s.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   out += d\n\
         sys.stdout.write(out.decode())\n"
    );
    let mut argv = vec!["/usr/bin/python3", "-c", &script];
    argv.extend_from_slice(requests);
    let out = topology.client(&argv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answers' header blocks, without their `date` lines.
fn heads_without_date(answers: &str) -> Vec<String> {
    answers
        .split("\r\n\r\n")
        .filter(|head| !head.is_empty())
        .map(|head| {
            head.lines()
                .filter(|line| !line.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[test]
fn redirects_answered_without_hyper_are_hypers_answers_byte_for_byte() {
    require_root();
    let topology = Topology::new();
    let daemon = start(&topology);
    // The first request is answered by the lean path; a forwarded scheme
    // (untrusted here, so still redirected) sends the second to hyper.
    let lean = "GET /x?y=1 HTTP/1.1\r\nHost: dataengine.com\r\n\r\n";
    let via_hyper =
        "GET /x?y=1 HTTP/1.1\r\nHost: dataengine.com\r\nX-Forwarded-Proto: http\r\n\r\n";
    let answers = one_connection(&topology, &[lean, via_hyper]);
    let heads = heads_without_date(&answers);
    assert_eq!(heads.len(), 2, "{answers}\n{}", daemon.log());
    assert_eq!(heads[0], heads[1], "{answers}");
    assert!(
        heads[0].starts_with("HTTP/1.1 301 Moved Permanently\n"),
        "{answers}"
    );
    assert_eq!(answers.matches("\r\ndate: ").count(), 2, "{answers}");
    // `Connection: close` from both: the same answer, and the close.
    let closing = "GET / HTTP/1.1\r\nHost: dataengine.com\r\nConnection: close\r\n\r\n";
    let lean_close = one_connection(&topology, &[closing]);
    let hyper_close = one_connection(
        &topology,
        &[
            "GET / HTTP/1.1\r\nHost: dataengine.com\r\nConnection: close\r\nX-Forwarded-Proto: http\r\n\r\n",
        ],
    );
    assert_eq!(
        heads_without_date(&lean_close),
        heads_without_date(&hyper_close)
    );
}

#[test]
fn pipelined_redirects_and_a_request_for_hyper_mid_connection_are_all_answered_in_order() {
    require_root();
    let topology = Topology::new();
    let daemon = start(&topology);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: dataengine.com\r\n\r\n");
    // Two pipelined in one write, then a request with a body (hyper's),
    // then a plain one again (hyper keeps the connection from then on).
    let pipelined = format!("{}{}", get("/one"), get("/two"));
    let with_body = "POST /three HTTP/1.1\r\nHost: dataengine.com\r\nContent-Length: 4\r\n\r\nbody";
    let answers = one_connection(&topology, &[&pipelined, with_body, &get("/four")]);
    let locations: Vec<&str> = answers
        .lines()
        .filter_map(|line| line.strip_prefix("location: "))
        .collect();
    assert_eq!(
        locations,
        [
            "https://dataengine.com/one",
            "https://dataengine.com/two",
            "https://dataengine.com/three",
            "https://dataengine.com/four"
        ],
        "{answers}\n{}",
        daemon.log()
    );
}
