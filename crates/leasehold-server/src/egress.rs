//! Where the server's own outgoing requests (webhooks) may go (DESIGN §11): public
//! addresses only, unless the operator allows local or private ones. Every address a
//! name resolves to is checked at delivery time, and the HTTP client connects only to
//! addresses that passed, so a name that changes its answer between registration and
//! delivery (DNS rebinding) gains nothing.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// What an address reaches, as far as an outgoing request is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The internet.
    Public,
    /// This machine: loopback, unspecified, link-local (cloud metadata services), the
    /// host's own addresses. `--webhook-allow-local` allows them.
    Local,
    /// A private network: RFC 1918, CGNAT 100.64/10, ULA fc00::/7, local-use NAT64.
    /// `--webhook-allow-private` allows them.
    Private,
    /// Not a unicast destination anyone should be sent to (multicast, documentation,
    /// benchmarking, reserved ranges): always refused.
    Reserved,
}

impl Reach {
    fn words(self) -> &'static str {
        match self {
            Reach::Public => "a public address",
            Reach::Local => "an address of this machine or a link-local one",
            Reach::Private => "a private-network address",
            Reach::Reserved => "a reserved or non-unicast address",
        }
    }
}

/// What an address is. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are what the IPv4 address they carry is.
pub fn classify(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) | (127, _, _) | (169, 254, _) => Reach::Local,
        (10, _, _) | (192, 168, _) => Reach::Private,
        (172, 16..=31, _) | (100, 64..=127, _) => Reach::Private,
        // IETF protocol assignments, documentation, benchmarking, multicast, reserved and
        // broadcast.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            Reach::Reserved
        }
        (224..=255, _, _) => Reach::Reserved,
        _ => Reach::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() || ip.is_loopback() {
        return Reach::Local;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    match s {
        // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks).
        [0, 0, 0, 0, 0, 0, high, low] => classify_v4(embedded(high, low)),
        // NAT64, well-known prefix: the IPv4 address it translates to.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => classify_v4(embedded(high, low)),
        // NAT64 for local use (RFC 8215).
        [0x64, 0xff9b, 1, ..] => Reach::Private,
        // 6to4: the IPv4 address of the relay it goes through.
        [0x2002, high, low, ..] => classify_v4(embedded(high, low)),
        // Teredo (its IPv4 address is obfuscated), documentation, ORCHID.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] | [0x2001, 0x10..=0x2f, ..] => Reach::Reserved,
        [first, ..] if first & 0xffc0 == 0xfe80 => Reach::Local,
        // ULA, and the deprecated site-local range.
        [first, ..] if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => Reach::Private,
        // Global unicast; everything else (multicast, discard-only, unassigned) is not a
        // destination.
        [first, ..] if first & 0xe000 == 0x2000 => Reach::Public,
        _ => Reach::Reserved,
    }
}

/// Which addresses outgoing requests may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub allow_local: bool,
    pub allow_private: bool,
}

/// An address the rules refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub host: String,
    pub address: IpAddr,
    pub reach: Reach,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.host)?;
        if self.host.trim_matches(['[', ']']) != self.address.to_string() {
            write!(f, " resolves to {}, which", self.address)?;
        }
        write!(f, " is {}; {}", self.reach.words(), hint(self.reach))
    }
}

impl std::error::Error for Refused {}

fn hint(reach: Reach) -> &'static str {
    match reach {
        Reach::Local => "allow it with --webhook-allow-local",
        Reach::Private => "allow it with --webhook-allow-private",
        _ => "webhooks are never sent there",
    }
}

impl Rules {
    /// Whether a request may go to `address` (named `host`), given the host's own addresses.
    pub fn check(&self, host: &str, address: IpAddr, own: &[IpAddr]) -> Result<(), Refused> {
        let reach = if own.contains(&address) {
            Reach::Local
        } else {
            classify(address)
        };
        let allowed = match reach {
            Reach::Public => true,
            Reach::Local => self.allow_local,
            Reach::Private => self.allow_private,
            Reach::Reserved => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused {
                host: host.to_string(),
                address,
                reach,
            })
        }
    }
}

