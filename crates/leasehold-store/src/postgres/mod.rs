//! PostgreSQL: one pool; row locks (`FOR NO KEY UPDATE`) where a change reads before it writes,
//! and the seat counter updated conditionally, so several nodes share one ledger.

mod batch;

use crate::records::*;
use crate::sql::json;
use batch::{Done, SeatBatcher, SeatOp};
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::Arc;
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

    /// Heartbeats take the general path: one statement, the license lock only when the
    /// lease lapsed or needs a sooner `sweep_at`.
    async fn fast_heartbeat(
        &self,
        _license: &std::sync::Arc<License>,
        _lease_id: &str,
        _instance: &str,
        _expires_at: i64,
        _now: i64,
    ) -> crate::Result<Option<crate::Result<i64>>> {
        Ok(None)
    }

    /// Activations take the general path (under the license's row lock).
    async fn fast_activate(
        &self,
        _license: &std::sync::Arc<License>,
        _fingerprint: &str,
        _identifier: Option<&str>,
    ) -> crate::Result<Option<(Seat, bool)>> {
        Ok(None)
    }

    /// Self-service releases take the general path (under the license's row lock).
    async fn fast_deactivate(
        &self,
        _license: &std::sync::Arc<License>,
        _fingerprint: &str,
    ) -> crate::Result<Option<Seat>> {
        Ok(None)
    }

    /// A sweep's chunk takes the general path (each license under its row lock).
    async fn fast_expire_leases(
        &self,
        _licenses: &[(String, String)],
        _now: i64,
        _limit: i64,
    ) -> crate::Result<Option<crate::Swept>> {
        Ok(None)
    }

    /// Takes or joins a lease, or refuses, with the node's other seat operations
    /// (`batch.rs`): new leases many per statement (the conditional counter update, the
    /// seats, their audit events and webhook messages), and what that statement leaves
    /// (a join, a full license, a cooldown) decided after it under the same lock. Always
    /// answers (`Some`).
    async fn fast_take_lease(
        &self,
        license: &Arc<License>,
        holder: &LeaseHolder,
    ) -> crate::Result<Option<(Seat, bool)>> {
        let now = now_ms();
        let policy = license.policy();
        let seat = Seat::new_lease(license, holder, new_id(), now, policy.lease_expiry(now));
        let cooldown_until = policy.cooldown_window_start(now).unwrap_or(i64::MAX);
        let after = json(&seat);
        let event = SeatEvent::new(
            &license.id,
            key_actor(license, holder.identifier.as_deref()),
            &seat.id,
            None,
            after.as_deref(),
        );
        let op = SeatOp::Take {
            license: license.clone(),
            holder: holder.clone(),
            seat: Box::new(seat),
            cooldown_until,
            event,
            after,
        };
        match self.seats.apply(op).await? {
            Done::Taken(seat, new) => Ok(Some((*seat, new))),
            Done::Released(_) => Err(unexpected()),
        }
    }

    /// An instance's checkin, batched like a take: a lease's last instance ends it
    /// without reading it first; anything else is decided after the statement. Always
    /// answers (`Some`).
    async fn fast_release_instance(
        &self,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> crate::Result<Option<bool>> {
        let instances = json(&[instance]).ok_or_else(unexpected)?;
        let op = SeatOp::Release {
            license: license.clone(),
            lease_id: lease_id.to_string(),
            instance: instance.to_string(),
            instances,
        };
        match self.seats.apply(op).await? {
            Done::Released(freed) => Ok(Some(freed)),
            Done::Taken(..) => Err(unexpected()),
        }
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

fn unexpected() -> crate::StoreError {
    crate::StoreError::Corrupt("the seat batcher answered another operation".into())
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
