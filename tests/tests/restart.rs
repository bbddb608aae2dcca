//! Pinned state: a daemon killed outright leaves XDP filtering (and
//! listener connections refused, never handed elsewhere); a restarted one
//! adopts the pinned maps and links and serves within 2 seconds;
//! `--keep-attached` leaves them on a clean stop, the default removes them.
use std::{
    path::PathBuf,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use gateway_tests::{
    daemon::{Daemon, gateway_bin, start_example, stat},
    netns::{GATEWAY_V4, Topology},
    require_root,
};

/// The daemon's pin directory for the topology's interface; removed on
/// drop, with the pid file and counter layout a killed daemon leaves
/// beside it, so a failing test leaves no pinned links behind.
struct Pins(PathBuf);

impl Pins {
    fn of(topology: &Topology) -> Self {
        let out = topology.gateway(&["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
        let netns = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self(PathBuf::from(format!(
            "/run/gateway/bpf/{netns}-{}",
            topology.gateway_if
        )))
    }
}

impl Pins {
    /// The pid file and counter layout of the daemon the pins are for.
    fn leftovers(&self) -> [PathBuf; 2] {
        let name = self.0.file_name().unwrap_or_default().to_string_lossy();
        [
            PathBuf::from(format!("/run/gateway/{name}.pid")),
            PathBuf::from(format!("/run/gateway/{name}.layout.json")),
        ]
    }

    /// The pins of the daemon on `interface` in the same namespace.
    fn sibling(&self, interface: &str) -> Self {
        let name = self.0.file_name().unwrap_or_default().to_string_lossy();
        let netns = name.split_once('-').map_or("", |(netns, _)| netns);
        Self(self.0.with_file_name(format!("{netns}-{interface}")))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        for file in self.leftovers() {
            let _ = std::fs::remove_file(file);
        }
    }
}

fn curl(topology: &Topology, url: &str, extra: &[&str]) -> Output {
    let mut argv = vec!["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"];
    argv.extend_from_slice(extra);
    argv.push(url);
    topology.client(&argv)
}

/// The redirect of the example's HTTP listener, or curl's exit code.
fn redirect(topology: &Topology) -> Result<(), Option<i32>> {
    let resolve = format!("dataengine.com:80:{GATEWAY_V4}");
    let out = curl(
        topology,
        "http://dataengine.com/",
        &["--max-time", "2", "--resolve", &resolve],
    );
    if out.status.success() && out.stdout == b"301" {
        Ok(())
    } else {
        Err(out.status.code())
    }
}

fn xdp_attached(topology: &Topology) -> bool {
    let out = topology.gateway(&["ip", "link", "show", "dev", &topology.gateway_if]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn after_kill_9_xdp_keeps_filtering_and_a_new_daemon_adopts_and_serves_within_2_seconds() {
    require_root();
    let topology = Topology::new();
    let pins = Pins::of(&topology);
    let mut daemon = start_example(&topology, &[], None);
    assert_eq!(redirect(&topology), Ok(()));
    // The daemon stays in the mount namespace `ip netns exec` made (its
    // /etc/netns files and /sys apply), though its pins live outside it.
    let mount_ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    assert_ne!(mount_ns(daemon.pid()), mount_ns(std::process::id()));
    let drops_before = stat(&topology, "xdp.reason.no_listener.packets");
    daemon.kill();

    assert!(xdp_attached(&topology), "XDP left attached");
    assert!(pins.0.join("map_LISTENERS").exists(), "maps pinned");
    // An unlisted port: still dropped in XDP (a timeout, not a refusal).
    let url = format!("http://{GATEWAY_V4}:8081/");
    let out = curl(&topology, &url, &["--connect-timeout", "2"]);
    assert_eq!(
        out.status.code(),
        Some(28),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A listener's port with no proxy socket: refused, not handed to
    // whatever else might listen there.
    assert_eq!(redirect(&topology), Err(Some(7)), "connection refused");
    // The pinned maps are readable with bpftool (`cargo xtask test`
    // installs it).
    let dump = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pins.0.join("map_LISTENERS"))
        .output()
        .expect("bpftool");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        String::from_utf8_lossy(&dump.stdout).contains("key"),
        "{}",
        String::from_utf8_lossy(&dump.stdout)
    );

    // The counters, from the pinned maps, with no daemon running.
    let out = topology.gateway(&[
        &gateway_bin().display().to_string(),
        "stats",
        "--interface",
        &topology.gateway_if,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let drops = report["xdp.reason.no_listener.packets"]
        .as_u64()
        .expect("drop counter");
    assert!(
        drops > drops_before,
        "the drop made after kill -9 is counted: {report}"
    );
    assert!(
        report["xdp.listener.*_80_tcp.packets"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "listeners named from the layout: {report}"
    );

    let started = Instant::now();
    let _again = start_example(&topology, &[], None);
    while redirect(&topology).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "served again after {took:?}");
    // The counters carried on: the drop made while no daemon ran is there.
    assert!(
        stat(&topology, "xdp.reason.no_listener.packets") > drops_before,
        "adopted counters"
    );
}

#[test]
fn keep_attached_leaves_xdp_on_a_clean_stop_and_the_default_removes_everything() {
    require_root();
    let topology = Topology::new();
    let pins = Pins::of(&topology);
    let mut daemon: Daemon = start_example(&topology, &["--keep-attached"], None);
    let status = daemon.stop().expect("running");
    assert!(status.success(), "{}", daemon.log());
    assert!(xdp_attached(&topology), "--keep-attached left XDP attached");
    assert!(pins.0.exists());

    let mut daemon = start_example(&topology, &[], None);
    assert_eq!(redirect(&topology), Ok(()));
    let status = daemon.stop().expect("running");
    assert!(status.success(), "{}", daemon.log());
    assert!(!xdp_attached(&topology), "detached on exit");
    assert!(!pins.0.exists(), "pins removed");
    // Nothing steers any more: the port is closed, not refused by us.
    assert_eq!(redirect(&topology), Err(Some(7)));
}

/// The names in the pin directory, sorted.
fn pinned(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether a connection to an unlisted port times out (dropped in XDP)
/// rather than being refused by the host.
fn unlisted_port_dropped(topology: &Topology) -> bool {
    let url = format!("http://{GATEWAY_V4}:8081/");
    curl(topology, &url, &["--connect-timeout", "1"])
        .status
        .code()
        == Some(28)
}

/// Waits up to 3 s for `done`; returns how long it took.
fn within_3s(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(3), "{what}");
        thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn removed_pins_take_nothing_away_and_are_pinned_again_within_a_second() {
    require_root();
    let topology = Topology::new();
    let pins = Pins::of(&topology);
    let daemon = start_example(&topology, &[], None);
    let before = pinned(&pins.0);
    assert!(before.contains(&"link_xdp".to_string()), "{before:?}");
    std::fs::remove_dir_all(&pins.0).expect("remove the pins");
    let removed = Instant::now();
    // The daemon's descriptors hold the links: served and filtered as before.
    assert_eq!(redirect(&topology), Ok(()));
    assert!(unlisted_port_dropped(&topology), "XDP still drops");
    assert!(xdp_attached(&topology));
    within_3s("pinned again", || pinned(&pins.0) == before);
    let took = removed.elapsed();
    assert_eq!(
        stat(&topology, "dataplane.pins_restored"),
        before.len() as u64
    );
    assert!(
        daemon.log().contains("were removed from"),
        "{}",
        daemon.log()
    );
    eprintln!("{} pins removed, pinned again after {took:?}", before.len());
}

#[test]
fn links_detached_from_outside_are_attached_again_within_a_second() {
    require_root();
    let topology = Topology::new();
    let pins = Pins::of(&topology);
    let daemon = start_example(&topology, &[], None);
    let detach = |link: &str| {
        let out = std::process::Command::new("bpftool")
            .args(["link", "detach", "pinned"])
            .arg(pins.0.join(link))
            .output()
            .expect("bpftool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    detach("link_xdp");
    let took = within_3s("XDP attached again", || {
        stat(&topology, "dataplane.attachments_restored") == 1
    });
    assert!(unlisted_port_dropped(&topology), "XDP drops again");
    detach("link_sk_lookup");
    within_3s("steering attached again", || {
        stat(&topology, "dataplane.attachments_restored") == 2
    });
    assert_eq!(redirect(&topology), Ok(()));
    let log = daemon.log();
    assert!(log.contains("the XDP program was detached"), "{log}");
    assert!(log.contains("the sk_lookup program was detached"), "{log}");
    eprintln!("XDP attached again after {took:?}");
}

/// `gateway prune-pins <args>`, run on the host; its stdout.
fn prune_pins(args: &[&str]) -> String {
    let out = std::process::Command::new(gateway_bin())
        .arg("prune-pins")
        .args(args)
        .output()
        .expect("run gateway prune-pins");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line `gateway prune-pins` printed for the pin directory `dir`.
fn line_for<'a>(listing: &'a str, dir: &std::path::Path) -> &'a str {
    let prefix = format!("{} ", dir.display());
    listing
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {}:\n{listing}", dir.display()))
}

/// The `memlock N` figure of a `gateway prune-pins` line.
fn memlock_of(line: &str) -> u64 {
    line.split_once("memlock ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no memlock in {line}"))
}

#[test]
fn pins_whose_namespace_or_interface_is_gone_are_removed_and_a_killed_daemons_are_adopted() {
    require_root();
    let kept = Topology::new();
    let gone = Topology::new();
    let kept_pins = Pins::of(&kept);
    let gone_pins = Pins::of(&gone);
    // A second interface in the namespace that stays, deleted later.
    let extra = format!("x{}", kept.gateway_if);
    let peer = format!("y{}", kept.gateway_if);
    let extra_addr = "203.0.113.1";
    let extra_cidr = format!("{extra_addr}/24");
    for argv in [
        &[
            "ip", "link", "add", &extra, "type", "veth", "peer", "name", &peer,
        ][..],
        &["ip", "addr", "add", &extra_cidr, "dev", &extra],
        &["ip", "link", "set", &extra, "up"],
    ] {
        let out = kept.gateway(argv);
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let extra_pins = kept_pins.sibling(&extra);
    // Each daemon killed outright leaves its pins, pid file and layout.
    let extra_args = [
        "--config",
        gateway_tests::daemon::EXAMPLE,
        "--interface",
        &extra,
        "--address",
        extra_addr,
        "--admin-address",
        gateway_tests::daemon::ADMIN,
        "--credentials-dir",
        gateway_tests::daemon::CREDENTIALS,
    ];
    Daemon::start(&kept, &extra_args).kill();
    start_example(&gone, &[], None).kill();
    start_example(&kept, &[], None).kill();
    for pins in [&kept_pins, &gone_pins, &extra_pins] {
        assert!(
            pins.0.join("map_LISTENERS").exists(),
            "{}",
            pins.0.display()
        );
        for file in pins.leftovers() {
            assert!(file.exists(), "{}", file.display());
        }
    }
    // A set with no links for an interface that exists (a daemon killed
    // before it attached): only the interface keeps it.
    let lo_pins = kept_pins.sibling("lo");
    std::fs::create_dir(&lo_pins.0).expect("a pin directory for lo");

    // The interface goes from the namespace that stays; the other
    // namespace goes (its steering link is detached once the kernel has
    // cleaned it up, a moment after `ip netns del`).
    let out = kept.gateway(&["ip", "link", "del", &extra]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gone);
    within_3s("the deleted namespace's pins found orphaned", || {
        line_for(&prune_pins(&["--dry-run"]), &gone_pins.0).contains("would remove")
    });

    // A dry run says what it would do and does nothing.
    let listing = prune_pins(&["--dry-run"]);
    let says = |pins: &Pins, what: &str| {
        assert!(
            line_for(&listing, &pins.0).contains(what),
            "{what}:\n{listing}"
        );
    };
    says(
        &gone_pins,
        "would remove: its network namespace no longer exists",
    );
    says(
        &extra_pins,
        "would remove: its network namespace no longer has an interface of that name",
    );
    says(&kept_pins, "kept: its XDP link is still attached");
    says(&lo_pins, "kept: the interface exists");
    let memlock = memlock_of(line_for(&listing, &gone_pins.0));
    assert!(memlock > 1 << 20, "{listing}");
    for pins in [&kept_pins, &gone_pins, &extra_pins, &lo_pins] {
        assert!(pins.0.exists(), "dry run removed {}", pins.0.display());
    }
    eprintln!("{listing}");

    // A daemon started removes the orphaned sets and their leftovers, and
    // adopts the killed daemon's set on its interface.
    let inode = |pins: &Pins| {
        let meta = std::fs::metadata(pins.0.join("map_LISTENERS")).expect("pinned");
        std::os::unix::fs::MetadataExt::ino(&meta)
    };
    let adopted = inode(&kept_pins);
    let daemon = start_example(&kept, &[], None);
    for pins in [&gone_pins, &extra_pins] {
        assert!(!pins.0.exists(), "{} left", pins.0.display());
        for file in pins.leftovers() {
            assert!(!file.exists(), "{} left", file.display());
        }
    }
    assert!(lo_pins.0.exists(), "a set whose interface exists removed");
    assert_eq!(
        inode(&kept_pins),
        adopted,
        "the killed daemon's maps adopted, not replaced"
    );
    assert_eq!(redirect(&kept), Ok(()));
    let log = daemon.log();
    let removed = format!("removed the orphaned pins {}", gone_pins.0.display());
    assert!(log.contains(&removed), "{log}");
    assert!(log.contains("of locked kernel memory freed"), "{log}");
    assert!(log.contains("of locked kernel memory (memlock"), "{log}");
    let own = stat(&kept, "dataplane.maps_memlock_bytes");
    assert!(own > 1 << 20, "{own}");
    eprintln!("memlock per pin set: {memlock} bytes (this daemon's: {own})");
}
