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

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    backend = Backend::Postgres,
    lock = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
