//! SQLite's seat writer: the hot seat operations (take a lease, release an instance,
//! heartbeat) and the sweeper's chunks run on one dedicated thread that owns a write
//! connection and its prepared statements, so a statement costs microseconds instead of
//! a round trip through an async driver's worker thread, and the sweep never contends
//! with the hot operations for SQLite's write lock.
//!
//! **One transaction per batch.** Every operation queued while the previous batch ran is
//! applied in one `BEGIN IMMEDIATE` transaction and one `COMMIT`. Should one operation
//! fail in the database, the batch is applied again with a savepoint for each, so that
//! only the failed one is undone.
//!
//! **Answered once on disk.** The commit itself does not fsync (`synchronous=NORMAL`):
//! the batch's answers go to a second thread that fsyncs the WAL and only then answers,
//! one fsync for every batch committed meanwhile. So the next batch runs while the last
//! one syncs, and a 201 still survives kill -9.
//!
//! **A bounded WAL.** SQLite starts the WAL over only at a write that finds every frame
//! already copied into the database file, which never happens while batches follow each
//! other without a pause: the background checkpointer copies what was there when it
//! started, and meanwhile the writer appends more. So once a checkpoint finds the WAL past
//! its limit, the checkpointer copies again what was appended during its last pass (a few
//! times, until little is left), and the writer copies the rest itself between two
//! batches; its next batch then starts the WAL over. A file that grew past twice the limit
//! is cut back (`journal_size_limit`). The writer's pause (10–90 ms measured, mostly the
//! fsync of the database file) comes once per limit's worth of writes.
//!
//! **One license's audit log, indexed in bulk.** Events are not indexed by license as
//! they are written: between two batches, every 50 ms or so, the writer adds the events
//! committed since to `license_events`, sorted, in a transaction of its own
//! ([`AuditIndex`]). A store without a seat writer (an in-memory database) never indexes,
//! and its license logs read the whole table.
//!
//! **One seat decision.** A take asks the domain's [`decide_take`] with what its
//! transaction read and applies the answer step by step (join, end the holder's lapsed
//! lease, reclaim a full license's lapsed leases, take, or refuse and announce it), as
//! the general (sqlx) path does with the same rule and the same statement texts
//! ([`crate::backend`] holds each text once). Every take of a file-backed store is decided
//! here, so a crowd waiting for a seat never takes SQLite's write lock from this thread.

use crate::backend::{
    denial_data, json, subscribed_pattern, webhook_data, ACTIVE_LEASE, END_SEAT, ENQUEUE_WEBHOOKS,
    EXPIRE_CHUNK, FREE_SEAT, FREE_SEATS, INSERT_EVENT, INSERT_LEASE, LAPSED_LEASES,
    LAST_ADMIN_RELEASE, LICENSE_SEATS, NEXT_LEASE_EXPIRY, RENEW_LEASE, RESWEEP_LEASES, SEAT_BY_ID,
    SET_INSTANCES, TOUCH_LEASE, TRY_TAKE_SEAT,
};
use crate::outbox::{webhook_event_of, RETRY_WINDOW_MS};
use crate::records::{key_actor, new_id, today, Actor, LeaseHolder, License, Seat};
use crate::{StoreError, Swept};
use leasehold_core::lease::{decide_take, LicenseSeats, Refusal, TakeInput, TakeStep};
use leasehold_core::{effective_status, LicenseStatus, ReleaseReason, SeatKind, SeatModel};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most operations one transaction applies.
const MAX_BATCH: usize = 512;
/// At most this many frames are left for the writer to copy when the WAL starts over
/// (the background checkpointer copies again until the tail is this short)...
const WRITER_TAIL_FRAMES: u64 = 256;
/// ... or until it has tried this many more times.
const MAX_CATCH_UP_PASSES: usize = 4;

pub(crate) enum Op {
    Take {
        license: Arc<License>,
        holder: LeaseHolder,
        now: i64,
    },
    Release {
        license: Arc<License>,
        lease_id: String,
        instance: String,
        now: i64,
    },
    Touch {
        lease_id: String,
        license_id: String,
        expires_at: i64,
        now: i64,
    },
    /// A sweep's chunk: up to `limit` lapsed leases of these licenses (id, workspace)
    /// end, license by license in this order.
    Expire {
        licenses: Vec<(String, String)>,
        now: i64,
        limit: i64,
    },
}

