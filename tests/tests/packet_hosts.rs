//! Host classification in the real XDP program (BPF_PROG_TEST_RUN): the
//! first data segments of TLS and HTTP listeners are classified by SNI and
//! `Host` against the plan's server hosts, counted per listener and host,
//! and never dropped; and the kernel agrees with the host-side reference
//! classifier (`gateway_common::classify_host`) on real, cut and mutated
//! segments.
use std::{collections::BTreeMap, net::IpAddr};

use aya::programs::{TestRun, TestRunOptions};
use gateway_common::{
    HOST_BUCKET_SLOTS, HOST_EXACT, HostClass, HostKey, HostTable, HostValue, Settings,
    classify_host, host_bucket, host_hash,
};
use gateway_tests::{
    fixtures::{hosts_plan, plan_of},
    frame::{ACK, Frame, checksum_is_valid},
    hello::client_hello,
    require_root,
    rng::Rng,
};
use gateway_userspace::{
    dataplane::{Dataplane, Stats, StatsReader},
    plan::{KernelHost, Plan},
};

const XDP_PASS: u32 = 2;
const GW_V4: [u8; 4] = [192, 0, 2, 1];
const GW_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PSH_ACK: u8 = ACK | 0x08;

fn plan() -> Plan {
    hosts_plan(&[IpAddr::from(GW_V4), IpAddr::from(GW_V6)])
}

struct Harness {
    dataplane: Dataplane,
    counters: StatsReader,
    plan: Plan,
    hosts: Vec<KernelHost>,
}

/// The host-side copy of the `HOSTS` map, for the reference classifier.
struct Reference(BTreeMap<HostKey, HostValue>);

impl HostTable for Reference {
    fn host(&self, key: &HostKey) -> Option<HostValue> {
        self.0.get(key).copied()
    }
}

/// What one segment did to the counters of one listener.
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    class: Option<HostClass>,
    host: Option<u32>,
}

impl Harness {
    fn new() -> Self {
        Self::resetting(&[])
    }

    /// A harness whose listeners on `ports` reset unknown hosts.
    fn resetting(ports: &[u16]) -> Self {
        let mut plan = plan();
        plan.reset_unknown_hosts(ports).expect("ports with hosts");
        Self::with_plan(plan)
    }

    fn with_plan(plan: Plan) -> Self {
        require_root();
        let mut dataplane = Dataplane::load().expect("load XDP program");
        dataplane
            .apply(&plan, Settings::default())
            .expect("apply plan");
        let counters = dataplane.take_stats_reader().expect("counter maps");
        let hosts = plan.kernel_hosts();
        Self {
            dataplane,
            counters,
            plan,
            hosts,
        }
    }

    fn listener(&self, port: u16) -> u32 {
        self.plan
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener")
            .id
    }

    fn host_id(&self, port: u16, pattern: &str) -> u32 {
        let listener = self.listener(port);
        self.hosts
            .iter()
            .find(|h| h.listener_id == listener && h.pattern.to_string() == pattern)
            .expect("host")
            .id
    }

    fn stats(&self) -> Stats {
        let listeners = self.plan.listeners.iter().map(|l| l.id);
        let hosts = self.hosts.iter().map(|h| h.id);
        self.counters.read(listeners, hosts).expect("stats")
    }

