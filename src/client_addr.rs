//! Which address a request really comes from.
//!
//! Throttling and the audit log key on the client address. Behind a reverse
//! proxy the peer is the proxy, so the forwarded header is believed, but only
//! when the peer is one of the policy's `trusted_proxies`; otherwise anyone
//! could pick their own address and escape the throttle.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is a
/// /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR block")]
pub struct CidrError(String);

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical(addr))
    }
}

/// IPv4 clients reaching a dual-stack socket appear as `::ffff:a.b.c.d`.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let net = match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(canonical(addr)),
            Err(_) => text.parse::<IpNet>().map_err(|_| CidrError(text.into()))?,
        };
        Ok(Self(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The client address of a request from `peer`.
///
/// `forwarded` is the value of the configured header (`X-Forwarded-For` by
/// default): a comma-separated list, each proxy appending its own peer. It is
/// read only when `peer` is a trusted proxy; walking from the right, the
/// first address that is not a trusted proxy is the client. An unparseable
/// entry stops the walk at the last good one.
pub fn resolve(trusted: &[Cidr], peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
    let is_trusted = |addr: IpAddr| trusted.iter().any(|c| c.contains(addr));
    let peer = canonical(peer);
    let Some(forwarded) = forwarded.filter(|_| is_trusted(peer)) else {
        return peer;
    };
    let mut client = peer;
    for hop in forwarded.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(addr) => {
                client = canonical(addr);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_membership() {
        let ten: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(ten.contains(ip("10.255.0.1")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")));
        let odd: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.100")));
        let host: Cidr = "::1".parse().unwrap();
        assert!(host.contains(ip("::1")));
        assert!(!host.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::2")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_header_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        // Untrusted peer: its header is ignored.
        assert_eq!(
            resolve(&trusted, ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // Trusted peer: the rightmost untrusted hop is the client.
        assert_eq!(
            resolve(&trusted, ip("127.0.0.1"), Some("1.2.3.4")),
            ip("1.2.3.4")
        );
        assert_eq!(
            resolve(
                &trusted,
                ip("127.0.0.1"),
                Some("6.6.6.6, 1.2.3.4, 10.0.0.7")
            ),
            ip("1.2.3.4"),
            "a client cannot spoof by prepending"
        );
        assert_eq!(resolve(&trusted, ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(
            resolve(&trusted, ip("127.0.0.1"), Some("garbage")),
            ip("127.0.0.1")
        );
        // No trusted proxies: never believed.
        assert_eq!(
            resolve(&[], ip("127.0.0.1"), Some("1.2.3.4")),
            ip("127.0.0.1")
        );
    }
}