pub(crate) enum Done {
    /// A new lease (`true`), or the holder's live one with this instance counted in.
    Taken(Box<Seat>, bool),
    /// Refused here, and announced to the webhooks (`seat.denied`).
    Refused(StoreError),
    /// Whether the lease ended (its last instance left, or it already had).
    Released(bool),
    /// The live lease's instance list, or `None` when it is not live.
    Touched(Option<Option<String>>),
    /// The leases that ended, as they were before, and where the budget ran out.
    Expired(Swept),
}

/// Workspace → whether it has webhooks, learnt once per batch: the batch is one write
/// transaction, so no webhook can appear or go while it runs.
type Webhooks = std::collections::HashMap<String, bool>;

const HAS_WEBHOOKS: &str =
    "SELECT EXISTS (SELECT 1 FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL)";

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

pub(crate) struct SeatWriter {
    queue: mpsc::Sender<Request>,
}

impl SeatWriter {
    /// Opens a write connection to the (already migrated) database file and starts the
    /// writer thread, and the checkpointer's (module docs).
    pub(crate) fn start(
        path: &Path,
        options: &crate::StoreOptions,
    ) -> Result<SeatWriter, StoreError> {
        let wal_limit = options.sqlite_wal_limit;
        let conn = Connection::open(path)?;
        conn.busy_handler(Some(wait_for_lock))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (and their fsyncs of the database file) run on their own thread,
        // not inside this writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // When this connection starts the WAL over, it cuts a file that grew to twice the
        // limit back (a file just past the limit is reused as it is: cutting it costs the
        // writer milliseconds, and its pages would be written again).
        let size_limit = wal_limit.saturating_mul(2).min(i64::MAX as u64) as i64;
        conn.pragma_update(None, "journal_size_limit", size_limit)?;
        let page_size: u64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let log = Wal {
            // A frame is a 24-byte header and a page.
            limit_frames: wal_limit / (page_size + 24),
            checkpoint_every: options.sqlite_checkpoint_every,
            restart_due: Arc::new(AtomicBool::new(false)),
        };
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_handler(Some(wait_for_lock))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Savepoints' sub-journals in memory, not in temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // 8 MiB of pages, not 64: a commit can cost a walk over every cached page. When a
        // B-tree page splits, SQLite renumbers pages through the unused lock page (page
        // 524,289 with 2 KiB pages), and the commit then drops cached pages past the end
        // of the file by scanning the whole cache (`pcache1TruncateUnsafe`: 3.8% of a
        // checkout run's samples at 64 MiB, gone from the profile at 8 MiB). Checkout
        // gained 5–10% in paired runs; heartbeats among a million leases measured alike
        // (the inner pages of the seat indexes still fit; the OS caches the rest).
        conn.pragma_update(None, "cache_size", -8_192)?;
        conn.set_prepared_statement_cache_capacity(32);
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = std::fs::File::open(&wal_path)
            .map_err(|e| StoreError::Corrupt(format!("cannot open the WAL to sync it: {e}")))?;
        let (queue, waiting) = mpsc::channel();
        let (committed, to_sync) = mpsc::channel();
        let thread = |name: &str| std::thread::Builder::new().name(name.into());
        let cannot =
            |e: std::io::Error| StoreError::Corrupt(format!("cannot start the seat writer: {e}"));
        thread("leasehold-seat-sync")
            .spawn(move || sync(wal, to_sync))
            .map_err(cannot)?;
        // The checkpointer stops with the writer (when the store is dropped).
        let (writer_alive, writer_gone) = mpsc::channel::<()>();
        let checkpointer_log = log.clone();
        thread("leasehold-checkpoint")
            .spawn(move || checkpoint(checkpointer, &checkpointer_log, writer_gone))
            .map_err(cannot)?;
        let audit = AuditIndex::new(options.sqlite_audit_index_every);
        thread("leasehold-seat-writer")
            .spawn(move || {
                run(conn, &log, audit, waiting, committed);
                drop(writer_alive);
            })
            .map_err(cannot)?;
        Ok(SeatWriter { queue })
    }

