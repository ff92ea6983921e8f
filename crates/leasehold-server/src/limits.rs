//! Rate limits on the client protocol, per IP and per license key (GCRA via governor).
//! The default lets a fleet behind one NAT start up all at once: 200 requests a second
//! sustained with bursts of 10× that.

use crate::error::ApiError;
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

pub const DEFAULT_PER_SECOND: u32 = 200;

pub struct Limits {
    /// Requests a second (0: off), for the headers Keygen clients read.
    per_second: u32,
    by_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    by_key: Option<DefaultKeyedRateLimiter<String>>,
}

impl Limits {
    /// `per_second` of 0 turns the limits off.
    pub fn new(per_second: u32) -> Limits {
        let quota = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(10)).unwrap_or(rate);
            Quota::per_second(rate).allow_burst(burst)
        });
        Limits {
            per_second,
            by_ip: quota.map(RateLimiter::keyed),
            by_key: quota.map(RateLimiter::keyed),
        }
    }

    /// The sustained rate (requests a second; 0: no limit) and its burst.
    pub fn rate(&self) -> (u32, u32) {
        (self.per_second, self.per_second.saturating_mul(10))
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.by_ip {
            Some(limiter) => limiter.check_key(&bucket_of(ip)).map_err(|not_until| {
                refused(not_until.wait_time_from(DefaultClock::default().now()))
            }),
            None => Ok(()),
        }
    }

    /// Sign-in attempts: 10 a minute per key (an account, or an IP on the portal), and
    /// on the console 30 a minute per IP, across accounts (one address trying many
    /// accounts; an office behind one address still signs in).
    pub fn login() -> Limits {
        let per_minute = |n| NonZeroU32::new(n).map(Quota::per_minute);
        Limits {
            per_second: 0,
            by_ip: per_minute(30).map(RateLimiter::keyed),
            by_key: per_minute(10).map(RateLimiter::keyed),
        }
    }

    /// Keyed by the key's hash, so no key is held in memory in clear.
    pub fn check_key(&self, key_hash: &str) -> Result<(), ApiError> {
        match &self.by_key {
            Some(limiter) => limiter
                .check_key(&key_hash.to_string())
                .map_err(|not_until| {
                    refused(not_until.wait_time_from(DefaultClock::default().now()))
                }),
            None => Ok(()),
        }
    }

    /// Forgets idle callers (run from the sweeper).
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.by_ip {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.by_key {
            limiter.retain_recent();
        }
    }
}

/// What an address is limited as: itself, or for IPv6 its /64 (one machine or home
/// network usually has a whole /64 to pick addresses from).
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn refused(wait: std::time::Duration) -> ApiError {
    let seconds = wait.as_secs_f64().ceil() as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "too many requests; slow down",
    )
    .with_details(serde_json::json!({ "retry_after_s": seconds.max(1) }))
    .retry_after(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_is_limited_as_one_and_ipv4_mapped_addresses_as_ipv4() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:aaaa::1")),
            bucket_of(ip("2001:db8:1:2::ffff"))
        );
        assert_ne!(
            bucket_of(ip("2001:db8:1:2::1")),
            bucket_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(bucket_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(bucket_of(ip("192.0.2.1")), ip("192.0.2.1"));
        let limits = Limits::login();
        for _ in 0..30 {
            assert!(limits.check_ip(ip("2001:db8::1")).is_ok());
        }
        assert!(limits.check_ip(ip("2001:db8::2")).is_err(), "same /64");
        assert!(
            limits.check_ip(ip("2001:db8:0:1::1")).is_ok(),
            "another /64"
        );
    }
}