    /// Runs `frame`, checks it passed, and returns which host class and
    /// host of the listener on `port` it was counted under.
    fn run(&mut self, port: u16, frame: &Frame) -> Counted {
        let listener = self.listener(port);
        let before = self.stats();
        let bytes = frame.build();
        let program = self.dataplane.program().expect("program");
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&bytes),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(result.return_value, XDP_PASS, "never dropped: {frame:?}");
        let after = self.stats();
        let class_packets = |stats: &Stats, class| {
            stats
                .host_classes
                .iter()
                .find(|(id, c, _)| *id == listener && *c == class)
                .map_or(0, |(_, _, c)| c.packets)
        };
        let classes: Vec<HostClass> = HostClass::ALL
            .into_iter()
            .filter(|class| class_packets(&after, *class) != class_packets(&before, *class))
            .collect();
        assert!(classes.len() <= 1, "one class per segment: {classes:?}");
        let host_packets = |stats: &Stats, id| {
            stats
                .hosts
                .iter()
                .find(|(h, _)| *h == id)
                .map_or(0, |(_, c)| c.packets)
        };
        let hosts: Vec<u32> = self
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|id| host_packets(&after, *id) != host_packets(&before, *id))
            .collect();
        assert!(hosts.len() <= 1, "one host per segment: {hosts:?}");
        Counted {
            class: classes.first().copied(),
            host: hosts.first().copied(),
        }
    }

    /// Runs `frame` and returns what the program made of it (it must pass).
    fn output(&mut self, frame: &Frame) -> Vec<u8> {
        let bytes = frame.build();
        let mut out = vec![0u8; bytes.len() + 256];
        let program = self.dataplane.program().expect("program");
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&bytes),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(result.return_value, XDP_PASS, "never dropped: {frame:?}");
        out.truncate(result.data_size_out as usize);
        out
    }

    fn resets(&self, port: u16) -> u64 {
        let listener = self.listener(port);
        self.stats()
            .resets
            .iter()
            .find(|(id, _)| *id == listener)
            .map_or(0, |(_, c)| c.packets)
    }

    fn reference(&self) -> Reference {
        Reference(self.hosts.iter().map(|h| (h.key(), h.value())).collect())
    }
}

fn known(host: u32) -> Counted {
    Counted {
        class: Some(HostClass::Known),
        host: Some(host),
    }
}

fn class(class: HostClass) -> Counted {
    Counted {
        class: Some(class),
        host: None,
    }
}

/// An HTTP/1.1 request head for `host`.
fn get(host: &str) -> String {
    format!("GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: {host}\r\n\r\n")
}

fn tls4(payload: &[u8]) -> Frame {
    Frame::tcp4(GW_V4, 443, PSH_ACK).payload(payload)
}

fn http4(payload: &[u8]) -> Frame {
    Frame::tcp4(GW_V4, 80, PSH_ACK).payload(payload)
}

/// The verifier's limit on instructions walked per program.
const VERIFIER_LIMIT: u32 = 1_000_000;

#[test]
fn every_program_verifies_in_under_a_tenth_of_the_kernel_limit() {
    let harness = Harness::new();
    let counts = harness.dataplane.verified_instructions();
    assert_eq!(counts.len(), 7, "{counts:?}");
    for (name, count) in counts {
        let count = count.expect("the kernel reports verified instructions");
        println!("{name}: {count} instructions verified");
        assert!(
            count < VERIFIER_LIMIT / 10,
            "{name}: {count} instructions verified, too close to the {VERIFIER_LIMIT} limit"
        );
    }
}

#[test]
fn a_client_hello_is_counted_under_its_server_host() {
    let mut h = Harness::new();
    let exact = h.host_id(443, "dataengine.com");
    let wildcard = h.host_id(443, "*.example.com");
    assert_eq!(
        h.run(443, &tls4(&client_hello("dataengine.com"))),
        known(exact)
    );
    assert_eq!(
        h.run(443, &tls4(&client_hello("DataEngine.COM"))),
        known(exact)
    );
    assert_eq!(
        h.run(443, &tls4(&client_hello("a.b.example.com"))),
        known(wildcard)
    );
}

#[test]
fn an_unknown_sni_is_counted_and_still_passed() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(443, &tls4(&client_hello("evil.test"))),
        class(HostClass::Unknown)
    );
    assert_eq!(
        h.run(443, &tls4(&client_hello("example.com"))),
        class(HostClass::Unknown)
    );
    // rustls sends no SNI for an IP address, like every TLS client.
    assert_eq!(
        h.run(443, &tls4(&client_hello("192.0.2.1"))),
        class(HostClass::NoHost)
    );
}