    pub(crate) async fn apply(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Corrupt("the seat writer stopped".into());
        self.queue
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// Another connection (the general writer, another process) holds the write lock: wait
/// in short steps, up to 10 s, rather than SQLite's default millisecond back-off.
fn wait_for_lock(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    attempt < 100_000
}

/// A committed batch's answers, waiting for the fsync that makes them durable.
type Answers = Vec<(
    oneshot::Sender<Result<Done, StoreError>>,
    Result<Done, StoreError>,
)>;

/// What the checkpointer and the writer share about the WAL.
#[derive(Clone)]
struct Wal {
    /// Past this many frames, the WAL should start over.
    limit_frames: u64,
    /// How often the checkpointer copies the WAL into the database.
    checkpoint_every: Duration,
    /// Set by the checkpointer: the WAL is past its limit; the writer copies the frames
    /// appended since the background checkpoint before its next batch.
    restart_due: Arc<AtomicBool>,
}

fn run(
    conn: Connection,
    wal: &Wal,
    mut audit: AuditIndex,
    waiting: mpsc::Receiver<Request>,
    committed: mpsc::Sender<Answers>,
) {
    loop {
        let first = match waiting.recv_timeout(audit.every) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                audit.index_if_due(&conn);
                continue;
            }
            // The store is gone; the next start indexes what is left.
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if wal.restart_due.swap(false, Ordering::Relaxed) {
            // No transaction is open here, so this copies every frame (unless a reader
            // still needs one), and the next batch's write starts the WAL over.
            if let Err(error) = wal_checkpoint(&conn) {
                tracing::warn!(%error, "WAL checkpoint before starting it over failed");
            }
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let outcomes = apply_batch(&conn, &batch);
        let answers: Answers = batch
            .into_iter()
            .map(|request| request.reply)
            .zip(outcomes)
            .collect();
        if committed.send(answers).is_err() {
            return;
        }
        audit.index_if_due(&conn);
    }
}

/// The most events one pass indexes, so that a pass after a large sweep (each expired
/// lease is an event) holds seat operations back for milliseconds, not seconds.
const AUDIT_INDEX_MOST: i64 = 16_384;
/// After a pass failed, the next waits this long (the events wait past `through`, read
/// from the table's end).
const AUDIT_INDEX_RETRY: Duration = Duration::from_secs(5);

/// One license's audit log is indexed in bulk (`license_events`, migration 0009): every
/// event committed since the last time, sorted by license, in one transaction of its own
/// between two batches, so that each license's page is written once for all its new
/// events rather than once for each. Its commit needs no fsync of its own: nothing waits
/// for it, and it is in the WAL before the next batch's fsync. A license's log reads the
/// events not yet indexed from the end of the table.
struct AuditIndex {
    /// How often, at most, the events committed since are indexed.
    every: Duration,
    next: Instant,
}

impl AuditIndex {
    fn new(every: Duration) -> Self {
        AuditIndex {
            every,
            next: Instant::now() + every,
        }
    }

    fn index_if_due(&mut self, conn: &Connection) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.every;
        if let Err(error) = index_license_events(conn) {
            // Nothing is lost: the events stay past `through`, read from the table's
            // end, and a later pass indexes them.
            let retry_in_s = AUDIT_INDEX_RETRY.as_secs();
            tracing::warn!(%error, retry_in_s, "indexing the audit log by license failed");
            let _ = statement(conn, "ROLLBACK");
            self.next = Instant::now() + AUDIT_INDEX_RETRY;
        }
    }
}

/// The newest event's rowid, and the newest one indexed (`through`: every event up to it
/// is in `license_events`, or has no license).
const AUDIT_INDEX_STATE: &str = "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM events), \
     (SELECT through FROM license_events_through)";

/// Adds the events committed since `through` to `license_events`, [`AUDIT_INDEX_MOST`] at
/// most; answers how many.
pub(crate) fn index_license_events(conn: &Connection) -> rusqlite::Result<usize> {
    let state = |conn: &Connection| {
        conn.prepare_cached(AUDIT_INDEX_STATE)?
            .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
    };
    // Read first, outside a transaction: an idle server takes no write lock for nothing.
    let (newest, through) = state(conn)?;
    if newest == through {
        return Ok(0);
    }
    statement(conn, "BEGIN IMMEDIATE")?;
    let (newest, mut through) = state(conn)?;
    if newest < through {
        // Rowids went back (events deleted by hand, a file rebuilt): events past the
        // newest would be neither indexed nor read as recent. Index all of them again.
        tracing::warn!(
            newest,
            through,
            "the audit log's index by license is rebuilt"
        );
        statement(conn, "DELETE FROM license_events")?;
        through = 0;
    }
    let upto = newest.min(through.saturating_add(AUDIT_INDEX_MOST));
    // OR IGNORE: an entry already there (a file put together by hand) cannot stop the
    // indexing for good.
    let indexed = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO license_events (license_id, event_id) SELECT license_id, id \
             FROM events WHERE rowid > $1 AND rowid <= $2 AND license_id IS NOT NULL \
             ORDER BY license_id, id",
        )?
        .execute(params![through, upto])?;
    conn.prepare_cached("UPDATE license_events_through SET through = $1")?
        .execute(params![upto])?;
    statement(conn, "COMMIT")?;
    Ok(indexed)
}

