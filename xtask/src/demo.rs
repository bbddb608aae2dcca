//! `cargo xtask run` with no arguments: the shipped example on an interface
//! the demo creates itself, so no drop rule ever lands on a real interface.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec::run;

const NAMESPACE: &str = "gwdemo";
const HOST_IF: &str = "gwdemo0";
const PEER_IF: &str = "gwdemo1";
/// Documentation ranges the demo may use, tried in order: (IPv4 /24 prefix, IPv6 /64 prefix).
/// The demo lives in the host's own namespace, so it takes the first one
/// the host does not already use (a VM may sit on 192.0.2.0/24 itself).
const SUBNETS: &[(&str, &str)] = &[
    ("203.0.113", "2001:db8:203::"),
    ("198.51.100", "2001:db8:198::"),
    ("192.0.2", "2001:db8:192::"),
];
const ADMIN: &str = "127.0.0.1:15000";
const EXAMPLE: &str = "examples/seed.yaml";
/// The demo backend `examples/seed.yaml`'s ServiceEntry points at.
const BACKEND: &str = "127.0.0.1:18080";
const CA: &str = "examples/credentials/dataengine-com-cert/tls.crt";

/// Set by SIGINT/SIGTERM: the demo stops the gateway and cleans up.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The demo's addresses.
struct Addresses {
    gateway_v4: String,
    gateway_v6: String,
    client_v4: String,
    client_v6: String,
}

/// The first documentation range with no address or route on the host.
fn free_addresses() -> anyhow::Result<Addresses> {
    for (v4, v6) in SUBNETS {
        let in_use = |family: &str, prefix: String| {
            let routes = Command::new("ip")
                .args([family, "-o", "route", "show", "root", &prefix])
                .output();
            let addrs = Command::new("ip")
                .args([family, "-o", "addr", "show", "to", &prefix])
                .output();
            [routes, addrs]
                .into_iter()
                .any(|out| out.map_or(true, |o| !o.stdout.is_empty()))
        };
        if in_use("-4", format!("{v4}.0/24")) || in_use("-6", format!("{v6}/64")) {
            continue;
        }
        return Ok(Addresses {
            gateway_v4: format!("{v4}.1"),
            gateway_v6: format!("{v6}1"),
            client_v4: format!("{v4}.2"),
            client_v6: format!("{v6}2"),
        });
    }
    bail!(
        "every documentation range (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) is already used on this host; run the gateway on your own interface instead: cargo xtask run -- --config {EXAMPLE} --interface IFNAME"
    )
}

/// Removes the demo interface and namespace, also after a panic or error.
struct DemoNetwork;

impl DemoNetwork {
    fn create(a: &Addresses) -> anyhow::Result<Self> {
        let guard = Self;
        run(Command::new("ip").args(["netns", "add", NAMESPACE]))?;
        run(Command::new("ip").args([
            "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF, "netns", NAMESPACE,
        ]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", a.gateway_v4),
            "dev",
            HOST_IF,
        ]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/64", a.gateway_v6),
            "dev",
            HOST_IF,
            "nodad",
        ]))?;
        run(Command::new("ip").args(["link", "set", HOST_IF, "up"]))?;
        let ns = ["-n", NAMESPACE];
        run(Command::new("ip").args(ns).args([
            "addr",
            "add",
            &format!("{}/24", a.client_v4),
            "dev",
            PEER_IF,
        ]))?;
        run(Command::new("ip").args(ns).args([
            "addr",
            "add",
            &format!("{}/64", a.client_v6),
            "dev",
            PEER_IF,
            "nodad",
        ]))?;
        run(Command::new("ip")
            .args(ns)
            .args(["link", "set", PEER_IF, "up"]))?;
        run(Command::new("ip")
            .args(ns)
            .args(["link", "set", "lo", "up"]))?;
        Ok(guard)
    }
}

impl Drop for DemoNetwork {
    fn drop(&mut self) {
        remove();
        println!("removed demo interface {HOST_IF} and namespace {NAMESPACE}");
    }
}

fn remove() {
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
    };
    quiet(&["link", "del", HOST_IF]);
    quiet(&["netns", "del", NAMESPACE]);
}

/// The demo backend, stopped on drop.
struct DemoBackend(std::process::Child);

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ctrl-C and SIGTERM set [`STOP`]. A handler (not SIG_IGN, which
/// children would inherit) keeps xtask alive on Ctrl-C so it can clean up
/// after the gateway exits.
pub(crate) fn handle_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }
}

/// Creates the demo network and backend, runs the gateway on it until
/// Ctrl-C, cleans up.
pub(crate) fn serve(gateway: &Path, backend: &Path) -> anyhow::Result<()> {
    handle_stop_signals();
    remove(); // a previous demo killed with SIGKILL may have left them behind
    let a = free_addresses()?;
    let _network = DemoNetwork::create(&a)?;
    let _backend = DemoBackend(
        Command::new(backend)
            .args(["--name", "demo-backend", "--listen", BACKEND])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", backend.display()))?,
    );
    let mut child = Command::new(gateway)
        .args(["run", "--config", EXAMPLE, "--interface", HOST_IF])
        .args([
            "--address",
            &a.gateway_v4,
            "--address",
            &a.gateway_v6,
            "--admin-address",
            ADMIN,
        ])
        .spawn()
        .with_context(|| format!("cannot start {}", gateway.display()))?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut announced = false;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            if !announced || !status.success() {
                bail!("the gateway exited with {status}");
            }
            return Ok(());
        }
        if STOP.load(Ordering::SeqCst) && !forwarded {
            // Ctrl-C reaches the gateway too (same process group); SIGTERM may not.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            forwarded = true;
        }
        if !announced && ready() {
            announce(&a);
            announced = true;
        }
        if !announced && Instant::now() > deadline {
            let _ = child.kill();
            bail!("the gateway did not become ready within 20 seconds");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn ready() -> bool {
    Command::new("curl")
        .args(["-sf", "--max-time", "1", &format!("http://{ADMIN}/ready")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn announce(a: &Addresses) {
    let Addresses {
        gateway_v4: gw4,
        gateway_v6: gw6,
        client_v4: cl4,
        ..
    } = a;
    println!(
        "\n\
The gateway serves {EXAMPLE} on the demo interface {HOST_IF} ({gw4}, {gw6}).
Clients in namespace {NAMESPACE} ({cl4}) reach it through the XDP program.

Try it from this host:
  curl -si --resolve dataengine.com:80:{gw4} 'http://dataengine.com/x?y=1'
      -> 301 Moved Permanently, Location: https://dataengine.com/x?y=1
  curl -s --cacert {CA} --resolve dataengine.com:443:{gw4} 'https://dataengine.com/x?y=1'
      -> the demo backend ({BACKEND}) describes the request it got: backend=demo-backend ...
Through the XDP program, from the client namespace:
  ip netns exec {NAMESPACE} curl -si --resolve dataengine.com:80:{gw4} 'http://dataengine.com/x?y=1'
  ip netns exec {NAMESPACE} curl -s --cacert {CA} --resolve dataengine.com:443:{gw4} https://dataengine.com/
  ip netns exec {NAMESPACE} curl --connect-timeout 2 http://{gw4}:8081/
      -> times out: no listener on 8081, the SYN is dropped in XDP
Counters (the access log is the gateway's stdout):
  curl -s http://{ADMIN}/stats

Ctrl-C stops the gateway and removes the demo interface.\n"
    );
}
