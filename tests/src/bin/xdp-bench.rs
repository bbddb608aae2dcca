//! `cargo xtask bench xdp`: ns/packet of the XDP classifier with
//! BPF_PROG_TEST_RUN, against a trivial XDP_PASS program measured in the
//! same rounds (interleaved), on the paths a packet can take.
//!
//! Usage: `xdp-bench <xdp_pass.o> [repeat] [rounds]`; prints a Markdown table.
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
};
use gateway_userspace::dataplane::{Dataplane, EbpfLog};

const GW_V4: [u8; 4] = [192, 0, 2, 1];
const OTHER_V4: [u8; 4] = [198, 51, 100, 9];
const PSH_ACK: u8 = ACK | 0x08;
/// Targets from issue 8.
const L4_TARGET_NS: f64 = 90.0;
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
    log_cost(&mut dataplane, &plan, repeat, rounds)?;
    Ok(())
}

/// The cost of the kernel programs' diagnostic events on the drop path
/// (which has one): logging off, as the daemon runs by default, against
/// the same object with the events on at debug (written to the ring
/// buffer, which nobody reads here), interleaved in the same rounds.
fn log_cost(
    off: &mut Dataplane,
    plan: &gateway_userspace::plan::Plan,
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<()> {
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
