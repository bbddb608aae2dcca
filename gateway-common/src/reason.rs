/// Why the XDP program gave a packet its verdict; the index of the per-CPU
/// reason counters.
///
/// Codes are part of the userspace ABI and of dashboards: never renumber or
/// reuse one. Retire a code by renaming it `UnusedN`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Destination (address, port, protocol) belongs to a listener: passed to the stack.
    Listener = 0,
    /// Addressed to the gateway on a port no listener owns: dropped.
    NoListener = 1,
    /// Destination is not one of the gateway's addresses: not ours, passed.
    NotLocal = 2,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    NotIp = 3,
    /// IP but neither TCP nor UDP (ICMP, ...): passed so ping and PMTU discovery work.
    NotTcpUdp = 4,
    /// A non-first IP fragment: no ports to classify, passed to reassembly.
    Fragment = 5,
    /// Truncated or invalid headers: passed, the stack discards them with its own counters.
    Malformed = 6,
    /// Unlisted port in the host's ephemeral range, not a connection attempt:
    /// replies to connections the host itself opened, passed.
    LocalReply = 7,
    /// Valid headers deeper than the parser follows (more than two VLAN tags,
    /// long IPv6 extension-header chains): passed.
    Unparsed = 8,
    /// Addressed to the gateway on an unlisted port of the management
    /// allow-list (`--allow-port`, SSH by default): passed.
    AllowedPort = 9,
    /// A listener's connection attempt (SYN) from a source an
    /// AuthorizationPolicy certainly denies (a DENY rule on source blocks
    /// and ports, or outside an allow-listed port's blocks): dropped.
    PolicyDenied = 10,
}

/// What the XDP program does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet to the kernel stack (`XDP_PASS`).
    Pass,
    /// Discard the packet in the driver (`XDP_DROP`).
    Drop,
}

impl Reason {
    /// Number of reason codes; the size of the reason counter array.
    pub const COUNT: u32 = 11;

    /// Every reason, in code order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Listener,
        Self::NoListener,
        Self::NotLocal,
        Self::NotIp,
        Self::NotTcpUdp,
        Self::Fragment,
        Self::Malformed,
        Self::LocalReply,
        Self::Unparsed,
        Self::AllowedPort,
        Self::PolicyDenied,
    ];

    /// The verdict that goes with this reason.
    #[inline(always)]
    pub const fn verdict(self) -> Verdict {
        match self {
            Self::NoListener | Self::PolicyDenied => Verdict::Drop,
            _ => Verdict::Pass,
        }
    }

    /// Stable snake_case name, used in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::NoListener => "no_listener",
            Self::NotLocal => "not_local",
            Self::NotIp => "not_ip",
            Self::NotTcpUdp => "not_tcp_udp",
            Self::Fragment => "fragment",
            Self::Malformed => "malformed",
            Self::LocalReply => "local_reply",
            Self::Unparsed => "unparsed",
            Self::AllowedPort => "allowed_port",
            Self::PolicyDenied => "policy_denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_never_renumbered() {
        let codes: [(Reason, u32); 11] = [
            (Reason::Listener, 0),
            (Reason::NoListener, 1),
            (Reason::NotLocal, 2),
            (Reason::NotIp, 3),
            (Reason::NotTcpUdp, 4),
            (Reason::Fragment, 5),
            (Reason::Malformed, 6),
            (Reason::LocalReply, 7),
            (Reason::Unparsed, 8),
            (Reason::AllowedPort, 9),
            (Reason::PolicyDenied, 10),
        ];
        for (reason, code) in codes {
            assert_eq!(reason as u32, code, "{}", reason.name());
        }
    }

    #[test]
    fn all_lists_every_reason_in_code_order() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
    }

    #[test]
    fn only_no_listener_and_policy_denied_drop() {
        for reason in Reason::ALL {
            let expected = if matches!(reason, Reason::NoListener | Reason::PolicyDenied) {
                Verdict::Drop
            } else {
                Verdict::Pass
            };
            assert_eq!(reason.verdict(), expected, "{}", reason.name());
        }
    }
}