/// Copies the WAL into the database file in the background, without blocking writers
/// (`PASSIVE`); SQLite starts the WAL over once all of it is copied. When the WAL is past
/// its limit, the writer is asked to copy what was appended meanwhile.
fn checkpoint(conn: Connection, wal: &Wal, writer_gone: mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = writer_gone.recv_timeout(wal.checkpoint_every) {
        let mut frames = match wal_checkpoint(&conn) {
            Ok(frames) => frames,
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint failed");
                continue;
            }
        };
        // `frames` is the WAL as the checkpoint found it, all of it copied unless a
        // reader still needed some; the writer appended more meanwhile. A WAL past its
        // limit has not started over on its own.
        if frames <= wal.limit_frames {
            continue;
        }
        // Copy again what was appended during the last pass, until little is left (each
        // pass is shorter than the one before), so the writer's own pass is short.
        for _ in 0..MAX_CATCH_UP_PASSES {
            match wal_checkpoint(&conn) {
                Ok(now) if now >= frames => {
                    let appended = now - frames;
                    frames = now;
                    if appended <= WRITER_TAIL_FRAMES {
                        break;
                    }
                }
                // Started over meanwhile (or failed): nothing to hand over.
                _ => break,
            }
        }
        if frames > wal.limit_frames {
            wal.restart_due.store(true, Ordering::Relaxed);
        }
    }
}

/// A `PASSIVE` checkpoint; answers how many frames the WAL held when it began.
fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let frames: i64 = row.get(1)?;
        Ok(frames.max(0) as u64)
    })
}

/// Answers committed batches once an fsync that started after their commit is done.
fn sync(wal: std::fs::File, committed: mpsc::Receiver<Answers>) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        let synced = wal.sync_data();
        for (reply, outcome) in batches.into_iter().flatten() {
            let outcome = match &synced {
                Ok(()) => outcome,
                Err(e) => Err(StoreError::Corrupt(format!("fsync of the WAL failed: {e}"))),
            };
            let _ = reply.send(outcome);
        }
    }
}

/// Applies a batch in one transaction; every outcome is final once this returns (the
/// batch committed, or every operation failed).
///
/// Optimistically without savepoints first (a savepoint makes SQLite copy every page it
/// changes to a sub-journal): an operation that refuses does so before it writes, or
/// answers its refusal as an outcome with what it wrote (`Done::Refused`), so only a
/// database error can leave one half done. Then the batch is rolled back and
/// applied again with a savepoint per operation, so that one failure undoes only itself.
fn apply_batch(conn: &Connection, batch: &[Request]) -> Vec<Result<Done, StoreError>> {
    match apply_in_transaction(conn, batch, false) {
        Ok(outcomes) if !outcomes.iter().any(is_database_error) => {
            match statement(conn, "COMMIT") {
                Ok(()) => return outcomes,
                Err(error) => return rolled_back(conn, batch, &error),
            }
        }
        Ok(_) => {
            if let Err(error) = statement(conn, "ROLLBACK") {
                return failed(batch, &error);
            }
        }
        Err(error) => return rolled_back(conn, batch, &error),
    }
    match apply_in_transaction(conn, batch, true) {
        Ok(outcomes) => match statement(conn, "COMMIT") {
            Ok(()) => outcomes,
            Err(error) => rolled_back(conn, batch, &error),
        },
        Err(error) => rolled_back(conn, batch, &error),
    }
}