#[test]
fn a_client_hello_split_over_segments_gives_no_verdict_on_either() {
    let mut h = Harness::new();
    let hello = client_hello("dataengine.com");
    let (first, second) = hello.split_at(60);
    assert_eq!(h.run(443, &tls4(first)), class(HostClass::Partial));
    // The rest starts inside the hello's random bytes: read as a TLS
    // record or (on a listener that also serves plaintext) as HTTP, it
    // gives no verdict either way.
    let rest = h.run(443, &tls4(second));
    assert!(
        rest == class(HostClass::Unrecognised) || rest == class(HostClass::Partial),
        "{rest:?}"
    );
}

#[test]
fn ipv6_and_vlan_segments_are_classified_like_plain_ipv4() {
    let mut h = Harness::new();
    let exact = h.host_id(443, "dataengine.com");
    let hello = client_hello("dataengine.com");
    let v6 = Frame::tcp6(GW_V6, 443, PSH_ACK).payload(&hello);
    assert_eq!(h.run(443, &v6), known(exact));
    assert_eq!(h.run(443, &tls4(&hello).vlan(7)), known(exact));
}

#[test]
fn the_host_header_is_classified_on_http_listeners() {
    let mut h = Harness::new();
    let exact = h.host_id(80, "dataengine.com");
    let wildcard = h.host_id(80, "*.example.com");
    assert_eq!(
        h.run(80, &http4(get("dataengine.com:80").as_bytes())),
        known(exact)
    );
    assert_eq!(
        h.run(80, &http4(get("api.example.com").as_bytes())),
        known(wildcard)
    );
    assert_eq!(
        h.run(80, &http4(get("evil.test").as_bytes())),
        class(HostClass::Unknown)
    );
    assert_eq!(
        h.run(80, &http4(b"GET / HTTP/1.0\r\n\r\n")),
        class(HostClass::NoHost)
    );
    assert_eq!(
        h.run(80, &http4(b"GET /a-long-path-cut-")),
        class(HostClass::Partial)
    );
}

#[test]
fn segments_without_payload_and_tcp_listeners_are_not_classified() {
    let mut h = Harness::new();
    let nothing = Counted {
        class: None,
        host: None,
    };
    assert_eq!(h.run(443, &Frame::tcp4(GW_V4, 443, ACK)), nothing);
    // Ethernet padding is not payload: the IP length says where it ends.
    assert_eq!(h.run(443, &Frame::tcp4(GW_V4, 443, ACK).pad(6)), nothing);
    let hello = client_hello("dataengine.com");
    assert_eq!(
        h.run(9000, &Frame::tcp4(GW_V4, 9000, PSH_ACK).payload(&hello)),
        nothing
    );
}

#[test]
fn a_frame_cut_short_of_its_ip_length_is_read_only_as_far_as_it_goes() {
    let mut h = Harness::new();
    let hello = client_hello("dataengine.com");
    let frame = tls4(&hello);
    let name_at = frame
        .build()
        .windows(14)
        .position(|w| w == b"dataengine.com")
        .expect("SNI in the frame");
    // The IP length says the name is all there; the frame ends inside it.
    let cut = frame.clone().truncate(name_at + 5);
    assert_eq!(h.run(443, &cut), class(HostClass::Partial));
    // Cut right after the name, the rest of the hello is not needed
    // (rustls orders extensions differently from run to run, so the name
    // may come last: the cut is made where the name ends).
    let cut = frame.truncate(name_at + "dataengine.com".len());
    let exact = h.host_id(443, "dataengine.com");
    assert_eq!(h.run(443, &cut), known(exact));
}

