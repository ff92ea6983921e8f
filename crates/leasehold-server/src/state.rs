//! What every handler shares ([`AppState`]), and how a request's client address is
//! read behind trusted proxies.

use crate::secrets::MasterKey;
use crate::{limits, live, notify, signing};
use leasehold_store::Store;
use std::sync::Arc;

/// What every handler shares: one pointer, so the clone each extractor and middleware
/// makes per request is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub master: MasterKey,
    pub signers: signing::Signers,
    pub limits: limits::Limits,
    pub live: live::LiveHub,
    /// Sign-in attempts per account and per IP (console), and per IP (portal).
    pub login_limits: limits::Limits,
    /// How often the lease sweeper runs.
    pub sweep_interval: std::time::Duration,
    /// Sends webhooks and emails from the outbox.
    pub notifier: notify::Notifier,
    /// Reverse proxies whose `X-Forwarded-For` (or `Forwarded`) names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How many connections are served at once (one past it is closed at once).
    pub max_connections: usize,
    /// The Keygen facade's public address (`https://HOST/keygen`) behind a proxy that
    /// rewrites the host or the path, for Keygen's signatures (DESIGN §9).
    pub keygen_public_url: Option<url::Url>,
    /// HTTPS: the certificate served, read again on SIGHUP (DESIGN §10).
    pub tls: Option<std::sync::Arc<crate::tls::Certificates>>,
    /// `/metrics` on its own address instead of the public listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `/metrics` shows the busiest licenses' own series (their ids).
    pub metrics_per_license: bool,
    /// The store's figures `/metrics` answered last, and when they were read.
    pub metrics_cache: crate::metrics::SnapshotCache,
}

impl Shared {
    /// A heartbeat of a lease of `license`, through this node's book of leases in memory
    /// (`heartbeats.rs`): the client protocol's and the Keygen facade's ping.
    pub async fn heartbeat(
        &self,
        license: &Arc<leasehold_store::License>,
        lease_id: &str,
        instance: &str,
        idle_s: Option<i64>,
    ) -> Result<crate::heartbeats::Beaten, leasehold_store::StoreError> {
        self.live
            .heartbeats
            .beat(self.store.as_ref(), license, lease_id, instance, idle_s)
            .await
    }

    /// The client's address, for the per-address limits: the connection's, unless it
    /// comes from a trusted proxy; then the nearest address in `X-Forwarded-For` (or,
    /// when that is absent, `Forwarded`) that is not a trusted proxy itself (what a
    /// client writes there is not believed past it).
    pub fn client_ip(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        client_ip(&self.trusted_proxies, peer, headers)
    }
}

fn client_ip(
    trusted: &[ipnet::IpNet],
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // `X-Forwarded-For` if the proxies sent it, else the standard `Forwarded` (RFC 7239).
    let (header, hop_of): (&str, fn(&str) -> &str) = if headers.contains_key("x-forwarded-for") {
        ("x-forwarded-for", str::trim)
    } else {
        ("forwarded", forwarded_for)
    };
    let mut hops = Vec::new();
    for value in headers.get_all(header) {
        // A line that is not text cannot be read: nothing before the proxy is believed.
        let Ok(value) = value.to_str() else {
            return peer;
        };
        hops.extend(value.split(',').map(hop_of));
    }
    for hop in hops.iter().rev() {
        match hop.parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // Not an address: nothing before it can be told apart; the proxy's it is.
            Err(_) => return peer,
        }
    }
    peer
}

/// The address in one element of a `Forwarded` header (`for=192.0.2.60;proto=https`,
/// `for="[2001:db8::17]:4711"`), without quotes, brackets or port. An element without
/// `for`, or with an obfuscated or `unknown` one, gives text that is not an address.
fn forwarded_for(element: &str) -> &str {
    let Some(value) = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    }) else {
        return "";
    };
    let value = value.trim_matches('"');
    if let Some(bracketed) = value.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    match value.split_once(':') {
        // An IPv4 address and its port (an unbracketed IPv6 address has more colons).
        Some((address, port)) if !port.contains(':') => address,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_connections_address_counts_unless_it_is_a_trusted_proxy() {
        let spoofed = forwarded(&["203.0.113.9"]);
        assert_eq!(
            client_ip(&[], ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(&trusted, ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(&trusted, ip("10.1.2.3"), &spoofed),
            ip("203.0.113.9")
        );
        // No header: the proxy's own address.
        assert_eq!(
            client_ip(&trusted, ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_standard_forwarded_header_is_read_when_x_forwarded_for_is_absent() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("forwarded", HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let proxy = ip("10.0.0.2");
        // A client's own element in front; the proxy appended the nearest.
        let headers = with(&["for=1.1.1.1, for=203.0.113.9;proto=https;by=10.0.0.2"]);
        assert_eq!(client_ip(&trusted, proxy, &headers), ip("203.0.113.9"));
        // Quoted, with ports, IPv6 in brackets, parameter names in any case.
        let headers = with(&[r#"For="203.0.113.9:4711""#]);
        assert_eq!(client_ip(&trusted, proxy, &headers), ip("203.0.113.9"));
        let headers = with(&[r#"for="[2001:db8:cafe::17]:4711", for=10.0.0.9"#]);
        assert_eq!(
            client_ip(&trusted, proxy, &headers),
            ip("2001:db8:cafe::17")
        );
        // Obfuscated, unknown, or no `for` nearest: the proxy's own address.
        for unreadable in ["for=_hidden", "for=unknown", "proto=https"] {
            let headers = with(&["for=203.0.113.9", unreadable]);
            assert_eq!(client_ip(&trusted, proxy, &headers), proxy, "{unreadable}");
        }
        // Not believed from an untrusted connection.
        let headers = with(&["for=203.0.113.9"]);
        assert_eq!(
            client_ip(&trusted, ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        // X-Forwarded-For, when sent, is the one read.
        let mut headers = with(&["for=203.0.113.9"]);
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.4"));
        assert_eq!(client_ip(&trusted, proxy, &headers), ip("198.51.100.4"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = [
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        // A client wrote its own "1.1.1.1" in front; the proxies appended the rest.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9", "192.0.2.7"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers),
            ip("203.0.113.9")
        );
        // Every hop trusted: the connection's.
        let headers = forwarded(&["10.0.0.5, 192.0.2.7"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
        // Garbage nearest: nothing before it is believed.
        let headers = forwarded(&["203.0.113.9, not-an-address"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
        let v6 = ["::1/128".parse().unwrap()];
        assert_eq!(
            client_ip(&v6, ip("::1"), &forwarded(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        // An IPv4 proxy seen through a dual-stack listener is still the trusted one.
        assert_eq!(
            client_ip(
                &trusted,
                ip("::ffff:10.0.0.2"),
                &forwarded(&["::ffff:203.0.113.9"])
            ),
            ip("203.0.113.9")
        );
        // A line that is not text: the proxy's address.
        let mut headers = forwarded(&["203.0.113.9"]);
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.\xff").unwrap(),
        );
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
    }
}