/// `BEGIN IMMEDIATE` and every operation, each in a savepoint if `savepoints`; an error
/// of the transaction itself (not of an operation) is answered as `Err`.
fn apply_in_transaction(
    conn: &Connection,
    batch: &[Request],
    savepoints: bool,
) -> rusqlite::Result<Vec<Result<Done, StoreError>>> {
    statement(conn, "BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut hooks = Webhooks::default();
    for request in batch {
        if !savepoints {
            outcomes.push(apply_op(conn, &mut hooks, &request.op));
            ended_by_sqlite(conn)?;
            continue;
        }
        statement(conn, "SAVEPOINT op")?;
        let outcome = apply_op(conn, &mut hooks, &request.op);
        if outcome.is_err() {
            statement(conn, "ROLLBACK TO op")?;
        }
        statement(conn, "RELEASE op")?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Some errors (a full disk, an I/O error) make SQLite roll the whole transaction back by
/// itself: the operations after one would then each commit on their own. The batch stops
/// there, and every operation of it fails (nothing of it stays).
fn ended_by_sqlite(conn: &Connection) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("SQLite rolled the seat batch back".into()),
        ));
    }
    Ok(())
}

fn is_database_error(outcome: &Result<Done, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Sqlite(_)))
}

/// Nothing of the batch stays: every operation answers the transaction's error.
fn rolled_back(
    conn: &Connection,
    batch: &[Request],
    error: &rusqlite::Error,
) -> Vec<Result<Done, StoreError>> {
    let _ = statement(conn, "ROLLBACK");
    failed(batch, error)
}

fn failed(batch: &[Request], error: &rusqlite::Error) -> Vec<Result<Done, StoreError>> {
    batch
        .iter()
        .map(|_| Err(StoreError::Sqlite(error.to_string())))
        .collect()
}

fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn apply_op(conn: &Connection, hooks: &mut Webhooks, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Take {
            license,
            holder,
            now,
        } => take(conn, hooks, license, holder, *now),
        Op::Release {
            license,
            lease_id,
            instance,
            now,
        } => release(conn, hooks, license, lease_id, instance, *now),
        Op::Touch {
            lease_id,
            license_id,
            expires_at,
            now,
        } => Ok(Done::Touched(
            conn.prepare_cached(TOUCH_LEASE)?
                .query_row(params![expires_at, now, lease_id, license_id], |row| {
                    row.get::<_, Option<String>>(0)
                })
                .optional()?,
        )),
        Op::Expire {
            licenses,
            now,
            limit,
        } => expire(conn, hooks, licenses, *now, *limit).map(Done::Expired),
    }
}

/// A sweep's chunk in one transaction: up to `limit` lapsed leases of `licenses` (id,
/// workspace) end (or move their `sweep_at` on), license by license, so the chunk waits
/// for one commit and one fsync however thinly its leases are spread.
fn expire(
    conn: &Connection,
    hooks: &mut Webhooks,
    licenses: &[(String, String)],
    now: i64,
    limit: i64,
) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    let mut handled = 0;
    for (license_id, workspace_id) in licenses {
        let (expired, moved) = expire_license(
            conn,
            hooks,
            (workspace_id, license_id),
            now,
            limit - handled,
        )?;
        handled += moved + expired.len() as i64;
        swept.expired.extend(expired);
        if handled >= limit {
            swept.ran_out_in = Some(license_id.clone());
            break;
        }
    }
    Ok(swept)
}

/// Ends up to `limit` of the license's lapsed leases, as the general path's
/// `expire_license_leases` does: each with its `seat.expired` event. Leases whose
/// `sweep_at` passed though they live on move it first, and count in `limit`: answers the
/// leases ended and how many moved.
fn expire_license(
    conn: &Connection,
    hooks: &mut Webhooks,
    (workspace_id, license_id): (&str, &str),
    now: i64,
    limit: i64,
) -> Result<(Vec<Seat>, i64), StoreError> {
    let moved = conn
        .prepare_cached(RESWEEP_LEASES)?
        .execute(params![license_id, now, limit])? as i64;
    if moved >= limit {
        return Ok((Vec::new(), moved));
    }
    let lapsed = conn
        .prepare_cached(LAPSED_LEASES)?
        .query_map(params![license_id, now, limit - moved], seat_from_row)?
        .collect::<rusqlite::Result<Vec<Seat>>>()?;
    let mut expired = Vec::with_capacity(lapsed.len());
    for seat in lapsed {
        let ended = conn.prepare_cached(END_SEAT)?.execute(params![
            now,
            ReleaseReason::Expired.as_str(),
            seat.id
        ])?;
        if ended == 1 {
            insert_event(
                conn,
                hooks,
                (workspace_id, license_id),
                &Actor::system(),
                "seat.expired",
                &seat.id,
                json(&seat),
                None,
                now,
            )?;
            expired.push(seat);
        }
    }
    if !expired.is_empty() {
        conn.prepare_cached(FREE_SEATS)?
            .execute(params![expired.len() as i64, license_id])?;
    }
    Ok((expired, moved))
}

