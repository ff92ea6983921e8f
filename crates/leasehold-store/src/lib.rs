//! Leasehold's storage. One [`Store`] trait in the domain's words, made of [`Directory`],
//! [`Tracking`], [`Seats`] and [`Notifications`]; a SQLite and a PostgreSQL
//! implementation, each with its own embedded migrations and seat engine
//! (`sqlite/writer.rs`, `postgres/batch.rs`), and one body of portable SQL for the rest
//! (`engine/`, compiled once per backend; its shared texts are in `sql.rs`).

#[macro_use]
mod sql;
mod outbox;
mod postgres;
mod records;
mod sqlite;

use async_trait::async_trait;
use std::pin::Pin;
use std::sync::Arc;

/// Messages from every node (see [`Store::listen`]); `None` marks a reconnect, after
/// which messages sent meanwhile may be missing.
pub type Messages = Pin<Box<dyn futures_core::Stream<Item = Option<String>> + Send>>;

pub use outbox::{
    webhook_event_of, Attempt, DueReminder, NewEmail, Notifications, NotifySettings, OutboxMessage,
    RenderReminders, Webhook, RETRY_WINDOW_MS, WEBHOOK_EVENTS,
};
pub use postgres::PostgresStore;
pub use records::*;
pub use sqlite::backup as sqlite_backup;
pub use sqlite::SqliteStore;

/// Everything that can go wrong in the store, in terms the HTTP layer can map.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("all {seats_total} seats are in use")]
    SeatOverAllocated { seats_total: i64, seats_used: i64 },
    #[error("seats_total {requested} is below the {seats_used} seats in use")]
    SeatsInUse { requested: i64, seats_used: i64 },
    #[error("all {seats_total} seats are in use")]
    NoSeats {
        seats_total: i64,
        seats_used: i64,
        /// When the earliest held lease would expire without heartbeats (ms), if any.
        next_expiry_ms: Option<i64>,
        /// How many wait in the license's queue (DESIGN §7).
        queued: i64,
        /// The caller's place in the queue (1: next), when it waits there.
        queue_position: Option<i64>,
    },
    #[error("the lease counts its {limit} instances already")]
    InstanceLimit { limit: i64 },
    #[error("the monthly limit of {limit} self-service releases is used up")]
    ReleaseLimit { limit: i64 },
    #[error("an admin released this seat; it can be taken again in {retry_after_s} s")]
    ReleaseCooldown { retry_after_s: i64 },
    #[error("the license is not in force ({0:?})")]
    NotInForce(leasehold_core::EffectiveStatus),
    /// The lease ended (lapsed, checked in, released by an admin or as idle): the client
    /// must take a new one.
    #[error("the lease has ended ({0})")]
    LeaseEnded(leasehold_core::ReleaseReason),
    #[error("the workspace would have no owner who can sign in")]
    LastOwner,
    /// The license's policy lends no seats (`max_borrow_days` is 0).
    #[error("borrowing is off for this license")]
    BorrowNotAllowed,
    /// The license's `max_borrowed_seats` are out already.
    #[error("all {limit} seats that may be borrowed are out")]
    BorrowLimit { limit: i64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(String),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl From<leasehold_core::lease::InstanceLimit> for StoreError {
    fn from(refused: leasehold_core::lease::InstanceLimit) -> StoreError {
        StoreError::InstanceLimit {
            limit: refused.limit,
        }
    }
}

impl StoreError {
    /// A `NoSeats` with what the license's queue holds, and the caller's place in it.
    pub(crate) fn queued(self, waiting: i64, position: Option<i64>) -> StoreError {
        match self {
            StoreError::NoSeats {
                seats_total,
                seats_used,
                next_expiry_ms,
                ..
            } => StoreError::NoSeats {
                seats_total,
                seats_used,
                next_expiry_ms,
                queued: waiting,
                queue_position: position,
            },
            other => other,
        }
    }

    /// The error a refused seat answers; a full license also says when its earliest
    /// live lease could lapse (`next_expiry_ms`, read by the engine that refused).
    pub(crate) fn refused(
        refusal: leasehold_core::lease::Refusal,
        next_expiry_ms: Option<i64>,
    ) -> StoreError {
        use leasehold_core::lease::Refusal;
        match refusal {
            Refusal::Full {
                seats_total,
                seats_used,
            } => StoreError::NoSeats {
                seats_total,
                seats_used,
                next_expiry_ms,
                queued: 0,
                queue_position: None,
            },
            Refusal::Cooldown(cooldown) => StoreError::ReleaseCooldown {
                retry_after_s: cooldown.retry_after_s,
            },
            Refusal::NotInForce(standing) => StoreError::NotInForce(standing),
            Refusal::OtherModel(model) => {
                StoreError::Conflict(format!("this license's seats are {}", model.as_str()))
            }
            Refusal::InstanceLimit(limit) => limit.into(),
        }
    }
}

impl StoreError {
    /// A refused borrow that is not about the seat itself (those are [`Self::refused`]).
    pub(crate) fn borrow_refused(refusal: leasehold_core::lease::BorrowRefusal) -> StoreError {
        use leasehold_core::lease::BorrowRefusal;
        match refusal {
            BorrowRefusal::NotAllowed => StoreError::BorrowNotAllowed,
            BorrowRefusal::Days { max } => {
                StoreError::invalid("days", format!("must be between 1 and {max}"))
            }
            BorrowRefusal::Limit { limit } => StoreError::BorrowLimit { limit },
            BorrowRefusal::Seat(refusal) => StoreError::refused(refusal, None),
        }
    }
}

impl From<leasehold_core::lease::ReleaseLimit> for StoreError {
    fn from(refused: leasehold_core::lease::ReleaseLimit) -> StoreError {
        StoreError::ReleaseLimit {
            limit: refused.limit,
        }
    }
}

impl From<leasehold_core::perm::LastOwner> for StoreError {
    fn from(_: leasehold_core::perm::LastOwner) -> StoreError {
        StoreError::LastOwner
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(error.to_string())
    }
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which backend a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a store runs, beyond what its URL says.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite: the WAL's size in bytes past which the seat writer makes it start over.
    /// Under steady writes SQLite alone would let the WAL grow without end; each start-over
    /// pauses seat writes while the writer copies its last frames and syncs the database
    /// file (10–90 ms measured).
    pub sqlite_wal_limit: u64,
    /// SQLite: how often the WAL is copied into the database in the background. Every
    /// 50 ms cost a quarter of the seat throughput (each pass syncs the database file, and
    /// pages changed again are copied again); every 250 ms and every second measured alike.
    pub sqlite_checkpoint_every: std::time::Duration,
    /// SQLite: how often the seat writer adds the events committed since to the audit
    /// log's index by license (`license_events`; a license's log reads the rest from the
    /// end of the table).
    pub sqlite_audit_index_every: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            sqlite_wal_limit: 1 << 30,
            sqlite_checkpoint_every: std::time::Duration::from_millis(250),
            sqlite_audit_index_every: std::time::Duration::from_millis(50),
        }
    }
}

