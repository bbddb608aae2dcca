//! `cargo xtask run --egress`: the seed's egress Gateway served for a
//! workload, in three network namespaces the demo creates and removes:
//! a workload that knows nothing of the gateway, the egress instance
//! capturing its outbound TCP, and an "outside" with a server posing as
//! dataengine.com. Nothing touches the host's own interfaces.
use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{demo::STOP, exec::run, netns};

const WORKLOAD_NS: &str = "gwdemo-wl";
const GATEWAY_NS: &str = "gwdemo-egw";
const OUTSIDE_NS: &str = "gwdemo-out";
/// The gateway's side of the workload's veth: captured, and XDP's.
const CAPTURED_IF: &str = "gwdemo-cap";
const WORKLOAD_IF: &str = "gwdemo-wl0";
const GATEWAY_OUT_IF: &str = "gwdemo-up";
const OUTSIDE_IF: &str = "gwdemo-out0";
const GATEWAY_V4: &str = "192.0.2.1";
const WORKLOAD_V4: &str = "192.0.2.2";
const GATEWAY_OUT_V4: &str = "198.51.100.1";
/// Where the outside dataengine.com lives.
const EXTERNAL_V4: &str = "198.51.100.2";
/// An outside address no ServiceEntry names.
const UNREGISTERED_V4: &str = "198.51.100.3";
const ADMIN: &str = "127.0.0.1:15000";
const EXAMPLE: &str = "examples/seed.yaml";
/// The outside server's certificate: the example's own for dataengine.com.
const CERT_DIR: &str = "examples/credentials/dataengine-com-cert";

/// Removes the demo's namespaces and their `/etc/netns` files, also
/// after a panic or an error.
struct EgressNetwork;

impl Drop for EgressNetwork {
    fn drop(&mut self) {
        remove();
        println!("removed the egress demo namespaces {WORKLOAD_NS}, {GATEWAY_NS}, {OUTSIDE_NS}");
    }
}

fn remove() {
    netns::remove(&[WORKLOAD_NS, GATEWAY_NS, OUTSIDE_NS]);
}

fn in_ns(ns: &str, argv: &[&str]) -> Command {
    let mut command = netns::exec(ns);
    command.args(argv);
    command
}

impl EgressNetwork {
    fn create() -> anyhow::Result<Self> {
        remove(); // a demo killed outright may have left them behind
        let guard = Self;
        for ns in [WORKLOAD_NS, GATEWAY_NS, OUTSIDE_NS] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            run(&mut in_ns(ns, &["ip", "link", "set", "lo", "up"]))?;
        }
        let links = [
            (
                CAPTURED_IF,
                GATEWAY_NS,
                GATEWAY_V4,
                WORKLOAD_IF,
                WORKLOAD_NS,
                WORKLOAD_V4,
            ),
            (
                GATEWAY_OUT_IF,
                GATEWAY_NS,
                GATEWAY_OUT_V4,
                OUTSIDE_IF,
                OUTSIDE_NS,
                EXTERNAL_V4,
            ),
        ];
        for (a, a_ns, a_v4, b, b_ns, b_v4) in links {
            run(Command::new("ip").args([
                "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
            ]))?;
            for (ns, link, v4) in [(a_ns, a, a_v4), (b_ns, b, b_v4)] {
                run(&mut in_ns(
                    ns,
                    &["ip", "addr", "add", &format!("{v4}/24"), "dev", link],
                ))?;
                run(&mut in_ns(ns, &["ip", "link", "set", link, "up"]))?;
            }
        }
        let unregistered = format!("{UNREGISTERED_V4}/32");
        run(&mut in_ns(
            OUTSIDE_NS,
            &["ip", "addr", "add", &unregistered, "dev", "lo"],
        ))?;
        // The workload's only way out is the gateway's node, as a pod's.
        run(&mut in_ns(
            WORKLOAD_NS,
            &["ip", "route", "add", "default", "via", GATEWAY_V4],
        ))?;
        run(&mut in_ns(
            OUTSIDE_NS,
            &["ip", "route", "add", "default", "via", GATEWAY_OUT_V4],
        ))?;
        // Both resolvers name the outside server (`ip netns exec` binds
        // this file over /etc/hosts).
        for ns in [WORKLOAD_NS, GATEWAY_NS] {
            netns::write_hosts(
                ns,
                &format!("127.0.0.1 localhost\n{EXTERNAL_V4} dataengine.com\n"),
            )?;
        }
        Ok(guard)
    }
}

