//! `destinationSubnets` entries: an address or a CIDR block, parsed as
//! Istio's `ValidateIPSubnet` does (`pkg/config/validation/agent`).
use std::{fmt, net::IpAddr, str::FromStr};

/// An IPv4 or IPv6 block; a plain address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a `destinationSubnets` entry is rejected, in Istio's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// Text with one `/` that Go's `netip.ParsePrefix` refuses.
    #[error("{0} is not a valid CIDR block")]
    Cidr(String),
    /// Text without exactly one `/` that Go's `netip.ParseAddr` refuses.
    #[error("{0} is not a valid IP")]
    Ip(String),
}

impl FromStr for Subnet {
    type Err = SubnetError;

    /// Istio: one `/` means a CIDR block (no IPv6 zone, a decimal prefix
    /// length without sign or leading zero, at most 32 or 128); anything
    /// else must be a single address, where an IPv6 zone is accepted and
    /// has no effect on the block.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.matches('/').count() == 1 {
            let cidr = || SubnetError::Cidr(text.to_string());
            let (addr, bits) = text.split_once('/').ok_or_else(cidr)?;
            let addr: IpAddr = addr.parse().map_err(|_| cidr())?;
            let canonical = bits == "0" || !bits.starts_with('0');
            if bits.is_empty() || !canonical || !bits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(cidr());
            }
            let prefix: u8 = bits.parse().map_err(|_| cidr())?;
            if prefix > max_prefix(addr) {
                return Err(cidr());
            }
            return Ok(Self { addr, prefix });
        }
        let ip = || SubnetError::Ip(text.to_string());
        let addr: IpAddr = match text.split_once('%') {
            Some((v6, zone)) if !zone.is_empty() => v6
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ip())?,
            Some(_) => return Err(ip()),
            None => text.parse().map_err(|_| ip())?,
        };
        Ok(Self {
            addr,
            prefix: max_prefix(addr),
        })
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, SubnetError> {
        text.parse::<Subnet>().map(|s| s.to_string())
    }

    #[test]
    fn addresses_and_blocks_of_both_families_are_accepted() {
        assert_eq!(parse("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(parse("10.1.2.3").unwrap(), "10.1.2.3/32");
        assert_eq!(parse("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse("2001:db8::1").unwrap(), "2001:db8::1/128");
        assert_eq!(parse("::ffff:10.0.0.0/104").unwrap(), "::ffff:10.0.0.0/104");
    }

    #[test]
    fn host_bits_are_allowed_as_in_go() {
        assert_eq!(parse("10.1.2.3/8").unwrap(), "10.1.2.3/8");
    }

    #[test]
    fn bad_blocks_are_not_valid_cidr_blocks() {
        for text in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/-0",
            "10.0.0.0/x",
            "10.0.0/8",
            "fe80::1%eth0/64",
            "/8",
        ] {
            assert_eq!(
                parse(text),
                Err(SubnetError::Cidr(text.into())),
                "{text} parsed"
            );
        }
        assert_eq!(
            SubnetError::Cidr("10.0.0.0/33".into()).to_string(),
            "10.0.0.0/33 is not a valid CIDR block"
        );
    }

    #[test]
    fn text_without_one_slash_must_be_an_address() {
        for text in [
            "",
            "example.com",
            "10.0.0.256",
            "010.0.0.1",
            "10.0.0.0/8/8",
            "10.0.0.1%eth0",
            "fe80::1%",
        ] {
            assert_eq!(
                parse(text),
                Err(SubnetError::Ip(text.into())),
                "{text} parsed"
            );
        }
        assert_eq!(
            SubnetError::Ip("example.com".into()).to_string(),
            "example.com is not a valid IP"
        );
    }

    #[test]
    fn an_ipv6_zone_is_accepted_on_a_plain_address_only() {
        assert_eq!(parse("fe80::1%eth0").unwrap(), "fe80::1/128");
    }
}