/// Opens the store a URL names (`sqlite://PATH` or `postgres://…`) and applies its
/// migrations. Any other scheme is refused.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::invalid(
            "database_url",
            "unsupported scheme: use sqlite://PATH or postgres://…",
        ))
    }
}

/// What `/metrics` reads from the store.
#[derive(Debug, Default, Clone)]
pub struct MetricsSnapshot {
    pub licenses: Vec<LicenseSeatsRow>,
    /// Seats in use, all licenses.
    pub seats_used: i64,
    /// Seats bought, licenses in force.
    pub seats_total: i64,
    /// Holders waiting in a queue (their place not lapsed).
    pub waiting: i64,
    /// (channel, state, count) for webhook and email, pending and failed.
    pub outbox: Vec<(String, String, i64)>,
}

/// One license's seats, for `/metrics`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LicenseSeatsRow {
    pub license_id: String,
    pub workspace_id: String,
    pub seats_used: i64,
    pub seats_total: i64,
}

/// A machine's live seat, as the client protocol asks after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSeat {
    /// When the seat lapses (ms since the epoch; leases only).
    pub expires_at: Option<i64>,
}

/// A lease's heartbeats absorbed in a node's memory, to be written in bulk
/// ([`Seats::flush_heartbeats`]): its newest beat's expiry and time (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub lease_id: String,
    pub license_id: String,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// What a flush of heartbeats could not write ([`Seats::flush_heartbeats`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Leases no longer live (released, lapsed before their beat, turned into a borrow):
    /// never written.
    pub gone: Vec<String>,
    /// Leases another transaction held locked (PostgreSQL): left for the next flush
    /// rather than waited for.
    pub busy: Vec<String>,
}

