//! Capturing workloads' outbound TCP for the egress instance: routing
//! makes everything arriving from the captured interfaces local (an
//! `ip rule` per interface into a table whose only route is `local 0/0`),
//! so the socket-lookup program sees each connection and hands it to the
//! proxy (`sk_lookup.rs`), which reads the original destination from the
//! accepted socket's local address. Excluded destinations get a rule of
//! their own back to the main table. No iptables, nothing per workload.
use std::process::{Command, Stdio};

use crate::plan::Subnet;

/// Copies of one rule removed before it is added: more than killed
/// daemons could have left.
const MAX_STALE_RULES: usize = 16;

/// The routing table of the capture.
const TABLE: &str = "4711";
/// Rule priorities: exclusions before the capture.
const EXCLUDE_PRIORITY: &str = "4710";
const CAPTURE_PRIORITY: &str = "4711";

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
    pub fn install(interfaces: &[String], excludes: &[Subnet]) -> Result<Self, String> {
        let mut capture = Self { undo: Vec::new() };
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
    /// `ip <family> rule add <selector>`, and its `del` for the drop. The
    /// same rule left by a daemon that was killed outright is removed
    /// first (the kernel refuses a duplicate), so a restart captures again.
    fn add_rule(&mut self, family: &str, selector: &[&str]) -> Result<(), String> {
        let rule = |verb: &str| {
            let mut args = strings(&[family, "rule", verb]);
            args.extend(strings(selector));
            args
        };
        for _ in 0..MAX_STALE_RULES {
            if ip(&rule("del")).is_err() {
                break;
            }
        }
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
