//! The AuthorizationPolicy rules the kernel can enforce on a listener's
//! connection attempts: pure, from the policies that attach to this
//! gateway, in Istio's order. The proxy evaluates every policy again on
//! each request, so the kernel may only drop what the proxy would
//! certainly deny; everything this step is not sure of is left out (the
//! rules, and why each is sound: docs/security-policy.md, "In the kernel").
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr},
};

use gateway_common::{IPPROTO_TCP, MAX_POLICIES, MAX_POLICY_ENTRIES, POLICY_ALLOW_LIST};

use super::CompileError;
use crate::{
    model::{AuthorizationPolicy, AuthzAction, AuthzRule, Instance, Operation, Source, Subnet},
    plan::{IpPolicy, Listener},
};

/// What the kernel enforces of `policies` (attached to this gateway, in
/// Istio's order) on the TCP listener ports of `listeners`. Fails, writing
/// nothing, when the entries exceed the kernel's tries or counters.
pub(crate) fn ip_policy(
    policies: &[&AuthorizationPolicy],
    listeners: &[Listener],
    instance: &Instance,
) -> Result<IpPolicy, CompileError> {
    let ports: BTreeSet<u16> = listeners
        .iter()
        .filter(|l| l.ip_protocol == IPPROTO_TCP)
        .map(|l| l.port)
        .collect();
    let enforced: Vec<&AuthorizationPolicy> =
        policies.iter().copied().filter(|p| !p.dry_run).collect();
    let remote_is_peer = instance.trusted_proxies == 0;
    let mut out = IpPolicy::default();

    // DENY: slots from 1 in Istio's order; a block denied twice on a port
    // is counted against the first policy that denies it.
    let mut slot = POLICY_ALLOW_LIST;
    for policy in enforced.iter().filter(|p| p.action == AuthzAction::Deny) {
        let mut entries: Vec<(u16, Subnet)> = Vec::new();
        for rule in policy.rules.iter().flatten() {
            let Some((rule_ports, blocks)) = certain_deny(rule, &ports, remote_is_peer) else {
                continue;
            };
            for port in &rule_ports {
                for block in &blocks {
                    entries.extend(kernel_deny_blocks(*block).into_iter().map(|b| (*port, b)));
                }
            }
        }
        if entries.is_empty() {
            continue;
        }
        slot += 1;
        if slot >= MAX_POLICIES {
            return Err(CompileError::TooManyKernelPolicies {
                limit: MAX_POLICIES - 1,
            });
        }
        out.policies.insert(slot, policy_name(policy));
        for (port, block) in entries {
            out.ports
                .entry(port)
                .or_default()
                .deny
                .entry(block)
                .or_insert(slot);
        }
    }

    // ALLOW: a port is allow-listed only when no rule that could apply to
    // it can match a connection without a source block.
    let allow: Vec<&AuthorizationPolicy> = enforced
        .iter()
        .copied()
        .filter(|p| p.action == AuthzAction::Allow)
        .collect();
    if !allow.is_empty() {
        let rules: Vec<&AuthzRule> = allow
            .iter()
            .flat_map(|p| p.rules.iter().flatten())
            .collect();
        for port in &ports {
            if let Some(blocks) = allow_list(&rules, *port, remote_is_peer) {
                out.ports.entry(*port).or_default().allow = Some(blocks);
            }
        }
    }
    check_capacity(&out)?;
    Ok(out)
}

/// `ns/name`, as counters and reports name a policy.
fn policy_name(policy: &AuthorizationPolicy) -> String {
    format!("{}/{}", policy.namespace, policy.name)
}

/// The (listener ports, source blocks) a DENY rule denies whatever else a
/// connection carries; `None` when the rule depends on anything the
/// kernel cannot see (a `when`, a `to` field other than `ports`, a `from`
/// field other than one positive block list) or on the client address an
/// `X-Forwarded-For` may name (`remoteIpBlocks` with trusted proxies).
fn certain_deny(
    rule: &AuthzRule,
    listener_ports: &BTreeSet<u16>,
    remote_is_peer: bool,
) -> Option<(BTreeSet<u16>, BTreeSet<Subnet>)> {
    if !rule.when.is_empty() {
        return None;
    }
    let ports: BTreeSet<u16> = match &rule.to {
        None => listener_ports.clone(),
        // An empty list is left to the proxy rather than guessed at.
        Some(to) if to.is_empty() => return None,
        Some(to) => {
            let mut ports = BTreeSet::new();
            for operation in to {
                if !only_ports(operation) {
                    return None;
                }
                ports.extend(
                    operation
                        .ports
                        .iter()
                        .filter(|p| listener_ports.contains(p)),
                );
            }
            ports
        }
    };
    let blocks: BTreeSet<Subnet> = match &rule.from {
        None => [any_v4(), any_v6()].into(),
        Some(from) if from.is_empty() => return None,
        Some(from) => {
            let mut blocks = BTreeSet::new();
            for source in from {
                blocks.extend(only_blocks(source, remote_is_peer)?.iter().map(masked));
            }
            blocks
        }
    };
    Some((ports, blocks))
}

/// An operation that names ports and nothing else.
fn only_ports(operation: &Operation) -> bool {
    let Operation {
        hosts,
        not_hosts,
        ports,
        not_ports,
        methods,
        not_methods,
        paths,
        not_paths,
    } = operation;
    !ports.is_empty()
        && hosts.is_empty()
        && not_hosts.is_empty()
        && not_ports.is_empty()
        && methods.is_empty()
        && not_methods.is_empty()
        && paths.is_empty()
        && not_paths.is_empty()
}

