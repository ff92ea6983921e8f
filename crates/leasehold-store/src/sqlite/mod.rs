//! SQLite, in WAL mode: a small pool of readers, and writers that never share a table.
//!
//! **The seat writer.** Every write to the seat ledger (the seats and the licenses' seat
//! counter) is an operation of [`SeatWriter`]: a thread with its own write connection
//! that applies every operation queued at once in one transaction, deciding each with
//! the domain's rules (`writer.rs`; the operations in `seats.rs` and `admin.rs`; what the
//! `Store` sends it, `store.rs`).
//!
//! **The rest** (workspaces, members, tokens, applications, new licenses, contacts,
//! webhooks, the outbox) is written through one sqlx connection (the shared engine,
//! `engine/`). Its transactions commit without their own fsync (`synchronous=NORMAL`) and
//! then wait for [`WalSync`]: one task fsyncs the WAL for every commit that queued while
//! the previous fsync ran, and only then are those callers answered. An answered write
//! is on disk exactly as with `synchronous=FULL`, but one fsync covers a whole batch of
//! commits instead of one each.

mod admin;
mod audit_index;
pub mod backup;
mod borrows;
mod seats;
mod store;
mod wal;
mod writer;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::SeatWriter;

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    wal: WalSync,
    /// The one writer of the seat ledger (`writer.rs`).
    seats: SeatWriter,
}

/// Makes committed WAL frames durable, many commits per fsync.
struct WalSync {
    queue: mpsc::UnboundedSender<oneshot::Sender<Result<(), String>>>,
}

impl WalSync {
    fn start(wal: &Path) -> std::io::Result<WalSync> {
        let file = Arc::new(std::fs::File::open(wal)?);
        let (queue, mut waiting) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), String>>>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                // Everyone queued now committed before this fsync starts: it covers them.
                let mut batch = vec![first];
                while let Ok(more) = waiting.try_recv() {
                    batch.push(more);
                }
                let file = file.clone();
                let synced = tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                for waiter in batch {
                    let _ = waiter.send(synced.clone());
                }
            }
        });
        Ok(WalSync { queue })
    }

    async fn wait(&self) -> crate::Result<()> {
        let (done, synced) = oneshot::channel();
        let failed = || crate::StoreError::Corrupt("the WAL sync task stopped".into());
        self.queue.send(done).map_err(|_| failed())?;
        synced
            .await
            .map_err(|_| failed())?
            .map_err(|e| crate::StoreError::Corrupt(format!("fsync of the WAL failed: {e}")))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    pub async fn open(url: &str, tuning: &crate::StoreOptions) -> crate::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // For a new database: a heartbeat or a checkout changes a few pages spread
            // over the seat indexes, and each changed page is a WAL frame; 2 KiB frames
            // instead of 4 KiB made 1M-lease heartbeats about 15% faster (docs/benchmarks.md).
            .page_size(2048)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // The one writer is always in use; a ping before each use would double the
            // round trips through sqlx's connection thread for nothing.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let mut wal_path = options.get_filename().as_os_str().to_owned();
        wal_path.push("-wal");
        // The seat writer and group commit work on a database file's WAL: an in-memory
        // database has none (and a second connection would open another database).
        let wal = WalSync::start(Path::new(&wal_path)).map_err(|error| {
            crate::StoreError::invalid(
                "database_url",
                format!(
                    "SQLite needs a database file in WAL mode, not an in-memory database \
                     (no {}: {error})",
                    Path::new(&wal_path).display()
                ),
            )
        })?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone().read_only(true))
            .await?;
        let seats = SeatWriter::start(options.get_filename(), tuning)?;
        Ok(SqliteStore {
            writer,
            readers,
            wal,
            seats,
        })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.readers
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front, so another process sharing the file
        // waits (busy_timeout) instead of failing mid-transaction.
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Commits, then waits until the commit is on disk (group commit, above).
    async fn commit(&self, tx: sqlx::Transaction<'static, sqlx::Sqlite>) -> crate::Result<()> {
        tx.commit().await?;
        self.durable().await
    }

    /// Waits until every commit made so far is on disk.
    async fn durable(&self) -> crate::Result<()> {
        self.wal.wait().await
    }

    pub(crate) async fn notify_nodes(&self, _channel: &str, _payload: &str) -> crate::Result<()> {
        Ok(())
    }

    pub(crate) async fn listen_nodes(
        &self,
        _channel: &str,
    ) -> crate::Result<Option<crate::Messages>> {
        Ok(None)
    }
}

