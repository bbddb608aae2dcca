//! Hostile input must never take the gateway down: each test is an attack
//! or a careless operator's input that once exhausted memory, aborted the
//! process, hung it, or denied service, with the bound it must now keep.
//! Run one at a time (`--test-threads 1`): the load tests measure latency
//! and CPU time on a two-core machine.
use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::symlink,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use gateway_tests::{
    daemon::{ADMIN, CREDENTIALS, Daemon, EXAMPLE, gateway_bin, start_example, stat},
    hostile::{
        H2_PARTIAL_PREFACE, H2_PREFACE_AND_SETTINGS, Scratch, closed_by_peer, cpu_time,
        fresh_round_trip, in_netns, keep_alive_round_trips, open_connections, quantile,
        raise_open_file_limit, rss_kib, run_bounded,
    },
    netns::{GATEWAY_V4, Topology},
    require_root,
};

/// The example daemon with the access log off: these tests bound the
/// daemon's own diagnostics, and the access log is one line per request by
/// design.
fn start(topology: &Topology, extra: &[&str], open_files: Option<u64>) -> Daemon {
    let mut args = vec!["--access-log", "off"];
    args.extend_from_slice(extra);
    start_example(topology, &args, open_files)
}

const HOST: &str = "dataengine.com";

// ---------------------------------------------------------------- config

/// `gateway check PATH...` under a 2 GiB address-space cap and a 20 s kill.
fn check(paths: &[&std::path::Path]) -> gateway_tests::hostile::Bounded {
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("check")
        .args(paths)
        .args(["--credentials-dir", CREDENTIALS]);
    run_bounded(&mut cmd, 2 << 30, Duration::from_secs(20))
}

/// The 7-level, 9-alias bomb: 307 bytes that once took 8.3 GB and 22 s.
fn alias_bomb() -> String {
    let mut text = String::from("a: &a [1,1,1,1,1,1,1,1,1]\n");
    let mut previous = 'a';
    for name in "bcdefgh".chars() {
        let aliases = vec![format!("*{previous}"); 9].join(",");
        text += &format!("{name}: &{name} [{aliases}]\n");
        previous = name;
    }
    text
}

#[test]
fn yaml_alias_bomb_fails_fast_in_little_memory() {
    let scratch = Scratch::new();
    let bomb = scratch.path.join("bomb.yaml");
    fs::write(&bomb, alias_bomb()).expect("write bomb");
    let out = check(&[&bomb]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("excessive aliasing"), "{}", out.stdout);
    // The targets: under 100 ms and 50 MB (CPU time, so a busy CI
    // machine does not make it flaky).
    assert!(out.cpu < Duration::from_millis(100), "{:?}", out.cpu);
    assert!(out.max_rss_kib < 50 * 1024, "{} KiB", out.max_rss_kib);
}

#[test]
fn deep_block_nesting_is_a_positioned_error_not_a_crash() {
    let scratch = Scratch::new();
    for (name, text) in [
        ("seq.yaml", format!("{}x\n", "- ".repeat(20_000))),
        ("map.yaml", format!("{}x\n", "? ".repeat(10_000))),
        ("flow.yaml", format!("{}\n", "[".repeat(50_000))),
    ] {
        let path = scratch.path.join(name);
        fs::write(&path, text).expect("write");
        let out = check(&[&path]);
        assert_eq!(out.code, Some(1), "{name}: {out:?}");
        assert!(
            out.stdout.contains(&format!("{}:1:", path.display())),
            "{name}: {}",
            out.stdout
        );
        assert!(
            out.max_rss_kib < 50 * 1024,
            "{name}: {} KiB",
            out.max_rss_kib
        );
    }
}

#[test]
fn symlink_loops_end_and_read_each_file_once() {
    let scratch = Scratch::new();
    fs::copy(EXAMPLE, scratch.path.join("gw.yaml")).expect("copy example");
    symlink(".", scratch.path.join("s1")).expect("symlink");
    symlink(".", scratch.path.join("s2")).expect("symlink");
    symlink(".", scratch.path.join("self")).expect("symlink");
    let out = check(&[&scratch.path]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("duplicate"), "{}", out.stdout);
    assert!(out.wall < Duration::from_secs(5), "{:?}", out.wall);
}

