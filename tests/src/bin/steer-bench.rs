//! The kernel's part of the egress capture, per connection and per
//! packet, with BPF_PROG_TEST_RUN (`cargo xtask bench egress` prints it):
//! the guard on a workload's SYN to a registered address and on a data
//! segment, and the socket lookup that hands the connection to the proxy.
//! Prints one markdown table.
use std::net::{SocketAddr, TcpListener};

use anyhow::{Context as _, bail};
use aya::programs::{TestRun, TestRunOptions};
use gateway_tests::{
    frame::{ACK, Frame, SYN},
    steer::{Lookup, cookie, run_repeated},
};
use gateway_userspace::{dataplane::Dataplane, model::Subnet as Cidr};

const TC_ACT_OK: u32 = 0;
const SK_PASS: u32 = 1;
const EXTERNAL: [u8; 4] = [198, 51, 100, 10];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repeat: u32 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |s| s.parse())?;

    let mut dataplane = Dataplane::load()?;
    // The proxy's listening socket the lookup hands connections to.
    let proxy = TcpListener::bind("127.0.0.1:0")?;
    // Every slot: only an IPv4 one is looked up here.
    let slots: Vec<_> = (0..gateway_common::PROXY_SOCKET_SLOTS)
        .map(|slot| (slot, std::os::fd::AsFd::as_fd(&proxy)))
        .collect();
    dataplane.set_proxy_sockets(&slots)?;
    // Test runs of a socket lookup cannot set the interface the SYN came
    // in on (the kernel wants it zero): index 0 stands for the captured
    // interface here, so the lookup takes the egress path in full.
    dataplane.set_egress(&[0], &[])?;
    let mut maps = dataplane.take_egress_maps()?;
    maps.set_policy(false)?;
    let registered: Cidr = "198.51.100.10".parse()?;
    maps.set_allowed(&[registered].into(), &Default::default())?;
    let proxy_cookie = cookie(&proxy)?;
    let lookup = Lookup {
        protocol: 6,
        remote: "192.0.2.2:40000".parse()?,
        local: SocketAddr::from((EXTERNAL, 443)),
        ingress_ifindex: 0,
    };
    let syn = Frame::tcp4(EXTERNAL, 443, SYN).build();
    let data = Frame::tcp4(EXTERNAL, 443, ACK)
        .payload(&[0u8; 1000])
        .build();

    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (index, frame) in [&syn, &data].into_iter().enumerate() {
            let guard = dataplane.egress_guard_program()?;
            let result = guard
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat,
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN of the guard")?;
            if result.return_value != TC_ACT_OK {
                bail!("the guard returned {}", result.return_value);
            }
            times[index].push(result.duration.as_nanos() as f64);
        }
        let (steered, ns) = run_repeated(dataplane.steering_program()?, &lookup, repeat)?;
        if steered.verdict != SK_PASS || steered.cookie != proxy_cookie {
            bail!("the lookup was not handed to the proxy's socket: {steered:?}");
        }
        times[2].push(f64::from(ns));
    }
    let [mut guard_syn, mut guard_data, mut lookup_ns] = times;
    let (guard_syn, guard_data, lookup_ns) = (
        median(&mut guard_syn),
        median(&mut guard_data),
        median(&mut lookup_ns),
    );
    println!("| kernel step of the capture | ns |");
    println!("|---|---|");
    println!(
        "| guard, a workload's SYN to a registered address (parse, 3 lookups, count) | {guard_syn:.1} |"
    );
    println!("| socket lookup, handing the connection to the proxy's socket | {lookup_ns:.1} |");
    println!(
        "| **per connection (SYN through the guard + one lookup)** | **{:.1}** |",
        guard_syn + lookup_ns
    );
    println!(
        "| guard, every later packet of a workload (a 1000-byte data segment) | {guard_data:.1} |"
    );
    println!("\nBPF_PROG_TEST_RUN, {rounds} rounds of {repeat} runs each, median.");
    Ok(())
}