/// A source that is one positive block list and nothing else: its
/// `ipBlocks`, or its `remoteIpBlocks` when the remote address is the peer.
fn only_blocks(source: &Source, remote_is_peer: bool) -> Option<&[Subnet]> {
    let Source {
        ip_blocks,
        not_ip_blocks,
        remote_ip_blocks,
        not_remote_ip_blocks,
        request_principals,
        not_request_principals,
    } = source;
    let rest_empty = not_ip_blocks.is_empty()
        && not_remote_ip_blocks.is_empty()
        && request_principals.is_empty()
        && not_request_principals.is_empty();
    if !rest_empty {
        return None;
    }
    match (ip_blocks.is_empty(), remote_ip_blocks.is_empty()) {
        (false, true) => Some(ip_blocks),
        (true, false) if remote_is_peer => Some(remote_ip_blocks),
        _ => None,
    }
}

/// `Some(blocks)` when `port` is allow-listed: every ALLOW rule that could
/// apply to it has a `from` whose every entry holds the peer to a block
/// list; the blocks are their union (a superset of what the rules accept,
/// as the other fields only narrow). No rule that could apply: the empty
/// set (Istio: ALLOW policies present and none matches means deny).
fn allow_list(rules: &[&AuthzRule], port: u16, remote_is_peer: bool) -> Option<BTreeSet<Subnet>> {
    let mut blocks = BTreeSet::new();
    for rule in rules.iter().filter(|r| could_apply(r, port)) {
        let from = rule.from.as_ref().filter(|from| !from.is_empty())?;
        for source in from {
            blocks.extend(peer_blocks(source, remote_is_peer)?.iter().map(masked));
        }
    }
    Some(blocks)
}

/// Whether an ALLOW rule may match a connection to `port`: its `to` is
/// absent (or an empty list), or one entry has no `ports` (`notPorts` and
/// everything else may still match), or lists `port`.
fn could_apply(rule: &AuthzRule, port: u16) -> bool {
    match &rule.to {
        None => true,
        Some(to) if to.is_empty() => true,
        Some(to) => to
            .iter()
            .any(|op| op.ports.is_empty() || op.ports.contains(&port)),
    }
}

/// The blocks a source holds its peer to, if any: `ipBlocks`, else
/// `remoteIpBlocks` when the remote address is the peer.
fn peer_blocks(source: &Source, remote_is_peer: bool) -> Option<&[Subnet]> {
    if !source.ip_blocks.is_empty() {
        Some(&source.ip_blocks)
    } else if remote_is_peer && !source.remote_ip_blocks.is_empty() {
        Some(&source.remote_ip_blocks)
    } else {
        None
    }
}

fn any_v4() -> Subnet {
    Subnet {
        addr: IpAddr::from([0u8; 4]),
        prefix: 0,
    }
}

fn any_v6() -> Subnet {
    Subnet {
        addr: IpAddr::from([0u8; 16]),
        prefix: 0,
    }
}

/// `block` with its host bits cleared (Istio accepts `10.0.0.1/8`).
fn masked(block: &Subnet) -> Subnet {
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
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    };
    Subnet {
        addr,
        prefix: block.prefix,
    }
}

/// `::ffff:0:0/96`, where the tries keep IPv4 sources.
const MAPPED: u128 = 0xffff_0000_0000;

/// A DENY block as the tries may hold it. The tries keep IPv4 sources
/// IPv4-mapped, and Envoy never matches an IPv4 peer against an IPv6
/// block: an IPv6 block inside `::ffff:0:0/96` is left to the proxy, and
/// one containing it (`::/0`) becomes the blocks that cover the rest.
fn kernel_deny_blocks(block: Subnet) -> Vec<Subnet> {
    let IpAddr::V6(v6) = block.addr else {
        return vec![block];
    };
    let bits = u128::from(v6);
    let prefix = u32::from(block.prefix);
    let within = |value: u128, len: u32| value.checked_shr(128 - len).unwrap_or(0);
    if prefix >= 96 {
        return if within(bits, 96) == within(MAPPED, 96) {
            Vec::new()
        } else {
            vec![block]
        };
    }
    if within(bits, prefix) != within(MAPPED, prefix) {
        return vec![block];
    }
    // The siblings along the path from the block down to the mapped /96.
    (prefix..96)
        .map(|len| {
            let flipped = MAPPED ^ (1u128 << (127 - len));
            let keep = u128::MAX.checked_shl(128 - (len + 1)).unwrap_or(0);
            Subnet {
                addr: IpAddr::V6(Ipv6Addr::from(flipped & keep)),
                prefix: u8::try_from(len + 1).unwrap_or(128),
            }
        })
        .collect()
}

/// Refuses entries the tries cannot hold: the plan is refused whole,
/// never written in part.
fn check_capacity(policy: &IpPolicy) -> Result<(), CompileError> {
    let (mut deny, mut allow) = (0usize, 0usize);
    let (mut most, mut most_port) = (0usize, 0u16);
    for (port, entry) in &policy.ports {
        let on_port = entry.deny.len() + entry.allow.as_ref().map_or(0, BTreeSet::len);
        deny += entry.deny.len();
        allow += entry.allow.as_ref().map_or(0, BTreeSet::len);
        if on_port > most {
            (most, most_port) = (on_port, *port);
        }
    }
    for (trie, count) in [("DENY", deny), ("ALLOW", allow)] {
        if count > MAX_POLICY_ENTRIES as usize {
            return Err(CompileError::TooManyPolicyEntries {
                trie,
                count,
                limit: MAX_POLICY_ENTRIES,
                port: most_port,
                on_port: most,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