/// Checks `out` is `input`'s headers as a bare RST|ACK: payload and
/// padding gone, IP length matching, same ports and sequence numbers,
/// valid checksums. `ip` is the IP header's offset, `tcp` the TCP header's.
fn assert_reset(input: &[u8], out: &[u8], ip: usize, tcp: usize, ipv6: bool) {
    assert_eq!(out.len(), tcp + 20, "headers only");
    assert_eq!(out[..ip], input[..ip], "link layer kept");
    let addresses = if ipv6 {
        ip + 8..ip + 40
    } else {
        ip + 12..ip + 20
    };
    assert_eq!(out[addresses.clone()], input[addresses], "addresses kept");
    assert_eq!(out[tcp..tcp + 4], input[tcp..tcp + 4], "ports kept");
    assert_eq!(
        out[tcp + 4..tcp + 12],
        input[tcp + 4..tcp + 12],
        "sequence numbers kept"
    );
    assert_eq!(out[tcp + 13], 0x14, "RST|ACK");
    let addresses = if ipv6 {
        assert_eq!(
            usize::from(u16::from_be_bytes([out[ip + 4], out[ip + 5]])),
            out.len() - ip - 40
        );
        &out[ip + 8..ip + 40]
    } else {
        assert_eq!(
            usize::from(u16::from_be_bytes([out[ip + 2], out[ip + 3]])),
            out.len() - ip
        );
        assert!(checksum_is_valid(&out[ip..tcp]), "IPv4 header checksum");
        &out[ip + 12..ip + 20]
    };
    let mut pseudo = addresses.to_vec();
    pseudo.extend([0, 6]);
    pseudo.extend(((out.len() - tcp) as u16).to_be_bytes());
    pseudo.extend(&out[tcp..]);
    assert!(checksum_is_valid(&pseudo), "TCP checksum");
}

#[test]
fn an_unknown_host_on_a_resetting_listener_becomes_a_reset_to_the_stack() {
    let mut h = Harness::resetting(&[80, 443]);
    let unknown = http4(get("evil.test").as_bytes()).pad(4);
    let input = unknown.build();
    let out = h.output(&unknown);
    assert_reset(&input, &out, 14, 34, false);
    assert_eq!(h.resets(80), 1);
    // The client's retransmission meets the closed socket as it is, so the
    // stack resets the client; a later one is reset again.
    assert_eq!(h.output(&unknown), input);
    assert_eq!(h.resets(80), 1);
    assert_reset(&input, &h.output(&unknown), 14, 34, false);
    assert_eq!(h.resets(80), 2);
    // Over IPv6 behind a VLAN tag, with an unknown SNI.
    let hello = client_hello("evil.test");
    let unknown6 = Frame::tcp6(GW_V6, 443, PSH_ACK).vlan(7).payload(&hello);
    let input = unknown6.build();
    let out = h.output(&unknown6);
    assert_reset(&input, &out, 18, 58, true);
    assert_eq!(h.resets(443), 1);
    // Known hosts, no host, and no verdict pass untouched and reset nothing.
    for frame in [
        http4(get("dataengine.com").as_bytes()),
        http4(b"GET / HTTP/1.0\r\n\r\n"),
        http4(b"GET /cut-before-the-host"),
        tls4(&client_hello("dataengine.com")),
    ] {
        assert_eq!(h.output(&frame), frame.build(), "{frame:?}");
    }
    assert_eq!((h.resets(80), h.resets(443)), (2, 1));
}

#[test]
fn listeners_reset_nothing_unless_asked() {
    let mut h = Harness::new();
    let unknown = http4(get("evil.test").as_bytes());
    assert_eq!(h.output(&unknown), unknown.build());
    assert_eq!(h.resets(80), 0);
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = [0x00, 0xff, 0x2e, 0x0a, 0x3a][rng.below(5)],
            2 => {
                let len = (rng.next_u64() & 0xffff) as u16;
                let end = (at + 2).min(bytes.len());
                bytes[at..end].copy_from_slice(&len.to_be_bytes()[..end - at]);
            }
            3 => bytes.truncate(at),
            _ => {
                let from = rng.below(bytes.len());
                let chunk: Vec<u8> = bytes[from..].iter().take(rng.below(64)).copied().collect();
                bytes.splice(at..at, chunk);
            }
        }
    }
    bytes
}

