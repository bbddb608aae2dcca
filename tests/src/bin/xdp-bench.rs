//! `cargo xtask bench xdp`: ns/packet of the XDP classifier with
//! BPF_PROG_TEST_RUN, against a trivial XDP_PASS program measured in the
//! same rounds (interleaved), on the paths a packet can take.
//!
//! Usage: `xdp-bench <xdp_pass.o> [repeat] [rounds]`; prints a Markdown table.
//! The AuthorizationPolicy rows run the same object with a second set of
//! maps (a plan whose port 443 carries 10,000 DENY and 10,000 ALLOW
//! blocks), in the same rounds, against the rows without policy.
use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use gateway_common::Settings;
use gateway_tests::{
    fixtures::hosts_plan,
    frame::{ACK, Frame, SYN},
    hello::client_hello,
    rng::Rng,
};
use gateway_userspace::{
    dataplane::{Dataplane, EbpfLog},
    plan::{Plan, PortPolicy, Subnet},
};

const GW_V4: [u8; 4] = [192, 0, 2, 1];
const GW_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const OTHER_V4: [u8; 4] = [198, 51, 100, 9];
const PSH_ACK: u8 = ACK | 0x08;
/// Targets from issue 8.
const L4_TARGET_NS: f64 = 90.0;
/// The policy check's target over the listener hit without policy.
const POLICY_DELTA_TARGET_NS: f64 = 30.0;
/// Blocks per policy trie on the benchmark's port.
const POLICY_BLOCKS: usize = 10_000;
/// The frames' default source, which the allow set holds.
const SRC_V4: [u8; 4] = [192, 0, 2, 2];
/// A source inside one of the DENY blocks.
const DENIED_V4: [u8; 4] = [203, 0, 113, 9];
const HOST_TARGET_NS: f64 = 200.0;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: u32,
    target_ns: f64,
}

fn cases() -> Vec<Case> {
    let http = b"GET /index.html HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.14.1\r\nAccept: */*\r\n\r\n";
    vec![
        Case {
            name: "listener hit (SYN to a wildcard-address listener)",
            frame: Frame::tcp4(GW_V4, 443, SYN).build(),
            expect: 2,
            target_ns: L4_TARGET_NS,
        },
        Case {
            name: "unlisted drop (SYN to a port no listener owns)",
            frame: Frame::tcp4(GW_V4, 8081, SYN).build(),
            expect: 1,
            target_ns: L4_TARGET_NS,
        },
        Case {
            name: "non-gateway pass (SYN to another address)",
            frame: Frame::tcp4(OTHER_V4, 443, SYN).build(),
            expect: 2,
            target_ns: L4_TARGET_NS,
        },
        Case {
            name: "SNI parse (rustls ClientHello, wildcard host)",
            frame: Frame::tcp4(GW_V4, 443, PSH_ACK)
                .payload(&client_hello("a.example.com"))
                .build(),
            expect: 2,
            target_ns: HOST_TARGET_NS,
        },
        Case {
            name: "Host parse (curl-like GET, wildcard host)",
            frame: Frame::tcp4(GW_V4, 80, PSH_ACK).payload(http).build(),
            expect: 2,
            target_ns: HOST_TARGET_NS,
        },
    ]
}

/// Average ns per run of `program` on `frame` over `repeat` runs.
fn time(program: &Xdp, frame: &[u8], repeat: u32, expect: u32) -> anyhow::Result<f64> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    if result.return_value != expect {
        bail!("returned {} instead of {expect}", result.return_value);
    }
    // The kernel reports the mean time of one run over the repeats.
    Ok(result.duration.as_nanos() as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let baseline_object = PathBuf::from(
        args.next()
            .context("usage: xdp-bench <xdp_pass.o> [repeat] [rounds]")?,
    );
    let repeat: u32 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |s| s.parse())?;

    let mut dataplane = Dataplane::load()?;
    let plan = hosts_plan(&[IpAddr::from(GW_V4)]);
    dataplane.apply(&plan, Settings::default())?;
    let mut baseline = Ebpf::load_file(&baseline_object)
        .with_context(|| format!("cannot load {}", baseline_object.display()))?;
    let pass: &mut Xdp = baseline
        .program_mut("xdp_pass")
        .context("no xdp_pass program in the baseline object")?
        .try_into()?;
    pass.load()?;

    let cases = cases();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut base: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (index, case) in cases.iter().enumerate() {
            let pass: &mut Xdp = baseline
                .program_mut("xdp_pass")
                .context("baseline")?
                .try_into()?;
            base[index].push(time(pass, &case.frame, repeat, 2)?);
            let program = dataplane.program()?;
            ours[index].push(time(program, &case.frame, repeat, case.expect)?);
        }
    }
    println!(
        "| path | classifier ns/packet | XDP_PASS ns/packet | classifier - XDP_PASS | target | |"
    );
    println!("|---|---|---|---|---|---|");
    for (index, case) in cases.iter().enumerate() {
        let (lo, hi) = ours[index]
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let ours_median = median(&mut ours[index]);
        let base_median = median(&mut base[index]);
        let verdict = if ours_median <= case.target_ns {
            "PASS"
        } else {
            "MISS"
        };
        println!(
            "| {} | {ours_median:.1} ({lo:.1}-{hi:.1}) | {base_median:.1} | {:.1} | <= {} ns | {verdict} |",
            case.name,
            ours_median - base_median,
            case.target_ns
        );
    }
    println!(
        "\n{rounds} interleaved rounds of BPF_PROG_TEST_RUN with repeat {repeat} per program and path; median (min-max)."
    );
    policy_cost(&mut dataplane, &baseline_object, repeat, rounds)?;
    log_cost(&mut dataplane, &plan, repeat, rounds)?;
    Ok(())
}

