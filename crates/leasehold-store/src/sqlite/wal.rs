//! The WAL kept bounded while batches follow each other (see the writer's docs), and
//! the thread that fsyncs it before a batch is answered.

use super::writer::Answers;
use crate::StoreError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// At most this many frames are left for the writer to copy when the WAL starts over
/// (the background checkpointer copies again until the tail is this short)...
pub(super) const WRITER_TAIL_FRAMES: u64 = 256;

/// ... or until it has tried this many more times.
pub(super) const MAX_CATCH_UP_PASSES: usize = 4;

/// What the checkpointer and the writer share about the WAL.
#[derive(Clone)]
pub(super) struct Wal {
    /// Past this many frames, the WAL should start over.
    pub(super) limit_frames: u64,
    /// How often the checkpointer copies the WAL into the database.
    pub(super) checkpoint_every: Duration,
    /// Set by the checkpointer: the WAL is past its limit; the writer copies the frames
    /// appended since the background checkpoint before its next batch.
    pub(super) restart_due: Arc<AtomicBool>,
}

/// Copies the WAL into the database file in the background, without blocking writers
/// (`PASSIVE`); SQLite starts the WAL over once all of it is copied. When the WAL is past
/// its limit, the writer is asked to copy what was appended meanwhile.
pub(super) fn checkpoint(conn: Connection, wal: &Wal, writer_gone: mpsc::Receiver<()>) {
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
pub(super) fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let frames: i64 = row.get(1)?;
        Ok(frames.max(0) as u64)
    })
}

/// Answers committed batches once an fsync that started after their commit is done.
pub(super) fn sync(wal: std::fs::File, committed: mpsc::Receiver<Answers>) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        let started = std::time::Instant::now();
        let synced = wal.sync_data();
        metrics::histogram!("leasehold_sqlite_fsync_seconds")
            .record(started.elapsed().as_secs_f64());
        for (reply, outcome) in batches.into_iter().flatten() {
            let outcome = match &synced {
                Ok(()) => outcome,
                Err(e) => Err(StoreError::Corrupt(format!("fsync of the WAL failed: {e}"))),
            };
            let _ = reply.send(outcome);
        }
    }
}
