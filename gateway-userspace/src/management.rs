//! Keeping the operator's way in: the management allow-list
//! (`--allow-port`) of unlisted ports that still pass XDP on the gateway's
//! addresses, and the check that warns before an empty list cuts off the
//! interface the host itself is reached through.
use std::collections::{BTreeMap, BTreeSet};

use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, allowed_port_bit};

/// One `--allow-port` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowPort {
    /// `none`: no management port at all.
    None,
    /// A port, for TCP, UDP or both.
    Port(AllowedPort),
}

/// Ports that pass XDP although no listener owns them: `port` to `last`
/// (the same for one port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowedPort {
    pub port: u16,
    pub last: u16,
    pub tcp: bool,
    pub udp: bool,
}

/// Parses `22` (TCP and UDP, as firewall tools read a bare port), `22/tcp`,
/// `161/udp`, a range such as `30000-32767/tcp` (a node's NodePorts), or
/// `none`.
pub fn parse_allow_port(text: &str) -> Result<AllowPort, String> {
    if text == "none" {
        return Ok(AllowPort::None);
    }
    let (numbers, protocol) = match text.split_once('/') {
        Some((numbers, protocol)) => (numbers, Some(protocol)),
        None => (text, None),
    };
    let number = |number: &str| {
        number
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{number:?} is not a port number (1-65535)"))
    };
    let (port, last) = match numbers.split_once('-') {
        Some((first, last)) => (number(first)?, number(last)?),
        None => (number(numbers)?, number(numbers)?),
    };
    if last < port {
        return Err(format!(
            "{numbers:?} is not a range: {last} comes before {port}"
        ));
    }
    let (tcp, udp) = match protocol {
        None => (true, true),
        Some("tcp") => (true, false),
        Some("udp") => (false, true),
        Some(other) => return Err(format!("unknown protocol {other:?}: use tcp or udp")),
    };
    Ok(AllowPort::Port(AllowedPort {
        port,
        last,
        tcp,
        udp,
    }))
}

/// The allow-list the `--allow-port` values name; `none` stands alone.
pub fn allow_list(values: &[AllowPort]) -> Result<Vec<AllowedPort>, String> {
    let ports: Vec<AllowedPort> = values
        .iter()
        .filter_map(|value| match value {
            AllowPort::Port(port) => Some(*port),
            AllowPort::None => None,
        })
        .collect();
    if values.contains(&AllowPort::None) && !ports.is_empty() {
        return Err("--allow-port none cannot be combined with ports".to_string());
    }
    Ok(ports)
}

/// The non-zero words of the kernel's `ALLOWED_PORTS` bitmap for `ports`.
pub fn allowed_port_words(ports: &[AllowedPort]) -> BTreeMap<u32, u64> {
    let mut words = BTreeMap::new();
    for port in ports {
        for (wanted, protocol) in [(port.tcp, IPPROTO_TCP), (port.udp, IPPROTO_UDP)] {
            if !wanted {
                continue;
            }
            for number in port.port..=port.last {
                if let Some((word, mask)) = allowed_port_bit(protocol, number) {
                    *words.entry(word).or_insert(0) |= mask;
                }
            }
        }
    }
    words
}

/// `22/tcp, 161/udp, 2222`, for the start-up log line.
pub fn describe(ports: &[AllowedPort]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    let one = |p: &AllowedPort| {
        let numbers = if p.last == p.port {
            p.port.to_string()
        } else {
            format!("{}-{}", p.port, p.last)
        };
        match (p.tcp, p.udp) {
            (true, false) => format!("{numbers}/tcp"),
            (false, true) => format!("{numbers}/udp"),
            _ => numbers,
        }
    };
    ports.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// Interfaces of the host's default routes, from the text of
/// `/proc/net/route` (IPv4) and `/proc/net/ipv6_route` (IPv6).
pub fn default_route_interfaces(route_v4: &str, route_v6: &str) -> BTreeSet<String> {
    let mut interfaces = BTreeSet::new();
    // "Iface Destination Gateway Flags ...": destination 00000000 and mask
    // 00000000 (the eighth column) is the default route.
    for line in route_v4.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [iface, "00000000", _, _, _, _, _, "00000000", ..] = fields[..] {
            interfaces.insert(iface.to_string());
        }
    }
    // "dest plen src splen next metric refcnt use flags iface": ::/0, and not
    // the kernel's unreachable placeholder on `lo`.
    for line in route_v6.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [dest, "00", .., iface] = fields[..] {
            if dest == "0".repeat(32) && iface != "lo" {
                interfaces.insert(iface.to_string());
            }
        }
    }
    interfaces
}

