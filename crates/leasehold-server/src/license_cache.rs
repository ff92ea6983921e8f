//! Licenses by key hash, for the client protocol: every client call starts by finding its
//! license, and most calls find the same few. An entry is dropped as soon as the live feed
//! says its license changed (this node's changes at once, other nodes' through
//! `LISTEN/NOTIFY`), and lives at most a TTL (2 s by default) in any case, because a cross-node
//! notification can be dropped under load.
//!
//! A seat taken or freed changes only the license's seat count: its entry stays for the
//! calls that do not show the count (checkouts, heartbeats, checkins) and is read again
//! by those that do (validation, license files). That keeps a busy license's checkouts
//! from re-reading it at every seat change.
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

/// What a caller shows of the license, and so needs current.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    /// Its settings, status and expiry.
    Settings,
    /// Those and its seat count.
    SeatCount,
}

struct Entry {
    license: Arc<License>,
    stored: Instant,
    /// No seat was taken or freed since the license was read.
    seat_count_current: bool,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, Entry>,
    /// License id → its key hash, to drop an entry by license.
    hash_of: HashMap<String, String>,
    /// Bumped by every change notice.
    generation: u64,
    /// License id → the generation of its last change.
    changed_at: HashMap<String, u64>,
    /// License id → the generation of its last seat change.
    seats_changed_at: HashMap<String, u64>,
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

    pub fn get(&self, key_hash: &str, need: Need) -> Option<Arc<License>> {
        let inner = self.inner.lock().ok()?;
        let entry = inner.by_hash.get(key_hash)?;
        let current = entry.stored.elapsed() < self.ttl
            && (need == Need::Settings || entry.seat_count_current);
        current.then(|| entry.license.clone())
    }

    /// Take before reading the license from the database, pass to [`LicenseCache::put`].
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.lock().map(|i| i.generation).unwrap_or(u64::MAX))
    }

    /// Caches a license read after `ticket` was taken, unless it changed since: the read
    /// may then have seen the row from before the change.
    pub fn put(&self, key_hash: &str, license: Arc<License>, ticket: Ticket) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let changed_since =
            |at: &HashMap<String, u64>| at.get(&license.id).copied().unwrap_or(0) > ticket.0;
        if ticket.0 < inner.floor || changed_since(&inner.changed_at) {
            return;
        }
        let seat_count_current = !changed_since(&inner.seats_changed_at);
        if inner.by_hash.len() >= MAX_ENTRIES {
            inner.start_over();
        }
        inner
            .hash_of
            .insert(license.id.clone(), key_hash.to_string());
        inner.by_hash.insert(
            key_hash.to_string(),
            Entry {
                license,
                stored: Instant::now(),
                seat_count_current,
            },
        );
    }

    /// A live event of `kind` happened on the license: drops what it may have changed.
    pub fn changed(&self, license_id: &str, kind: &str) {
        match kind {
            // Neither the license row nor its count.
            "seat.heartbeat" | "seat.updated" | "seat.instance_exited" => {}
            kind if kind.starts_with("seat.") => self.seat_count_changed(license_id),
            _ => self.invalidate(license_id),
        }
    }

    /// A seat was taken or freed: the entry stays, but not for its seat count.
    fn seat_count_changed(&self, license_id: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        let generation = inner.generation;
        let Inner {
            by_hash,
            hash_of,
            seats_changed_at,
            ..
        } = &mut *inner;
        match seats_changed_at.get_mut(license_id) {
            Some(at) => *at = generation,
            None => {
                seats_changed_at.insert(license_id.to_string(), generation);
            }
        }
        if let Some(entry) = hash_of.get(license_id).and_then(|h| by_hash.get_mut(h)) {
            entry.seat_count_current = false;
        }
    }

    /// The license changed (or may have): its entry goes.
    fn invalidate(&self, license_id: &str) {
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
        inner.start_over();
    }
}

impl Inner {
    /// Drops every entry and every change record; reads that started before are not
    /// cached (their tickets fall below the floor).
    fn start_over(&mut self) {
        self.generation += 1;
        self.floor = self.generation;
        self.by_hash.clear();
        self.hash_of.clear();
        self.changed_at.clear();
        self.seats_changed_at.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(id: &str, seats_used: i64) -> License {
        use leasehold_core::{AdminRelease, LicenseStatus, LicenseType, SeatModel};
        License {
            id: id.into(),
            workspace_id: "w".into(),
            application_id: "a".into(),
            key_enc: Vec::new(),
            key_hash: "h".into(),
            key_masked: "****".into(),
            licensed_to: "Bench".into(),
            vendor: None,
            license_type: LicenseType::Subscription,
            status: LicenseStatus::Active,
            seat_model: SeatModel::Concurrent,
            seats_total: 10,
            seats_used,
            version: None,
            cost_amount_minor: None,
            cost_currency: None,
            purchased_on: None,
            expires_on: None,
            maintenance_expires_on: None,
            po_number: None,
            notes: None,
            lease_ttl_s: 60,
            heartbeat_interval_s: 20,
            license_file_ttl_s: 3600,
            self_service_releases_per_month: 0,
            admin_release: AdminRelease::Allowed,
            release_cooldown_s: 0,
            max_instances_per_lease: 64,
            queue: leasehold_core::QueueMode::Fifo,
            queue_ttl_s: 60,
            idle_timeout_s: None,
            idle_reclaim: leasehold_core::IdleReclaim::WhenNeeded,
            max_borrow_days: 0,
            max_borrowed_seats: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_seat_change_keeps_the_entry_for_settings_only() {
        let cache = LicenseCache::default();
        cache.put("h1", Arc::new(license("l1", 1)), cache.ticket());
        cache.changed("l1", "seat.heartbeat");
        assert_eq!(
            cache.get("h1", Need::SeatCount).map(|l| l.seats_used),
            Some(1)
        );
        cache.changed("l1", "seat.taken");
        assert!(cache.get("h1", Need::SeatCount).is_none());
        assert_eq!(
            cache.get("h1", Need::Settings).map(|l| l.seats_used),
            Some(1)
        );
        cache.changed("l1", "license.updated");
        assert!(cache.get("h1", Need::Settings).is_none());
    }

    #[test]
    fn a_read_older_than_a_change_is_not_cached_as_current() {
        let cache = LicenseCache::default();
        let before_seat_change = cache.ticket();
        cache.changed("l1", "seat.released");
        cache.put("h1", Arc::new(license("l1", 1)), before_seat_change);
        assert!(cache.get("h1", Need::SeatCount).is_none());
        assert!(cache.get("h1", Need::Settings).is_some());

        let before_update = cache.ticket();
        cache.changed("l2", "license.updated");
        cache.put("h2", Arc::new(license("l2", 1)), before_update);
        assert!(cache.get("h2", Need::Settings).is_none());
    }

    #[test]
    fn entries_lapse_after_the_ttl_and_clear_drops_reads_in_flight() {
        let cache = LicenseCache::new(Duration::from_millis(1));
        cache.put("h1", Arc::new(license("l1", 1)), cache.ticket());
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get("h1", Need::Settings).is_none());

        let cache = LicenseCache::default();
        let ticket = cache.ticket();
        cache.clear();
        cache.put("h1", Arc::new(license("l1", 1)), ticket);
        assert!(cache.get("h1", Need::Settings).is_none());
    }
}
