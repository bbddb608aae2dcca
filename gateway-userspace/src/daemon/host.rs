//! What the daemon reads from the host it runs on: the interface's
//! addresses (checked against `--address`), the open-file limit (raised),
//! the ephemeral port range (replies to the host's own connections).
use std::{fs, net::IpAddr};

use anyhow::{Context as _, bail};
use gateway_common::Settings;

/// Every `--address` must be on the interface XDP attaches to: an address
/// elsewhere would be served by the proxy but never protected by XDP.
pub fn check_addresses_on_interface(
    wanted: &[IpAddr],
    present: &[IpAddr],
    interface: &str,
) -> anyhow::Result<()> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|ip| !present.contains(ip))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let present: Vec<String> = present.iter().map(ToString::to_string).collect();
    bail!(
        "--address {} is not an address of interface {interface} (it has {}); XDP on {interface} would not protect it: add the address to the interface or name the interface that has it",
        missing.join(", "),
        present.join(", ")
    )
}

/// Raises the soft open-file limit to the hard limit (connections are
/// descriptors) and returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                log::info!("open-file limit raised from {soft} to {hard}");
                return hard;
            }
            Err(err) => {
                log::warn!("open-file limit stays at {soft}: cannot raise it to {hard}: {err}")
            }
        }
    }
    soft
}

/// The addresses configured on `interface`, which the gateway then owns.
pub fn interface_addresses(interface: &str) -> anyhow::Result<Vec<IpAddr>> {
    if nix::net::if_::if_nametoindex(interface).is_err() {
        bail!("no network interface named {interface:?} (see `ip link`)");
    }
    let addresses = node_addresses(Some(interface))?;
    if addresses.is_empty() {
        bail!(
            "interface {interface} has no IP address; give the gateway's addresses with --address"
        );
    }
    Ok(addresses)
}

/// The addresses of `interface`, or of every interface of the node.
pub fn node_addresses(interface: Option<&str>) -> anyhow::Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().context("cannot list interface addresses")? {
        if interface.is_some_and(|name| ifaddr.interface_name != name) {
            continue;
        }
        let Some(address) = ifaddr.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(addresses)
}

/// The host's ephemeral port range: replies to its own connections land there.
pub fn ephemeral_range() -> Settings {
    let parsed = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        });
    let (first, last) = parsed.unwrap_or((32768, 60999));
    Settings {
        ephemeral_first: first,
        ephemeral_last: last,
    }
}