/// A child process, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates the namespaces and the outside servers, runs the egress
/// instance until Ctrl-C, shows what it does, cleans up.
pub(crate) fn serve(gateway: &Path, backend: &Path) -> anyhow::Result<()> {
    crate::demo::handle_stop_signals();
    let _network = EgressNetwork::create()?;
    let crt = format!("{CERT_DIR}/tls.crt");
    let key = format!("{CERT_DIR}/tls.key");
    let external = format!("{EXTERNAL_V4}:443");
    let unregistered = format!("{UNREGISTERED_V4}:443");
    let backend = backend.display().to_string();
    let mut servers = Vec::new();
    for (name, listen) in [
        ("external-dataengine", &external),
        ("unregistered", &unregistered),
    ] {
        let child = in_ns(OUTSIDE_NS, &[&backend, "--name", name, "--listen", listen])
            .args(["--tls", &crt, &key])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the outside server")?;
        servers.push(Process(child));
    }
    let gateway = gateway.display().to_string();
    let child = in_ns(
        GATEWAY_NS,
        &[
            &gateway,
            "run",
            "--config",
            EXAMPLE,
            "--labels",
            "istio=egressgateway",
            "--interface",
            CAPTURED_IF,
            "--egress-from",
            CAPTURED_IF,
            "--admin-address",
            ADMIN,
        ],
    )
    .spawn()
    .context("cannot start the egress instance")?;
    let mut daemon = Process(child);
    wait_ready(&mut daemon.0)?;
    show();
    while !STOP.load(Ordering::SeqCst) {
        if let Some(status) = daemon.0.try_wait()? {
            bail!("the egress instance exited with {status}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait()?.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn wait_ready(daemon: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!("the egress instance exited with {status}");
        }
        let ready = in_ns(
            GATEWAY_NS,
            &[
                "curl",
                "-sf",
                "--max-time",
                "1",
                &format!("http://{ADMIN}/ready"),
            ],
        )
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the egress instance did not become ready within 20 seconds");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn workload_curl(args: &[&str]) -> Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    in_ns(WORKLOAD_NS, &argv)
        .output()
        .unwrap_or_else(|err| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
            stdout: Vec::new(),
            stderr: err.to_string().into_bytes(),
        })
}

/// Runs the three things worth seeing once and says what happened, then
/// how to try them.
fn show() {
    let ca = format!("{CERT_DIR}/tls.crt");
    let allowed = workload_curl(&["--cacert", &ca, "https://dataengine.com/from-the-workload"]);
    let first_line = |out: &Output| {
        let text = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        })
        .into_owned();
        text.lines().next().unwrap_or_default().to_string()
    };
    let forbidden_ip = workload_curl(&["-k", &format!("https://{UNREGISTERED_V4}/")]);
    let forbidden_sni = workload_curl(&[
        "-k",
        "--resolve",
        &format!("evil.example:443:{EXTERNAL_V4}"),
        "https://evil.example/",
    ]);
    println!(
        "\n\
The egress instance serves {EXAMPLE}'s egress Gateway in namespace {GATEWAY_NS},
capturing the outbound TCP of the workload in namespace {WORKLOAD_NS} ({WORKLOAD_V4})
in the kernel (no proxy settings, no iptables). Outside ({OUTSIDE_NS}):
dataengine.com at {EXTERNAL_V4}, and {UNREGISTERED_V4}, which no ServiceEntry names.

Just now, from the workload:
  https://dataengine.com/ (allowed, TLS passed through by SNI):
      exit {:?}: {}
  https://{UNREGISTERED_V4}/ (no ServiceEntry: refused in the kernel, outboundTrafficPolicy REGISTRY_ONLY):
      exit {:?}: {}
  https://evil.example/ at dataengine.com's address (a host the egress Gateway does not serve: refused by SNI):
      exit {:?}: {}

Try them yourself:
  ip netns exec {WORKLOAD_NS} curl -s --cacert {ca} https://dataengine.com/
  ip netns exec {WORKLOAD_NS} curl -k https://{UNREGISTERED_V4}/
  ip netns exec {WORKLOAD_NS} curl -k --resolve evil.example:443:{EXTERNAL_V4} https://evil.example/
Counters, per workload and per external host:
  ip netns exec {GATEWAY_NS} curl -s http://{ADMIN}/stats | grep egress
  ip netns exec {GATEWAY_NS} curl -s http://{ADMIN}/stats/prometheus | grep gateway_egress

Ctrl-C stops the gateway and removes the demo namespaces.\n",
        allowed.status.code(),
        first_line(&allowed),
        forbidden_ip.status.code(),
        first_line(&forbidden_ip),
        forbidden_sni.status.code(),
        first_line(&forbidden_sni),
    );
}
