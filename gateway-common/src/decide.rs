use crate::{Reason, Settings};

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// TCP SYN flag bit (byte 13 of the TCP header).
pub const TCP_SYN: u8 = 0x02;
/// TCP ACK flag bit (byte 13 of the TCP header).
pub const TCP_ACK: u8 = 0x10;

/// The verdict for a packet addressed to one of the gateway's own addresses
/// on a (port, protocol) that no listener owns.
///
/// A port on the management allow-list (`allowed`: SSH by default) passes,
/// so the operator is never locked out. Otherwise a connection attempt (TCP
/// SYN without ACK) is always dropped, so scanners see a timeout rather
/// than a refusal. Anything else is dropped too, unless it targets the
/// host's ephemeral port range: those packets are replies to connections
/// the host opened itself (DNS answers, SYN-ACKs, upstream responses) and
/// must keep working while the gateway owns the address.
#[inline(always)]
pub fn unlisted_local_verdict(
    protocol: u8,
    tcp_flags: u8,
    dst_port: u16,
    settings: &Settings,
    allowed: bool,
) -> Reason {
    if allowed {
        return Reason::AllowedPort;
    }
    let connection_attempt =
        protocol == IPPROTO_TCP && tcp_flags & TCP_SYN != 0 && tcp_flags & TCP_ACK == 0;
    if !connection_attempt && settings.is_ephemeral(dst_port) {
        Reason::LocalReply
    } else {
        Reason::NoListener
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: Settings = Settings {
        ephemeral_first: 32768,
        ephemeral_last: 60999,
    };

    #[test]
    fn syn_to_unlisted_port_is_dropped() {
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_SYN, 22, &RANGE, false);
        assert_eq!(reason, Reason::NoListener);
    }

    #[test]
    fn syn_to_an_allowed_port_passes() {
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_SYN, 22, &RANGE, true);
        assert_eq!(reason, Reason::AllowedPort);
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_SYN, 40000, &RANGE, true);
        assert_eq!(reason, Reason::AllowedPort);
    }

    #[test]
    fn syn_to_ephemeral_port_is_dropped() {
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_SYN, 40000, &RANGE, false);
        assert_eq!(reason, Reason::NoListener);
    }

    #[test]
    fn syn_ack_to_ephemeral_port_is_a_local_reply() {
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_SYN | TCP_ACK, 40000, &RANGE, false);
        assert_eq!(reason, Reason::LocalReply);
    }

    #[test]
    fn ack_outside_ephemeral_range_is_dropped() {
        let reason = unlisted_local_verdict(IPPROTO_TCP, TCP_ACK, 22, &RANGE, false);
        assert_eq!(reason, Reason::NoListener);
    }

    #[test]
    fn udp_to_ephemeral_port_is_a_local_reply() {
        let reason = unlisted_local_verdict(IPPROTO_UDP, 0, 60999, &RANGE, false);
        assert_eq!(reason, Reason::LocalReply);
    }

    #[test]
    fn ephemeral_range_starts_exactly_at_its_first_port() {
        let at = |port| unlisted_local_verdict(IPPROTO_UDP, 0, port, &RANGE, false);
        assert_eq!(at(32768), Reason::LocalReply);
        assert_eq!(at(32767), Reason::NoListener);
    }

    #[test]
    fn udp_outside_ephemeral_range_is_dropped() {
        let reason = unlisted_local_verdict(IPPROTO_UDP, 0, 53, &RANGE, false);
        assert_eq!(reason, Reason::NoListener);
    }

    #[test]
    fn unset_settings_have_no_ephemeral_range() {
        let unset = Settings {
            ephemeral_first: 0,
            ephemeral_last: 0,
        };
        assert_eq!(
            unlisted_local_verdict(IPPROTO_UDP, 0, 0, &unset, false),
            Reason::NoListener
        );
    }
}
