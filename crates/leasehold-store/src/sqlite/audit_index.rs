//! One license's audit log, indexed in bulk between batches (see the writer's docs).

use super::writer::statement;
use rusqlite::{params, Connection};
use std::time::{Duration, Instant};

/// The most events one pass indexes, so that a pass after a large sweep (each expired
/// lease is an event) holds seat operations back for milliseconds, not seconds.
pub(super) const AUDIT_INDEX_MOST: i64 = 16_384;

/// After a pass failed, the next waits this long (the events wait past `through`, read
/// from the table's end).
pub(super) const AUDIT_INDEX_RETRY: Duration = Duration::from_secs(5);

/// One license's audit log is indexed in bulk (`license_events`, migration 0009): every
/// event committed since the last time, sorted by license, in one transaction of its own
/// between two batches, so that each license's page is written once for all its new
/// events rather than once for each. Its commit needs no fsync of its own: nothing waits
/// for it, and it is in the WAL before the next batch's fsync. A license's log reads the
/// events not yet indexed from the end of the table.
pub(super) struct AuditIndex {
    /// How often, at most, the events committed since are indexed.
    pub(super) every: Duration,
    next: Instant,
}

impl AuditIndex {
    pub(super) fn new(every: Duration) -> Self {
        AuditIndex {
            every,
            next: Instant::now() + every,
        }
    }

    pub(super) fn index_if_due(&mut self, conn: &Connection) {
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
pub(super) const AUDIT_INDEX_STATE: &str = "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM events), \
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
