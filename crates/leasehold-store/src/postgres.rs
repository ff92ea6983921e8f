//! PostgreSQL: one pool; row locks (`FOR NO KEY UPDATE`) where a change reads before it writes,
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

    /// Takes a new lease in one statement, so a hot license's row lock is held for one
    /// statement and its commit: the conditional counter update (the invariant), the seat,
    /// its audit event and its webhook messages, as one `WITH` chain. The update also
    /// requires that the holder has no live lease and is not in a release cooldown. `None`
    /// when nothing was taken: the general path then decides, and refuses or explains.
    async fn fast_take_lease(
        &self,
        license: &License,
        holder: &LeaseHolder,
    ) -> crate::Result<Option<(Seat, bool)>> {
        let now = now_ms();
        let expires_at = now.saturating_add(license.lease_ttl_s.saturating_mul(1000));
        let seat = Seat::new_lease(license, holder, new_id(), now, expires_at);
        let cooldown_until = if license.release_cooldown_s > 0 {
            now.saturating_sub(license.release_cooldown_s.saturating_mul(1000))
        } else {
            i64::MAX
        };
        let after = json(&seat);
        let event = SeatEvent::new(
            license,
            &key_actor(license, holder.identifier.as_deref()),
            &seat.id,
            None,
            after.as_deref(),
        );
        let taken = sqlx::query_scalar::<_, i64>(TAKE_LEASE)
            .bind(&license.id)
            .bind(SeatModel::Concurrent)
            .bind(today())
            .bind(&seat.id)
            .bind(&holder.fingerprint)
            .bind(&holder.os_user)
            .bind(&holder.identifier)
            .bind(&seat.instances)
            .bind(now)
            .bind(expires_at)
            .bind(cooldown_until)
            .bind(&event.id)
            .bind(event.actor_kind)
            .bind(&event.actor_id)
            .bind(&event.actor_label)
            .bind(&after)
            .bind(&event.webhook_data)
            .bind(now.saturating_add(crate::outbox::RETRY_WINDOW_MS))
            .bind(crate::backend::subscribed_pattern("seat.taken"))
            .fetch_one(&self.pool)
            .await;
        match taken {
            Ok(1) => Ok(Some((seat, true))),
            Ok(_) => Ok(None),
            Err(error) if is_unique_violation(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Ends a lease whose last instance leaves in one statement ([`RELEASE_LEASE`]) after
    /// reading it. `None` when the general path must decide (other instances remain, or
    /// the lease changed meanwhile).
    async fn fast_release_instance(
        &self,
        license: &License,
        lease_id: &str,
        instance: &str,
    ) -> crate::Result<Option<bool>> {
        let now = now_ms();
        let seat = match sqlx::query_as::<_, Seat>(crate::backend::SEAT_BY_ID)
            .bind(lease_id)
            .bind(&license.workspace_id)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(seat) => seat,
            None => return Ok(None),
        };
        if seat.license_id != license.id
            || seat.kind != SeatKind::Lease
            || seat.released_at.is_some()
        {
            return Ok(None);
        }
        let mut instances: Vec<String> = crate::backend::instance_list(seat.instances.as_deref());
        instances.retain(|i| i != instance);
        if !instances.is_empty() {
            return Ok(None);
        }
        let after = seat.ended(now, ReleaseReason::Checkin);
        let (before, after) = (json(&seat), json(&after));
        let actor = key_actor(license, seat.identifier.as_deref());
        let event = SeatEvent::new(
            license,
            &actor,
            lease_id,
            before.as_deref(),
            after.as_deref(),
        );
        let freed = sqlx::query_scalar::<_, i64>(RELEASE_LEASE)
            .bind(&license.id)
            .bind(&event.id)
            .bind(event.actor_kind)
            .bind(&event.actor_id)
            .bind(&event.actor_label)
            .bind(lease_id)
            .bind(&before)
            .bind(&after)
            .bind(now)
            .bind(&event.webhook_data)
            .bind(now.saturating_add(crate::outbox::RETRY_WINDOW_MS))
            .bind(crate::backend::subscribed_pattern("seat.released"))
            .bind(ReleaseReason::Checkin)
            .bind(&seat.instances)
            .bind(seat.expires_at)
            .fetch_one(&self.pool)
            .await;
        match freed {
            Ok(1) => Ok(Some(true)),
            Ok(_) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

const TOUCH_LEASE: &str = crate::backend::TOUCH_LEASE;

/// A seat event's columns, made before the statement that writes it.
struct SeatEvent {
    id: String,
    actor_kind: &'static str,
    actor_id: Option<String>,
    actor_label: String,
    webhook_data: String,
}

impl SeatEvent {
    fn new(
        license: &License,
        actor: &Actor,
        seat_id: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> SeatEvent {
        SeatEvent {
            id: new_id(),
            actor_kind: actor.kind,
            actor_id: actor.id.clone(),
            actor_label: actor.label.clone(),
            webhook_data: crate::backend::webhook_data(
                ("seat", seat_id),
                Some(&license.id),
                before,
                after,
            ),
        }
    }
}

/// A new lease, whole: `TRY_TAKE_SEAT` for an application (plus: the holder has no live
/// lease, `$5`/`$6`, and no admin released it after `$11`), `INSERT_LEASE`, the
/// `seat.taken` event (`$12`…) and its webhook messages. Answers 1 if the seat was taken.
const TAKE_LEASE: &str = "WITH taken AS ( \
     UPDATE licenses SET seats_used = seats_used + 1 \
     WHERE id = $1 AND seats_used < seats_total AND deleted_at IS NULL AND seat_model = $2 \
     AND status = 'active' AND (expires_on IS NULL OR expires_on >= $3) \
     AND NOT EXISTS (SELECT 1 FROM seats WHERE license_id = $1 AND kind = 'lease' AND fingerprint = $5 \
       AND os_user = $6 AND released_at IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM seats WHERE license_id = $1 AND fingerprint = $5 AND os_user = $6 \
       AND release_reason = 'admin_release' AND released_at > $11) \
     RETURNING id, workspace_id), \
   seat AS ( \
     INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, identifier, instances, \
       created_at, last_seen_at, expires_at) \
     SELECT $4, taken.workspace_id, taken.id, 'lease', $5, $6, $7, $8, $9, $9, $10 FROM taken \
     RETURNING id, workspace_id, license_id), \
   event AS ( \
     INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, subject_type, \
       subject_id, license_id, before_json, after_json, created_at) \
     SELECT $12, seat.workspace_id, $13, $14, $15, 'seat.taken', 'seat', seat.id, seat.license_id, NULL, $16, $9 \
     FROM seat), \
   hooks AS ( \
     INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, payload, state, attempts, \
       next_attempt_at, retry_until, created_at) \
     SELECT $12 || '.' || w.id, seat.workspace_id, 'webhook', w.id, 'seat.taken', $17, 'pending', 0, $9, $18, $9 \
     FROM seat JOIN webhooks w ON w.workspace_id = seat.workspace_id AND w.deleted_at IS NULL \
       AND w.events LIKE '%' || $19 || '%' \
     ON CONFLICT (id) DO NOTHING) \
   SELECT COUNT(*) FROM seat";

/// A lease's end at its last instance's checkin, in one statement: the license row (`$1`)
/// locked first, as every path locks it before its seats (the uncorrelated `EXISTS` runs
/// once, before the seat is touched); then the seat (`$6`), only if it is still as read
/// (`$14`, `$15`); then the counter, the `seat.released` event (`$2`…) and its webhook
/// messages. Answers 1 if the lease ended.
const RELEASE_LEASE: &str = "WITH license AS ( \
     SELECT id FROM licenses WHERE id = $1 FOR NO KEY UPDATE), \
   ended AS ( \
     UPDATE seats SET released_at = $9, release_reason = $13 WHERE id = $6 AND license_id = $1 \
     AND released_at IS NULL AND instances IS NOT DISTINCT FROM $14 AND expires_at IS NOT DISTINCT FROM $15 \
     AND EXISTS (SELECT 1 FROM license) \
     RETURNING license_id), \
   freed AS ( \
     UPDATE licenses SET seats_used = seats_used - 1 WHERE id IN (SELECT license_id FROM ended) \
     RETURNING id, workspace_id), \
   event AS ( \
     INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, subject_type, \
       subject_id, license_id, before_json, after_json, created_at) \
     SELECT $2, freed.workspace_id, $3, $4, $5, 'seat.released', 'seat', $6, freed.id, $7, $8, $9 \
     FROM freed), \
   hooks AS ( \
     INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, payload, state, attempts, \
       next_attempt_at, retry_until, created_at) \
     SELECT $2 || '.' || w.id, freed.workspace_id, 'webhook', w.id, 'seat.released', $10, 'pending', 0, $9, $11, $9 \
     FROM freed JOIN webhooks w ON w.workspace_id = freed.workspace_id AND w.deleted_at IS NULL \
       AND w.events LIKE '%' || $12 || '%' \
     ON CONFLICT (id) DO NOTHING) \
   SELECT COUNT(*) FROM freed";

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    backend = Backend::Postgres,
    lock = " FOR NO KEY UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);

impl_notifications!(
    PostgresStore,
    sqlx::Postgres,
    backend = Backend::Postgres,
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