// What the shared engine (`engine/mod.rs`) is compiled with for this backend.
type This = SqliteStore;
type Db = sqlx::Sqlite;
const BACKEND: crate::Backend = crate::Backend::Sqlite;
macro_rules! row_lock {
    () => {
        ""
    };
}
macro_rules! skip_locked {
    () => {
        ""
    };
}
// Deliberately compiled once per backend, as explained in `engine/mod.rs`.
#[allow(clippy::duplicate_mod)]
#[path = "../engine/mod.rs"]
mod engine;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tracking;

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_the_reason() {
        let refused = SqliteStore::open("sqlite::memory:", &crate::StoreOptions::default()).await;
        let Err(error) = refused else {
            panic!("an in-memory database opened");
        };
        assert!(
            error.to_string().contains("SQLite needs a database file"),
            "{error}"
        );
    }

    /// How SQLite would run `sql` on a migrated database: its query plan's lines.
    async fn plan(sql: &str) -> Vec<String> {
        let path = std::env::temp_dir().join(format!("leasehold-plan-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url, &crate::StoreOptions::default())
            .await
            .expect("a new database opens");
        let conn = rusqlite::Connection::open(&path).expect("the file opens");
        let mut explain = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("the statement is valid");
        // A listing's parameters (workspace, cursor, license, action, limit, and for the
        // audit log the reader's scope: a viewer's), as many as the statement has.
        let text = |t: &str| rusqlite::types::Value::Text(t.to_string());
        let values = [
            text("w"),
            text(""),
            text("l"),
            text(""),
            50.into(),
            0.into(),
            0.into(),
        ];
        let count = explain.parameter_count();
        let lines = explain
            .query_map(
                rusqlite::params_from_iter(values.into_iter().take(count)),
                |row| row.get::<_, String>(3),
            )
            .expect("explained")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("explained");
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        lines
    }

    /// Fails unless SQLite plans `sql` through `index`.
    async fn assert_read_through(sql: &str, index: &str) {
        let lines = plan(sql).await;
        let using = format!("USING INDEX {index}");
        assert!(
            lines.iter().any(|l| l.contains(&using)),
            "{index}: {lines:?}"
        );
    }

    /// Events written straight into the table, as any path writes them.
    fn write_events(
        conn: &rusqlite::Connection,
        license_id: &str,
        actions: &[&str],
    ) -> Vec<String> {
        actions
            .iter()
            .map(|action| {
                let id = crate::records::new_id();
                conn.execute(
                    "INSERT INTO events (id, workspace_id, actor_kind, actor_label, action, \
                     subject_type, subject_id, license_id, created_at) \
                     VALUES (?1, 'w', 'system', 'system', ?2, 'seat', 's', ?3, 0)",
                    rusqlite::params![id, action, license_id],
                )
                .expect("an event is written");
                id
            })
            .collect()
    }

    /// One license's log, newest first, read `limit` at a time to its end.
    async fn license_log(
        store: &SqliteStore,
        license_id: &str,
        action: Option<&str>,
        limit: u32,
    ) -> Vec<String> {
        let filter = crate::EventFilter {
            license_id: Some(license_id.to_string()),
            action: action.map(str::to_string),
            scope: leasehold_core::AuditScope::ALL,
        };
        let mut page = crate::PageRequest::first(limit);
        let mut ids = Vec::new();
        loop {
            let fetched = store
                .list_events("w", &filter, &page)
                .await
                .expect("the log reads");
            ids.extend(fetched.items.into_iter().map(|e| e.id));
            match fetched.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => return ids,
            }
        }
    }

    /// A new store whose writer indexes the audit log every `audit_index_every`, and a
    /// connection of the test's own to its file (foreign keys off: the log is read by
    /// workspace and license only, so events need no rows of theirs).
    async fn store_and_connection(
        audit_index_every: std::time::Duration,
    ) -> (SqliteStore, rusqlite::Connection, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("leasehold-audit-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let options = crate::StoreOptions {
            sqlite_audit_index_every: audit_index_every,
            ..Default::default()
        };
        let store = SqliteStore::open(&url, &options)
            .await
            .expect("a new database opens");
        let conn = rusqlite::Connection::open(&path).expect("the file opens");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("a timeout");
        conn.pragma_update(None, "foreign_keys", "OFF")
            .expect("set");
        (store, conn, path)
    }

    fn remove_database(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn a_licenses_log_reads_indexed_and_recent_events_alike() {
        // The writer does not index on its own here: the test chooses what is indexed.
        let (store, conn, path) = store_and_connection(std::time::Duration::from_secs(3600)).await;

        let mut a = write_events(&conn, "A", &["seat.taken", "seat.released", "seat.taken"]);
        let b = write_events(&conn, "B", &["seat.taken", "seat.released"]);
        a.extend(write_events(
            &conn,
            "A",
            &["seat.released", "license.updated"],
        ));
        assert_eq!(
            audit_index::index_license_events(&conn).expect("indexed"),
            7
        );
        // Newer ones, not yet indexed: read from the end of the table.
        a.extend(write_events(
            &conn,
            "A",
            &["seat.taken", "seat.released", "seat.taken"],
        ));

        let newest_first = |ids: &[String]| ids.iter().rev().cloned().collect::<Vec<_>>();
        // Every page size puts the seam between indexed and recent events somewhere else.
        for limit in [1, 2, 3, 50] {
            assert_eq!(
                license_log(&store, "A", None, limit).await,
                newest_first(&a),
                "limit {limit}"
            );
        }
        assert_eq!(license_log(&store, "B", None, 1).await, newest_first(&b));
        let released: Vec<String> = [&a[1], &a[3], &a[6]].into_iter().cloned().collect();
        assert_eq!(
            license_log(&store, "A", Some("seat.released"), 1).await,
            newest_first(&released)
        );

        // Indexing the rest changes nothing a reader sees, and indexes each event once.
        assert_eq!(
            audit_index::index_license_events(&conn).expect("indexed"),
            3
        );
        assert_eq!(
            audit_index::index_license_events(&conn).expect("indexed"),
            0
        );
        for limit in [1, 4, 50] {
            assert_eq!(
                license_log(&store, "A", None, limit).await,
                newest_first(&a),
                "limit {limit}"
            );
        }

        // An id made before the last indexing but committed after it (the sqlx engine
        // makes its ids before it takes the write lock): read from the end of the table,
        // in its place by id.
        let early = crate::records::new_id();
        a.extend(write_events(&conn, "A", &["seat.taken"]));
        audit_index::index_license_events(&conn).expect("indexed");
        conn.execute(
            "INSERT INTO events (id, workspace_id, actor_kind, actor_label, action, \
             subject_type, subject_id, license_id, created_at) \
             VALUES (?1, 'w', 'system', 'system', 'seat.released', 'seat', 's', 'A', 0)",
            rusqlite::params![early],
        )
        .expect("an event is written");
        a.insert(a.len() - 1, early);
        assert_eq!(license_log(&store, "A", None, 2).await, newest_first(&a));

        // Rowids that went back (the newest events deleted by hand, then new ones): every
        // event is indexed again rather than some never.
        conn.execute(
            "DELETE FROM events WHERE id = ?1",
            rusqlite::params![a.pop()],
        )
        .expect("deleted");
        conn.execute(
            "DELETE FROM events WHERE id = ?1",
            rusqlite::params![a.pop()],
        )
        .expect("deleted");
        audit_index::index_license_events(&conn).expect("indexed");
        a.extend(write_events(&conn, "A", &["seat.taken"]));
        audit_index::index_license_events(&conn).expect("rebuilt");
        assert_eq!(license_log(&store, "A", None, 3).await, newest_first(&a));
        assert_eq!(license_log(&store, "B", None, 3).await, newest_first(&b));
        drop(store);
        remove_database(&path);
    }

    #[tokio::test]
    async fn the_seat_writer_indexes_the_audit_log_on_its_own() {
        let (store, conn, path) = store_and_connection(std::time::Duration::from_millis(10)).await;
        let ids = write_events(&conn, "A", &["seat.taken", "seat.released"]);
        let indexed = || -> i64 {
            conn.query_row("SELECT COUNT(*) FROM license_events", [], |r| r.get(0))
                .expect("counted")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while indexed() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(indexed(), 2, "an idle writer indexes what was committed");
        let newest_first: Vec<String> = ids.into_iter().rev().collect();
        assert_eq!(license_log(&store, "A", None, 1).await, newest_first);
        drop(store);
        remove_database(&path);
    }

    #[tokio::test]
    async fn a_machines_live_seat_is_found_through_the_live_seats_index() {
        assert_read_through(crate::sql::HOLDS_ACTIVATION, "seats_active_activation").await;
        assert_read_through(crate::sql::HOLDS_LEASE, "seats_active_lease").await;
    }

    /// The sweep, a full license's expiry and a refusal's retry hint read a license's due
    /// leases through the index by `sweep_at` (the one a heartbeat does not change).
    #[tokio::test]
    async fn due_leases_are_found_through_the_sweep_index() {
        for sql in [
            crate::sql::RESWEEP_LEASES,
            crate::sql::LAPSED_LEASES,
            crate::sql::NEXT_LEASE_EXPIRY,
        ] {
            assert_read_through(sql, "seats_license_lease_sweep").await;
        }
    }

    #[tokio::test]
    async fn one_licenses_audit_log_is_read_through_its_own_index() {
        let lines = plan(crate::sql::SQLITE_LICENSE_EVENTS).await;
        // The indexed events in license_events' order, so the merge stops at the limit
        // (no sort of the license's whole log) ...
        assert!(
            lines
                .iter()
                .any(|l| l.contains("SEARCH l USING PRIMARY KEY (license_id=?)")),
            "{lines:?}"
        );
        // ... and those not yet indexed from the end of the table by rowid, not by an
        // index over the workspace's or the whole log.
        assert!(
            lines
                .iter()
                .any(|l| l.contains("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)")),
            "{lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("SCAN events")
                    || l.contains("events_workspace (workspace_id=?)")),
            "{lines:?}"
        );
        let sorts = lines.iter().filter(|l| l.contains("TEMP B-TREE")).count();
        assert_eq!(sorts, 1, "only the tail is sorted: {lines:?}");
        assert_read_through(crate::sql::WORKSPACE_EVENTS, "events_workspace").await;
    }
}