type Found = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// How names are resolved, and where a connection to an allowed address goes. The
/// system's resolver in production; tests give names any address class and send every
/// connection to loopback, so a guard that failed to refuse still connects nowhere else.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Found;
    /// The address a connection to `allowed` is made to (itself, but in tests).
    fn route(&self, allowed: IpAddr) -> IpAddr {
        allowed
    }
    /// This machine's own addresses (refused as local).
    fn own_addresses(&self) -> Vec<IpAddr> {
        interface_addresses()
    }
}

/// The operating system's resolver (`getaddrinfo`).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Found {
        let host = format!("{host}:0");
        Box::pin(async move {
            Ok(tokio::net::lookup_host(host)
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The addresses of this machine's network interfaces (empty if they can't be read).
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Resolves `host` and checks every address it resolves to: all must pass, or the
/// request is refused (a name that mixes a public address with a private one is not let
/// through on the public one's merit). Answers the addresses to connect to.
pub async fn resolve(
    lookup: &dyn Lookup,
    rules: Rules,
    host: &str,
) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let found = lookup.lookup(host).await?;
    if found.is_empty() {
        return Err(format!("{host} resolves to no address").into());
    }
    let own = lookup.own_addresses();
    for address in &found {
        rules.check(host, *address, &own)?;
    }
    Ok(found.into_iter().map(|a| lookup.route(a)).collect())
}

/// The HTTP client's resolver: [`resolve`] for every name but the configured proxy's
/// (which the operator named, so it may be on a private network).
pub struct GuardedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub rules: Rules,
    pub proxy_host: Option<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let trusted = self.proxy_host.as_deref() == Some(name.as_str());
        let rules = if trusted {
            Rules {
                allow_local: true,
                allow_private: true,
            }
        } else {
            self.rules
        };
        Box::pin(async move {
            let addresses = resolve(lookup.as_ref(), rules, name.as_str()).await?;
            let addrs = addresses.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addrs) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal somewhere in an error's chain of causes, if that is what it is.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(text: &str) -> Reach {
        classify(text.parse().unwrap())
    }

    #[test]
    fn addresses_are_classified_with_their_embedded_ipv4_forms() {
        for local in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(reach(local), Reach::Local, "{local}");
        }
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
        ] {
            assert_eq!(reach(private), Reach::Private, "{private}");
        }
        for reserved in [
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert_eq!(reach(reserved), Reach::Reserved, "{reserved}");
        }
        for public in [
            "11.0.0.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450::1",
            "64:ff9b::b00:1",
        ] {
            assert_eq!(reach(public), Reach::Public, "{public}");
        }
    }

    #[test]
    fn the_rules_allow_what_the_operator_allowed_and_never_reserved_ones() {
        let strict = Rules::default();
        let own: Vec<IpAddr> = vec!["11.1.1.1".parse().unwrap()];
        let check = |rules: Rules, address: &str| rules.check("h", address.parse().unwrap(), &own);
        assert!(check(strict, "11.2.2.2").is_ok());
        assert_eq!(check(strict, "11.1.1.1").unwrap_err().reach, Reach::Local);
        assert!(check(strict, "10.0.0.1").is_err());
        assert!(check(strict, "127.0.0.1").is_err());
        let private = Rules {
            allow_private: true,
            ..strict
        };
        assert!(check(private, "10.0.0.1").is_ok());
        assert!(check(private, "127.0.0.1").is_err());
        let everything = Rules {
            allow_local: true,
            allow_private: true,
        };
        assert!(check(everything, "127.0.0.1").is_ok());
        assert!(check(everything, "11.1.1.1").is_ok());
        assert!(check(everything, "224.0.0.1").is_err());
        let refused = check(strict, "10.0.0.1").unwrap_err().to_string();
        assert!(
            refused
                .starts_with("refused: h resolves to 10.0.0.1, which is a private-network address"),
            "{refused}"
        );
        assert!(refused.contains("--webhook-allow-private"), "{refused}");
    }
}
