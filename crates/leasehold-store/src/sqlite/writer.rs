//! SQLite's seat writer: every write to the seat ledger (the client's seat operations:
//! take a lease, release an instance, heartbeat, activate and deactivate a machine; the
//! sweeper's chunks; an admin's assignments, reclaims and license edits, `admin.rs`) runs
//! on one dedicated thread that owns a write connection and its prepared statements, so a statement costs microseconds instead of
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
//! (`AuditIndex`).
//!
//! **One seat decision.** A take asks the domain's `decide_take` (an activation its
//! `decide_activate`) with what its transaction read and applies the answer step by step
//! (join, end the holder's lapsed lease, reclaim a full license's lapsed leases, take, or
//! refuse and announce it; `seats.rs`), as the general (sqlx) path does with the same rule
//! and the same statement texts (`crate::sql` holds each text once). Every client seat
//! operation of a file-backed store is decided here, so a crowd waiting for a seat never
//! takes SQLite's write lock from this thread. The bounded WAL is `wal.rs`; the audit
//! index, `audit_index.rs`.

use super::audit_index::AuditIndex;
use super::seats::{apply_op, Webhooks};
use super::wal::{checkpoint, sync, wal_checkpoint, Wal};
use crate::records::{Actor, LeaseHolder, License, NewAssignment, Seat};
use crate::{LicenseEdit, StoreError, Swept};
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The most operations one transaction applies.
const MAX_BATCH: usize = 512;

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
    /// A heartbeat: the lease lives on to `expires_at` (the newest heartbeat winning), or
    /// ends here if it lapsed; an instance the server had not seen is counted in.
    Heartbeat {
        license: Arc<License>,
        lease_id: String,
        instance: String,
        idle_s: Option<i64>,
        expires_at: i64,
        now: i64,
    },
    /// A machine's dedicated seat (its activation), or the one it holds.
    Activate {
        license: Arc<License>,
        fingerprint: String,
        identifier: Option<String>,
        now: i64,
    },
    /// A machine's own release of its activation, within the monthly limit.
    Deactivate {
        license: Arc<License>,
        fingerprint: String,
        now: i64,
    },
    /// A sweep's chunk: up to `limit` lapsed leases of these licenses (id, workspace)
    /// end, license by license in this order.
    Expire {
        licenses: Vec<(String, String)>,
        now: i64,
        limit: i64,
    },
    /// An admin assigns a seat of a dedicated license (`admin.rs`).
    Assign {
        actor: Actor,
        workspace_id: String,
        license_id: String,
        assignment: NewAssignment,
        now: i64,
    },
    /// An admin reclaims an assignment or releases an application's seat.
    Reclaim {
        actor: Actor,
        workspace_id: String,
        seat_id: String,
        force: bool,
        now: i64,
    },
    /// An admin's change to a license (a revocation releases its applications' seats).
    EditLicense {
        actor: Actor,
        workspace_id: String,
        id: String,
        change: LicenseEdit,
        now: i64,
    },
    /// An admin deletes a license, releasing its seats.
    DeleteLicense {
        actor: Actor,
        workspace_id: String,
        id: String,
        now: i64,
    },
    /// A holder gives up its place in a license's queue.
    LeaveQueue {
        license: Arc<License>,
        fingerprint: String,
        os_user: String,
        now: i64,
    },
    /// A holder borrows a floating seat for offline use (DESIGN §7).
    Borrow {
        license: Arc<License>,
        holder: LeaseHolder,
        days: i64,
        now: i64,
    },
    /// A machine returns its borrow early.
    ReturnBorrow {
        license: Arc<License>,
        borrow_id: String,
        fingerprint: String,
        now: i64,
    },
    /// Heartbeats absorbed in a node's memory, written in bulk.
    Flush { beats: Vec<crate::Beat> },
    /// The benchmark's leases, loaded at once.
    Import {
        license_id: String,
        count: i64,
        now: i64,
        expires_at: i64,
    },
}

pub(crate) enum Done {
    /// A new seat (`true`), or the holder's own: its live lease with this instance
    /// counted in, or its activation seen again.
    Taken(Box<Seat>, bool),
    /// The activation a machine released, as it is now.
    Deactivated(Box<Seat>),
    /// Refused here, and announced to the webhooks (`seat.denied`).
    Refused(StoreError),
    /// Whether the lease ended (its last instance left, or it already had).
    Released(bool),
    /// A heartbeat's answer: the lease's new expiry, or why it has none (it lapsed, and
    /// ended here if it had not yet; it is gone; an instance past the limit). An outcome,
    /// not an error, so that an expiry made here commits with the batch.
    Beat(Result<i64, StoreError>),
    /// The leases that ended, as they were before, and where the budget ran out.
    Expired(Swept),
    /// An admin's seat, as it is now (assigned, reclaimed or released).
    Seat(Box<Seat>),
    /// A license as an admin's change left it.
    License(Box<License>),
    /// A flush's leases that were not written: no longer live.
    Flushed(Vec<String>),
    /// Done, with nothing to answer.
    Nothing,
}

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
pub(super) type Answers = Vec<(
    oneshot::Sender<Result<Done, StoreError>>,
    Result<Done, StoreError>,
)>;

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
        metrics::histogram!("leasehold_sqlite_batch_size").record(batch.len() as f64);
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

pub(super) fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