#[test]
fn the_kernel_agrees_with_the_reference_on_real_and_mutated_segments() {
    let mut h = Harness::new();
    let reference = h.reference();
    let mut rng = Rng::from_env("HOST_PROPERTY_SEED");
    let seeds: Vec<(u16, Vec<u8>)> = vec![
        (443, client_hello("dataengine.com")),
        (443, client_hello("x.example.com")),
        (443, client_hello("evil.test")),
        (
            80,
            b"GET / HTTP/1.1\r\nHost: dataengine.com\r\n\r\n".to_vec(),
        ),
        (
            80,
            b"POST /p HTTP/1.1\r\nAccept: */*\r\nhost: a.example.com:8080\r\n\r\n".to_vec(),
        ),
        (
            80,
            b"GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n".to_vec(),
        ),
    ];
    let cases = std::env::var("HOST_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    for case in 0..cases {
        let (port, seed_bytes) = &seeds[case % seeds.len()];
        let payload = if case < seeds.len() {
            seed_bytes.clone()
        } else {
            mutate(&mut rng, seed_bytes)
        };
        let frame = Frame::tcp4(GW_V4, *port, PSH_ACK).payload(&payload);
        let got = h.run(*port, &frame);
        let listener = h.listener(*port);
        let want = if payload.is_empty() {
            Counted {
                class: None,
                host: None,
            }
        } else {
            // The kernel reads a TLS port's segment as TLS when it starts a
            // handshake record, as HTTP otherwise; so does this.
            let tls = *port == 443 && payload.first() == Some(&22);
            let bytes = frame.build();
            let start = bytes.len() - payload.len();
            let (class, host) =
                classify_host(&bytes[..], start, bytes.len(), tls, listener, &reference);
            Counted {
                class: Some(class),
                host,
            }
        };
        assert_eq!(got, want, "case {case}, payload {payload:?}");
    }
}

/// A TLS passthrough listener on 443 for `hosts`.
fn passthrough_config(hosts: &[String]) -> String {
    let list = hosts.join("\", \"");
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: many, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: ["{list}"]
    tls: {{mode: PASSTHROUGH}}
"#
    )
}

#[test]
fn hosts_past_a_full_bucket_are_found_in_the_hash_map() {
    // The listener's id, then names whose keys all fall in one bucket of
    // HOST_BUCKETS: one more than it holds, so the last overflows to HOSTS.
    let probe = plan_of(
        &passthrough_config(&["probe.test".to_string()]),
        &[IpAddr::from(GW_V4)],
    );
    let listener = probe.listeners[0].id;
    let key = |name: &str| HostKey {
        listener,
        kind: HOST_EXACT,
        hash: host_hash(name.as_bytes()),
    };
    let bucket = host_bucket(&key("h0.collide.test"));
    let names: Vec<String> = (0..)
        .map(|n| format!("h{n}.collide.test"))
        .filter(|name| host_bucket(&key(name)) == bucket)
        .take(HOST_BUCKET_SLOTS + 2)
        .collect();
    let plan = plan_of(&passthrough_config(&names), &[IpAddr::from(GW_V4)]);
    assert_eq!(plan.listeners[0].id, listener);
    let mut h = Harness::with_plan(plan);
    let reference = h.reference();
    for name in &names {
        let id = h.host_id(443, name);
        assert_eq!(h.run(443, &tls4(&client_hello(name))), known(id), "{name}");
        assert_eq!(reference.host(&key(name)).map(|v| v.id), Some(id), "{name}");
    }
    // A name of the same bucket that no server has is still unknown.
    let stranger = (0..)
        .map(|n| format!("s{n}.collide.test"))
        .find(|name| host_bucket(&key(name)) == bucket)
        .expect("a name of the bucket");
    assert_eq!(
        h.run(443, &tls4(&client_hello(&stranger))),
        class(HostClass::Unknown)
    );
}
