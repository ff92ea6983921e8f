//! Heartbeats absorbed in memory and written in bulk (issue 33).
//!
//! A heartbeat does not need a disk write of its own. Each node keeps the live leases it
//! has seen in a [`LeaseBook`]; a heartbeat that finds its lease there is answered from
//! memory, and a flusher writes every changed lease's expiry and last-seen time in one
//! bulk step every `--heartbeat-flush-ms` (SQLite: one operation of the seat writer;
//! PostgreSQL: one `UPDATE … FROM unnest(…)`).
//!
//! **The promise holds on disk.** The `expires_at` a heartbeat answers from memory is
//! the lease's *stored* expiry, which the last flush (or the take, or a durable
//! heartbeat) already wrote; the beat itself moves the stored expiry on to now + the
//! lease period at the next flush. So no answer promises more than the disk holds: a
//! kill -9 of any node, even one that never comes back, ends no lease before the time
//! its last heartbeat answered, with no grace after a restart, no slack in the sweeper,
//! and no other node's help. A lease is answered from memory only while its stored
//! expiry lies at least one heartbeat interval plus one flush (and a margin) ahead
//! ([`LeaseBook::horizon_ms`]), so the app's next heartbeat comes before it even if
//! the flush in between fails; otherwise the heartbeat is written as before.
//!
//! **What a flush writes.** Every lease whose stored expiry draws near (within its
//! horizon and a flush: it must be written now to stay answerable from memory), and up
//! to 5,000 others a second, in turn. So under the load of a million apps beating every
//! 5 minutes (3,300 a second) every heartbeat is on disk within a flush, as the
//! console's "last heartbeat" shows; a heavier load spends the store only on the times
//! that keep leases answerable (each lease about once per lease period, less its
//! horizon), and the last-seen times the console shows lag behind until their turn.
//!
//! **Never a revived lease.** A flush writes only leases still live (`released_at IS
//! NULL`) that had not lapsed before their beat; what it could not write is dropped from
//! memory, so the next heartbeat reads the store and answers `410`.
//!
//! **Several nodes.** A heartbeat on any node keeps a lease alive: a miss reads the lease
//! from the store. Every seat change of a license (a check-in, an expiry, an admin's
//! release or edit, an instance that exits), on this node or another (the live feed),
//! makes this node's entries of that license stale ([`LeaseBook::changed`]); the next
//! heartbeat of each reads the store again. A notice that never arrives is repaired when
//! the lease is next written (a release: it is found gone), and at the latest when the
//! lease is read again ([`REREAD_MS`]).
//!
//! **What stays durable:** everything that creates or frees a seat, an instance counted
//! in, and a change of idleness (the durable heartbeat, `Seats::heartbeat`), so idle
//! reclaim and the queue read a stored idle state that is current on every node.

