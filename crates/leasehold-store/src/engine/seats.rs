//! The client protocol's seats, as the general path takes them: where a backend has a
//! seat engine of its own (SQLite's writer, PostgreSQL's batcher) it decides first.

use super::*;

#[async_trait]
impl Seats for This {
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
        if matches!(BACKEND, Backend::Postgres) {
            sqlx::query("ANALYZE seats").execute(self.writer()).await?;
        }
        Ok(())
    }

    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>> {
        Ok(sqlx::query_as::<_, License>(
            "SELECT * FROM licenses WHERE key_hash = $1 AND deleted_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.reader())
        .await?)
    }

    async fn held_seat(
        &self,
        license_id: &str,
        kind: SeatKind,
        fingerprint: &str,
    ) -> Result<Option<crate::HeldSeat>> {
        let sql = match kind {
            SeatKind::Activation => crate::sql::HOLDS_ACTIVATION,
            SeatKind::Lease => crate::sql::HOLDS_LEASE,
            SeatKind::Assignment => crate::sql::HOLDS_ASSIGNMENT,
        };
        let found: Option<(Option<i64>,)> = sqlx::query_as(sql)
            .bind(license_id)
            .bind(fingerprint)
            .fetch_optional(self.reader())
            .await?;
        Ok(found.map(|(expires_at,)| crate::HeldSeat { expires_at }))
    }

    async fn activate(
        &self,
        license: &std::sync::Arc<License>,
        fingerprint: &str,
        identifier: Option<&str>,
    ) -> Result<(Seat, bool)> {
        // Two first activations of one machine racing on different nodes: the loser
        // hits the unique index and, retried, finds the winner's seat.
        if let Some(activated) = self.fast_activate(license, fingerprint, identifier).await? {
            return Ok(activated);
        }
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
        if let Some(released) = self.fast_deactivate(license, fingerprint).await? {
            return Ok(released);
        }
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
        if let Some(taken) = self.fast_take_lease(license, holder).await? {
            return Ok(taken);
        }
        let mut attempt = 0;
        loop {
            match self.take_lease_once(license, holder).await {
                Err(StoreError::Database(e)) if is_unique_violation(&e) && attempt < 3 => {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn heartbeat(
        &self,
        license: &std::sync::Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> Result<i64> {
        let now = now_ms();
        let expires_at = license.policy().lease_expiry(now);
        if let Some(beat) = self
            .fast_heartbeat(license, lease_id, instance, expires_at, now)
            .await?
        {
            return beat;
        }
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
            if seat.license_id != license.id || seat.kind != SeatKind::Lease {
                return Err(StoreError::NotFound);
            }
            if seat.released_at.is_some() || seat.expires_at.unwrap_or(0) < now {
                if seat.released_at.is_none()
                    && Self::end_seat(&mut tx, &seat, ReleaseReason::Expired, now).await?
                {
                    Self::insert_event(
                        &mut tx,
                        &license.workspace_id,
                        &Actor::system(),
                        "seat.expired",
                        ("seat", &seat.id),
                        Some(&license.id),
                        json(&seat),
                        None,
                    )
                    .await?;
                }
                self.commit(tx).await?;
                return Err(StoreError::LeaseExpired);
            }
            sqlx::query(crate::sql::TOUCH_LEASE_SOONER)
                .bind(expires_at)
                .bind(now)
                .bind(lease_id)
                .execute(&mut *tx)
                .await?;
            self.commit(tx).await?;
            live = Some(seat.instances);
        }
        let instances = live.unwrap_or_default();
        if !leasehold_core::lease::Instances::from_stored(instances.as_deref()).contains(instance) {
            // An instance the server had not seen: count it in, so its
            // checkin is awaited too. Rare, so it takes the license lock
            // like every other change to the instance list.
            let mut tx = self.begin_write().await?;
            Self::lock_license(&mut tx, &license.id).await?;
            let seat = Self::seat_in(&mut tx, &license.workspace_id, lease_id).await?;
            let mut list = seat.instance_set();
            if seat.released_at.is_none() && list.join(instance, license.max_instances_per_lease)? {
                sqlx::query(crate::sql::JOIN_INSTANCE)
                    .bind(list.to_stored())
                    .bind(lease_id)
                    .execute(&mut *tx)
                    .await?;
            }
            self.commit(tx).await?;
        }
        Ok(expires_at)
    }

    async fn release_instance(
        &self,
        license: &std::sync::Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> Result<bool> {
        if let Some(released) = self
            .fast_release_instance(license, lease_id, instance)
            .await?
        {
            return Ok(released);
        }
        let mut tx = self.begin_write().await?;
        let released = Self::release_in(&mut tx, license, lease_id, instance, now_ms()).await?;
        self.commit(tx).await?;
        released
    }

    async fn expire_leases(
        &self,
        from: &str,
        limit: i64,
        probes: i64,
    ) -> Result<crate::SweepChunk> {
        let now = now_ms();
        let limit = limit.max(1);
        // Two at least: the next chunk starts at the last license probed (its budget
        // may have run out in it), so one probe would never get past it.
        let probes = probes.max(2);
        // The next licenses that could hold lapsed leases, in id order from where the
        // sweep got to: one probe of the per-license expiry index for each concurrent
        // license holding seats (a lapsed lease holds one until it ends), at most
        // `probes` of them, so that a chunk's cost is bounded however many licenses
        // there are.
        let probed: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT l.id, l.workspace_id, EXISTS (SELECT 1 FROM seats s WHERE s.license_id = l.id \
             AND s.kind = 'lease' AND s.released_at IS NULL AND s.sweep_at < $2) \
             FROM licenses l WHERE l.seat_model = 'concurrent' AND l.seats_used > 0 AND l.id >= $1 \
             ORDER BY l.id LIMIT $3",
        )
        .bind(from)
        .bind(now)
        .bind(probes)
        .fetch_all(self.reader())
        .await?;
        let reached_the_end = (probed.len() as i64) < probes;
        let probed_count = probed.len();
        let after = probed.last().map(|(id, _, _)| id.clone());
        let licenses: Vec<(String, String)> = probed
            .into_iter()
            .filter(|(_, _, lapsed)| *lapsed)
            .map(|(id, workspace_id, _)| (id, workspace_id))
            .collect();
        let swept = if licenses.is_empty() {
            crate::Swept::default()
        } else if let Some(swept) = self.fast_expire_leases(&licenses, now, limit).await? {
            // SQLite: the whole chunk on the seat writer, inside its batch.
            swept
        } else {
            // PostgreSQL: each license locked first, like on every other path. Waits
            // for a checkout holding the lock (it is brief) rather than skip: a
            // skipped license would be missed until the next pass. Another node
            // sweeping the same license is waited for too, and then finds its
            // leases already ended.
            let mut swept = crate::Swept::default();
            let mut handled = 0;
            for (license_id, _) in licenses {
                let mut tx = self.begin_write().await?;
                let license = sqlx::query_as::<_, License>(concat!(
                    "SELECT * FROM licenses WHERE id = $1",
                    row_lock!()
                ))
                .bind(&license_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(license) = license {
                    let (expired, moved) =
                        Self::expire_license_leases(&mut tx, &license, now, limit - handled)
                            .await?;
                    handled += moved + expired.len() as i64;
                    swept.expired.extend(expired);
                }
                self.commit(tx).await?;
                if handled >= limit {
                    swept.ran_out_in = Some(license_id);
                    break;
                }
            }
            swept
        };
        // A budget that ran out resumes at the license it ran out in; otherwise the
        // next chunk starts after the licenses probed here, or the pass is over.
        let resume_at = match swept.ran_out_in {
            Some(license_id) => Some(license_id),
            None if reached_the_end => None,
            None => after,
        };
        Ok(crate::SweepChunk {
            expired: swept.expired,
            resume_at,
            probed: probed_count,
        })
    }
}