/// `plan` with port 443 carrying `POLICY_BLOCKS` random DENY blocks
/// (IPv4 /24 to /32 in 10.0.0.0/8, one in ten IPv6 /48 to /128 in
/// 2001:db8::/32, one holding `DENIED_V4`) and as many ALLOW blocks (the
/// same mix, plus `SRC_V4`/32); and two sources deep in 10.0.0.0/8, where
/// the tries branch most: the first address of an ALLOW block no DENY
/// block holds (it passes), and of a DENY block (it is dropped).
fn policy_plan(plan: &Plan) -> (Plan, [u8; 4], [u8; 4], [u8; 16]) {
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let block = |rng: &mut Rng| -> Subnet {
        let bits = rng.next_u64();
        if rng.below(10) == 0 {
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&bits.to_be_bytes());
            addr[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
            addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            Subnet {
                addr: IpAddr::from(addr),
                prefix: 48 + rng.below(81) as u8,
            }
        } else {
            // 10.0.0.0/8 only: never the sources measured.
            let addr = [
                10,
                (bits >> 8) as u8,
                (bits >> 16) as u8,
                (bits >> 24) as u8,
            ];
            Subnet {
                addr: IpAddr::from(addr),
                prefix: 24 + rng.below(9) as u8,
            }
        }
    };
    let mut deny = std::collections::BTreeMap::new();
    while deny.len() < POLICY_BLOCKS - 1 {
        let b = block(&mut rng);
        deny.insert(masked(b), 1);
    }
    deny.insert(
        masked(Subnet {
            addr: IpAddr::from(DENIED_V4),
            prefix: 28,
        }),
        1,
    );
    let mut allow = std::collections::BTreeSet::new();
    while allow.len() < POLICY_BLOCKS - 1 {
        allow.insert(masked(block(&mut rng)));
    }
    let deep_allowed = allow
        .iter()
        .filter_map(|b| match b.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .find(|v4| {
            !deny.keys().any(|d| match d.addr {
                IpAddr::V4(net) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(d.prefix)).unwrap_or(0);
                    u32::from(*v4) & mask == u32::from(net)
                }
                IpAddr::V6(_) => false,
            })
        })
        .map(|v4| v4.octets())
        .unwrap_or(SRC_V4);
    let v4_denied: Vec<[u8; 4]> = deny
        .keys()
        .filter_map(|b| match b.addr {
            IpAddr::V4(v4) if v4.octets()[0] == 10 => Some(v4.octets()),
            _ => None,
        })
        .collect();
    let deep_denied = v4_denied[v4_denied.len() / 2];
    // The first address of an IPv6 ALLOW block no IPv6 DENY block holds.
    let v6_allowed = allow
        .iter()
        .filter_map(|b| match b.addr {
            IpAddr::V6(v6) => Some((u128::from(v6), b.prefix)),
            IpAddr::V4(_) => None,
        })
        .find(|(addr, _)| {
            !deny.keys().any(|d| match d.addr {
                IpAddr::V6(net) => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(d.prefix))
                        .unwrap_or(0);
                    addr & mask == u128::from(net)
                }
                IpAddr::V4(_) => false,
            })
        })
        .map(|(addr, _)| addr.to_be_bytes())
        .unwrap_or([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    allow.insert(Subnet {
        addr: IpAddr::from(SRC_V4),
        prefix: 32,
    });
    let mut with = plan.clone();
    with.ip_policy.policies = [(1, "bench/deny".to_string())].into();
    with.ip_policy.ports.insert(
        443,
        PortPolicy {
            deny,
            allow: Some(allow),
        },
    );
    with.set_policy_flags();
    (with, deep_allowed, deep_denied, v6_allowed)
}

/// The tables' worst case: 10,000 IPv4 /32 DENY blocks packed into the
/// source's /16 (one every sixth address) and 10,000 IPv6 /128 ones in
/// one /64, so each family's search runs its longest; and a source of
/// each between two of them, which passes.
fn crowded_plan(plan: &Plan) -> (Plan, [u8; 4], [u8; 16]) {
    let base = u32::from_be_bytes([198, 51, 0, 0]);
    let base6 = u128::from_be_bytes(GW_V6) & !u128::from(u64::MAX) | (0xbad << 64);
    let mut deny = std::collections::BTreeMap::new();
    for i in 0..POLICY_BLOCKS as u32 {
        let v4 = Subnet {
            addr: IpAddr::from((base + 6 * i).to_be_bytes()),
            prefix: 32,
        };
        let v6 = Subnet {
            addr: IpAddr::from((base6 + 6 * u128::from(i)).to_be_bytes()),
            prefix: 128,
        };
        deny.insert(v4, 1);
        deny.insert(v6, 1);
    }
    let mut with = plan.clone();
    with.ip_policy.policies = [(1, "bench/deny".to_string())].into();
    with.ip_policy
        .ports
        .insert(443, PortPolicy { deny, allow: None });
    with.set_policy_flags();
    let middle = POLICY_BLOCKS as u32 / 2;
    let source = base + 6 * middle + 3;
    let source6 = base6 + 6 * u128::from(middle) + 3;
    (with, source.to_be_bytes(), source6.to_be_bytes())
}

/// `block` with its host bits cleared, so no two blocks are one entry.
fn masked(block: Subnet) -> Subnet {
    let addr = match block.addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(block.prefix))
                .unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(block.prefix))
                .unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    };
    Subnet {
        addr,
        prefix: block.prefix,
    }
}