/// What one chunk of a lease sweep did.
#[derive(Debug, Default)]
pub struct SweepChunk {
    /// The leases that ended, as they were before.
    pub expired: Vec<Seat>,
    /// The license the sweep's next chunk starts at (the chunk's budget may have run out
    /// before that license's lapsed leases did), or `None`: the chunk reached the last
    /// license.
    pub resume_at: Option<String>,
    /// How many licenses the chunk probed for lapsed leases.
    pub probed: usize,
}

/// What a sweep did in some licenses, in order: the leases it ended, and the license its
/// budget ran out in (leases ended and leases whose `sweep_at` moved on count alike).
#[derive(Debug, Default)]
pub(crate) struct Swept {
    pub expired: Vec<Seat>,
    pub ran_out_in: Option<String>,
}

/// An admin's change to a license, computed from the stored row inside the write (so
/// from what is stored, not from an earlier read); shared, as SQLite's seat writer
/// applies it on its own thread.
pub type LicenseEdit = Arc<dyn Fn(&License) -> Result<LicenseChange> + Send + Sync>;

/// What the domain needs from storage. Every call that changes data writes its
/// audit event in the same transaction; every call is scoped to one workspace and
/// answers [`StoreError::NotFound`] for another workspace's objects. Its parts are
/// traits of their own; a `dyn Store` answers all of their methods.
pub trait Store:
    Directory + Tracking + Seats + Notifications + Usage + Send + Sync + 'static
{
}

impl<S: Directory + Tracking + Seats + Notifications + Usage + Send + Sync + 'static> Store for S {}

/// Usage analytics (DESIGN §8): what the seat ledger and the refusals add up to, hour by
/// hour and day by day, and the rollup that keeps closed hours and days.
#[async_trait]
pub trait Usage: Send + Sync {
    /// A license's buckets from `from` (a day's start, ms) to `to` (exclusive), up to
    /// `now`: closed ones as rolled up, the rest from the ledger as it is.
    async fn usage(
        &self,
        workspace_id: &str,
        license_id: &str,
        (from, to): (i64, i64),
        size: leasehold_core::BucketSize,
        now: i64,
    ) -> Result<UsageReport>;

    /// Every license of the workspace over the last `days` days (today included), with
    /// the advice, the most money at stake first.
    async fn usage_summary(
        &self,
        workspace_id: &str,
        days: i64,
        now: i64,
    ) -> Result<Vec<UsageSummaryItem>>;

    /// Rolls closed hours and days up from the ledger (a month of them per license per
    /// call: the back-fill of an upgrade takes several), and drops what is older than 13
    /// months. Idempotent: nodes running it at once write the same rows. Answers how many
    /// licenses still have closed time to roll up.
    async fn roll_up_usage(&self, now: i64) -> Result<usize>;
}

/// Workspaces, their members, API tokens and sessions, and the store itself.
#[async_trait]
pub trait Directory: Send + Sync {
    fn backend(&self) -> Backend;

    /// Answers when the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Sends `payload` to every node listening on `channel` (PostgreSQL `NOTIFY`); a
    /// no-op where the store serves one node (SQLite).
    async fn notify(&self, channel: &str, payload: &str) -> Result<()>;

    /// What `notify` sends on any node, or `None` where there is only this node.
    async fn listen(&self, channel: &str) -> Result<Option<Messages>>;

    /// Stores `value` under `key` unless a value is there; answers the value that is.
    async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String>;

    async fn create_workspace(
        &self,
        workspace: NewWorkspace,
        owner: NewMember,
        token: NewToken,
    ) -> Result<Workspace>;

    async fn workspace(&self, id: &str) -> Result<Workspace>;

    async fn workspace_count(&self) -> Result<i64>;

    /// The workspace with this slug (the Keygen facade's `/keygen/{slug}/v1/…`).
    async fn workspace_by_slug(&self, slug: &str) -> Result<Option<Workspace>>;

    /// The store's workspace when it has exactly one.
    async fn only_workspace(&self) -> Result<Option<Workspace>>;

    /// What `/metrics` reads from the store when scraped: the `top` licenses with the
    /// most seats in use, the sums, the queue, and the outbox's pending and failed
    /// deliveries (DESIGN §10).
    async fn metrics_snapshot(&self, top: i64) -> Result<MetricsSnapshot>;

    /// The live (unrevoked) token with this hash.
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>>;

    async fn create_token(
        &self,
        actor: &Actor,
        workspace_id: &str,
        token: NewToken,
    ) -> Result<TokenRecord>;