/// Before a full license refuses: ends its lapsed leases (up to a chunk of them), however
/// many leases have their `sweep_at` to move on first. Answers how many ended.
fn expire_all_lapsed(
    conn: &Connection,
    hooks: &mut Webhooks,
    workspace_and_license: (&str, &str),
    now: i64,
) -> Result<i64, StoreError> {
    loop {
        let (expired, moved) =
            expire_license(conn, hooks, workspace_and_license, now, EXPIRE_CHUNK)?;
        if moved < EXPIRE_CHUNK {
            return Ok(expired.len() as i64);
        }
    }
}

/// A floating seat for `holder`: the domain's seat decision ([`decide_take`]) on what
/// this transaction reads, applied step by step. Nothing else writes the seat tables
/// meanwhile (this thread is SQLite's only writer of them), and the guarded count
/// (`TRY_TAKE_SEAT`) is still the invariant's last word.
fn take(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    holder: &LeaseHolder,
    now: i64,
) -> Result<Done, StoreError> {
    let mut held = conn
        .prepare_cached(ACTIVE_LEASE)?
        .query_row(
            params![license.id, holder.fingerprint, holder.os_user],
            seat_from_row,
        )
        .optional()?;
    let last_release = match held {
        Some(_) => None,
        None => last_admin_release(conn, license, holder)?,
    };
    let mut input = TakeInput {
        instance: &holder.instance,
        now,
        policy: license.policy(),
        license: license_seats(conn, &license.id)?,
        held: held.as_ref().map(Seat::held_lease),
        last_admin_release: last_release,
        lapsed_reclaimed: false,
    };
    let expires_at = loop {
        match decide_take(&input) {
            TakeStep::Join {
                instances,
                expires_at,
                ..
            } => {
                let seat = held.ok_or_else(|| StoreError::Corrupt("joined no lease".into()))?;
                let instances = Some(instances.to_stored());
                conn.prepare_cached(RENEW_LEASE)?.execute(params![
                    instances,
                    expires_at,
                    now,
                    holder.identifier,
                    seat.id
                ])?;
                // As RENEW_LEASE leaves it (the newest heartbeat's expiry winning).
                let expires_at = leasehold_core::lease::renewed_expiry(
                    seat.expires_at.unwrap_or(0),
                    seat.last_seen_at.unwrap_or(0),
                    expires_at,
                    now,
                );
                let seat = Seat {
                    instances,
                    expires_at: Some(expires_at),
                    last_seen_at: seat.last_seen_at.max(Some(now)),
                    identifier: holder.identifier.clone().or(seat.identifier),
                    ..seat
                };
                return Ok(Done::Taken(Box::new(seat), false));
            }
            TakeStep::EndOwnLapsed => {
                // The holder's old seat ends as expired (kept even if this take is
                // refused); decided again without it.
                if let Some(seat) = held.take() {
                    end_lease(conn, hooks, license, &seat, ReleaseReason::Expired, now)?;
                }
                input.held = None;
                input.last_admin_release = last_admin_release(conn, license, holder)?;
                input.license = license_seats(conn, &license.id)?;
            }
            TakeStep::ReclaimLapsed => {
                // Free what crashed apps left behind (kept even if this take is refused).
                let workspace_and_license = (license.workspace_id.as_str(), license.id.as_str());
                expire_all_lapsed(conn, hooks, workspace_and_license, now)?;
                input.lapsed_reclaimed = true;
                input.license = license_seats(conn, &license.id)?;
            }
            TakeStep::Refuse(refusal) => {
                let next_expiry_ms = match refusal {
                    Refusal::Full { .. } => conn
                        .prepare_cached(NEXT_LEASE_EXPIRY)?
                        .query_row(params![license.id], |row| row.get(0))?,
                    _ => None,
                };
                let error = StoreError::refused(refusal, next_expiry_ms);
                if !refusal.is_announced() {
                    return Err(error);
                }
                return deny(conn, hooks, license, holder, error, now);
            }
            TakeStep::Take { expires_at } => {
                let taken = conn.prepare_cached(TRY_TAKE_SEAT)?.execute(params![
                    license.id,
                    SeatModel::Concurrent.as_str(),
                    true,
                    today()
                ])?;
                if taken != 1 {
                    return Err(StoreError::Corrupt(
                        "the seat count moved under the seat writer".into(),
                    ));
                }
                break expires_at;
            }
        }
    };
    let seat = Seat::new_lease(license, holder, new_id(), now, expires_at);
    conn.prepare_cached(INSERT_LEASE)?.execute(params![
        seat.id,
        seat.workspace_id,
        seat.license_id,
        seat.fingerprint,
        seat.os_user,
        seat.identifier,
        seat.instances,
        now,
        expires_at
    ])?;
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        &key_actor(license, holder.identifier.as_deref()),
        "seat.taken",
        &seat.id,
        None,
        json(&seat),
        now,
    )?;
    Ok(Done::Taken(Box::new(seat), true))
}

