//! Licenses by key hash, for the client protocol: every client call starts by finding its
//! license, and most calls find the same few. An entry is dropped as soon as the live feed
//! says its license changed (this node's changes at once, other nodes' through
//! `LISTEN/NOTIFY`), and lives at most a TTL (2 s by default) in any case, because a cross-node
//! notification can be dropped under load.
//!
//! Seat decisions never trust a cached row: the statement that counts a seat re-checks
//! the license's model, status and expiry in the database.

use leasehold_store::License;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a cached license is used without a change notice, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2);
/// Above this many entries the cache starts over (a bound, not an eviction policy).
const MAX_ENTRIES: usize = 100_000;

pub struct LicenseCache {
    inner: Mutex<Inner>,
    ttl: Duration,
}

impl Default for LicenseCache {
    fn default() -> Self {
        LicenseCache::new(DEFAULT_TTL)
    }
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, (Arc<License>, Instant)>,
    /// License id → its key hash, to drop an entry by license.
    hash_of: HashMap<String, String>,
    /// Bumped by every invalidation.
    generation: u64,
    /// License id → the generation of its last invalidation.
    changed_at: HashMap<String, u64>,
    /// Reads that started before the last [`LicenseCache::clear`] are not cached.
    floor: u64,
}

/// A read from the database started at this point of the invalidation history.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl LicenseCache {
    pub fn new(ttl: Duration) -> LicenseCache {
        LicenseCache {
            inner: Mutex::default(),
            ttl,
        }
    }

    pub fn get(&self, key_hash: &str) -> Option<Arc<License>> {
        let inner = self.inner.lock().ok()?;
        let (license, stored) = inner.by_hash.get(key_hash)?;
        (stored.elapsed() < self.ttl).then(|| license.clone())
    }

    /// Take before reading the license from the database, pass to [`LicenseCache::put`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.lock().map(|i| i.generation).unwrap_or(u64::MAX))
    }

    /// Caches a license read after `ticket` was taken, unless it changed since: the read
    /// may then have seen the row from before the change.
    pub fn put(&self, key_hash: &str, license: &License, ticket: Ticket) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if ticket.0 < inner.floor
            || inner.changed_at.get(&license.id).copied().unwrap_or(0) > ticket.0
        {
            return;
        }
        if inner.by_hash.len() >= MAX_ENTRIES {
            inner.by_hash.clear();
            inner.hash_of.clear();
        }
        inner
            .hash_of
            .insert(license.id.clone(), key_hash.to_string());
        inner.by_hash.insert(
            key_hash.to_string(),
            (Arc::new(license.clone()), Instant::now()),
        );
    }

    /// The license changed (or may have): its entry goes.
    pub fn invalidate(&self, license_id: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        let generation = inner.generation;
        inner.changed_at.insert(license_id.to_string(), generation);
        if let Some(hash) = inner.hash_of.remove(license_id) {
            inner.by_hash.remove(&hash);
        }
    }

    /// Notices may have been missed: everything goes.
    pub fn clear(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        inner.floor = inner.generation;
        inner.by_hash.clear();
        inner.hash_of.clear();
    }
}

/// Whether a live event's kind can mean the license row changed (its settings, status or
/// seat count). Heartbeats and an instance leaving a shared lease do not.
pub fn changes_license(kind: &str) -> bool {
    !matches!(kind, "seat.heartbeat" | "seat.instance_exited")
}