/// The one-sentence warning `gateway run` prints when XDP goes on the
/// interface of a default route with nothing allowed; `None` when safe.
pub fn lockout_warning(
    interface: &str,
    ports: &[AllowedPort],
    default_routes: &BTreeSet<String>,
) -> Option<String> {
    (ports.is_empty() && default_routes.contains(interface)).then(|| {
        format!(
            "{interface} carries the host's default route and --allow-port is none: \
             SSH and every other port no listener owns are dropped on the gateway's addresses"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(port: u16, tcp: bool, udp: bool) -> AllowedPort {
        AllowedPort {
            port,
            last: port,
            tcp,
            udp,
        }
    }

    #[test]
    fn values_name_a_port_with_an_optional_protocol_or_none() {
        assert_eq!(
            parse_allow_port("22"),
            Ok(AllowPort::Port(port(22, true, true)))
        );
        assert_eq!(
            parse_allow_port("22/tcp"),
            Ok(AllowPort::Port(port(22, true, false)))
        );
        assert_eq!(
            parse_allow_port("161/udp"),
            Ok(AllowPort::Port(port(161, false, true)))
        );
        assert_eq!(
            parse_allow_port("65535/tcp"),
            Ok(AllowPort::Port(port(65535, true, false)))
        );
        assert_eq!(parse_allow_port("none"), Ok(AllowPort::None));
        assert_eq!(
            parse_allow_port("30000-32767/tcp"),
            Ok(AllowPort::Port(AllowedPort {
                port: 30000,
                last: 32767,
                tcp: true,
                udp: false
            }))
        );
        assert_eq!(
            parse_allow_port("20-10"),
            Err("\"20-10\" is not a range: 10 comes before 20".to_string())
        );
        for bad in [
            "0", "65536", "ssh", "", "22/sctp", "22/", "/tcp", "-1", "1-", "-5", "1-0", "1-2-3",
        ] {
            assert!(parse_allow_port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_allow_port("22/sctp"),
            Err("unknown protocol \"sctp\": use tcp or udp".to_string())
        );
    }

    #[test]
    fn none_stands_alone() {
        let ssh = AllowPort::Port(port(22, true, false));
        assert_eq!(allow_list(&[AllowPort::None]), Ok(vec![]));
        assert_eq!(allow_list(&[ssh]), Ok(vec![port(22, true, false)]));
        assert!(allow_list(&[AllowPort::None, ssh]).is_err());
        assert!(allow_list(&[ssh, AllowPort::None]).is_err());
    }

    #[test]
    fn words_set_one_bit_per_protocol_and_port() {
        let words = allowed_port_words(&[port(22, true, false), port(23, true, true)]);
        assert_eq!(
            words,
            BTreeMap::from([(0, (1 << 22) | (1 << 23)), (1024, 1 << 23)])
        );
        let words = allowed_port_words(&[port(161, false, true), port(64, true, false)]);
        assert_eq!(words, BTreeMap::from([(1, 1), (1026, 1 << 33)]));
        let range = AllowedPort {
            port: 62,
            last: 129,
            tcp: true,
            udp: false,
        };
        assert_eq!(
            allowed_port_words(&[range]),
            BTreeMap::from([(0, 0b11 << 62), (1, u64::MAX), (2, 0b11)])
        );
        assert!(allowed_port_words(&[]).is_empty());
    }

    #[test]
    fn description_names_each_port_and_its_protocols() {
        let ports = [
            port(22, true, false),
            port(161, false, true),
            port(2222, true, true),
            AllowedPort {
                port: 30000,
                last: 32767,
                tcp: true,
                udp: true,
            },
        ];
        assert_eq!(describe(&ports), "22/tcp, 161/udp, 2222, 30000-32767");
        assert_eq!(describe(&[]), "none");
    }

    const ROUTE_V4: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
gw1\t00000000\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const ROUTE_V6: &str = "\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth2
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";

    #[test]
    fn default_routes_are_read_from_proc_net() {
        let found = default_route_interfaces(ROUTE_V4, ROUTE_V6);
        assert_eq!(
            found,
            BTreeSet::from(["eth0".to_string(), "eth2".to_string()])
        );
        assert!(default_route_interfaces("", "").is_empty());
    }

    #[test]
    fn the_warning_needs_an_empty_list_on_a_default_route_interface() {
        let routes = BTreeSet::from(["eth0".to_string()]);
        let warning = lockout_warning("eth0", &[], &routes).expect("a warning");
        assert!(warning.starts_with("eth0 carries the host's default route"));
        assert!(!warning.contains('\n'));
        assert_eq!(lockout_warning("eth1", &[], &routes), None);
        assert_eq!(
            lockout_warning("eth0", &[port(22, true, false)], &routes),
            None
        );
    }
}