#[test]
fn fifos_and_devices_are_reported_never_read() {
    let scratch = Scratch::new();
    fs::copy(EXAMPLE, scratch.path.join("gw.yaml")).expect("copy example");
    let fifo = scratch.path.join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    symlink("/dev/zero", scratch.path.join("zero.yaml")).expect("symlink");
    let out = check(&[&scratch.path]);
    assert_eq!(out.code, Some(0), "warnings only: {out:?}");
    assert!(
        out.stdout
            .contains("pipe.yaml: warning: not a regular file (a FIFO)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("zero.yaml: warning: not a regular file (a character device)"),
        "{}",
        out.stdout
    );
    // Named directly, they are errors, and still never block or read forever.
    let out = check(&[&fifo, std::path::Path::new("/dev/zero")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("/dev/zero: error: not a regular file"),
        "{}",
        out.stdout
    );
    assert!(out.wall < Duration::from_secs(5), "{:?}", out.wall);
    assert!(out.max_rss_kib < 50 * 1024, "{} KiB", out.max_rss_kib);
}

// ---------------------------------------------------------------- network

fn gateway_addr(port: u16) -> SocketAddr {
    SocketAddr::new(GATEWAY_V4.parse().expect("address"), port)
}

/// One redirect on a new connection from the client namespace; its latency,
/// or the error.
fn probe(topology: &Topology) -> std::io::Result<Duration> {
    in_netns(&topology.client_ns, || {
        fresh_round_trip(gateway_addr(80), HOST)
    })
}

#[test]
fn silent_connections_are_closed_by_the_deadline_while_service_goes_on() {
    require_root();
    raise_open_file_limit();
    let topology = Topology::new();
    // One client opens them all: its own cap (an eighth of the
    // connection cap) is not what this test is about.
    let daemon = start(
        &topology,
        &[
            "--request-head-timeout",
            "3s",
            "--max-connections-per-source",
            "100000",
        ],
        None,
    );
    // Idle after some normal traffic, so one-time allocations are counted in.
    for _ in 0..20 {
        probe(&topology).expect("redirect");
    }
    let rss_idle = rss_kib(daemon.pid());
    let opened = Instant::now();
    // 2,000 connections that never complete a request head: silent ones,
    // half an HTTP/2 preface, and a full preface with SETTINGS.
    let held = in_netns(&topology.client_ns, || {
        let addr = gateway_addr(80);
        let mut streams = open_connections(addr, 1_400, b"");
        streams.extend(open_connections(addr, 300, H2_PARTIAL_PREFACE));
        streams.extend(open_connections(addr, 300, H2_PREFACE_AND_SETTINGS));
        streams
    });
    assert_eq!(held.len(), 2_000, "the gateway refused connections");
    let rss_loaded = rss_kib(daemon.pid());
    // A normal client is answered within 1 s throughout.
    while opened.elapsed() < Duration::from_secs(3) {
        let took = probe(&topology)
            .unwrap_or_else(|err| panic!("normal request failed: {err}\n{}", daemon.log()));
        assert!(
            took < Duration::from_secs(1),
            "normal request took {took:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Every one of them is closed by the gateway soon after the deadline.
    // The silent ones reach the proxy only after the kernel's deferred
    // accept gives up waiting for their data (at the SYN-ACK sent again
    // after about 1 s, or 3 s for a client that did not answer the first
    // time), and the deadline starts then.
    thread::sleep(
        (opened + Duration::from_millis(7_500)).saturating_duration_since(Instant::now()),
    );
    let open = held.iter().filter(|s| !closed_by_peer(s)).count();
    assert_eq!(open, 0, "connections still open past the deadline");
    assert!(stat(&topology, "proxy.connections.closed_head_timeout") >= 2_000);
    assert_eq!(stat(&topology, "proxy.connections.active"), 0);
    drop(held);
    // Memory returns near its idle level once they are gone (the daemon
    // checks for ended bursts every 2 s; the last of the silent ones, held
    // by the kernel's deferred accept, may end just before a check). A
    // release build comes back within 1-3 MB of idle; the debug build the
    // suite runs keeps up to about 6 MB in fragments once the burst
    // arrives in two waves (the silent clients a second after the others).
    const ALLOWANCE_KIB: u64 = 8 * 1024;
    let returned = Instant::now();
    let mut rss_after = rss_kib(daemon.pid());
    while rss_after > rss_idle + ALLOWANCE_KIB && returned.elapsed() < Duration::from_secs(6) {
        thread::sleep(Duration::from_millis(250));
        rss_after = rss_kib(daemon.pid());
    }
    eprintln!(
        "RSS: idle {rss_idle} KiB, 2,000 silent connections {rss_loaded} KiB, after {rss_after} KiB ({:?} after they were gone)",
        returned.elapsed()
    );
    assert!(
        rss_after <= rss_idle + ALLOWANCE_KIB,
        "RSS idle {rss_idle} KiB, loaded {rss_loaded} KiB, after {rss_after} KiB"
    );
    probe(&topology).expect("served after the flood");
}

/// Open-file limit the flood tests start the daemon with.
const LOW_OPEN_FILES: u64 = 256;

/// A request head begun and never finished.
const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\n";

/// Holds `count` connections that send the start of a request head and no
/// more, for `hold`, checking meanwhile that `keep` (a connection opened
/// before the flood) is still served. The first bytes make the kernel's
/// deferred accept hand each one to the proxy at once; silent ones would
/// reach it a second or three later (the retransmitted SYN-ACKs), some
/// after the checks.
fn flood(topology: &Topology, count: usize, hold: Duration) -> (usize, Vec<Duration>) {
    let mut keep = in_netns(&topology.client_ns, || {
        std::net::TcpStream::connect(gateway_addr(80)).expect("connect before the flood")
    });
    keep_alive_round_trips(&mut keep, HOST, 1).expect("served before the flood");
    let streams = in_netns(&topology.client_ns, move || {
        open_connections(gateway_addr(80), count, PARTIAL_HEAD)
    });
    let started = Instant::now();
    let mut kept_served = Vec::new();
    while started.elapsed() < hold {
        kept_served.extend(
            keep_alive_round_trips(&mut keep, HOST, 1)
                .expect("an established client is served during the flood"),
        );
        thread::sleep(Duration::from_millis(250));
    }
    let held = streams.len();
    drop(streams);
    (held, kept_served)
}

/// How long after now the gateway answers a normal request again; fails
/// the test past `within`.
fn service_back_within(topology: &Topology, daemon: &Daemon, within: Duration) -> Duration {
    let ended = Instant::now();
    while probe(topology).is_err() {
        assert!(
            ended.elapsed() < within,
            "no service {within:?} after the flood:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    ended.elapsed()
}

/// Fails unless the daemon wrote at most `most` log lines after its first
/// `ready_lines`; returns how many it wrote.
fn assert_log_grew_at_most(daemon: &Daemon, ready_lines: usize, most: usize) -> usize {
    let lines: Vec<String> = daemon
        .log()
        .lines()
        .skip(ready_lines)
        .map(str::to_string)
        .collect();
    assert!(
        lines.len() <= most,
        "log grew by {} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    lines.len()
}

#[test]
fn a_flood_past_the_connection_cap_is_reset_and_service_returns_when_it_ends() {
    require_root();
    let topology = Topology::new();
    // With 256 descriptors the default cap is (256 - 128) / 2 = 64.
    // One client floods, so its own cap must not stop it first.
    let daemon = start(
        &topology,
        &["--max-connections-per-source", "10000"],
        Some(LOW_OPEN_FILES),
    );
    assert!(
        daemon
            .log()
            .contains("at most 64 at once (open-file limit 256)"),
        "{}",
        daemon.log()
    );
    let ready_lines = daemon.log().lines().count();
    let (held, kept) = flood(&topology, 1_000, Duration::from_secs(3));
    assert!(!kept.is_empty());
    assert!(held <= 1_000);
    // Past the cap, or past the flooded listener's share of it (the
    // other listener keeps its reserve).
    let reset = || {
        stat(&topology, "proxy.connections.rejected_over_limit")
            + stat(&topology, "proxy.connections.rejected_listener_share")
    };
    assert!(reset() >= 900, "{} reset", reset());
    // Service returns as soon as the flood ends.
    let back = service_back_within(&topology, &daemon, Duration::from_secs(2));
    eprintln!(
        "cap flood: {held} connections, {} reset at accept, service back {back:?} after the flood ended",
        reset()
    );
    assert_log_grew_at_most(&daemon, ready_lines, 5);
}

/// Whether an HTTPS request to the example's port 443 gets any HTTP answer.
fn https_answered(topology: &Topology) -> bool {
    let resolve = format!("{HOST}:443:{GATEWAY_V4}");
    let out = topology.client(&[
        "curl",
        "-sk",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &resolve,
        &format!("https://{HOST}/"),
    ]);
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    code.len() == 3 && code != "000"
}

#[test]
fn one_client_cannot_fill_the_cap_and_a_flooded_listener_leaves_the_others_their_reserve() {
    require_root();
    let topology = Topology::new();
    // Cap 100: 12 per client (an eighth); 2 listeners and connections no
    // listener serves, each keeping 100 / 6 = 16 of the cap, 52 shared.
    let daemon = start(&topology, &["--max-connections", "100"], None);
    let flood = in_netns(&topology.client_ns, || {
        open_connections(gateway_addr(80), 100, PARTIAL_HEAD)
    });
    thread::sleep(Duration::from_millis(300));
    let open = flood.iter().filter(|s| !closed_by_peer(s)).count();
    assert_eq!(open, 12, "connections the one client kept");
    assert_eq!(stat(&topology, "proxy.connections.rejected_per_source"), 88);
    // Another client (the IPv6 address: another source) is served at once.
    let v6 = SocketAddr::new(
        gateway_tests::netns::GATEWAY_V6.parse().expect("address"),
        80,
    );
    in_netns(&topology.client_ns, move || fresh_round_trip(v6, HOST))
        .unwrap_or_else(|err| panic!("another client refused: {err}\n{}", daemon.log()));
    drop(flood);
    drop(daemon);

    // Many clients (no per-source cap) flood port 80: it takes its reserve
    // and the shared part, 68, and port 443 keeps its 16.
    let daemon = start(
        &topology,
        &[
            "--max-connections",
            "100",
            "--max-connections-per-source",
            "1000",
        ],
        None,
    );
    let flood = in_netns(&topology.client_ns, || {
        open_connections(gateway_addr(80), 100, PARTIAL_HEAD)
    });
    thread::sleep(Duration::from_millis(300));
    let open = flood.iter().filter(|s| !closed_by_peer(s)).count();
    assert_eq!(open, 68, "connections the flooded listener kept");
    assert_eq!(
        stat(&topology, "proxy.connections.rejected_listener_share"),
        32
    );
    assert!(
        https_answered(&topology),
        "port 443 refused:\n{}",
        daemon.log()
    );
    drop(flood);
}

#[test]
fn running_out_of_descriptors_backs_off_with_a_bounded_log() {
    require_root();
    let topology = Topology::new();
    // A cap above the descriptor limit, so accepts really fail with EMFILE.
    let daemon = start(
        &topology,
        &["--max-connections", "5000"],
        Some(LOW_OPEN_FILES),
    );
    let ready_lines = daemon.log().lines().count();
    let cpu_before = cpu_time(daemon.pid());
    let flood_start = Instant::now();
    let admin_poker = {
        // Admin connections during the exhaustion make its accept fail too.
        let ns = topology.gateway_ns.clone();
        thread::spawn(move || {
            for _ in 0..5 {
                let _ = Command::new("ip")
                    .args(["netns", "exec", &ns, "curl", "-s", "--max-time", "0.5"])
                    .arg(format!("http://{ADMIN}/ready"))
                    .output();
            }
        })
    };
    let (held, _) = flood(&topology, 1_000, Duration::from_secs(3));
    let _ = admin_poker.join();
    let busy = cpu_time(daemon.pid()) - cpu_before;
    let wall = flood_start.elapsed();
    assert!(held > 0);
    assert!(
        stat(&topology, "proxy.connections.accept_errors") > 0,
        "no accept failed: the test did not exhaust descriptors"
    );
    // Back-off, not a spin: well under a quarter of one core while exhausted.
    assert!(busy < wall / 4, "daemon used {busy:?} of CPU in {wall:?}");
    let back = service_back_within(&topology, &daemon, Duration::from_secs(3));
    let lines = assert_log_grew_at_most(&daemon, ready_lines, 10);
    eprintln!(
        "descriptors exhausted: {held} connections held, daemon CPU {busy:?} in {wall:?}, {} accept errors, {lines} log lines, service back {back:?} after the flood ended",
        stat(&topology, "proxy.connections.accept_errors"),
    );
}

#[test]
fn a_stats_flood_leaves_the_redirect_latency_within_2x() {
    require_root();
    let topology = Topology::new();
    let daemon = start(&topology, &[], None);
    let p90 = |topology: &Topology| {
        let samples: Vec<Duration> = (0..300)
            .map(|_| probe(topology).expect("redirect"))
            .collect();
        quantile(&samples, 0.9)
    };
    let mut rounds = Vec::new();
    // The machine is shared with everything else CI runs: up to three
    // rounds, and one within bounds passes.
    for _ in 0..3 {
        let unloaded = p90(&topology);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scrapers: Vec<_> = (0..8)
            .map(|_| {
                let (ns, stop) = (topology.gateway_ns.clone(), std::sync::Arc::clone(&stop));
                thread::spawn(move || scrape_pipelined(&ns, &stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        let loaded = p90(&topology);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let scraped: usize = scrapers
            .into_iter()
            .map(|s| s.join().expect("scraper"))
            .sum();
        eprintln!(
            "redirect p90 unloaded {unloaded:?}, with 8 /stats scrapers {loaded:?} ({scraped} scrapes)"
        );
        rounds.push((unloaded, loaded, scraped));
        if loaded <= unloaded * 2 {
            assert!(scraped > 500, "the scrapers hardly ran: {scraped}");
            return;
        }
    }
    panic!(
        "redirect p90 above 2x its unloaded value with a /stats flood: {rounds:?}\n{}",
        daemon.log()
    );
}

/// Pipelines `/stats` requests, 25 every 100 ms (250/s, eight of them 2,000/s:
/// three times the rate that once tripled the redirect's latency), until
/// `stop`; returns how many were answered. Paced, so the load generator
/// itself does not take the CPU the proxy needs.
fn scrape_pipelined(ns: &str, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    let stop = std::sync::Arc::clone(stop);
    in_netns(ns, move || {
        use std::io::Write as _;
        let mut answered = 0;
        let batch = "GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(25);
        let Ok(mut stream) = std::net::TcpStream::connect(ADMIN) else {
            return 0;
        };
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if stream.write_all(batch.as_bytes()).is_err() {
                break;
            }
            let sent = Instant::now();
            for _ in 0..25 {
                if read_response(&mut reader).is_err() {
                    return answered;
                }
                answered += 1;
            }
            thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
        }
        answered
    })
}

/// Reads one response with a Content-Length body.
fn read_response(reader: &mut impl std::io::BufRead) -> std::io::Result<()> {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)
}

// ---------------------------------------------------------------- log readers

/// Sends `per_connection` redirects on each of `connections` keep-alive
/// connections at once from the client namespace; returns the slowest
/// round trip. Fails the test if any request is not answered within the
/// client's 5 s read timeout.
fn parallel_redirects(topology: &Topology, connections: usize, per_connection: usize) -> Duration {
    let streams = in_netns(&topology.client_ns, move || {
        (0..connections)
            .map(|_| std::net::TcpStream::connect(gateway_addr(80)).expect("connect"))
            .collect::<Vec<_>>()
    });
    let clients: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            thread::spawn(move || keep_alive_round_trips(&mut stream, HOST, per_connection))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for client in clients {
        let times = client
            .join()
            .expect("client thread")
            .expect("every request is answered");
        slowest = slowest.max(times.into_iter().max().unwrap_or_default());
    }
    slowest
}

/// `/ready`'s status code, from the gateway namespace.
fn ready_status(topology: &Topology) -> String {
    let out = topology.gateway(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        &format!("http://{ADMIN}/ready"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the daemon and fails unless it exited cleanly within the drain
/// deadline (5 s) and its log flush (1 s); returns how long it took.
fn stops_within_the_drain_deadline(daemon: &mut Daemon) -> Duration {
    let asked = Instant::now();
    let status = daemon.stop().expect("the daemon was running");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(7), "exit took {took:?}");
    took
}

#[test]
fn a_stalled_access_log_reader_costs_counted_lines_not_service() {
    require_root();
    let topology = Topology::new();
    // stdout (the access log) is a pipe nobody reads: it is full after
    // about 400 lines. Every request below writes one line.
    let args = gateway_tests::daemon::example_args(&topology, &[]);
    let mut daemon = Daemon::start_with_outputs(
        &topology,
        &args,
        &[],
        gateway_tests::daemon::Output::UnreadPipe,
        gateway_tests::daemon::Output::LogFile,
    );
    // 48,000 lines of about 170 bytes: twice what the pipe and the daemon's
    // 4 MiB buffer hold together.
    let slowest = parallel_redirects(&topology, 6, 8_000);
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    let dropped = stat(&topology, "log.stdout.dropped_lines");
    assert!(
        (1..48_000).contains(&dropped),
        "{dropped} access-log lines dropped"
    );
    assert_eq!(ready_status(&topology), "200");
    // The drops are reported on stderr, once per 5 s interval.
    let reported = Instant::now();
    while !daemon.log().contains("access log:") {
        assert!(
            reported.elapsed() < Duration::from_secs(7),
            "no drop report:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let took = stops_within_the_drain_deadline(&mut daemon);
    eprintln!(
        "stalled stdout: 48,000 requests, slowest {slowest:?}, {dropped} lines dropped, exit in {took:?}"
    );
}

#[test]
fn a_stalled_daemon_log_reader_costs_counted_lines_not_service() {
    require_root();
    let topology = Topology::new();
    // stderr is a pipe nobody reads, and every connection below writes a
    // debug line there (a malformed ClientHello): the pipe is full after
    // about 600 of them.
    let args = gateway_tests::daemon::example_args(&topology, &["--access-log", "off"]);
    let mut daemon = Daemon::start_with_outputs(
        &topology,
        &args,
        &[("RUST_LOG", "debug")],
        gateway_tests::daemon::Output::LogFile,
        gateway_tests::daemon::Output::UnreadPipe,
    );
    const NOT_A_CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\x04\x02\x00\x00\x00";
    for _ in 0..6 {
        let refused = in_netns(&topology.client_ns, || {
            open_connections(gateway_addr(443), 500, NOT_A_CLIENT_HELLO)
        });
        assert_eq!(refused.len(), 500);
        let took = probe(&topology).expect("a redirect is answered");
        assert!(took < Duration::from_secs(1), "redirect took {took:?}");
    }
    assert_eq!(ready_status(&topology), "200");
    stops_within_the_drain_deadline(&mut daemon);
}
