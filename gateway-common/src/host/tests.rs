extern crate std;

use std::{collections::BTreeMap, string::String, vec, vec::Vec};

use super::*;

/// The `HOSTS` contents for one listener's server hosts, ids in order.
fn table(listener: u32, hosts: &[&str]) -> BTreeMap<HostKey, HostValue> {
    let mut table = BTreeMap::new();
    for (id, host) in hosts.iter().enumerate() {
        let (kind, hash) = match *host {
            "*" => (HOST_ANY, 0),
            wildcard if wildcard.starts_with('*') => {
                (HOST_SUFFIX, host_hash(&wildcard.as_bytes()[1..]))
            }
            exact => (HOST_EXACT, host_hash(exact.as_bytes())),
        };
        let value = HostValue {
            id: id as u32,
            pad: 0,
        };
        table.insert(
            HostKey {
                listener,
                kind,
                hash,
            },
            value,
        );
    }
    table
}

impl HostTable for BTreeMap<HostKey, HostValue> {
    fn host(&self, key: &HostKey) -> Option<HostValue> {
        self.get(key).copied()
    }
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
    out
}

fn server_name(name: &[u8]) -> Vec<u8> {
    let mut data = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    data.push(0);
    data.extend((name.len() as u16).to_be_bytes());
    data.extend(name);
    extension(0, &data)
}

