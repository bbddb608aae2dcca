//! Capturing workloads' outbound TCP for the egress instance: routing
//! makes everything arriving from the captured interfaces local (an
//! `ip rule` per interface into a table whose only route is `local 0/0`),
//! so the socket-lookup program sees each connection and hands it to the
//! proxy (`sk_lookup.rs`), which reads the original destination from the
//! accepted socket's local address. Excluded destinations get a rule of
//! their own back to the main table. No iptables, nothing per workload.
use std::{
    net::IpAddr,
    process::{Command, Stdio},
};

/// The routing table of the capture.
const TABLE: &str = "4711";
/// Rule priorities: exclusions before the capture.
const EXCLUDE_PRIORITY: &str = "4710";
const CAPTURE_PRIORITY: &str = "4711";

/// A destination range never captured (`--egress-exclude`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host).
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an address or CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        None => max,
    };
    Ok(Cidr { addr, prefix })
}

/// The routing rules of the capture; removed on drop.
pub struct Capture {
    undo: Vec<Vec<String>>,
}

fn ip(args: &[String]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run ip: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_string()).collect()
}

impl Capture {
    /// Routes everything `interfaces` send as local, except `excludes`.
    pub fn install(interfaces: &[String], excludes: &[Cidr]) -> Result<Self, String> {
        let mut capture = Capture { undo: Vec::new() };
        for family in ["-4", "-6"] {
            let any = if family == "-4" { "0.0.0.0/0" } else { "::/0" };
            ip(&strings(&[
                family, "route", "replace", "local", any, "dev", "lo", "table", TABLE,
            ]))?;
            capture
                .undo
                .push(strings(&[family, "route", "flush", "table", TABLE]));
        }
        for interface in interfaces {
            for cidr in excludes {
                let family = if cidr.addr.is_ipv4() { "-4" } else { "-6" };
                let to = cidr.to_string();
                capture.add_rule(
                    family,
                    &[
                        "iif",
                        interface,
                        "to",
                        &to,
                        "lookup",
                        "main",
                        "priority",
                        EXCLUDE_PRIORITY,
                    ],
                )?;
            }
            for family in ["-4", "-6"] {
                capture.add_rule(
                    family,
                    &[
                        "iif",
                        interface,
                        "lookup",
                        TABLE,
                        "priority",
                        CAPTURE_PRIORITY,
                    ],
                )?;
            }
        }
        Ok(capture)
    }
}

impl Capture {
    /// `ip <family> rule add <selector>`, and its `del` for the drop.
    fn add_rule(&mut self, family: &str, selector: &[&str]) -> Result<(), String> {
        let rule = |verb: &str| {
            let mut args = strings(&[family, "rule", verb]);
            args.extend(strings(selector));
            args
        };
        ip(&rule("add"))?;
        self.undo.push(rule("del"));
        Ok(())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for args in self.undo.iter().rev() {
            if let Err(err) = ip(args) {
                log::warn!("egress capture cleanup: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_with_and_without_a_prefix() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Ok(Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            })
        );
        assert_eq!(parse_cidr("2001:db8::1").map(|c| c.prefix), Ok(128));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }
}
