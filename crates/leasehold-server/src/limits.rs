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
            by_ip: quota.map(RateLimiter::keyed),
            by_key: quota.map(RateLimiter::keyed),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.by_ip {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| {
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