use leasehold_core::lease::{IdleReports, Instances};
use leasehold_core::LeasePolicy;
use leasehold_core::SeatKind;
use leasehold_store::{now_ms, License, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often heartbeats absorbed in memory are written, by default.
pub const DEFAULT_FLUSH: Duration = Duration::from_millis(2_000);
/// Room for a flush's own time (and a slow writer) beyond its interval.
const MARGIN_MS: i64 = 1_000;
/// Locks the book is split under, by the lease id's hash.
const SHARDS: usize = 64;
/// The most leases a node keeps in memory; past it, new leases' heartbeats are written
/// as before (each entry costs about 480 bytes: see `docs/benchmarks.md`).
const CAPACITY: usize = 2_000_000;
/// Leases written per bulk step (one writer operation, one PostgreSQL transaction).
const CHUNK: usize = 2_000;
/// Leases a second the flusher writes beyond those that must be written (module docs):
/// enough that every heartbeat of a million apps beating every 5 minutes (3,300 a
/// second) is on disk within a flush, while a heavier load does not spend the store on
/// times no one needs yet.
pub const FLUSH_BUDGET_PER_S: usize = 5_000;
/// The longest a lease is answered from memory without reading the store again: bounds
/// what a lost change notice (a full queue, a failed `NOTIFY`) can leave stale.
const REREAD_MS: i64 = 10 * 60 * 1_000;

/// A license the book holds leases of, with its epoch: every seat change of the license
/// moves it on, and an entry loaded under an older epoch is read again.
struct Tag {
    id: Box<str>,
    epoch: AtomicU64,
}

/// One live lease as this node last saw it.
struct Entry {
    tag: Arc<Tag>,
    epoch: u64,
    /// The expiry the store holds (at least): what a heartbeat answers.
    durable: i64,
    /// When the lease was read from the store.
    loaded_at: i64,
    /// How long before `durable` the newest beat must be written, so that the lease stays
    /// answerable from memory: its policy's horizon, a flush and a margin.
    reserve: i64,
    /// The newest heartbeat's expiry and time, to write when `dirty`.
    expires_at: i64,
    last_seen_at: i64,
    dirty: bool,
    instances: Instances,
    idle_reports: Option<Box<str>>,
}

type Shard = HashMap<Box<str>, Entry>;

/// The live leases this node absorbs heartbeats for (module docs).
pub struct LeaseBook {
    /// `ZERO`: off, every heartbeat is written as it comes (`--heartbeat-flush-ms 0`).
    flush: Duration,
    shards: Box<[Mutex<Shard>]>,
    tags: Mutex<HashMap<Box<str>, Arc<Tag>>>,
    len: AtomicUsize,
    /// One flush at a time (the flusher's tick, shutdown's last one, a test's).
    flushing: tokio::sync::Mutex<()>,
    /// Leases a second written beyond those due ([`FLUSH_BUDGET_PER_S`]).
    budget_per_s: usize,
    /// The shard the flusher's next spare budget starts at, so every lease gets its turn.
    cursor: AtomicUsize,
    /// `leasehold_heartbeats_total` by path (memory, store), made at the first heartbeat.
    counted: std::sync::OnceLock<[metrics::Counter; 2]>,
    /// Heartbeats answered from memory and by the store, since the start.
    answered: [AtomicU64; 2],
}

impl Default for LeaseBook {
    fn default() -> Self {
        LeaseBook::new(DEFAULT_FLUSH, FLUSH_BUDGET_PER_S)
    }
}

/// What one flush wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Leases whose newest heartbeat is now on disk.
    pub written: usize,
    /// Leases found ended (dropped from memory).
    pub gone: usize,
    /// Leases left to the next flush: their step failed, or another transaction held them.
    pub failed: usize,
}

/// A heartbeat's answer: the expiry the store holds, and whether it was written as it
/// came with news for the other nodes (an instance counted in, a change of idleness):
/// then the handler announces `seat.updated`, which makes every node read the lease
/// again, instead of `seat.heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beaten {
    pub expires_at: i64,
    pub news: bool,
}

impl Beaten {
    /// The live feed's kind for this heartbeat.
    pub fn kind(&self) -> &'static str {
        if self.news {
            "seat.updated"
        } else {
            "seat.heartbeat"
        }
    }
}

impl LeaseBook {
    /// A book written every `flush` (`ZERO`: off), with `budget_per_s` leases a second
    /// written beyond those due.
    pub fn new(flush: Duration, budget_per_s: usize) -> LeaseBook {
        LeaseBook {
            flush,
            budget_per_s,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tags: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            flushing: tokio::sync::Mutex::new(()),
            cursor: AtomicUsize::new(0),
            counted: std::sync::OnceLock::new(),
            answered: Default::default(),
        }
    }

    /// How often the flusher writes; `None` when heartbeats are written one by one.
    pub fn flush_every(&self) -> Option<Duration> {
        (!self.flush.is_zero()).then_some(self.flush)
    }

    /// Leases held in memory now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How far ahead a lease's stored expiry must lie for a heartbeat to be answered from
    /// memory: the app's next heartbeat, plus a flush and its margin, come before it.
    fn horizon_ms(&self, policy: &LeasePolicy) -> i64 {
        policy
            .heartbeat_every_s()
            .saturating_mul(1_000)
            .saturating_add(self.flush.as_millis() as i64)
            .saturating_add(MARGIN_MS)
    }

    /// Counts a heartbeat answered from memory or by the store.
    fn count(&self, from_memory: bool) {
        let [memory, store] = self.counted.get_or_init(|| {
            [
                metrics::counter!("leasehold_heartbeats_total", "path" => "memory"),
                metrics::counter!("leasehold_heartbeats_total", "path" => "store"),
            ]
        });
        if from_memory { memory } else { store }.increment(1);
        self.answered[usize::from(!from_memory)].fetch_add(1, Ordering::Relaxed);
    }

