/// The address key of a listener that accepts any destination address of the
/// gateway (Istio's default bind, `0.0.0.0` / `::`).
pub const ADDR_ANY: [u8; 16] = [0; 16];

/// Maps an IPv4 address into the IPv6 address space (`::ffff:a.b.c.d`), so
/// one 16-byte key type serves both families without a family field.
#[inline(always)]
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_matches_std_representation() {
        let v4 = [192, 0, 2, 10];
        let std_mapped = core::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets();
        assert_eq!(ipv4_mapped(v4), std_mapped);
    }

    #[test]
    fn any_address_is_not_a_mapped_ipv4_address() {
        assert_ne!(ipv4_mapped([0, 0, 0, 0]), ADDR_ANY);
    }
}
