//! The flood part of `cargo xtask bench xdp`: SYNs to a port no listener
//! owns, sent with trafgen over a veth pair into a namespace with the
//! gateway's address, and the CPU time the whole machine spends per packet
//! (from `/proc/stat`: user, nice, system, irq, softirq), with no filter,
//! with an nftables netdev-ingress drop rule, and with the gateway's XDP
//! program in native mode on the receiving veth. Modes are interleaved in
//! every round; trafgen's own cost is in all three alike.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec::{output, run};

/// The receiving side's address, and the unlisted port flooded.
const RECEIVER: &str = "192.0.2.1";
const SENDER: &str = "192.0.2.2";
const PORT: u16 = 8081;
/// The admin address of the gateway under test, inside its namespace.
const ADMIN: &str = "127.0.0.1:15000";

/// One way of receiving the flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    NoFilter,
    Nftables,
    Xdp,
    XdpGeneric,
    TrivialDrop,
    /// The flooded port is a listener whose AuthorizationPolicy denies the
    /// sender among 10,000 blocks of its /8: every SYN is looked up deep
    /// among them.
    XdpPolicyDenied,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::NoFilter => "no filter (the stack answers each SYN with a RST)",
            Self::Nftables => "nftables netdev ingress drop rule",
            Self::Xdp => "gateway XDP (native) on the receiving veth",
            Self::XdpGeneric => "gateway XDP (generic) on the receiving veth",
            Self::TrivialDrop => "a program that only returns XDP_DROP (native), for scale",
            Self::XdpPolicyDenied => {
                "gateway XDP (native), the port a listener whose AuthorizationPolicy denies the sender among 10,000 DENY blocks in its /8"
            }
        }
    }
}

/// The two namespaces and the veth pair; removed on drop.
struct Net {
    sender: String,
    receiver: String,
}

impl Net {
    fn new() -> anyhow::Result<Self> {
        let tag = std::process::id() % 100_000;
        let net = Self {
            sender: format!("flood{tag}s"),
            receiver: format!("flood{tag}r"),
        };
        let (s, r) = (net.sender.as_str(), net.receiver.as_str());
        for ns in [s, r] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        run(Command::new("ip").args([
            "link", "add", "snd0", "netns", s, "type", "veth", "peer", "name", "rcv0", "netns", r,
        ]))?;
        run(Command::new("ip").args([
            "-n",
            s,
            "addr",
            "add",
            &format!("{SENDER}/24"),
            "dev",
            "snd0",
        ]))?;
        run(Command::new("ip").args([
            "-n",
            r,
            "addr",
            "add",
            &format!("{RECEIVER}/24"),
            "dev",
            "rcv0",
        ]))?;
        for (ns, dev) in [(s, "snd0"), (r, "rcv0"), (s, "lo"), (r, "lo")] {
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
        }
        Ok(net)
    }

    fn exec(&self, ns: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(argv);
        cmd
    }

    fn mac(&self, ns: &str, dev: &str) -> anyhow::Result<String> {
        let out = output(Command::new("ip").args(["-n", ns, "-br", "link", "show", dev]))
            .context("ip link")?;
        out.split_whitespace()
            .nth(2)
            .map(str::to_string)
            .context("no MAC address")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.sender, &self.receiver] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The gateway daemon on the receiving veth; stopped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child this process started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Busy CPU time of the whole machine so far, in clock ticks.
fn busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user, nice, system, (idle, iowait skipped), irq, softirq
    let pick = [0usize, 1, 2, 5, 6];
    Ok(pick.iter().filter_map(|i| fields.get(*i)).sum())
}