    /// Heartbeats answered (from memory, by the store) since the start.
    pub fn answered(&self) -> (u64, u64) {
        let [memory, store] = &self.answered;
        (
            memory.load(Ordering::Relaxed),
            store.load(Ordering::Relaxed),
        )
    }

    fn shard(&self, lease_id: &str) -> &Mutex<Shard> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(lease_id);
        &self.shards[(hash as usize) % SHARDS]
    }

    fn tag(&self, license_id: &str) -> Arc<Tag> {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        tags.entry(license_id.into())
            .or_insert_with(|| {
                Arc::new(Tag {
                    id: license_id.into(),
                    epoch: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// A seat change of `license_id` (`kind`, as the live feed names it), here or on
    /// another node: its leases are read again at their next heartbeat. A heartbeat or a
    /// place in the queue changes no lease.
    pub fn changed(&self, license_id: &str, kind: &str) {
        if matches!(kind, "seat.heartbeat" | "seat.queued" | "seat.dequeued") {
            return;
        }
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tag) = tags.get(license_id) {
            tag.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Notices may have been lost (the live feed reconnected): every lease is read again.
    pub fn clear(&self) {
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        for tag in tags.values() {
            tag.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A heartbeat: answered from memory when this node holds the lease, live and quiet,
    /// with its stored expiry far enough ahead; read from the store on a miss; written as
    /// before (`Seats::heartbeat`) for anything else. Answers the expiry the store holds.
    pub async fn beat(
        &self,
        store: &dyn Store,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
        idle_s: Option<i64>,
    ) -> Result<Beaten, StoreError> {
        let durable = |news: bool| async move {
            let expires_at = store.heartbeat(license, lease_id, instance, idle_s).await?;
            self.count(false);
            Ok(Beaten { expires_at, news })
        };
        if self.flush.is_zero() {
            return durable(false).await;
        }
        let now = now_ms();
        let policy = license.policy();
        let horizon = now.saturating_add(self.horizon_ms(&policy));
        // A lease period too short to answer from memory steadily (the stored expiry, a
        // heartbeat interval and a flush old, must still lie a horizon ahead): written as
        // before.
        let steady = horizon
            .saturating_add(policy.heartbeat_every_s().saturating_mul(1_000))
            .saturating_add(self.flush.as_millis() as i64);
        if policy.lease_expiry(now) < steady {
            return durable(idle_s.is_some()).await;
        }
        let beat = Beat {
            license,
            policy: &policy,
            instance,
            idle_s,
            now,
            horizon,
            reserve: self
                .horizon_ms(&policy)
                .saturating_add(self.flush.as_millis() as i64)
                .saturating_add(MARGIN_MS),
        };
        if let Some(expires_at) = self.hit(lease_id, &beat) {
            self.count(true);
            return Ok(Beaten {
                expires_at,
                news: false,
            });
        }
        // A miss: the lease as stored, unless a notice comes while it is read.
        let tag = self.tag(&license.id);
        let epoch = tag.epoch.load(Ordering::Acquire);
        let seat = store.lease_state(&license.workspace_id, lease_id).await?;
        let mut news = idle_s.is_some();
        if let Some(seat) = seat {
            let instances = Instances::from_stored(seat.instances.as_deref());
            let stored = seat.expires_at.unwrap_or(0);
            let quiet = beat.quiet(&instances, seat.idle_reports.as_deref());
            news = !quiet;
            let live = seat.license_id == license.id
                && seat.kind == SeatKind::Lease
                && seat.released_at.is_none()
                && beat.answerable(stored);
            if live && quiet && self.len() < CAPACITY && tag.epoch.load(Ordering::Acquire) == epoch
            {
                let entry = Entry {
                    tag,
                    epoch,
                    durable: stored,
                    reserve: beat.reserve,
                    loaded_at: now,
                    expires_at: policy.lease_expiry(now),
                    last_seen_at: now,
                    dirty: true,
                    instances,
                    idle_reports: seat.idle_reports.map(String::into_boxed_str),
                };
                let mut shard = self.lock(lease_id);
                if shard.insert(lease_id.into(), entry).is_none() {
                    self.len.fetch_add(1, Ordering::Relaxed);
                }
                self.count(true);
                return Ok(Beaten {
                    expires_at: stored,
                    news: false,
                });
            }
        }
        self.forget(lease_id);
        durable(news).await
    }

    /// The hot path: no await, no write.
    fn hit(&self, lease_id: &str, beat: &Beat<'_>) -> Option<i64> {
        let mut shard = self.lock(lease_id);
        let entry = shard.get_mut(lease_id)?;
        if *entry.tag.id != *beat.license.id
            || entry.epoch != entry.tag.epoch.load(Ordering::Acquire)
            || beat.now.saturating_sub(entry.loaded_at) >= REREAD_MS
            || !beat.answerable(entry.durable)
            || !beat.quiet(&entry.instances, entry.idle_reports.as_deref())
        {
            return None;
        }
        entry.reserve = beat.reserve;
        if beat.now >= entry.last_seen_at {
            entry.last_seen_at = beat.now;
            entry.expires_at = beat.policy.lease_expiry(beat.now);
        }
        entry.dirty = true;
        Some(entry.durable)
    }

    /// The shard of `lease_id`, locked.
    fn lock(&self, lease_id: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.shard(lease_id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a lease from memory (its next heartbeat reads the store).
    pub fn forget(&self, lease_id: &str) {
        let mut shard = self.lock(lease_id);
        if shard.remove(lease_id).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Writes every lease heartbeaten since the last flush (shutdown's, a test's).
    pub async fn flush(&self, store: &dyn Store) -> Flushed {
        self.flush_some(store, usize::MAX).await
    }

    /// The flusher's tick: the leases whose stored expiry draws near (within a flush of
    /// their reserve: they must be written now to stay answerable from memory), and up to
    /// [`FLUSH_BUDGET_PER_S`] others, taken in turn.
    async fn flush_tick(&self, store: &dyn Store) -> Flushed {
        let budget = self
            .budget_per_s
            .saturating_mul(self.flush.as_millis() as usize)
            / 1_000;
        self.flush_some(store, budget).await
    }

    /// Writes the leases due and up to `spare` others heartbeaten since they were last
    /// written, in id order and in chunks, and drops from memory what the store no longer
    /// holds live and what no heartbeat kept alive.
    async fn flush_some(&self, store: &dyn Store, spare: usize) -> Flushed {
        let _one = self.flushing.lock().await;
        let started = std::time::Instant::now();
        let now = now_ms();
        let due_by = now.saturating_add(self.flush.as_millis() as i64);
        // Each beat with the entry it came from (when it was loaded, under which epoch),
        // so that what the store answers is applied to that entry only.
        let (mut due, mut others) = (Vec::new(), Vec::new());
        let mut ran_out_in = None;
        let first = self.cursor.load(Ordering::Relaxed) % SHARDS;
        for n in 0..SHARDS {
            let at = (first + n) % SHARDS;
            let mut shard = self.shards[at].lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|id, entry| {
                if entry.dirty {
                    let is_due = entry.durable.saturating_sub(entry.reserve) <= due_by;
                    if is_due || others.len() < spare {
                        entry.dirty = false;
                        let beat = leasehold_store::Beat {
                            lease_id: id.to_string(),
                            license_id: entry.tag.id.to_string(),
                            expires_at: entry.expires_at,
                            last_seen_at: entry.last_seen_at,
                        };
                        let from = (entry.loaded_at, entry.epoch);
                        if is_due { &mut due } else { &mut others }.push((beat, from));
                    } else if ran_out_in.is_none() {
                        ran_out_in = Some(at);
                    }
                    return true;
                }
                // Clean: kept while it may still be answered from memory.
                entry.expires_at >= now && entry.epoch == entry.tag.epoch.load(Ordering::Acquire)
            });
            self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
        // The next tick's spare budget starts past where this one's ran out.
        self.cursor.store(
            ran_out_in.map_or(first + 1, |at| at + 1) % SHARDS,
            Ordering::Relaxed,
        );
        let mut flushed = Flushed::default();
        // What must be written goes first, each part in id order.
        for mut part in [due, others] {
            part.sort_unstable_by(|a, b| a.0.lease_id.cmp(&b.0.lease_id));
            for chunk in part.chunks(CHUNK) {
                self.write_chunk(store, chunk, &mut flushed).await;
            }
        }
        metrics::gauge!("leasehold_heartbeat_leases").set(self.len() as f64);
        metrics::histogram!("leasehold_heartbeat_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("leasehold_heartbeat_flushed_total").increment(flushed.written as u64);
        flushed
    }

    /// Writes one chunk and applies what the store answered to the entries the beats
    /// came from.
    async fn write_chunk(
        &self,
        store: &dyn Store,
        chunk: &[(leasehold_store::Beat, (i64, u64))],
        flushed: &mut Flushed,
    ) {
        let beats: Vec<leasehold_store::Beat> = chunk.iter().map(|(b, _)| b.clone()).collect();
        match store.flush_heartbeats(&beats).await {
            Ok(outcome) => {
                let set = |ids: Vec<String>| -> std::collections::HashSet<String> {
                    ids.into_iter().collect()
                };
                let (gone, busy) = (set(outcome.gone), set(outcome.busy));
                for (beat, from) in chunk {
                    if gone.contains(&beat.lease_id) {
                        self.forget(&beat.lease_id);
                        flushed.gone += 1;
                    } else if busy.contains(&beat.lease_id) {
                        self.mark_dirty(&beat.lease_id);
                        flushed.failed += 1;
                    } else {
                        self.written(beat, *from);
                        flushed.written += 1;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, leases = chunk.len(), "heartbeat flush failed; retrying at the next");
                for (beat, _) in chunk {
                    self.mark_dirty(&beat.lease_id);
                }
                flushed.failed += chunk.len();
            }
        }
    }

    /// A lease's beat is on disk: the store holds at least its expiry (a later beat keeps
    /// it or moves it on; a beat lowers an expiry only after a shorter lease period, and
    /// then the store holds the lower one). Applied only to the entry the beat came from
    /// (`from`: loaded when, under which epoch): one loaded again meanwhile has read what
    /// the store holds.
    fn written(&self, beat: &leasehold_store::Beat, from: (i64, u64)) {
        if let Some(entry) = self.lock(&beat.lease_id).get_mut(beat.lease_id.as_str()) {
            if (entry.loaded_at, entry.epoch) == from {
                entry.durable = beat.expires_at;
            }
        }
    }

    /// A lease's beat is not on disk yet: the next flush writes it again, unless the
    /// lease was made stale meanwhile (then a heartbeat reads it first).
    fn mark_dirty(&self, lease_id: &str) {
        let mut shard = self.lock(lease_id);
        match shard.get_mut(lease_id) {
            Some(entry) if entry.epoch == entry.tag.epoch.load(Ordering::Acquire) => {
                entry.dirty = true;
            }
            Some(_) => {
                shard.remove(lease_id);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            None => {}
        }
    }
}

/// One heartbeat, as the book weighs it.
struct Beat<'a> {
    license: &'a License,
    policy: &'a LeasePolicy,
    instance: &'a str,
    idle_s: Option<i64>,
    now: i64,
    /// The earliest stored expiry answered from memory.
    horizon: i64,
    /// See [`Entry::reserve`].
    reserve: i64,
}

impl Beat<'_> {
    /// A stored expiry this heartbeat may answer from memory: far enough ahead that the
    /// app's next heartbeat comes first, and no later than a lease period from now (a
    /// shorter lease period set meanwhile is written by the durable heartbeat).
    fn answerable(&self, stored: i64) -> bool {
        stored >= self.horizon && stored <= self.policy.lease_expiry(self.now)
    }

    /// The instance is counted in and says nothing new of its user's absence (nothing
    /// to store, nothing to reclaim).
    fn quiet(&self, instances: &Instances, idle_reports: Option<&str>) -> bool {
        instances.contains(self.instance)
            && match IdleReports::beat(
                idle_reports,
                instances,
                self.instance,
                self.idle_s,
                self.now,
            ) {
                None => true,
                Some(idle) => {
                    !idle.changed && !self.policy.releases_idle(idle.idle_since, self.now)
                }
            }
    }
}

/// Writes the book every flush interval, if heartbeats are absorbed at all.
pub fn spawn_flusher(state: crate::AppState) -> Option<tokio::task::JoinHandle<()>> {
    let every = state.live.heartbeats.flush_every()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.live.heartbeats.flush_tick(state.store.as_ref()).await;
        }
    }))
}
