//! PostgreSQL: one pool; row locks (`FOR NO KEY UPDATE`) where a change reads before it writes,
//! and the seat counter updated conditionally, so several nodes share one ledger.
//!
//! `seats.rs` is the client protocol's seat operations and the sweeper's (takes and
//! check-ins batched in `batch.rs`, the steps inside their transactions in `steps.rs`), `admin.rs` an admin's writes to the seat ledger; the
//! rest of the store is the shared engine (`engine/`).

mod admin;
mod batch;
mod borrows;
mod seats;
mod steps;

use crate::records::*;
use batch::SeatBatcher;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

pub struct PostgresStore {
    pool: PgPool,
    /// Takes and checkins, many per transaction.
    seats: SeatBatcher,
}

impl PostgresStore {
    /// Connects and migrates. Migrations take an advisory lock, so nodes starting
    /// together apply them once.
    pub async fn open(url: &str) -> crate::Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let seats = SeatBatcher::start(pool.clone());
        Ok(PostgresStore { pool, seats })
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn notify_nodes(&self, channel: &str, payload: &str) -> crate::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn listen_nodes(
        &self,
        channel: &str,
    ) -> crate::Result<Option<crate::Messages>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        // try_recv answers None when the connection dropped; the next call reconnects.
        let stream = async_stream::stream! {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => yield Some(notification.payload().to_string()),
                    Ok(None) => yield None,
                    Err(error) => {
                        tracing::warn!(%error, "live notifications: listener failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        yield None;
                    }
                }
            }
        };
        Ok(Some(Box::pin(stream)))
    }

    async fn commit(&self, tx: sqlx::Transaction<'static, sqlx::Postgres>) -> crate::Result<()> {
        Ok(tx.commit().await?)
    }

    /// Pushes a live lease's expiry; answers its instance list, or None when it lapsed.
    async fn touch_lease(
        &self,
        lease_id: &str,
        license_id: &str,
        expires_at: i64,
        now: i64,
    ) -> crate::Result<Option<(Option<String>, Option<String>)>> {
        let live: Option<(Option<String>, Option<String>)> = sqlx::query_as(TOUCH_LEASE)
            .bind(expires_at)
            .bind(now)
            .bind(lease_id)
            .bind(license_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(live)
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

const TOUCH_LEASE: &str = crate::sql::TOUCH_LEASE;

/// A seat event's columns, made before the statement that writes it.
pub(crate) struct SeatEvent {
    pub(crate) id: String,
    pub(crate) actor_kind: &'static str,
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_label: String,
    pub(crate) webhook_data: String,
}

impl SeatEvent {
    pub(crate) fn new(
        license_id: &str,
        actor: Actor,
        seat_id: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> SeatEvent {
        SeatEvent {
            id: new_id(),
            actor_kind: actor.kind,
            actor_id: actor.id,
            actor_label: actor.label,
            webhook_data: crate::sql::webhook_data(
                ("seat", seat_id),
                Some(license_id),
                before,
                after,
            ),
        }
    }
}

// What the shared engine (`engine/mod.rs`) is compiled with for this backend.
type This = PostgresStore;
type Db = sqlx::Postgres;
const BACKEND: crate::Backend = crate::Backend::Postgres;
macro_rules! row_lock {
    () => {
        " FOR NO KEY UPDATE"
    };
}
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}
// Deliberately compiled once per backend, as explained in `engine/mod.rs`.
#[allow(clippy::duplicate_mod)]
#[path = "../engine/mod.rs"]
mod engine;