/// Floods `packets` SYNs in each mode, `rounds` times interleaved, and
/// returns the Markdown table of µs of CPU per packet.
pub(crate) fn flood(
    root: &Path,
    gateway: &Path,
    packets: u64,
    rounds: u32,
) -> anyhow::Result<String> {
    let net = Net::new()?;
    let scratch = root.join("target/bench/flood");
    std::fs::create_dir_all(&scratch)?;
    let trafgen_conf = scratch.join("syn.cfg");
    std::fs::write(
        &trafgen_conf,
        format!(
            "{{ eth(da={}, sa={}), ipv4(saddr={SENDER}, daddr={RECEIVER}, ttl=64), tcp(sp=drnd(), dp={PORT}, syn) }}\n",
            net.mac(&net.receiver, "rcv0")?,
            net.mac(&net.sender, "snd0")?
        ),
    )?;
    let nft_conf = scratch.join("drop.nft");
    std::fs::write(
        &nft_conf,
        format!(
            "table netdev flood {{\n  chain ingress {{\n    type filter hook ingress device rcv0 priority 0; policy accept;\n    tcp dport {PORT} drop\n  }}\n}}\n"
        ),
    )?;
    let ticks_per_second = 100.0;
    let modes = [
        Mode::NoFilter,
        Mode::Nftables,
        Mode::Xdp,
        Mode::XdpGeneric,
        Mode::TrivialDrop,
        Mode::XdpPolicyDenied,
    ];
    let policy_config = scratch.join("policy.yaml");
    std::fs::write(&policy_config, policy_yaml())?;
    let seed = root.join("examples/seed.yaml");
    let drop_object = crate::bench_proxy::build_trivial_xdp(&scratch, "xdp_drop", 1)?;
    let mut cost: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (index, mode) in modes.iter().enumerate() {
            let daemon = match mode {
                Mode::NoFilter => None,
                Mode::Nftables => {
                    run(net.exec(&net.receiver, &["nft", "-f"]).arg(&nft_conf))?;
                    None
                }
                Mode::Xdp => Some(start_gateway(&net, &seed, gateway, "native")?),
                Mode::XdpGeneric => Some(start_gateway(&net, &seed, gateway, "generic")?),
                Mode::XdpPolicyDenied => {
                    Some(start_gateway(&net, &policy_config, gateway, "native")?)
                }
                Mode::TrivialDrop => {
                    run(net
                        .exec(
                            &net.receiver,
                            &["ip", "link", "set", "dev", "rcv0", "xdpdrv", "obj"],
                        )
                        .arg(&drop_object)
                        .args(["sec", "xdp"]))?;
                    None
                }
            };
            let before = busy_ticks()?;
            let sent = net
                .exec(&net.sender, &["trafgen", "--dev", "snd0", "--conf"])
                .arg(&trafgen_conf)
                .args([
                    "--num",
                    &packets.to_string(),
                    "-P",
                    "1",
                    "--no-sock-mem",
                    "-q",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("trafgen")?;
            let after = busy_ticks()?;
            if !sent.success() {
                bail!("trafgen failed ({sent})");
            }
            let seconds = (after - before) as f64 / ticks_per_second;
            cost[index].push(seconds * 1e6 / packets as f64);
            drop(daemon);
            if *mode == Mode::TrivialDrop {
                run(&mut net.exec(
                    &net.receiver,
                    &["ip", "link", "set", "dev", "rcv0", "xdpdrv", "off"],
                ))?;
            }
            if *mode == Mode::Nftables {
                run(&mut net.exec(
                    &net.receiver,
                    &["nft", "delete", "table", "netdev", "flood"],
                ))?;
            }
        }
    }
    // The denied-source flood against the unlisted-port one of the same
    // round (run one after the other), before the medians sort them.
    let at = |wanted: Mode| modes.iter().position(|mode| *mode == wanted).unwrap_or(0);
    let mut ratios: Vec<f64> = cost[at(Mode::XdpPolicyDenied)]
        .iter()
        .zip(&cost[at(Mode::Xdp)])
        .map(|(policy, unlisted)| policy / unlisted)
        .collect();
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let medians: Vec<f64> = cost.iter_mut().map(median).collect();
    let ratio = median(&mut ratios);
    let (ratio_min, ratio_max) = (ratios[0], ratios[ratios.len() - 1]);
    let nft = medians[1];
    let mut table = String::from(
        "| receiving a SYN flood to an unlisted port | µs of CPU per packet (whole machine), median (min-max) | vs nftables | |\n|---|---|---|---|\n",
    );
    for (index, mode) in modes.iter().enumerate() {
        let verdict = match mode {
            Mode::Xdp | Mode::XdpGeneric if medians[index] <= nft => "PASS (<= nftables)".into(),
            Mode::Xdp | Mode::XdpGeneric => "MISS (> nftables)".into(),
            Mode::XdpPolicyDenied => {
                let met = if ratio <= 1.0 {
                    "PASS"
                } else if ratio_min <= 1.0 {
                    "PASS within noise (the rounds' ratios span 1.0)"
                } else {
                    "MISS"
                };
                format!(
                    "{ratio:.3}x ({ratio_min:.3}-{ratio_max:.3}) the unlisted-port drop (native) of the same round: {met}"
                )
            }
            _ => String::new(),
        };
        table.push_str(&format!(
            "| {} | {:.2} ({:.2}-{:.2}) | {:.2}x | {verdict} |\n",
            mode.name(),
            medians[index],
            cost[index][0],
            cost[index][cost[index].len() - 1],
            medians[index] / nft
        ));
    }
    table.push_str(&format!(
        "\n{packets} SYNs per mode and round from trafgen over a veth pair, {rounds} interleaved rounds, median; CPU from /proc/stat (user+nice+system+irq+softirq), trafgen's own cost included in every mode.\n"
    ));
    Ok(table)
}

/// A listener on the flooded port and a DENY AuthorizationPolicy of
/// 10,000 source blocks (/24 to /32) in the sender's /8, the sender's own
/// /32 among them: the kernel's trie walk for the sender is a deep one.
fn policy_yaml() -> String {
    let mut blocks = std::collections::BTreeSet::new();
    blocks.insert(format!("{SENDER}/32"));
    // A fixed LCG: the same blocks every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while blocks.len() < 10_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let bits = 24 + (state >> 60) % 9;
        let addr = 0xc000_0000u32 | ((state >> 8) as u32 & 0x00ff_ffff);
        let masked = addr & (u32::MAX << (32 - bits));
        let [a, b, c, d] = masked.to_be_bytes();
        blocks.insert(format!("{a}.{b}.{c}.{d}/{bits}"));
    }
    let list: Vec<String> = blocks.into_iter().collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: flood, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {PORT}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flood, namespace: istio-system}}
spec:
  hosts: [\"*\"]
  gateways: [flood]
  http:
  - directResponse: {{status: 200}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-blocks, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - from: [{{source: {{ipBlocks: [{}]}}}}]
",
        list.join(", ")
    )
}

/// Starts the gateway serving `config` on the receiving veth in XDP
/// `mode` and waits until its admin endpoint answers.
fn start_gateway(net: &Net, config: &Path, gateway: &Path, mode: &str) -> anyhow::Result<Daemon> {
    let child = net
        .exec(&net.receiver, &[])
        .arg(gateway)
        .args(["run", "--config"])
        .arg(config)
        .args([
            "--interface",
            "rcv0",
            "--address",
            RECEIVER,
            "--xdp-mode",
            mode,
            "--admin-address",
            ADMIN,
            "--access-log",
            "off",
            "--workers",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the gateway")?;
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = net
            .exec(
                &net.receiver,
                &["curl", "-sf", &format!("http://{ADMIN}/ready")],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!("the gateway did not become ready on rcv0");
        }
        thread::sleep(Duration::from_millis(100));
    }
}