/// A TLS record holding a ClientHello with `extensions` (already encoded).
fn client_hello(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(32);
    body.extend([9u8; 32]);
    body.extend(6u16.to_be_bytes());
    body.extend([0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend([1, 0]);
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![1];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![22, 3, 1];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

fn hello_for(sni: &str) -> Vec<u8> {
    let mut extensions = extension(10, &[0, 2, 0, 29]);
    extensions.extend(server_name(sni.as_bytes()));
    extensions.extend(extension(43, &[2, 3, 4]));
    client_hello(&extensions)
}

fn tls(segment: &[u8], table: &BTreeMap<HostKey, HostValue>) -> (HostClass, Option<u32>) {
    classify_host(segment, 0, segment.len(), true, 1, table)
}

fn http(segment: &[u8], table: &BTreeMap<HostKey, HostValue>) -> (HostClass, Option<u32>) {
    classify_host(segment, 0, segment.len(), false, 1, table)
}

const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "*.b.example.com",
    "api.test",
];

#[test]
fn sni_matches_exact_then_longest_wildcard_case_insensitively() {
    let hosts = table(1, HOSTS);
    assert_eq!(
        tls(&hello_for("example.com"), &hosts),
        (HostClass::Known, Some(0))
    );
    assert_eq!(
        tls(&hello_for("API.Test"), &hosts),
        (HostClass::Known, Some(3))
    );
    assert_eq!(
        tls(&hello_for("a.example.com"), &hosts),
        (HostClass::Known, Some(1))
    );
    assert_eq!(
        tls(&hello_for("x.b.example.com"), &hosts),
        (HostClass::Known, Some(2))
    );
    assert_eq!(
        tls(&hello_for("x.y.c.example.com"), &hosts),
        (HostClass::Known, Some(1))
    );
}

#[test]
fn a_wildcard_never_matches_its_bare_suffix_and_other_names_are_unknown() {
    let hosts = table(1, &["*.example.com"]);
    assert_eq!(
        tls(&hello_for("example.com"), &hosts),
        (HostClass::Unknown, None)
    );
    assert_eq!(
        tls(&hello_for(".example.com"), &hosts),
        (HostClass::Unknown, None)
    );
    assert_eq!(
        tls(&hello_for("example.org"), &hosts),
        (HostClass::Unknown, None)
    );
    assert_eq!(
        tls(&hello_for("aexample.com"), &hosts),
        (HostClass::Unknown, None)
    );
}

#[test]
fn a_catch_all_server_knows_every_name_after_the_specific_ones() {
    let hosts = table(1, &["example.com", "*"]);
    assert_eq!(
        tls(&hello_for("example.com"), &hosts),
        (HostClass::Known, Some(0))
    );
    assert_eq!(
        tls(&hello_for("other.org"), &hosts),
        (HostClass::Known, Some(1))
    );
}

#[test]
fn another_listeners_hosts_do_not_count() {
    let hosts = table(2, HOSTS);
    assert_eq!(
        tls(&hello_for("example.com"), &hosts),
        (HostClass::Unknown, None)
    );
}

#[test]
fn a_client_hello_without_sni_has_no_host() {
    let hosts = table(1, &["*"]);
    let hello = client_hello(&extension(10, &[0, 2, 0, 29]));
    assert_eq!(tls(&hello, &hosts), (HostClass::NoHost, None));
    assert_eq!(tls(&client_hello(&[]), &hosts), (HostClass::NoHost, None));
}

#[test]
fn the_sni_is_found_behind_many_extensions_up_to_the_bound() {
    let hosts = table(1, HOSTS);
    let many = |n: usize| {
        let mut extensions = Vec::new();
        for i in 0..n {
            extensions.extend(extension(100 + i as u16, &[0; 3]));
        }
        extensions.extend(server_name(b"example.com"));
        client_hello(&extensions)
    };
    assert_eq!(
        tls(&many(MAX_TLS_EXTENSIONS - 1), &hosts),
        (HostClass::Known, Some(0))
    );
    assert_eq!(
        tls(&many(MAX_TLS_EXTENSIONS), &hosts),
        (HostClass::Partial, None)
    );
}

#[test]
fn a_client_hello_cut_anywhere_before_the_name_ends_gives_no_verdict() {
    let hosts = table(1, HOSTS);
    let hello = hello_for("a.example.com");
    let name_end = hello
        .windows(13)
        .position(|w| w == b"a.example.com")
        .unwrap()
        + 13;
    for cut in 0..hello.len() {
        let (class, id) = tls(&hello[..cut], &hosts);
        if cut < name_end {
            assert!(
                matches!(class, HostClass::Partial | HostClass::Unrecognised),
                "cut at {cut}: {class:?}"
            );
            assert_eq!(id, None);
        } else {
            assert_eq!((class, id), (HostClass::Known, Some(1)), "cut at {cut}");
        }
    }
}

#[test]
fn a_large_client_hello_that_spans_segments_gives_no_verdict() {
    // A post-quantum key share of 1,216 bytes before the SNI, as Chrome sends.
    let mut extensions = extension(51, &[0x11; 1216]);
    extensions.extend(server_name(b"example.com"));
    let hello = client_hello(&extensions);
    let hosts = table(1, HOSTS);
    assert_eq!(tls(&hello[..1000], &hosts), (HostClass::Partial, None));
    assert_eq!(tls(&hello, &hosts), (HostClass::Known, Some(0)));
}

#[test]
fn records_that_are_not_a_client_hello_are_unrecognised() {
    let hosts = table(1, &["*"]);
    let mut application_data = hello_for("example.com");
    application_data[0] = 23;
    assert_eq!(
        tls(&application_data, &hosts),
        (HostClass::Unrecognised, None)
    );
    let mut server_hello = hello_for("example.com");
    server_hello[5] = 2;
    assert_eq!(tls(&server_hello, &hosts), (HostClass::Unrecognised, None));
    let mut sslv2 = hello_for("example.com");
    sslv2[1] = 2;
    assert_eq!(tls(&sslv2, &hosts), (HostClass::Unrecognised, None));
    assert_eq!(
        tls(b"GET / HTTP/1.1\r\n", &hosts),
        (HostClass::Unrecognised, None)
    );
}

#[test]
fn hostile_lengths_are_refused_not_followed() {
    let hosts = table(1, &["*"]);
    // A name longer than DNS allows.
    let long = vec![b'a'; MAX_HOST_LEN + 1];
    assert_eq!(
        tls(&client_hello(&server_name(&long)), &hosts),
        (HostClass::Unrecognised, None)
    );
    // An empty name.
    assert_eq!(
        tls(&client_hello(&server_name(b"")), &hosts),
        (HostClass::Unrecognised, None)
    );
    // A name that runs past its extension.
    let mut short_extension = server_name(b"example.com");
    short_extension[3] -= 4;
    let mut extensions = short_extension;
    extensions.extend(extension(43, &[0; 8]));
    assert_eq!(
        tls(&client_hello(&extensions), &hosts),
        (HostClass::Unrecognised, None)
    );
    // Extensions that claim more than the record holds.
    let mut hello = hello_for("example.com");
    let extensions_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 6 + 2;
    hello[extensions_len_at] = 0xff;
    assert_eq!(tls(&hello, &hosts), (HostClass::Unrecognised, None));
    // A name type other than host_name.
    let mut hello = hello_for("example.com");
    let type_at = hello.windows(11).position(|w| w == b"example.com").unwrap() - 3;
    hello[type_at] = 1;
    assert_eq!(tls(&hello, &hosts), (HostClass::Unrecognised, None));
    // A cipher-suite length that points far beyond any segment.
    let mut hello = hello_for("example.com");
    let suites_len_at = 5 + 4 + 2 + 32 + 1 + 32;
    hello[suites_len_at] = 0xff;
    assert_eq!(tls(&hello, &hosts), (HostClass::Partial, None));
}

#[test]
fn the_host_header_is_found_and_its_port_dropped() {
    let hosts = table(1, HOSTS);
    let request =
        b"GET /a HTTP/1.1\r\nUser-Agent: curl\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n";
    assert_eq!(http(request, &hosts), (HostClass::Known, Some(0)));
    let request = b"POST / HTTP/1.1\r\nhost:a.b.example.com\r\n\r\n";
    assert_eq!(http(request, &hosts), (HostClass::Known, Some(2)));
    let request = b"GET / HTTP/1.1\r\nHOST: \tapi.test \r\n\r\n";
    assert_eq!(http(request, &hosts), (HostClass::Known, Some(3)));
    let request = b"GET / HTTP/1.1\nHost: api.test\n\n";
    assert_eq!(http(request, &hosts), (HostClass::Known, Some(3)));
    let request = b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
    assert_eq!(http(request, &hosts), (HostClass::Unknown, None));
}

#[test]
fn only_a_header_named_host_counts() {
    let hosts = table(1, HOSTS);
    let request =
        b"GET /host:example.com HTTP/1.1\r\nX-Host: example.com\r\nHosts: example.com\r\n\r\n";
    assert_eq!(http(request, &hosts), (HostClass::NoHost, None));
}

#[test]
fn an_ipv6_literal_keeps_its_brackets() {
    let request = b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n";
    assert_eq!(http(request, &table(1, HOSTS)), (HostClass::Unknown, None));
    assert_eq!(
        http(request, &table(1, &["[2001:db8::1]"])),
        (HostClass::Known, Some(0))
    );
}

#[test]
fn a_request_head_cut_before_the_host_gives_no_verdict() {
    let hosts = table(1, HOSTS);
    let request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    // The name is complete once the byte after it (the line end) is in.
    let line_end = b"GET / HTTP/1.1\r\nHost: example.com".len();
    for cut in 0..request.len() {
        let (class, _) = http(&request[..cut], &hosts);
        let name_done = cut > line_end;
        if name_done {
            assert_eq!(class, HostClass::Known, "cut at {cut}");
        } else {
            assert!(
                matches!(class, HostClass::Partial | HostClass::Unrecognised),
                "cut at {cut}: {class:?}"
            );
        }
    }
    let long_path = [
        b"GET /".as_slice(),
        &[b'a'; MAX_HTTP_SCAN],
        b" HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ]
    .concat();
    assert_eq!(http(&long_path, &hosts), (HostClass::Partial, None));
}

#[test]
fn what_is_not_an_http1_request_is_unrecognised() {
    let hosts = table(1, &["*"]);
    assert_eq!(
        http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &hosts),
        (HostClass::Unrecognised, None)
    );
    assert_eq!(
        http(&hello_for("example.com"), &hosts),
        (HostClass::Unrecognised, None)
    );
    assert_eq!(
        http(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", &hosts),
        (HostClass::Unrecognised, None)
    );
    assert_eq!(http(b"", &hosts), (HostClass::Unrecognised, None));
}

#[test]
fn an_empty_or_overlong_host_value_is_not_a_name() {
    let hosts = table(1, &["*"]);
    assert_eq!(
        http(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", &hosts),
        (HostClass::NoHost, None)
    );
    let long = [
        b"GET / HTTP/1.1\r\nHost: ".as_slice(),
        &[b'a'; MAX_HOST_LEN + 1],
        b"\r\n\r\n",
    ]
    .concat();
    assert_eq!(http(&long, &hosts), (HostClass::Unrecognised, None));
}

#[test]
fn host_class_counters_do_not_overlap_between_listeners() {
    let mut seen = std::collections::BTreeSet::new();
    for listener in 0..4 {
        for class in HostClass::ALL {
            assert!(seen.insert(host_class_index(listener, class)));
        }
    }
    assert_eq!(seen.len(), 4 * HostClass::COUNT as usize);
    for (index, class) in HostClass::ALL.iter().enumerate() {
        assert_eq!(*class as usize, index);
    }
}

#[test]
fn names_hash_as_their_bytes_reversed() {
    assert_eq!(host_hash(b"Example.com"), host_hash(b"example.COM"));
    assert_ne!(host_hash(b"ab"), host_hash(b"ba"));
    assert_ne!(host_hash(b".example.com"), host_hash(b"example.com"));
}

#[test]
fn case_folding_never_tells_a_name_from_its_lower_case() {
    for byte in 0..=u8::MAX {
        assert_eq!(
            host_hash(&[byte]),
            host_hash(&[byte.to_ascii_lowercase()]),
            "byte {byte:#x}"
        );
    }
    assert_ne!(host_hash(b"a-b"), host_hash(b"a.b"));
    assert_ne!(host_hash(b"a1"), host_hash(b"a2"));
}

/// A name of `labels` one-letter labels under `tail`.
fn deep(labels: usize, tail: &str) -> String {
    let mut name = "a.".repeat(labels);
    name.push_str(tail);
    name
}

#[test]
fn the_longest_wildcard_wins_however_deep_the_name() {
    let hosts = table(1, &["*.com", "*.a.a.a.a.a.a.a.a.a.example.com"]);
    // 11 dots, the wildcard's suffix at the 10th from the right:
    // the longest suffix is among the last MAX_WILDCARD_DEPTH.
    assert_eq!(
        tls(&hello_for(&deep(10, "example.com")), &hosts),
        (HostClass::Known, Some(1))
    );
    // As many dots as the ring holds: every suffix is looked up.
    let name = deep(MAX_WILDCARD_DEPTH, "com");
    assert_eq!(name.matches('.').count(), MAX_WILDCARD_DEPTH);
    assert_eq!(tls(&hello_for(&name), &hosts), (HostClass::Known, Some(0)));
}

#[test]
fn a_name_deeper_than_the_ring_without_a_match_gets_no_verdict() {
    let name = deep(MAX_WILDCARD_DEPTH + 1, "com");
    assert_eq!(name.matches('.').count(), MAX_WILDCARD_DEPTH + 1);
    // `*.com` is the shortest suffix, never looked up: not "unknown".
    let hosts = table(1, &["*.com"]);
    assert_eq!(
        tls(&hello_for(&name), &hosts),
        (HostClass::Unrecognised, None)
    );
    // A catch-all or an exact match still decides.
    assert_eq!(
        tls(&hello_for(&name), &table(1, &["*.com", "*"])),
        (HostClass::Known, Some(1))
    );
    assert_eq!(
        tls(&hello_for(&name), &table(1, &[name.as_str()])),
        (HostClass::Known, Some(0))
    );
    // Far deeper names keep the ring in order: of two suffixes in it
    // (36 and 35 dots of the name's 41), the longer wins.
    let longer = std::format!("*.{}", deep(34, "example.com"));
    let shorter = std::format!("*.{}", deep(33, "example.com"));
    let name = deep(40, "example.com");
    assert_eq!(
        tls(&hello_for(&name), &table(1, &[&shorter, &longer])),
        (HostClass::Known, Some(1))
    );
    assert_eq!(
        tls(&hello_for(&name), &table(1, &[&longer, &shorter])),
        (HostClass::Known, Some(0))
    );
}

/// The byte-by-byte scan `http_host_value_start` replaced (a rolling
/// six-byte window), kept as the oracle the word-wise scan must agree with.
fn bytewise_host_value_start(frame: &[u8], start: usize, end: usize) -> Result<usize, HostClass> {
    match frame.byte(start) {
        Some(b'A'..=b'Z') => {}
        _ => return Err(HostClass::Unrecognised),
    }
    if frame.get(start..start + 4) == Some(b"PRI ".as_slice()) {
        return Err(HostClass::Unrecognised);
    }
    const HEADER: u64 = u64::from_be_bytes(*b"\0\0\nhost:");
    const CASE: u64 = 0x0000_0020_2020_2000;
    let mut window: u64 = 0;
    for i in 0..MAX_HTTP_SCAN {
        let at = start + i;
        if at >= end {
            return Err(HostClass::Partial);
        }
        let Some(byte) = frame.byte(at) else {
            return Err(HostClass::Partial);
        };
        window = (window << 8) | u64::from(byte);
        let last_two = window & 0xffff;
        if last_two == 0x0a0d || last_two == 0x0a0a {
            return Err(HostClass::NoHost);
        }
        if (window | CASE) & 0xffff_ffff_ffff == HEADER {
            return Ok(at + 1);
        }
    }
    Err(HostClass::Partial)
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn the_word_wise_scan_agrees_with_the_byte_wise_one() {
    // Request heads built from pieces that matter to the scan (line
    // feeds, carriage returns, `host:` in both cases, near misses), cut,
    // placed at every alignment, with the end anywhere.
    let pieces: [&[u8]; 12] = [
        b"GET / HTTP/1.1",
        b"\r\n",
        b"\n",
        b"Host: a.example.com",
        b"HOST:x",
        b"hOsT:",
        b"hos",
        b"t:",
        b"User-Agent: curl/8",
        b"\r",
        b"X-Host: no",
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut head: Vec<u8> = b"GET /".to_vec();
        for _ in 0..rng.below(12) {
            head.extend_from_slice(pieces[rng.below(pieces.len())]);
        }
        if rng.below(4) == 0 {
            let at = rng.below(head.len());
            head[at] = [b'\n', b'\r', b':', b'h', 0xff][rng.below(5)];
        }
        let padding = rng.below(9);
        let mut frame = vec![b'Z'; padding];
        frame.extend_from_slice(&head);
        frame.extend_from_slice(&[b'\n'; 3][..rng.below(4)]);
        let end = padding + rng.below(frame.len() - padding + 1);
        assert_eq!(
            http_host_value_start(frame.as_slice(), padding, end),
            bytewise_host_value_start(&frame, padding, end),
            "round {round}: {:?} from {padding} to {end}",
            String::from_utf8_lossy(&frame)
        );
    }
}

/// The kernel looks a name's hosts up in [`host_rank`] order: with every
/// kind of pattern that matches a name present, it finds the best ranked
/// one, and with that one removed, the next.
#[test]
fn match_host_looks_hosts_up_in_host_rank_order() {
    let patterns = [
        "*",
        "*.com",
        "*.example.com",
        "*.b.example.com",
        "a.b.example.com",
    ];
    let rank = |pattern: &str| match pattern {
        "*" => host_rank(HOST_ANY, 0),
        wildcard if wildcard.starts_with('*') => host_rank(HOST_SUFFIX, wildcard.len() - 1),
        _ => host_rank(HOST_EXACT, 0),
    };
    let mut left: Vec<&str> = patterns.to_vec();
    while !left.is_empty() {
        let hosts = table(1, &left);
        let best = (0..left.len())
            .min_by_key(|&at| rank(left[at]))
            .expect("a pattern");
        assert_eq!(
            tls(&hello_for("a.b.example.com"), &hosts),
            (HostClass::Known, Some(best as u32)),
            "{left:?}"
        );
        left.remove(best);
    }
}
