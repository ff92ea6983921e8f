//! PostgreSQL's seat operations: takes and check-ins through the node's batch
//! (`batch.rs`), the rest (activations, self-service releases, heartbeats, the sweeper's
//! chunks) one transaction each that locks the license row first; every take asks the
//! domain's seat decision (`take_in`, which the batch also runs for what its bulk
//! statement leaves).

use super::batch::{Done, SeatOp};
use super::{PostgresStore, SeatEvent};
use crate::records::*;
use crate::sql::{is_unique_violation, json};
use crate::{Result, Seats, StoreError};
use async_trait::async_trait;
use leasehold_core::lease::{self, IdleReports, Instances};
use leasehold_core::*;
use std::sync::Arc;

#[async_trait]
impl Seats for PostgresStore {
    async fn import_leases(
        &self,
        license_id: &str,
        count: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let counted = sqlx::query(
            "UPDATE licenses SET seats_used = seats_used + $1 WHERE id = $2 \
             AND seat_model = 'concurrent' AND seats_used + $1 <= seats_total",
        )
        .bind(count)
        .bind(license_id)
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "{count} leases do not fit license {license_id} (or it is not concurrent)"
            )));
        }
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $3) \
             INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, instances, \
             created_at, last_seen_at, expires_at, sweep_at) \
             SELECT $1 || '-' || CAST(i AS TEXT), (SELECT workspace_id FROM licenses WHERE id = $1), $1, \
             'lease', 'seed-' || CAST(i AS TEXT), 'u', '[\"i\"]', $2, $2, $4, $4 FROM n",
        )
        .bind(license_id)
        .bind(now)
        .bind(count)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        sqlx::query("ANALYZE seats").execute(self.writer()).await?;
        Ok(())
    }

    async fn activate(
        &self,
        license: &std::sync::Arc<License>,
        fingerprint: &str,
        identifier: Option<&str>,
    ) -> Result<(Seat, bool)> {
        // Two first activations of one machine racing on different nodes: the loser
        // hits the unique index and, retried, finds the winner's seat.
        let mut attempt = 0;
        loop {
            match self.activate_once(license, fingerprint, identifier).await {
                Err(StoreError::Database(e)) if is_unique_violation(&e) && attempt < 3 => {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn deactivate(
        &self,
        license: &std::sync::Arc<License>,
        fingerprint: &str,
    ) -> Result<Seat> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // Locked, so concurrent releases count each other against the monthly limit.
        Self::lock_license(&mut tx, &license.id).await?;
        let seat = Self::active_seat_of(
            &mut tx,
            &license.id,
            SeatKind::Activation,
            fingerprint,
            None,
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let month_start = leasehold_core::lease::month_start(today());
        let (used,): (i64,) = sqlx::query_as(crate::sql::TRANSFERS_SINCE)
            .bind(&license.id)
            .bind(month_start)
            .fetch_one(&mut *tx)
            .await?;
        license.policy().self_service_release(used)?;
        if !Self::end_seat(&mut tx, &seat, ReleaseReason::Transferred, now).await? {
            return Err(StoreError::NotFound);
        }
        let after = Self::seat_in(&mut tx, &license.workspace_id, &seat.id).await?;
        Self::insert_event(
            &mut tx,
            &license.workspace_id,
            &key_actor(license, seat.identifier.as_deref()),
            "seat.released",
            ("seat", &seat.id),
            Some(&license.id),
            json(&seat),
            json(&after),
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    async fn take_lease(
        &self,
        license: &std::sync::Arc<License>,
        holder: &LeaseHolder,
    ) -> Result<(Seat, bool)> {
        // The node's batch (`batch.rs`): taken in bulk, or decided after it by `take_in`.
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
            Done::Taken(seat, new) => Ok((*seat, new)),
            Done::Released(_) => Err(unexpected()),
        }
    }

    async fn heartbeat(
        &self,
        license: &std::sync::Arc<License>,
        lease_id: &str,
        instance: &str,
        idle_s: Option<i64>,
    ) -> Result<i64> {
        let now = now_ms();
        let expires_at = license.policy().lease_expiry(now);
        // The hot path: one statement on one row.
        let mut live = self
            .touch_lease(lease_id, &license.id, expires_at, now)
            .await?;
        if live.is_none() {
            // Gone, lapsed, or live with a new expiry before its `sweep_at` (its
            // license's lease period was shortened): decided under the license lock.
            let mut tx = self.begin_write().await?;
            Self::lock_license(&mut tx, &license.id).await?;
            let seat = Self::seat_in(&mut tx, &license.workspace_id, lease_id).await?;
            if seat.license_id == license.id && seat.kind == SeatKind::Borrow {
                // A borrow an app runs on: held without heartbeats to its end, then over.
                return seat.borrow_beat(now);
            }
            if seat.license_id != license.id || seat.kind != SeatKind::Lease {
                return Err(StoreError::NotFound);
            }
            if let Some(reason) = seat.release_reason {
                return Err(StoreError::LeaseEnded(reason));
            }
            if seat.released_at.is_some() || seat.expires_at.unwrap_or(0) < now {
                Self::end_lease_in(&mut tx, license, &seat, ReleaseReason::Expired, now).await?;
                self.commit(tx).await?;
                return Err(StoreError::LeaseEnded(ReleaseReason::Expired));
            }
            sqlx::query(crate::sql::TOUCH_LEASE_SOONER)
                .bind(expires_at)
                .bind(now)
                .bind(lease_id)
                .execute(&mut *tx)
                .await?;
            self.commit(tx).await?;
            live = Some((seat.instances, seat.idle_reports));
        }
        let (instances, reports) = live.unwrap_or_default();
        let known = Instances::from_stored(instances.as_deref());
        let idle = IdleReports::beat(reports.as_deref(), &known, instance, idle_s, now);
        let policy = license.policy();
        let quiet =
            |idle: &lease::IdleBeat| !idle.changed && !policy.releases_idle(idle.idle_since, now);
        if known.contains(instance) && idle.as_ref().is_none_or(quiet) {
            return Ok(expires_at);
        }
        // An instance the server had not seen (counted in, so its checkin is awaited
        // too), or news of the lease's idleness: rare, so it takes the license lock like
        // every other change to the instance list, and reads the lease again under it.
        let mut tx = self.begin_write().await?;
        Self::lock_license(&mut tx, &license.id).await?;
        let seat = Self::seat_in(&mut tx, &license.workspace_id, lease_id).await?;
        if seat.kind == SeatKind::Borrow {
            // Turned into a borrow since the touch above: nothing idle about it.
            self.commit(tx).await?;
            return seat.borrow_beat(now);
        }
        if seat.released_at.is_some() {
            self.commit(tx).await?;
            return Err(StoreError::LeaseEnded(
                seat.release_reason.unwrap_or(ReleaseReason::Expired),
            ));
        }
        let mut list = seat.instance_set();
        if list.join(instance, license.max_instances_per_lease)? {
            sqlx::query(crate::sql::JOIN_INSTANCE)
                .bind(list.to_stored())
                .bind(lease_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(idle) =
            IdleReports::beat(seat.idle_reports.as_deref(), &list, instance, idle_s, now)
        {
            if idle.changed {
                sqlx::query(crate::sql::IDLE_REPORT)
                    .bind(&idle.stored)
                    .bind(idle.idle_since)
                    .bind(policy.idle_release_at(idle.idle_since).unwrap_or(i64::MAX))
                    .bind(lease_id)
                    .execute(&mut *tx)
                    .await?;
            }
            if policy.releases_idle(idle.idle_since, now) {
                Self::end_lease_in(&mut tx, license, &seat, ReleaseReason::Idle, now).await?;
                self.commit(tx).await?;
                return Err(StoreError::LeaseEnded(ReleaseReason::Idle));
            }
        }
        self.commit(tx).await?;
        Ok(expires_at)
    }

    async fn release_instance(
        &self,
        license: &std::sync::Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> Result<bool> {
        // The node's batch: a lease's last instance ends it in bulk; anything else is
        // decided after the bulk statement, by `release_in`.
        let instances = json(&[instance]).ok_or_else(unexpected)?;
        let op = SeatOp::Release {
            license: license.clone(),
            lease_id: lease_id.to_string(),
            instance: instance.to_string(),
            instances,
        };
        match self.seats.apply(op).await? {
            Done::Released(freed) => Ok(freed),
            Done::Taken(..) => Err(unexpected()),
        }
    }

    async fn expire_leases(
        &self,
        from: &str,
        limit: i64,
        probes: i64,
    ) -> Result<crate::SweepChunk> {
        let now = now_ms();
        let limit = limit.max(1);
        let probed = self.probe_lapsed(from, probes, now).await?;
        // Each license locked first, like on every other path. Waits for a checkout
        // holding the lock (it is brief) rather than skip: a skipped license would be
        // missed until the next pass. Another node sweeping the same license is waited
        // for too, and then finds its leases already ended.
        let mut swept = crate::Swept::default();
        let mut handled = 0;
        for (license_id, _) in &probed.lapsed {
            let mut tx = self.begin_write().await?;
            let license = sqlx::query_as::<_, License>(
                "SELECT * FROM licenses WHERE id = $1 FOR NO KEY UPDATE",
            )
            .bind(license_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(license) = license {
                let (expired, moved) =
                    Self::expire_license_leases(&mut tx, &license, now, limit - handled).await?;
                handled += moved + expired.len() as i64;
                swept.expired.extend(expired);
            }
            tx.commit().await?;
            if handled >= limit {
                swept.ran_out_in = Some(license_id.clone());
                break;
            }
        }
        Ok(probed.chunk(swept))
    }

    async fn leave_queue(
        &self,
        license: &Arc<License>,
        fingerprint: &str,
        os_user: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let left: Option<(String, String, Option<String>, i64)> =
            sqlx::query_as(crate::sql::LEAVE_QUEUE)
                .bind(&license.id)
                .bind(fingerprint)
                .bind(os_user)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((fingerprint, os_user, identifier, since)) = &left {
            let actor = key_actor(license, identifier.as_deref());
            let place = (
                fingerprint.as_str(),
                os_user.as_str(),
                identifier.as_deref(),
                *since,
            );
            Self::dequeued(&mut tx, license, &actor, place, "left").await?;
        }
        self.commit(tx).await?;
        Ok(left.is_some())
    }

    async fn borrow(
        &self,
        license: &std::sync::Arc<License>,
        holder: &LeaseHolder,
        days: i64,
    ) -> Result<(Seat, bool)> {
        let mut tx = self.begin_write().await?;
        let lent = Self::borrow_in(&mut tx, license, holder, days, now_ms()).await?;
        // A refusal commits too: the lapsed leases it ended and its `seat.denied`.
        self.commit(tx).await?;
        lent
    }

    async fn return_borrow(
        &self,
        license: &std::sync::Arc<License>,
        borrow_id: &str,
        fingerprint: &str,
    ) -> Result<Seat> {
        let mut tx = self.begin_write().await?;
        let seat =
            Self::return_borrow_in(&mut tx, license, borrow_id, fingerprint, now_ms()).await?;
        self.commit(tx).await?;
        Ok(seat)
    }

    async fn waiters(&self, workspace_id: &str, license_id: &str) -> Result<Vec<Waiter>> {
        self.read_waiters(workspace_id, license_id).await
    }

    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>> {
        self.read_license_by_key_hash(key_hash).await
    }

    async fn lease_state(&self, workspace_id: &str, lease_id: &str) -> Result<Option<Seat>> {
        self.read_seat(workspace_id, lease_id).await
    }

    /// One transaction: the chunk's rows that no other transaction holds are locked
    /// (`SKIP LOCKED`: the flush waits for no one, so it deadlocks with no one), then
    /// written in one `UPDATE … FROM unnest(…)`. The update reads after the locks, so a
    /// check-in that committed first is seen, and one that comes later waits for this
    /// commit and then ends the lease.
    async fn flush_heartbeats(&self, beats: &[crate::Beat]) -> Result<crate::FlushOutcome> {
        use std::collections::HashSet;
        if beats.is_empty() {
            return Ok(crate::FlushOutcome::default());
        }
        let ids: Vec<&str> = beats.iter().map(|b| b.lease_id.as_str()).collect();
        let mut tx = self.begin_write().await?;
        let locked: Vec<(String,)> = sqlx::query_as(crate::sql::LOCK_FLUSHED_PG)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let locked: HashSet<String> = locked.into_iter().map(|(id,)| id).collect();
        let (mine, busy): (Vec<&crate::Beat>, Vec<&crate::Beat>) = beats
            .iter()
            .partition(|b| locked.contains(b.lease_id.as_str()));
        let written: HashSet<String> = if mine.is_empty() {
            HashSet::new()
        } else {
            let column =
                |f: fn(&crate::Beat) -> &str| mine.iter().map(|b| f(b)).collect::<Vec<_>>();
            let times = |f: fn(&crate::Beat) -> i64| mine.iter().map(|b| f(b)).collect::<Vec<_>>();
            let written: Vec<(String,)> = sqlx::query_as(crate::sql::FLUSH_LEASES_PG)
                .bind(column(|b| b.lease_id.as_str()))
                .bind(column(|b| b.license_id.as_str()))
                .bind(times(|b| b.expires_at))
                .bind(times(|b| b.last_seen_at))
                .fetch_all(&mut *tx)
                .await?;
            written.into_iter().map(|(id,)| id).collect()
        };
        self.commit(tx).await?;
        Ok(crate::FlushOutcome {
            gone: mine
                .iter()
                .filter(|b| !written.contains(&b.lease_id))
                .map(|b| b.lease_id.clone())
                .collect(),
            busy: busy.iter().map(|b| b.lease_id.clone()).collect(),
        })
    }

    async fn held_seat(
        &self,
        license_id: &str,
        kind: SeatKind,
        fingerprint: &str,
    ) -> Result<Option<crate::HeldSeat>> {
        self.read_held_seat(license_id, kind, fingerprint).await
    }
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("the seat batcher answered another operation".into())
}
