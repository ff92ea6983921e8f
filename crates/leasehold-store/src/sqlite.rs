//! SQLite: one writer connection (writes queue for it, as SQLite allows one writer
//! anyway) and a small pool of readers, in WAL mode.
//!
//! **Group commit.** Transactions commit without their own fsync (`synchronous=NORMAL`)
//! and then wait for [`WalSync`]: one task fsyncs the WAL for every commit that queued
//! while the previous fsync ran, and only then are those callers answered. An answered
//! write is on disk exactly as with `synchronous=FULL`, but one fsync covers a whole
//! batch of commits instead of one each.

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    wal: Option<Arc<WalSync>>,
    heartbeats: mpsc::UnboundedSender<Touch>,
}

/// One heartbeat waiting for the batch that applies it.
struct Touch {
    lease_id: String,
    license_id: String,
    expires_at: i64,
    now: i64,
    done: oneshot::Sender<Result<Option<Option<String>>, String>>,
}

/// Applies every heartbeat queued at once in one transaction on the writer (and one
/// group-commit wait), instead of a writer turn each: heartbeats are the bulk of the load.
fn spawn_heartbeat_batcher(
    writer: SqlitePool,
    wal: Option<Arc<WalSync>>,
) -> mpsc::UnboundedSender<Touch> {
    let (queue, mut waiting) = mpsc::unbounded_channel::<Touch>();
    tokio::spawn(async move {
        while let Some(first) = waiting.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match waiting.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let applied: Result<Vec<Option<Option<String>>>, String> = async {
                let mut tx = writer
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity(batch.len());
                for touch in &batch {
                    let live: Option<(Option<String>,)> =
                        sqlx::query_as(crate::backend::TOUCH_LEASE)
                            .bind(touch.expires_at)
                            .bind(touch.now)
                            .bind(&touch.lease_id)
                            .bind(&touch.license_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(|e| e.to_string())?;
                    out.push(live.map(|(instances,)| instances));
                }
                tx.commit().await.map_err(|e| e.to_string())?;
                if let Some(wal) = &wal {
                    wal.wait().await.map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            .await;
            match applied {
                Ok(out) => {
                    for (touch, live) in batch.into_iter().zip(out) {
                        let _ = touch.done.send(Ok(live));
                    }
                }
                Err(error) => {
                    for touch in batch {
                        let _ = touch.done.send(Err(error.clone()));
                    }
                }
            }
        }
    });
    queue
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
    pub async fn open(url: &str) -> crate::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
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
        let wal = match WalSync::start(Path::new(&wal_path)) {
            Ok(wal) => Some(Arc::new(wal)),
            Err(error) => {
                // No WAL file to sync (an in-memory database): every commit syncs itself.
                tracing::warn!(%error, "no WAL file to group-commit; committing with synchronous=FULL");
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&writer)
                    .await?;
                None
            }
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let heartbeats = spawn_heartbeat_batcher(writer.clone(), wal.clone());
        Ok(SqliteStore {
            writer,
            readers,
            wal,
            heartbeats,
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
        match &self.wal {
            Some(wal) => wal.wait().await,
            None => Ok(()),
        }
    }

    /// Pushes a live lease's expiry, batched with the heartbeats that arrive with it.
    async fn touch_lease(
        &self,
        lease_id: &str,
        license_id: &str,
        expires_at: i64,
        now: i64,
    ) -> crate::Result<Option<Option<String>>> {
        let (done, applied) = oneshot::channel();
        let stopped = || crate::StoreError::Corrupt("the heartbeat batcher stopped".into());
        self.heartbeats
            .send(Touch {
                lease_id: lease_id.to_string(),
                license_id: license_id.to_string(),
                expires_at,
                now,
                done,
            })
            .map_err(|_| stopped())?;
        applied
            .await
            .map_err(|_| stopped())?
            .map_err(|e| crate::StoreError::Corrupt(format!("heartbeat batch failed: {e}")))
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

impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    backend = Backend::Sqlite,
    lock = "",
    skip_locked = ""
);

impl_notifications!(
    SqliteStore,
    sqlx::Sqlite,
    backend = Backend::Sqlite,
    skip_locked = ""
);