/// The AuthorizationPolicy check's cost: a listener SYN through 10,000
/// DENY and 10,000 ALLOW blocks (passed) against the same SYN without
/// policy, and a SYN from a denied source against today's unlisted-port
/// drop, interleaved in the same rounds, with the XDP_PASS baseline.
/// IPv4 sources are decided by the port's table, IPv6 ones by the tries.
fn policy_cost(
    plain: &mut Dataplane,
    baseline_object: &std::path::Path,
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<()> {
    let dual = hosts_plan(&[IpAddr::from(GW_V4), IpAddr::from(GW_V6)]);
    let mut policy = Dataplane::load()?;
    let (with_policy, deep_allowed, deep_denied, v6_allowed) = policy_plan(&dual);
    policy.apply(&with_policy, Settings::default())?;
    let mut crowded = Dataplane::load()?;
    let (crowded_plan, crowded_source, crowded_source6) = crowded_plan(&dual);
    crowded.apply(&crowded_plan, Settings::default())?;
    let mut baseline = Ebpf::load_file(baseline_object)?;
    let pass: &mut Xdp = baseline
        .program_mut("xdp_pass")
        .context("baseline")?
        .try_into()?;
    pass.load()?;
    let allowed = Frame::tcp4(GW_V4, 443, SYN).build();
    let unlisted = Frame::tcp4(GW_V4, 8081, SYN).build();
    // (row, frame, program, the row it is measured against, XDP action)
    let rows: [(String, Vec<u8>, Which, usize, u32); 9] = [
        (
            "listener hit, no policy".into(),
            allowed.clone(),
            Which::Plain,
            0,
            2,
        ),
        (
            "unlisted-port SYN drop".into(),
            unlisted,
            Which::Plain,
            1,
            1,
        ),
        (
            "listener SYN, IPv4 source allowed".into(),
            allowed.clone(),
            Which::Policy,
            0,
            2,
        ),
        (
            format!(
                "listener SYN, IPv4 source allowed deep in 10.0.0.0/8 ({})",
                IpAddr::from(deep_allowed)
            ),
            Frame::tcp4(GW_V4, 443, SYN).src4(deep_allowed).build(),
            Which::Policy,
            0,
            2,
        ),
        (
            format!(
                "worst case: IPv4 source between 10,000 /32 DENY blocks in its /16 ({})",
                IpAddr::from(crowded_source)
            ),
            Frame::tcp4(GW_V4, 443, SYN).src4(crowded_source).build(),
            Which::Crowded,
            0,
            2,
        ),
        (
            "listener SYN, IPv4 source denied (dropped)".into(),
            Frame::tcp4(GW_V4, 443, SYN).src4(DENIED_V4).build(),
            Which::Policy,
            1,
            1,
        ),
        (
            format!(
                "listener SYN, IPv4 source denied deep in 10.0.0.0/8 ({})",
                IpAddr::from(deep_denied)
            ),
            Frame::tcp4(GW_V4, 443, SYN).src4(deep_denied).build(),
            Which::Policy,
            1,
            1,
        ),
        (
            format!(
                "listener SYN, IPv6 source allowed ({})",
                IpAddr::from(v6_allowed)
            ),
            Frame::tcp6(GW_V6, 443, SYN).src6(v6_allowed).build(),
            Which::Policy,
            usize::MAX,
            2,
        ),
        (
            format!(
                "worst case: IPv6 source between 10,000 /128 DENY blocks in its /64 ({})",
                IpAddr::from(crowded_source6)
            ),
            Frame::tcp6(GW_V6, 443, SYN).src6(crowded_source6).build(),
            Which::Crowded,
            usize::MAX,
            2,
        ),
    ];
    // The IPv6 rows' own reference: an IPv6 SYN to a port without
    // policy, on the same maps.
    let v6_plain = Frame::tcp6(GW_V6, 9000, SYN).src6(v6_allowed).build();
    let mut samples = vec![Vec::new(); rows.len() + 2];
    for _ in 0..rounds {
        for (index, (_, frame, which, _, expect)) in rows.iter().enumerate() {
            let program = match which {
                Which::Plain => plain.program()?,
                Which::Policy => policy.program()?,
                Which::Crowded => crowded.program()?,
            };
            samples[index].push(time(program, frame, repeat, *expect)?);
        }
        samples[rows.len()].push(time(policy.program()?, &v6_plain, repeat, 2)?);
        let pass: &mut Xdp = baseline
            .program_mut("xdp_pass")
            .context("baseline")?
            .try_into()?;
        samples[rows.len() + 1].push(time(pass, &allowed, repeat, 2)?);
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let base = medians[rows.len() + 1];
    println!(
        "\nAuthorizationPolicy in XDP ({POLICY_BLOCKS} DENY and {POLICY_BLOCKS} ALLOW blocks on the port, IPv4 /24-/32 and one in ten IPv6 /48-/128; every source decided by the port's table; XDP_PASS {base:.1} ns/packet):\n"
    );
    println!("| path | ns/packet | against | ns/packet | delta | ratio | target | |");
    println!("|---|---|---|---|---|---|---|---|");
    for (index, (name, _, _, against, _)) in rows.iter().enumerate().skip(2) {
        let (reference_name, reference) = match *against {
            usize::MAX => (
                "IPv6 listener hit, no policy on the port".to_string(),
                medians[rows.len()],
            ),
            other => (rows[other].0.clone(), medians[other]),
        };
        let ns = medians[index];
        let delta = ns - reference;
        let (target, met) = if *against == 1 {
            // A drop's cost to the node is the flood row's target; this
            // is where a difference would come from.
            ("flood row below".to_string(), "")
        } else {
            (
                format!("< +{POLICY_DELTA_TARGET_NS} ns"),
                if delta < POLICY_DELTA_TARGET_NS {
                    "PASS"
                } else {
                    "MISS"
                },
            )
        };
        println!(
            "| {name} | {ns:.1} | {reference_name} | {reference:.1} | {delta:+.1} | {:.2}x | {target} | {met} |",
            ns / reference
        );
    }
    Ok(())
}

/// Which maps a policy row runs against.
#[derive(Clone, Copy)]
enum Which {
    /// No policy.
    Plain,
    /// `policy_plan`.
    Policy,
    /// `crowded_plan`.
    Crowded,
}

/// The cost of the kernel programs' diagnostic events on the drop path
/// (which has one): logging off, as the daemon runs by default, against
/// the same object with the events on at debug (written to the ring
/// buffer, which nobody reads here), interleaved in the same rounds.
fn log_cost(off: &mut Dataplane, plan: &Plan, repeat: u32, rounds: usize) -> anyhow::Result<()> {
    let mut on = Dataplane::load_logging(EbpfLog::Debug)?;
    on.apply(plan, Settings::default())?;
    let frame = Frame::tcp4(GW_V4, 8081, SYN).build();
    let (mut off_ns, mut on_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off_ns.push(time(off.program()?, &frame, repeat, 1)?);
        on_ns.push(time(on.program()?, &frame, repeat, 1)?);
    }
    println!(
        "\nDiagnostic events (`--ebpf-log`) on the unlisted-drop path, which logs one: off {:.1} ns/packet, debug {:.1} ns/packet.",
        median(&mut off_ns),
        median(&mut on_ns)
    );
    Ok(())
}
