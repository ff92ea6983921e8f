//! PostgreSQL: one pool; row locks (`FOR UPDATE`) where a change reads before it writes,
//! and the seat counter updated conditionally, so several nodes share one ledger.

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

pub struct PostgresStore {
    pool: PgPool,
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
        Ok(PostgresStore { pool })
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
    ) -> crate::Result<Option<Option<String>>> {
        let live: Option<(Option<String>,)> = sqlx::query_as(TOUCH_LEASE)
            .bind(expires_at)
            .bind(now)
            .bind(lease_id)
            .bind(license_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(live.map(|(instances,)| instances))
    }

    /// PostgreSQL takes leases on the general path.
    async fn fast_take_lease(
        &self,
        _license: &crate::License,
        _holder: &crate::LeaseHolder,
    ) -> crate::Result<Option<(crate::Seat, bool)>> {
        Ok(None)
    }

    async fn fast_release_instance(
        &self,
        _license: &crate::License,
        _lease_id: &str,
        _instance: &str,
    ) -> crate::Result<Option<bool>> {
        Ok(None)
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

const TOUCH_LEASE: &str = crate::backend::TOUCH_LEASE;

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    backend = Backend::Postgres,
    lock = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);

impl_notifications!(
    PostgresStore,
    sqlx::Postgres,
    backend = Backend::Postgres,
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