    async fn list_tokens(
        &self,
        workspace_id: &str,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>>;

    async fn revoke_token(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<TokenRecord>;

    async fn create_member(
        &self,
        actor: &Actor,
        workspace_id: &str,
        member: NewMember,
    ) -> Result<Member>;

    async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>>;

    /// Every member with this email, in any workspace (sign-in picks the one whose password matches).
    async fn members_by_email(&self, email: &str) -> Result<Vec<Member>>;

    async fn member(&self, workspace_id: &str, id: &str) -> Result<Member>;

    /// Changes a member's role or disables them; a disabled member's sessions end in the
    /// same step. `LastOwner` when the workspace would keep no owner who can sign in.
    async fn update_member(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: MemberChange,
    ) -> Result<Member>;

    /// Removes a member and ends their sessions (their events stay); `LastOwner` as above.
    async fn delete_member(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Member>;

    async fn create_session(&self, session: Session) -> Result<()>;

    /// The live session with this token hash.
    async fn session(&self, token_hash: &str) -> Result<Option<Session>>;

    async fn delete_session(&self, token_hash: &str) -> Result<()>;

    /// The workspace's encrypted signing key, set to `candidate` if it has none yet.
    async fn workspace_signing_key(
        &self,
        workspace_id: &str,
        candidate: Vec<u8>,
    ) -> Result<Vec<u8>>;
}

/// What IT admins track: applications, licenses, assigned seats, contacts, reminders
/// and the audit log.
#[async_trait]
pub trait Tracking: Send + Sync {
    async fn create_application(
        &self,
        actor: &Actor,
        workspace_id: &str,
        application: NewApplication,
    ) -> Result<Application>;

    async fn application(&self, workspace_id: &str, id: &str) -> Result<Application>;

    async fn list_applications(
        &self,
        workspace_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Application>>;

    async fn update_application(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: ApplicationChange,
    ) -> Result<Application>;

    /// Refused with a conflict while the application has licenses.
    async fn delete_application(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()>;

    async fn create_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        license: NewLicense,
    ) -> Result<License>;

    async fn license(&self, workspace_id: &str, id: &str) -> Result<License>;

    async fn list_licenses(
        &self,
        workspace_id: &str,
        filter: &LicenseFilter,
        page: &PageRequest,
    ) -> Result<Page<License>>;

    /// Applies `change` to the current row inside the transaction, so the new values are
    /// computed from what is stored, not from an earlier read.
    async fn update_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: LicenseEdit,
    ) -> Result<License>;

    /// Releases the license's seats, removes its reminders, keeps its ledger.
    async fn delete_license(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()>;

    /// The encrypted key, audited as revealed.
    async fn reveal_license_key(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Vec<u8>>;

    async fn assign_seat(
        &self,
        actor: &Actor,
        workspace_id: &str,
        license_id: &str,
        assignment: NewAssignment,
    ) -> Result<Seat>;

    async fn list_seats(
        &self,
        workspace_id: &str,
        license_id: &str,
        active_only: bool,
        page: &PageRequest,
    ) -> Result<Page<Seat>>;

    /// An admin ends a seat; a borrow only with `force` (its offline file stays valid).
    async fn reclaim_seat(
        &self,
        actor: &Actor,
        workspace_id: &str,
        seat_id: &str,
        force: bool,
    ) -> Result<Seat>;

    /// A machine's active seat of the license (a Keygen "machine"): the seat with this
    /// id, or else the one this fingerprint holds as a Keygen machine: its activation, or
    /// its lease or borrow of no OS user (another OS user's seat on that machine is
    /// someone else's). Lapsed leases the sweeper has not ended yet count.
    async fn machine_seat(&self, license_id: &str, alias: &str) -> Result<Option<Seat>>;

    async fn create_contact(
        &self,
        actor: &Actor,
        workspace_id: &str,
        contact: NewContact,
    ) -> Result<Contact>;

    async fn contact(&self, workspace_id: &str, id: &str) -> Result<Contact>;

    async fn list_contacts(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Contact>>;

    async fn terminate_contact(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Contact>;

    async fn contact_seats(&self, workspace_id: &str, contact_id: &str) -> Result<Vec<Seat>>;

    async fn list_reminders(
        &self,
        workspace_id: &str,
        filter: &ReminderFilter,
        page: &PageRequest,
    ) -> Result<Page<Reminder>>;

    async fn dismiss_reminder(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<Reminder>;

    async fn list_events(
        &self,
        workspace_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<Event>>;
}

/// The client protocol's seats (DESIGN §3). `license` is the row the key resolved to.
#[async_trait]
pub trait Seats: Send + Sync {
    /// Loads `count` live leases onto a concurrent license at once, for the benchmark: ids
    /// `{license}-{n}`, machines `seed-{n}`, OS user `u`, one instance `i`, taken at
    /// `now` and expiring at `expires_at`; `seats_used` grows by as many, in the same
    /// transaction. No audit events or webhooks: it stands for leases taken before.
    /// Refused (`Conflict`) past the license's free seats.
    async fn import_leases(
        &self,
        license_id: &str,
        count: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;

    // The client protocol (DESIGN §3). `license` is the row the key resolved to.
    /// The live license with this keyed hash, in any workspace.
    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>>;

    /// This machine's active seat of this kind, if it holds one (a lease may have lapsed
    /// without being swept yet: see its `expires_at`).
    async fn held_seat(
        &self,
        license_id: &str,
        kind: leasehold_core::SeatKind,
        fingerprint: &str,
    ) -> Result<Option<HeldSeat>>;

    /// Takes a dedicated seat for a machine, or answers its existing one (`false`).
    /// (`license` is shared, as for leases: SQLite's seat writer keeps it for the batch.)
    async fn activate(
        &self,
        license: &Arc<License>,
        fingerprint: &str,
        identifier: Option<&str>,
    ) -> Result<(Seat, bool)>;

    /// Releases a machine's seat to move it, within the policy's monthly limit.
    async fn deactivate(&self, license: &Arc<License>, fingerprint: &str) -> Result<Seat>;

    /// Takes a concurrent seat for (fingerprint, os_user), or joins the one it holds (`false`).
    /// (`license` is shared, not copied: SQLite's seat writer keeps it for the batch.)
    async fn take_lease(
        &self,
        license: &Arc<License>,
        holder: &LeaseHolder,
    ) -> Result<(Seat, bool)>;

    /// Pushes a live lease's expiry; [`StoreError::LeaseEnded`] when it has lapsed or
    /// ended. `idle_s` is the instance's report of its user's absence (DESIGN §7).
    async fn heartbeat(
        &self,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
        idle_s: Option<i64>,
    ) -> Result<i64>;

    /// A seat as it is stored now, read without the seat writer or a lock: what a
    /// heartbeat absorbed in memory checks on its first beat (`None`: no such seat in the
    /// workspace).
    async fn lease_state(&self, workspace_id: &str, lease_id: &str) -> Result<Option<Seat>>;

    /// Writes heartbeats absorbed in memory, in bulk: each live lease of `beats` gets its
    /// expiry and last-seen time, the newest beat winning as for [`Seats::heartbeat`]. A
    /// released lease is never touched (a flush cannot bring one back), nor one that had
    /// lapsed before its beat. Answers the leases not written: those no longer live, and
    /// those busy in another transaction (never waited for, so a flush deadlocks with no
    /// sweep, check-in or other node's flush).
    async fn flush_heartbeats(&self, beats: &[Beat]) -> Result<FlushOutcome>;

    /// One instance exits; answers whether that freed the seat.
    async fn release_instance(
        &self,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> Result<bool>;

    /// The holder (machine, OS user) gives up its place in the license's queue; answers
    /// whether it had one (DESIGN §7).
    async fn leave_queue(
        &self,
        license: &Arc<License>,
        fingerprint: &str,
        os_user: &str,
    ) -> Result<bool>;

    /// Lends the holder (machine, OS user) a floating seat for `days` days of offline use
    /// (DESIGN §7): its borrow renewed from now (`false`), or its live lease turned into a
    /// borrow, or a new seat (`true`).
    async fn borrow(
        &self,
        license: &Arc<License>,
        holder: &LeaseHolder,
        days: i64,
    ) -> Result<(Seat, bool)>;

    /// The machine returns its borrow early (reason `returned`); `NotFound` when the
    /// license has no such borrow out for it.
    async fn return_borrow(
        &self,
        license: &Arc<License>,
        borrow_id: &str,
        fingerprint: &str,
    ) -> Result<Seat>;

    /// The license's waiters that still hold their place, head first.
    async fn waiters(&self, workspace_id: &str, license_id: &str) -> Result<Vec<Waiter>>;

    /// One chunk of a lease sweep: probes up to `probes` (at least 2) concurrent licenses
    /// holding seats, in id order from `from` (`""`: the first), and releases up to `limit` of
    /// their leases whose expiry has passed. Safe to run on several nodes at once.
    async fn expire_leases(&self, from: &str, limit: i64, probes: i64) -> Result<SweepChunk>;
}