/// The license's seats as the seat decision sees them today.
fn license_seats(conn: &Connection, license_id: &str) -> Result<LicenseSeats, StoreError> {
    let row = conn
        .prepare_cached(LICENSE_SEATS)?
        .query_row(params![license_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<chrono::NaiveDate>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    let (model, status, expires_on, seats_total, seats_used) = row.ok_or(StoreError::NotFound)?;
    let model = SeatModel::parse(&model)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown seat model {model:?}")))?;
    let status = LicenseStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown license status {status:?}")))?;
    Ok(LicenseSeats {
        model,
        standing: effective_status(status, expires_on, today()),
        seats_total,
        seats_used,
    })
}

/// When an admin last released the holder's seat, read only under a cooldown policy.
fn last_admin_release(
    conn: &Connection,
    license: &License,
    holder: &LeaseHolder,
) -> Result<Option<i64>, StoreError> {
    if !license.policy().has_release_cooldown() {
        return Ok(None);
    }
    Ok(conn.prepare_cached(LAST_ADMIN_RELEASE)?.query_row(
        params![license.id, holder.fingerprint, holder.os_user],
        |row| row.get(0),
    )?)
}

/// Ends one live lease with `reason`, frees its seat and audits it (`seat.expired` or
/// `seat.released`). Answers whether it was live.
fn end_lease(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    seat: &Seat,
    reason: ReleaseReason,
    now: i64,
) -> Result<bool, StoreError> {
    let ended = conn
        .prepare_cached(END_SEAT)?
        .execute(params![now, reason.as_str(), seat.id])?;
    if ended != 1 {
        return Ok(false);
    }
    conn.prepare_cached(FREE_SEAT)?
        .execute(params![license.id])?;
    let (actor, action, after) = match reason {
        ReleaseReason::Expired => (Actor::system(), "seat.expired", None),
        _ => (
            key_actor(license, seat.identifier.as_deref()),
            "seat.released",
            json(&seat.ended(now, reason)),
        ),
    };
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        &actor,
        action,
        &seat.id,
        json(seat),
        after,
        now,
    )?;
    Ok(true)
}

fn release(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    lease_id: &str,
    instance: &str,
    now: i64,
) -> Result<Done, StoreError> {
    let seat = seat_by_id(conn, &license.workspace_id, lease_id)?;
    if seat.license_id != license.id || seat.kind != SeatKind::Lease {
        return Err(StoreError::NotFound);
    }
    if seat.released_at.is_some() {
        return Ok(Done::Released(true));
    }
    let mut instances = seat.instance_set();
    if !instances.leave(instance) {
        conn.prepare_cached(SET_INSTANCES)?.execute(params![
            instances.to_stored(),
            now,
            lease_id
        ])?;
        return Ok(Done::Released(false));
    }
    end_lease(conn, hooks, license, &seat, ReleaseReason::Checkin, now)?;
    Ok(Done::Released(true))
}

/// Refuses `holder` and tells the workspace's webhooks (`seat.denied`), as the general
/// path's `deny` does. Answered as an outcome, not an error, so that the announcement
/// commits with the batch even when the batch is applied again with savepoints.
fn deny(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    holder: &LeaseHolder,
    refusal: StoreError,
    now: i64,
) -> Result<Done, StoreError> {
    let workspace_id = &license.workspace_id;
    enqueue_webhooks(
        conn,
        hooks,
        workspace_id,
        "seat.denied",
        &new_id(),
        now,
        || {
            denial_data(
                license,
                &holder.fingerprint,
                Some(&holder.os_user),
                &refusal,
            )
        },
    )?;
    Ok(Done::Refused(refusal))
}

/// Queues a message of `event_type` for each of the workspace's webhooks subscribed to
/// it; `data` is made only when the workspace has webhooks (asked once per batch).
fn enqueue_webhooks(
    conn: &Connection,
    hooks: &mut Webhooks,
    workspace_id: &str,
    event_type: &str,
    event_id: &str,
    now: i64,
    data: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    let has_webhooks = match hooks.get(workspace_id) {
        Some(known) => *known,
        None => {
            let known = conn
                .prepare_cached(HAS_WEBHOOKS)?
                .query_row(params![workspace_id], |row| row.get(0))?;
            hooks.insert(workspace_id.to_string(), known);
            known
        }
    };
    if has_webhooks {
        conn.prepare_cached(ENQUEUE_WEBHOOKS)?.execute(params![
            event_id,
            workspace_id,
            event_type,
            data(),
            now,
            now.saturating_add(RETRY_WINDOW_MS),
            subscribed_pattern(event_type)
        ])?;
    }
    Ok(())
}

/// Records a seat event in the audit log and queues it for subscribed webhooks.
// One row's columns; a struct for them would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
fn insert_event(
    conn: &Connection,
    hooks: &mut Webhooks,
    (workspace_id, license_id): (&str, &str),
    actor: &Actor,
    action: &str,
    seat_id: &str,
    before: Option<String>,
    after: Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    let id = new_id();
    if let Some(event_type) = webhook_event_of(action) {
        enqueue_webhooks(conn, hooks, workspace_id, event_type, &id, now, || {
            webhook_data(
                ("seat", seat_id),
                Some(license_id),
                before.as_deref(),
                after.as_deref(),
            )
        })?;
    }
    conn.prepare_cached(INSERT_EVENT)?.execute(params![
        id,
        workspace_id,
        actor.kind,
        actor.id,
        actor.label,
        action,
        "seat",
        seat_id,
        license_id,
        before,
        after,
        now
    ])?;
    Ok(())
}

fn seat_by_id(conn: &Connection, workspace_id: &str, id: &str) -> Result<Seat, StoreError> {
    conn.prepare_cached(SEAT_BY_ID)?
        .query_row(params![id, workspace_id], seat_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// A row of `seat_select!()`, in its column order.
fn seat_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Seat> {
    let vocabulary = |index: usize, name: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown {name}").into(),
        )
    };
    let kind: String = row.get(3)?;
    let reason: Option<String> = row.get(20)?;
    Ok(Seat {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        license_id: row.get(2)?,
        kind: SeatKind::parse(&kind).ok_or_else(|| vocabulary(3, "seat kind"))?,
        contact_id: row.get(4)?,
        contact_name: row.get(5)?,
        contact_terminated: row.get(6)?,
        assignee_name: row.get(7)?,
        device_name: row.get(8)?,
        serial_key_enc: row.get(9)?,
        serial_key_masked: row.get(10)?,
        activated_on: row.get(11)?,
        fingerprint: row.get(12)?,
        os_user: row.get(13)?,
        identifier: row.get(14)?,
        instances: row.get(15)?,
        created_at: row.get(16)?,
        last_seen_at: row.get(17)?,
        expires_at: row.get(18)?,
        released_at: row.get(19)?,
        release_reason: match reason {
            Some(r) => {
                Some(ReleaseReason::parse(r.as_str()).ok_or_else(|| vocabulary(20, "reason"))?)
            }
            None => None,
        },
        reclaimed_on: row.get(21)?,
    })
}
