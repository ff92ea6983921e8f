//! The one body of SQL both backends run. `impl_store!` expands it for a concrete
//! sqlx database, so each query is checked against that driver's types; what differs
//! between the backends (how a write transaction begins, row locks) comes in as
//! arguments. Keep the SQL portable: `$n` placeholders, `ON CONFLICT`, `RETURNING`.

macro_rules! impl_store {
    ($store:ty, $db:ty, backend = $backend:expr, lock = $lock:literal, skip_locked = $skip_locked:literal) => {
        use $crate::sql::{is_unique_violation, json, EXPIRE_CHUNK, TOP_CURSOR};
        use $crate::records::*;
        use $crate::{Backend, Result, Store, StoreError};
        use async_trait::async_trait;
        use leasehold_core::*;

        type Tx = sqlx::Transaction<'static, $db>;

        /// Helpers that run inside a caller's transaction.
        impl $store {
            // One row's columns; a struct for them would only be unpacked again here.
            #[allow(clippy::too_many_arguments)]
            async fn insert_event(
                tx: &mut Tx,
                workspace_id: &str,
                actor: &Actor,
                action: &str,
                subject: (&str, &str),
                license_id: Option<&str>,
                before: Option<String>,
                after: Option<String>,
            ) -> Result<()> {
                let id = new_id();
                let now = now_ms();
                if let Some(event_type) = $crate::outbox::webhook_event_of(action) {
                    let data = $crate::sql::webhook_data(subject, license_id, before.as_deref(), after.as_deref());
                    Self::enqueue_webhooks(tx, workspace_id, event_type, &id, &data, now).await?;
                }
                sqlx::query($crate::sql::INSERT_EVENT)
                .bind(&id)
                .bind(workspace_id)
                .bind(actor.kind)
                .bind(actor.id.as_deref())
                .bind(&actor.label)
                .bind(action)
                .bind(subject.0)
                .bind(subject.1)
                .bind(license_id)
                .bind(before)
                .bind(after)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Queues `event_type` for every webhook of the workspace subscribed to it, in the
            /// caller's transaction: one statement, nothing when none is. Message ids are
            /// `event_id.webhook_id`, so queuing the same event twice queues nothing more.
            async fn enqueue_webhooks(
                tx: &mut Tx,
                workspace_id: &str,
                event_type: &str,
                event_id: &str,
                data: &str,
                now: i64,
            ) -> Result<()> {
                sqlx::query($crate::sql::ENQUEUE_WEBHOOKS)
                .bind(event_id)
                .bind(workspace_id)
                .bind(event_type)
                .bind(data)
                .bind(now)
                .bind(now.saturating_add($crate::outbox::RETRY_WINDOW_MS))
                .bind($crate::sql::subscribed_pattern(event_type))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Answers a refused seat, told to the webhooks first (`seat.denied`) and
            /// committed with whatever the transaction did before (expiries it made).
            async fn deny<T>(&self, mut tx: Tx, license: &License, fingerprint: &str, os_user: Option<&str>, refusal: StoreError) -> Result<T> {
                Self::announce_denial(&mut tx, license, fingerprint, os_user, &refusal).await?;
                self.commit(tx).await?;
                Err(refusal)
            }

            /// Announces a refused seat request (`seat.denied`) to the workspace's webhooks.
            async fn announce_denial(tx: &mut Tx, license: &License, fingerprint: &str, os_user: Option<&str>, refusal: &StoreError) -> Result<()> {
                let data = $crate::sql::denial_data(license, fingerprint, os_user, refusal);
                Self::enqueue_webhooks(tx, &license.workspace_id, "seat.denied", &new_id(), &data, now_ms()).await
            }

            /// Binds a license's admin-set fields as `$1`…`$21`, in `license_fields!()` order.
            fn bind_license_fields<'q>(
                query: sqlx::query::QueryAs<'q, $db, License, <$db as sqlx::Database>::Arguments<'q>>,
                c: &'q LicenseChange,
            ) -> sqlx::query::QueryAs<'q, $db, License, <$db as sqlx::Database>::Arguments<'q>> {
                let policy = &c.policy;
                query
                    .bind(&c.licensed_to)
                    .bind(&c.vendor)
                    .bind(c.license_type)
                    .bind(c.status)
                    .bind(c.seat_model)
                    .bind(c.seats_total)
                    .bind(&c.version)
                    .bind(c.cost.as_ref().map(|m| m.amount_minor))
                    .bind(c.cost.as_ref().map(|m| m.currency.as_str()))
                    .bind(c.purchased_on)
                    .bind(c.expires_on)
                    .bind(c.maintenance_expires_on)
                    .bind(&c.po_number)
                    .bind(&c.notes)
                    .bind(policy.lease_ttl_s)
                    .bind(policy.heartbeat_interval_s)
                    .bind(policy.license_file_ttl_s)
                    .bind(policy.self_service_releases_per_month)
                    .bind(policy.admin_release)
                    .bind(policy.release_cooldown_s)
                    .bind(policy.max_instances_per_lease)
            }

            async fn locked_license(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<License> {
                sqlx::query_as::<_, License>(concat!(license_select!(), $lock))
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn license_in(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<License> {
                sqlx::query_as::<_, License>(license_select!())
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn seat_in(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<Seat> {
                sqlx::query_as::<_, Seat>($crate::sql::SEAT_BY_ID)
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            /// A member about to change, and how many other members are owners who can sign
            /// in. The workspace row is locked first, so two owners demoting each other at
            /// once are decided one after the other.
            async fn member_for_change(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<(Member, u64)> {
                sqlx::query("UPDATE workspaces SET name = name WHERE id = $1")
                    .bind(workspace_id)
                    .execute(&mut **tx)
                    .await?;
                let member = sqlx::query_as::<_, Member>("SELECT * FROM members WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let others: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND id <> $2 \
                     AND role = 'owner' AND disabled_at IS NULL",
                )
                .bind(workspace_id)
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
                Ok((member, u64::try_from(others).unwrap_or(0)))
            }

            async fn workspace_in(tx: &mut Tx, id: &str) -> Result<Workspace> {
                sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            /// Brings the license's pending reminders in line with its dates and status:
            /// drops pending ones no longer due, adds missing ones, keeps sent and dismissed.
            async fn sync_reminders(tx: &mut Tx, license: &License) -> Result<()> {
                let lead_days = Self::workspace_in(tx, &license.workspace_id).await?.lead_days()?;
                let wanted = reminders::due_reminders(
                    license.status,
                    license.expires_on,
                    license.maintenance_expires_on,
                    &lead_days,
                    today(),
                );
                let pending: Vec<(String, ReminderKind, chrono::NaiveDate)> = sqlx::query_as(
                    "SELECT id, kind, due_on FROM reminders WHERE license_id = $1 AND state = 'pending'",
                )
                .bind(&license.id)
                .fetch_all(&mut **tx)
                .await?;
                for (id, kind, due_on) in pending {
                    if !wanted.contains(&(kind, due_on)) {
                        sqlx::query("DELETE FROM reminders WHERE id = $1")
                            .bind(id)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                for (kind, due_on) in wanted {
                    sqlx::query(
                        "INSERT INTO reminders (id, workspace_id, license_id, kind, due_on, state, created_at) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6) \
                         ON CONFLICT (license_id, kind, due_on) DO NOTHING",
                    )
                    .bind(new_id())
                    .bind(&license.workspace_id)
                    .bind(&license.id)
                    .bind(kind)
                    .bind(due_on)
                    .bind(now_ms())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// Ends the license's active seats matching `kinds` with `reason`, frees them in
            /// the counter, and audits each.
            async fn release_seats(
                tx: &mut Tx,
                actor: &Actor,
                license: &License,
                kinds: &[SeatKind],
                reason: ReleaseReason,
            ) -> Result<i64> {
                let active: Vec<Seat> = sqlx::query_as::<_, Seat>(concat!(
                    seat_select!(),
                    "WHERE s.license_id = $1 AND s.released_at IS NULL"
                ))
                .bind(&license.id)
                .fetch_all(&mut **tx)
                .await?;
                let now = now_ms();
                let mut released = 0;
                for seat in active.into_iter().filter(|s| kinds.contains(&s.kind)) {
                    let ended = sqlx::query(
                        "UPDATE seats SET released_at = $1, release_reason = $2 WHERE id = $3 AND released_at IS NULL",
                    )
                    .bind(now)
                    .bind(reason)
                    .bind(&seat.id)
                    .execute(&mut **tx)
                    .await?;
                    if ended.rows_affected() == 0 {
                        continue;
                    }
                    let after = Seat {
                        released_at: Some(now),
                        release_reason: Some(reason),
                        ..seat.clone()
                    };
                    Self::insert_event(
                        tx,
                        &license.workspace_id,
                        actor,
                        "seat.released",
                        ("seat", &seat.id),
                        Some(&license.id),
                        json(&seat),
                        json(&after),
                    )
                    .await?;
                    released += 1;
                }
                if released > 0 {
                    sqlx::query("UPDATE licenses SET seats_used = seats_used - $1 WHERE id = $2")
                        .bind(released)
                        .bind(&license.id)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(released)
            }

            /// Counts one more seat if one is free: the invariant, in one statement. The same
            /// statement re-checks what the caller read before its transaction: the seat
            /// model and, for applications (`in_force`), that the license is active today.
            async fn try_take_seat(tx: &mut Tx, license_id: &str, model: SeatModel, in_force: bool) -> Result<bool> {
                let taken = sqlx::query($crate::sql::TRY_TAKE_SEAT)
                .bind(license_id)
                .bind(model)
                .bind(in_force)
                .bind(today())
                .execute(&mut **tx)
                .await?;
                Ok(taken.rows_affected() == 1)
            }

            /// Takes the license's row lock (PostgreSQL) before its seats are touched, so
            /// every path locks in one order: license, then seats.
            async fn lock_license(tx: &mut Tx, license_id: &str) -> Result<()> {
                sqlx::query(concat!("SELECT id FROM licenses WHERE id = $1", $lock))
                    .bind(license_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Ends one active seat (if it still is) and frees it in the counter.
            async fn end_seat(tx: &mut Tx, seat: &Seat, reason: ReleaseReason, now: i64) -> Result<bool> {
                let ended = sqlx::query($crate::sql::END_SEAT)
                .bind(now)
                .bind(reason)
                .bind(&seat.id)
                .execute(&mut **tx)
                .await?;
                if ended.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query($crate::sql::FREE_SEAT)
                    .bind(&seat.license_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(true)
            }

            /// Before a full license refuses: ends its lapsed leases (up to a chunk of them),
            /// however many leases have their `sweep_at` to move on first. Answers how many ended.
            async fn expire_all_lapsed(tx: &mut Tx, license: &License, now: i64) -> Result<usize> {
                loop {
                    let (expired, moved) = Self::expire_license_leases(tx, license, now, EXPIRE_CHUNK).await?;
                    if moved < EXPIRE_CHUNK {
                        return Ok(expired.len());
                    }
                }
            }

            /// Releases up to `limit` of this license's lapsed leases, in a few set-wide
            /// statements (the caller holds the license lock): the sweeper's chunk, and the
            /// on-demand expiry before a checkout is refused. Leases whose `sweep_at` passed
            /// though they live on move it to their expiry first, and count in `limit`: answers
            /// the leases ended and how many moved (all of `limit`: some may be left).
            async fn expire_license_leases(tx: &mut Tx, license: &License, now: i64, limit: i64) -> Result<(Vec<Seat>, i64)> {
                let moved = sqlx::query($crate::sql::RESWEEP_LEASES)
                    .bind(&license.id)
                    .bind(now)
                    .bind(limit)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected() as i64;
                if moved >= limit {
                    return Ok((Vec::new(), moved));
                }
                let lapsed: Vec<Seat> = sqlx::query_as::<_, Seat>($crate::sql::LAPSED_LEASES)
                .bind(&license.id)
                .bind(now)
                .bind(limit - moved)
                .fetch_all(&mut **tx)
                .await?;
                if lapsed.is_empty() {
                    return Ok((lapsed, moved));
                }
                let mut ended = sqlx::QueryBuilder::<$db>::new("UPDATE seats SET released_at = ");
                ended.push_bind(now).push(", release_reason = ").push_bind(ReleaseReason::Expired);
                ended.push(" WHERE released_at IS NULL AND id IN (");
                let mut ids = ended.separated(", ");
                for seat in &lapsed {
                    ids.push_bind(&seat.id);
                }
                ended.push(") RETURNING id");
                let ended: std::collections::HashSet<String> =
                    ended.build_query_scalar::<String>().fetch_all(&mut **tx).await?.into_iter().collect();
                let expired: Vec<Seat> = lapsed.into_iter().filter(|s| ended.contains(&s.id)).collect();
                if expired.is_empty() {
                    return Ok((expired, moved));
                }
                sqlx::query($crate::sql::FREE_SEATS)
                    .bind(expired.len() as i64)
                    .bind(&license.id)
                    .execute(&mut **tx)
                    .await?;
                let actor = Actor::system();
                let ids: Vec<String> = expired.iter().map(|_| new_id()).collect();
                let (subscribed,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL AND events LIKE '%\"seat.expired\"%'",
                )
                .bind(&license.workspace_id)
                .fetch_one(&mut **tx)
                .await?;
                if subscribed > 0 {
                    for (id, seat) in ids.iter().zip(&expired) {
                        let data = $crate::sql::webhook_data(("seat", &seat.id), Some(&license.id), json(seat).as_deref(), None);
                        Self::enqueue_webhooks(tx, &license.workspace_id, "seat.expired", id, &data, now).await?;
                    }
                }
                let mut events = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, \
                     subject_type, subject_id, license_id, before_json, after_json, created_at) ",
                );
                events.push_values(ids.iter().zip(&expired), |mut row, (id, seat)| {
                    row.push_bind(id)
                        .push_bind(&license.workspace_id)
                        .push_bind(actor.kind)
                        .push_bind(actor.id.clone())
                        .push_bind(actor.label.clone())
                        .push_bind("seat.expired")
                        .push_bind("seat")
                        .push_bind(&seat.id)
                        .push_bind(&license.id)
                        .push_bind(json(seat))
                        .push_bind(None::<String>)
                        .push_bind(now);
                });
                events.build().execute(&mut **tx).await?;
                Ok((expired, moved))
            }

            /// When an admin last released this holder's seat, read only when the license's
            /// policy has a cooldown (`os_user` `""`: any of the machine's users).
            async fn last_admin_release(tx: &mut Tx, license: &License, fingerprint: &str, os_user: &str) -> Result<Option<i64>> {
                if !license.policy().has_release_cooldown() {
                    return Ok(None);
                }
                let (last,): (Option<i64>,) = sqlx::query_as($crate::sql::LAST_ADMIN_RELEASE)
                    .bind(&license.id)
                    .bind(fingerprint)
                    .bind(os_user)
                    .fetch_one(&mut **tx)
                    .await?;
                Ok(last)
            }

            /// Answers the seat decision's refusal: a full license says when its earliest lease
            /// could lapse, and every refusal of a seat is told to the webhooks (`seat.denied`).
            async fn refuse<T>(&self, mut tx: Tx, license: &License, fingerprint: &str, os_user: Option<&str>, refusal: leasehold_core::lease::Refusal) -> Result<T> {
                let next_expiry_ms = match refusal {
                    leasehold_core::lease::Refusal::Full { .. } => {
                        let (next,): (Option<i64>,) = sqlx::query_as($crate::sql::NEXT_LEASE_EXPIRY)
                            .bind(&license.id)
                            .fetch_one(&mut *tx)
                            .await?;
                        next
                    }
                    _ => None,
                };
                let error = StoreError::refused(refusal, next_expiry_ms);
                if !refusal.is_announced() {
                    return Err(error);
                }
                self.deny(tx, license, fingerprint, os_user, error).await
            }

            async fn active_seat_of(tx: &mut Tx, license_id: &str, kind: SeatKind, fingerprint: &str, os_user: Option<&str>) -> Result<Option<Seat>> {
                let query = match (kind, os_user) {
                    (SeatKind::Lease, Some(os_user)) => sqlx::query_as::<_, Seat>($crate::sql::ACTIVE_LEASE)
                        .bind(license_id)
                        .bind(fingerprint)
                        .bind(os_user),
                    (SeatKind::Activation, None) => sqlx::query_as::<_, Seat>($crate::sql::ACTIVE_ACTIVATION)
                        .bind(license_id)
                        .bind(fingerprint),
                    _ => return Err(StoreError::Corrupt("a lease is held per OS user, an activation per machine".into())),
                };
                Ok(query.fetch_optional(&mut **tx).await?)
            }

            async fn activate_once(&self, license: &License, fingerprint: &str, identifier: Option<&str>) -> Result<(Seat, bool)> {
                use leasehold_core::lease::{decide_activate, ActivateStep};
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let current = Self::locked_license(&mut tx, &license.workspace_id, &license.id).await?;
                let held = Self::active_seat_of(&mut tx, &license.id, SeatKind::Activation, fingerprint, None).await?;
                let last_release = match held {
                    Some(_) => None,
                    None => Self::last_admin_release(&mut tx, license, fingerprint, "").await?,
                };
                match decide_activate(&license.policy(), &current.seats(today()), held.is_some(), last_release, now) {
                    ActivateStep::Renew => {
                        let seat = held.ok_or_else(|| StoreError::Corrupt("renewed no activation".into()))?;
                        sqlx::query($crate::sql::RENEW_ACTIVATION)
                            .bind(now)
                            .bind(identifier)
                            .bind(&seat.id)
                            .execute(&mut *tx)
                            .await?;
                        let seat = Self::seat_in(&mut tx, &license.workspace_id, &seat.id).await?;
                        self.commit(tx).await?;
                        return Ok((seat, false));
                    }
                    ActivateStep::Refuse(refusal) => return self.refuse(tx, license, fingerprint, None, refusal).await,
                    ActivateStep::Activate => {
                        // The guarded count is the invariant's last word (the license is locked).
                        if !Self::try_take_seat(&mut tx, &license.id, SeatModel::Dedicated, true).await? {
                            return Err(StoreError::Corrupt("the seat count moved under the license lock".into()));
                        }
                    }
                }
                let id = new_id();
                sqlx::query($crate::sql::INSERT_ACTIVATION)
                .bind(&id)
                .bind(&license.workspace_id)
                .bind(&license.id)
                .bind(fingerprint)
                .bind(identifier)
                .bind(today())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let seat = Self::seat_in(&mut tx, &license.workspace_id, &id).await?;
                Self::insert_event(&mut tx, &license.workspace_id, &key_actor(license, identifier), "seat.activated", ("seat", &id), Some(&license.id), None, json(&seat)).await?;
                self.commit(tx).await?;
                Ok((seat, true))
            }

            async fn take_lease_once(&self, license: &License, holder: &LeaseHolder) -> Result<(Seat, bool)> {
                use leasehold_core::lease::{decide_take, TakeInput, TakeStep};
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                // The license lock also serialises changes to a lease's instance list.
                let current = Self::locked_license(&mut tx, &license.workspace_id, &license.id).await?;
                let mut held = Self::active_seat_of(&mut tx, &license.id, SeatKind::Lease, &holder.fingerprint, Some(&holder.os_user)).await?;
                let last_admin_release = match held {
                    Some(_) => None,
                    None => Self::last_admin_release(&mut tx, license, &holder.fingerprint, &holder.os_user).await?,
                };
                let mut input = TakeInput {
                    instance: &holder.instance,
                    now,
                    policy: license.policy(),
                    license: current.seats(today()),
                    held: held.as_ref().map(Seat::held_lease),
                    last_admin_release,
                    lapsed_reclaimed: false,
                };
                let expires_at = loop {
                    match decide_take(&input) {
                        TakeStep::Join { instances, expires_at, .. } => {
                            let seat = held.ok_or_else(|| StoreError::Corrupt("joined no lease".into()))?;
                            sqlx::query($crate::sql::RENEW_LEASE)
                                .bind(instances.to_stored())
                                .bind(expires_at)
                                .bind(now)
                                .bind(&holder.identifier)
                                .bind(&seat.id)
                                .execute(&mut *tx)
                                .await?;
                            let seat = Self::seat_in(&mut tx, &license.workspace_id, &seat.id).await?;
                            self.commit(tx).await?;
                            return Ok((seat, false));
                        }
                        TakeStep::EndOwnLapsed => {
                            // This holder's old seat ends as expired (kept even if the take is
                            // refused), and it is decided again without it.
                            if let Some(seat) = held.take() {
                                if Self::end_seat(&mut tx, &seat, ReleaseReason::Expired, now).await? {
                                    Self::insert_event(&mut tx, &license.workspace_id, &Actor::system(), "seat.expired", ("seat", &seat.id), Some(&license.id), json(&seat), None).await?;
                                }
                            }
                            input.held = None;
                            input.last_admin_release = Self::last_admin_release(&mut tx, license, &holder.fingerprint, &holder.os_user).await?;
                            input.license = Self::license_in(&mut tx, &license.workspace_id, &license.id).await?.seats(today());
                        }
                        TakeStep::ReclaimLapsed => {
                            // Free what crashed apps left behind (kept even if the take is refused).
                            Self::expire_all_lapsed(&mut tx, license, now).await?;
                            input.lapsed_reclaimed = true;
                            input.license = Self::license_in(&mut tx, &license.workspace_id, &license.id).await?.seats(today());
                        }
                        TakeStep::Refuse(refusal) => {
                            return self.refuse(tx, license, &holder.fingerprint, Some(&holder.os_user), refusal).await;
                        }
                        TakeStep::Take { expires_at } => {
                            // The guarded count is the invariant's last word (the license is locked).
                            if !Self::try_take_seat(&mut tx, &license.id, SeatModel::Concurrent, true).await? {
                                return Err(StoreError::Corrupt("the seat count moved under the license lock".into()));
                            }
                            break expires_at;
                        }
                    }
                };
                let id = new_id();
                sqlx::query($crate::sql::INSERT_LEASE)
                .bind(&id)
                .bind(&license.workspace_id)
                .bind(&license.id)
                .bind(&holder.fingerprint)
                .bind(&holder.os_user)
                .bind(&holder.identifier)
                .bind(json(&[&holder.instance]))
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                let seat = Self::seat_in(&mut tx, &license.workspace_id, &id).await?;
                Self::insert_event(&mut tx, &license.workspace_id, &key_actor(license, holder.identifier.as_deref()), "seat.taken", ("seat", &id), Some(&license.id), None, json(&seat)).await?;
                self.commit(tx).await?;
                Ok((seat, true))
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
                self.notify_nodes(channel, payload).await
            }

            async fn listen(&self, channel: &str) -> Result<Option<$crate::Messages>> {
                self.listen_nodes(channel).await
            }

            async fn import_leases(&self, license_id: &str, count: i64, now: i64, expires_at: i64) -> Result<()> {
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
                if matches!($backend, Backend::Postgres) {
                    sqlx::query("ANALYZE seats").execute(self.writer()).await?;
                }
                Ok(())
            }

            async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String> {
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                let (stored,): (String,) = sqlx::query_as("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                self.commit(tx).await?;
                Ok(stored)
            }

            async fn create_workspace(
                &self,
                workspace: NewWorkspace,
                owner: NewMember,
                token: NewToken,
            ) -> Result<Workspace> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let lead_days = serde_json::to_string(&workspace.reminder_lead_days)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let created = sqlx::query_as::<_, Workspace>(
                    "INSERT INTO workspaces (id, name, slug, currency, reminder_lead_days, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                )
                .bind(new_id())
                .bind(&workspace.name)
                .bind(&workspace.slug)
                .bind(&workspace.currency)
                .bind(lead_days)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict(format!("a workspace named {:?} exists already", workspace.slug))
                    } else {
                        e.into()
                    }
                })?;
                let member_id = new_id();
                sqlx::query(
                    "INSERT INTO members (id, workspace_id, email, password_hash, role, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&member_id)
                .bind(&created.id)
                .bind(&owner.email)
                .bind(&owner.password_hash)
                .bind(owner.role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let token_id = new_id();
                sqlx::query(
                    "INSERT INTO api_tokens (id, workspace_id, name, role, token_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token_id)
                .bind(&created.id)
                .bind(&token.name)
                .bind(token.role)
                .bind(&token.token_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let actor = Actor {
                    kind: "member",
                    id: Some(member_id),
                    label: owner.email.clone(),
                };
                Self::insert_event(&mut tx, &created.id, &actor, "workspace.created", ("workspace", &created.id), None, None, json(&created)).await?;
                Self::insert_event(&mut tx, &created.id, &actor, "token.created", ("token", &token_id), None, None, None).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn workspace(&self, id: &str) -> Result<Workspace> {
                sqlx::query_as::<_, Workspace>("SELECT * FROM workspaces WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn workspace_count(&self) -> Result<i64> {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workspaces")
                    .fetch_one(self.reader())
                    .await?;
                Ok(count)
            }

            async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
                Ok(sqlx::query_as::<_, TokenRecord>(
                    "SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
                )
                .bind(token_hash)
                .fetch_optional(self.reader())
                .await?)
            }

            async fn create_token(&self, actor: &Actor, workspace_id: &str, token: NewToken) -> Result<TokenRecord> {
                let mut tx = self.begin_write().await?;
                let created = sqlx::query_as::<_, TokenRecord>(
                    "INSERT INTO api_tokens (id, workspace_id, name, role, token_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                )
                .bind(new_id())
                .bind(workspace_id)
                .bind(&token.name)
                .bind(token.role)
                .bind(&token.token_hash)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "token.created", ("token", &created.id), None, None, json(&created)).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn list_tokens(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<TokenRecord>> {
                let rows = sqlx::query_as::<_, TokenRecord>(
                    "SELECT * FROM api_tokens WHERE workspace_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
                )
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |t| t.id.clone()))
            }

            async fn revoke_token(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<TokenRecord> {
                let mut tx = self.begin_write().await?;
                let revoked = sqlx::query_as::<_, TokenRecord>(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE id = $2 AND workspace_id = $3 RETURNING *",
                )
                .bind(now_ms())
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                Self::insert_event(&mut tx, workspace_id, actor, "token.revoked", ("token", id), None, None, json(&revoked)).await?;
                self.commit(tx).await?;
                Ok(revoked)
            }

            async fn create_application(
                &self,
                actor: &Actor,
                workspace_id: &str,
                application: NewApplication,
            ) -> Result<Application> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let created = sqlx::query_as::<_, Application>(
                    "INSERT INTO applications (id, workspace_id, name, vendor, deployment_model, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     RETURNING id, workspace_id, name, vendor, deployment_model, created_at, updated_at",
                )
                .bind(new_id())
                .bind(workspace_id)
                .bind(&application.name)
                .bind(&application.vendor)
                .bind(application.deployment_model)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "application.created", ("application", &created.id), None, None, json(&created)).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn application(&self, workspace_id: &str, id: &str) -> Result<Application> {
                sqlx::query_as::<_, Application>(
                    "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
                     FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
                )
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(self.reader())
                .await?
                .ok_or(StoreError::NotFound)
            }

            async fn list_applications(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Application>> {
                let rows = sqlx::query_as::<_, Application>(
                    "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
                     FROM applications WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2 = '' OR id < $2) \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |a| a.id.clone()))
            }

            async fn update_application(
                &self,
                actor: &Actor,
                workspace_id: &str,
                id: &str,
                change: ApplicationChange,
            ) -> Result<Application> {
                let mut tx = self.begin_write().await?;
                let before = sqlx::query_as::<_, Application>(concat!(
                    "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
                     FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
                    $lock
                ))
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                let after = Application {
                    name: change.name.unwrap_or_else(|| before.name.clone()),
                    vendor: change.vendor.unwrap_or_else(|| before.vendor.clone()),
                    deployment_model: change.deployment_model.unwrap_or(before.deployment_model),
                    updated_at: now_ms(),
                    ..before.clone()
                };
                sqlx::query(
                    "UPDATE applications SET name = $1, vendor = $2, deployment_model = $3, updated_at = $4 WHERE id = $5",
                )
                .bind(&after.name)
                .bind(&after.vendor)
                .bind(after.deployment_model)
                .bind(after.updated_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "application.updated", ("application", id), None, json(&before), json(&after)).await?;
                self.commit(tx).await?;
                Ok(after)
            }

            async fn delete_application(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let before = sqlx::query_as::<_, Application>(concat!(
                    "SELECT id, workspace_id, name, vendor, deployment_model, created_at, updated_at \
                     FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
                    $lock
                ))
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                let (licenses,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM licenses WHERE application_id = $1 AND deleted_at IS NULL",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if licenses > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the application has {licenses} license(s); delete them first"
                    )));
                }
                sqlx::query("UPDATE applications SET deleted_at = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "application.deleted", ("application", id), None, json(&before), None).await?;
                self.commit(tx).await?;
                Ok(())
            }

            async fn create_license(&self, actor: &Actor, workspace_id: &str, license: NewLicense) -> Result<License> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let application: Option<(String,)> = sqlx::query_as(concat!(
                    "SELECT id FROM applications WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
                    $lock
                ))
                .bind(&license.application_id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?;
                if application.is_none() {
                    return Err(StoreError::invalid("application_id", "no such application"));
                }
                let f = &license.fields;
                let created = Self::bind_license_fields(sqlx::query_as::<_, License>($crate::sql::INSERT_LICENSE), f)
                .bind(new_id())
                .bind(workspace_id)
                .bind(&license.application_id)
                .bind(&license.key_enc)
                .bind(&license.key_hash)
                .bind(&license.key_masked)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict("a license with this key exists already".into())
                    } else {
                        e.into()
                    }
                })?;
                Self::sync_reminders(&mut tx, &created).await?;
                Self::insert_event(&mut tx, workspace_id, actor, "license.created", ("license", &created.id), Some(&created.id), None, json(&created)).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn license(&self, workspace_id: &str, id: &str) -> Result<License> {
                sqlx::query_as::<_, License>(license_select!())
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(self.reader())
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn list_licenses(
                &self,
                workspace_id: &str,
                filter: &LicenseFilter,
                page: &PageRequest,
            ) -> Result<Page<License>> {
                let rows = sqlx::query_as::<_, License>(
                    "SELECT * FROM licenses WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2 = '' OR id < $2) \
                     AND ($3 = '' OR application_id = $3) AND ($4 = '' OR status = $4) \
                     ORDER BY id DESC LIMIT $5",
                )
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(filter.application_id.as_deref().unwrap_or(""))
                .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |l| l.id.clone()))
            }

            async fn update_license(
                &self,
                actor: &Actor,
                workspace_id: &str,
                id: &str,
                change: &(dyn for<'l> Fn(&'l License) -> Result<LicenseChange> + Send + Sync),
            ) -> Result<License> {
                let mut tx = self.begin_write().await?;
                let before = Self::locked_license(&mut tx, workspace_id, id).await?;
                let c = change(&before)?;
                if c.seat_model != before.seat_model && before.seats_used > 0 {
                    return Err(StoreError::Conflict(
                        "the seat model cannot change while seats are in use".into(),
                    ));
                }
                if c.status == LicenseStatus::Revoked && before.status != LicenseStatus::Revoked {
                    Self::release_seats(
                        &mut tx,
                        actor,
                        &before,
                        &[SeatKind::Activation, SeatKind::Lease],
                        ReleaseReason::LicenseRevoked,
                    )
                    .await?;
                }
                let updated = Self::bind_license_fields(sqlx::query_as::<_, License>($crate::sql::UPDATE_LICENSE), &c)
                    .bind(now_ms())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(after) = updated else {
                    let current = Self::license_in(&mut tx, workspace_id, id).await?;
                    return Err(StoreError::SeatsInUse {
                        requested: c.seats_total,
                        seats_used: current.seats_used,
                    });
                };
                Self::sync_reminders(&mut tx, &after).await?;
                Self::insert_event(&mut tx, workspace_id, actor, "license.updated", ("license", id), Some(id), json(&before), json(&after)).await?;
                self.commit(tx).await?;
                Ok(after)
            }

            async fn delete_license(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let before = Self::locked_license(&mut tx, workspace_id, id).await?;
                Self::release_seats(
                    &mut tx,
                    actor,
                    &before,
                    SeatKind::ALL,
                    ReleaseReason::LicenseDeleted,
                )
                .await?;
                sqlx::query("DELETE FROM reminders WHERE license_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE licenses SET deleted_at = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "license.deleted", ("license", id), Some(id), json(&before), None).await?;
                self.commit(tx).await?;
                Ok(())
            }

            async fn reveal_license_key(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Vec<u8>> {
                let mut tx = self.begin_write().await?;
                let license = Self::license_in(&mut tx, workspace_id, id).await?;
                Self::insert_event(&mut tx, workspace_id, actor, "license.key_revealed", ("license", id), Some(id), None, None).await?;
                self.commit(tx).await?;
                Ok(license.key_enc)
            }

            async fn assign_seat(
                &self,
                actor: &Actor,
                workspace_id: &str,
                license_id: &str,
                assignment: NewAssignment,
            ) -> Result<Seat> {
                let mut tx = self.begin_write().await?;
                let license = Self::license_in(&mut tx, workspace_id, license_id).await?;
                if license.seat_model == SeatModel::Concurrent {
                    return Err(StoreError::Conflict(
                        "seats of a concurrent license are taken by leases, not assigned".into(),
                    ));
                }
                if let Some(contact_id) = &assignment.contact_id {
                    let contact: Option<(String,)> =
                        sqlx::query_as("SELECT id FROM contacts WHERE id = $1 AND workspace_id = $2")
                            .bind(contact_id)
                            .bind(workspace_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if contact.is_none() {
                        return Err(StoreError::invalid("contact_id", "no such contact"));
                    }
                }
                // The invariant, decided in one statement: a seat is counted only if one is free.
                if !Self::try_take_seat(&mut tx, license_id, SeatModel::Dedicated, false).await? {
                    // Full, or changed or deleted meanwhile (then this answers not found).
                    let current = Self::license_in(&mut tx, workspace_id, license_id).await?;
                    if current.seat_model != SeatModel::Dedicated {
                        return Err(StoreError::refused(leasehold_core::lease::Refusal::OtherModel(current.seat_model), None));
                    }
                    return Err(StoreError::SeatOverAllocated {
                        seats_total: current.seats_total,
                        seats_used: current.seats_used,
                    });
                }
                let id = new_id();
                sqlx::query(
                    "INSERT INTO seats (id, workspace_id, license_id, kind, contact_id, assignee_name, device_name, \
                     serial_key_enc, serial_key_masked, activated_on, created_at) \
                     VALUES ($1, $2, $3, 'assignment', $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&id)
                .bind(workspace_id)
                .bind(license_id)
                .bind(&assignment.contact_id)
                .bind(&assignment.assignee_name)
                .bind(&assignment.device_name)
                .bind(&assignment.serial_key_enc)
                .bind(&assignment.serial_key_masked)
                .bind(assignment.activated_on)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                let seat = Self::seat_in(&mut tx, workspace_id, &id).await?;
                Self::insert_event(&mut tx, workspace_id, actor, "seat.assigned", ("seat", &id), Some(license_id), None, json(&seat)).await?;
                self.commit(tx).await?;
                Ok(seat)
            }

            async fn list_seats(
                &self,
                workspace_id: &str,
                license_id: &str,
                active_only: bool,
                page: &PageRequest,
            ) -> Result<Page<Seat>> {
                self.license(workspace_id, license_id).await?;
                let rows = sqlx::query_as::<_, Seat>(concat!(
                    seat_select!(),
                    "WHERE s.license_id = $1 AND s.workspace_id = $2 AND ($3 = '' OR s.id < $3) \
                     AND ($4 = FALSE OR s.released_at IS NULL) ORDER BY s.id DESC LIMIT $5"
                ))
                .bind(license_id)
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(active_only)
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |s| s.id.clone()))
            }

            async fn reclaim_seat(&self, actor: &Actor, workspace_id: &str, seat_id: &str) -> Result<Seat> {
                let mut tx = self.begin_write().await?;
                let found = Self::seat_in(&mut tx, workspace_id, seat_id).await?;
                Self::lock_license(&mut tx, &found.license_id).await?;
                let before = Self::seat_in(&mut tx, workspace_id, seat_id).await?;
                let license = Self::license_in(&mut tx, workspace_id, &before.license_id).await?;
                let reason = if before.kind == SeatKind::Assignment {
                    ReleaseReason::Reclaimed
                } else if license.admin_release == AdminRelease::Allowed {
                    ReleaseReason::AdminRelease
                } else {
                    return Err(StoreError::Conflict(
                        "this license's policy does not let admins release seats that applications hold".into(),
                    ));
                };
                let reclaimed_on = (reason == ReleaseReason::Reclaimed).then(today);
                let ended = sqlx::query(
                    "UPDATE seats SET released_at = $1, release_reason = $2, reclaimed_on = $3 \
                     WHERE id = $4 AND released_at IS NULL",
                )
                .bind(now_ms())
                .bind(reason)
                .bind(reclaimed_on)
                .bind(seat_id)
                .execute(&mut *tx)
                .await?;
                if ended.rows_affected() == 0 {
                    return Err(StoreError::Conflict("the seat is released already".into()));
                }
                sqlx::query("UPDATE licenses SET seats_used = seats_used - 1 WHERE id = $1")
                    .bind(&license.id)
                    .execute(&mut *tx)
                    .await?;
                let after = Self::seat_in(&mut tx, workspace_id, seat_id).await?;
                Self::insert_event(&mut tx, workspace_id, actor, "seat.reclaimed", ("seat", seat_id), Some(&license.id), json(&before), json(&after)).await?;
                self.commit(tx).await?;
                Ok(after)
            }

            async fn create_contact(&self, actor: &Actor, workspace_id: &str, contact: NewContact) -> Result<Contact> {
                let mut tx = self.begin_write().await?;
                let created = sqlx::query_as::<_, Contact>(
                    "INSERT INTO contacts (id, workspace_id, name, email, status, created_at) \
                     VALUES ($1, $2, $3, $4, 'active', $5) RETURNING *",
                )
                .bind(new_id())
                .bind(workspace_id)
                .bind(&contact.name)
                .bind(&contact.email)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "contact.created", ("contact", &created.id), None, None, json(&created)).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn contact(&self, workspace_id: &str, id: &str) -> Result<Contact> {
                sqlx::query_as::<_, Contact>("SELECT * FROM contacts WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(self.reader())
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn list_contacts(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Contact>> {
                let rows = sqlx::query_as::<_, Contact>(
                    "SELECT * FROM contacts WHERE workspace_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
                )
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |c| c.id.clone()))
            }

            async fn terminate_contact(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Contact> {
                let mut tx = self.begin_write().await?;
                let before = sqlx::query_as::<_, Contact>("SELECT * FROM contacts WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let after = sqlx::query_as::<_, Contact>(
                    "UPDATE contacts SET status = 'terminated', terminated_at = COALESCE(terminated_at, $1) \
                     WHERE id = $2 RETURNING *",
                )
                .bind(now_ms())
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "contact.terminated", ("contact", id), None, json(&before), json(&after)).await?;
                self.commit(tx).await?;
                Ok(after)
            }

            async fn contact_seats(&self, workspace_id: &str, contact_id: &str) -> Result<Vec<Seat>> {
                self.contact(workspace_id, contact_id).await?;
                Ok(sqlx::query_as::<_, Seat>(concat!(
                    seat_select!(),
                    "WHERE s.contact_id = $1 AND s.workspace_id = $2 AND s.released_at IS NULL ORDER BY s.id DESC"
                ))
                .bind(contact_id)
                .bind(workspace_id)
                .fetch_all(self.reader())
                .await?)
            }

            async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>> {
                Ok(sqlx::query_as::<_, License>("SELECT * FROM licenses WHERE key_hash = $1 AND deleted_at IS NULL")
                    .bind(key_hash)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn held_seat(&self, license_id: &str, kind: SeatKind, fingerprint: &str) -> Result<Option<$crate::HeldSeat>> {
                let sql = match kind {
                    SeatKind::Activation => $crate::sql::HOLDS_ACTIVATION,
                    SeatKind::Lease => $crate::sql::HOLDS_LEASE,
                    SeatKind::Assignment => $crate::sql::HOLDS_ASSIGNMENT,
                };
                let found: Option<(Option<i64>,)> = sqlx::query_as(sql)
                    .bind(license_id)
                    .bind(fingerprint)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(found.map(|(expires_at,)| $crate::HeldSeat { expires_at }))
            }

            async fn activate(&self, license: &std::sync::Arc<License>, fingerprint: &str, identifier: Option<&str>) -> Result<(Seat, bool)> {
                // Two first activations of one machine racing on different nodes: the loser
                // hits the unique index and, retried, finds the winner's seat.
                if let Some(activated) = self.fast_activate(license, fingerprint, identifier).await? {
                    return Ok(activated);
                }
                let mut attempt = 0;
                loop {
                    match self.activate_once(license, fingerprint, identifier).await {
                        Err(StoreError::Database(e)) if is_unique_violation(&e) && attempt < 3 => attempt += 1,
                        other => return other,
                    }
                }
            }

            async fn deactivate(&self, license: &std::sync::Arc<License>, fingerprint: &str) -> Result<Seat> {
                if let Some(released) = self.fast_deactivate(license, fingerprint).await? {
                    return Ok(released);
                }
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                // Locked, so concurrent releases count each other against the monthly limit.
                Self::lock_license(&mut tx, &license.id).await?;
                let seat = Self::active_seat_of(&mut tx, &license.id, SeatKind::Activation, fingerprint, None)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let month_start = leasehold_core::lease::month_start(today());
                let (used,): (i64,) = sqlx::query_as($crate::sql::TRANSFERS_SINCE)
                .bind(&license.id)
                .bind(month_start)
                .fetch_one(&mut *tx)
                .await?;
                license.policy().self_service_release(used)?;
                if !Self::end_seat(&mut tx, &seat, ReleaseReason::Transferred, now).await? {
                    return Err(StoreError::NotFound);
                }
                let after = Self::seat_in(&mut tx, &license.workspace_id, &seat.id).await?;
                Self::insert_event(&mut tx, &license.workspace_id, &key_actor(license, seat.identifier.as_deref()), "seat.released", ("seat", &seat.id), Some(&license.id), json(&seat), json(&after)).await?;
                self.commit(tx).await?;
                Ok(after)
            }

            async fn take_lease(&self, license: &std::sync::Arc<License>, holder: &LeaseHolder) -> Result<(Seat, bool)> {
                if let Some(taken) = self.fast_take_lease(license, holder).await? {
                    return Ok(taken);
                }
                let mut attempt = 0;
                loop {
                    match self.take_lease_once(license, holder).await {
                        Err(StoreError::Database(e)) if is_unique_violation(&e) && attempt < 3 => attempt += 1,
                        other => return other,
                    }
                }
            }

            async fn heartbeat(&self, license: &std::sync::Arc<License>, lease_id: &str, instance: &str) -> Result<i64> {
                let now = now_ms();
                let expires_at = license.policy().lease_expiry(now);
                if let Some(beat) = self.fast_heartbeat(license, lease_id, instance, expires_at, now).await? {
                    return beat;
                }
                // The hot path: one statement on one row.
                let mut live = self.touch_lease(lease_id, &license.id, expires_at, now).await?;
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
                        if seat.released_at.is_none() && Self::end_seat(&mut tx, &seat, ReleaseReason::Expired, now).await? {
                            Self::insert_event(&mut tx, &license.workspace_id, &Actor::system(), "seat.expired", ("seat", &seat.id), Some(&license.id), json(&seat), None).await?;
                        }
                        self.commit(tx).await?;
                        return Err(StoreError::LeaseExpired);
                    }
                    sqlx::query($crate::sql::TOUCH_LEASE_SOONER)
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
                        sqlx::query($crate::sql::JOIN_INSTANCE)
                            .bind(list.to_stored())
                            .bind(lease_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    self.commit(tx).await?;
                }
                Ok(expires_at)
            }

            async fn release_instance(&self, license: &std::sync::Arc<License>, lease_id: &str, instance: &str) -> Result<bool> {
                if let Some(released) = self.fast_release_instance(license, lease_id, instance).await? {
                    return Ok(released);
                }
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                // The license lock serialises changes to the instance list.
                Self::lock_license(&mut tx, &license.id).await?;
                let seat = Self::seat_in(&mut tx, &license.workspace_id, lease_id).await?;
                if seat.license_id != license.id || seat.kind != SeatKind::Lease {
                    return Err(StoreError::NotFound);
                }
                if seat.released_at.is_some() {
                    return Ok(true);
                }
                let mut instances = seat.instance_set();
                if instances.leave(instance) {
                    if Self::end_seat(&mut tx, &seat, ReleaseReason::Checkin, now).await? {
                        let after = Self::seat_in(&mut tx, &license.workspace_id, lease_id).await?;
                        Self::insert_event(&mut tx, &license.workspace_id, &key_actor(license, seat.identifier.as_deref()), "seat.released", ("seat", lease_id), Some(&license.id), json(&seat), json(&after)).await?;
                    }
                    self.commit(tx).await?;
                    return Ok(true);
                }
                sqlx::query($crate::sql::SET_INSTANCES)
                    .bind(instances.to_stored())
                    .bind(now)
                    .bind(lease_id)
                    .execute(&mut *tx)
                    .await?;
                self.commit(tx).await?;
                Ok(false)
            }

            async fn expire_leases(&self, from: &str, limit: i64, probes: i64) -> Result<$crate::SweepChunk> {
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
                    $crate::Swept::default()
                } else if let Some(swept) = self.fast_expire_leases(&licenses, now, limit).await? {
                    // SQLite: the whole chunk on the seat writer, inside its batch.
                    swept
                } else {
                    // PostgreSQL: each license locked first, like on every other path. Waits
                    // for a checkout holding the lock (it is brief) rather than skip: a
                    // skipped license would be missed until the next pass. Another node
                    // sweeping the same license is waited for too, and then finds its
                    // leases already ended.
                    let mut swept = $crate::Swept::default();
                    let mut handled = 0;
                    for (license_id, _) in licenses {
                        let mut tx = self.begin_write().await?;
                        let license = sqlx::query_as::<_, License>(concat!("SELECT * FROM licenses WHERE id = $1", $lock))
                            .bind(&license_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if let Some(license) = license {
                            let (expired, moved) = Self::expire_license_leases(&mut tx, &license, now, limit - handled).await?;
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
                Ok($crate::SweepChunk { expired: swept.expired, resume_at, probed: probed_count })
            }

            async fn workspace_signing_key(&self, workspace_id: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
                if let Some(key) = self.workspace(workspace_id).await?.signing_key_enc {
                    return Ok(key);
                }
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE workspaces SET signing_key_enc = $1 WHERE id = $2 AND signing_key_enc IS NULL")
                    .bind(candidate)
                    .bind(workspace_id)
                    .execute(&mut *tx)
                    .await?;
                let stored = Self::workspace_in(&mut tx, workspace_id).await?;
                self.commit(tx).await?;
                stored
                    .signing_key_enc
                    .ok_or_else(|| StoreError::Corrupt("signing key not stored".into()))
            }

            async fn create_member(&self, actor: &Actor, workspace_id: &str, member: NewMember) -> Result<Member> {
                let mut tx = self.begin_write().await?;
                let created = sqlx::query_as::<_, Member>(
                    "INSERT INTO members (id, workspace_id, email, password_hash, role, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                )
                .bind(new_id())
                .bind(workspace_id)
                .bind(&member.email)
                .bind(&member.password_hash)
                .bind(member.role)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict("a member with this email exists already".into())
                    } else {
                        e.into()
                    }
                })?;
                Self::insert_event(&mut tx, workspace_id, actor, "member.created", ("member", &created.id), None, None, json(&created)).await?;
                self.commit(tx).await?;
                Ok(created)
            }

            async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>> {
                Ok(sqlx::query_as::<_, Member>("SELECT * FROM members WHERE workspace_id = $1 ORDER BY email")
                    .bind(workspace_id)
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn members_by_email(&self, email: &str) -> Result<Vec<Member>> {
                Ok(sqlx::query_as::<_, Member>("SELECT * FROM members WHERE email = $1 ORDER BY id")
                    .bind(email)
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn member(&self, workspace_id: &str, id: &str) -> Result<Member> {
                sqlx::query_as::<_, Member>("SELECT * FROM members WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(self.reader())
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            async fn update_member(&self, actor: &Actor, workspace_id: &str, id: &str, change: MemberChange) -> Result<Member> {
                let mut tx = self.begin_write().await?;
                let (before, other_owners) = Self::member_for_change(&mut tx, workspace_id, id).await?;
                let role = change.role.unwrap_or(before.role);
                let disabled_at = match change.disabled {
                    Some(true) => before.disabled_at.or(Some(now_ms())),
                    Some(false) => None,
                    None => before.disabled_at,
                };
                let after = leasehold_core::perm::Standing { role, disabled: disabled_at.is_some() };
                leasehold_core::perm::change_member(before.standing(), Some(after), other_owners)?;
                let updated = sqlx::query_as::<_, Member>(
                    "UPDATE members SET role = $1, disabled_at = $2 WHERE id = $3 AND workspace_id = $4 RETURNING *",
                )
                .bind(role)
                .bind(disabled_at)
                .bind(id)
                .bind(workspace_id)
                .fetch_one(&mut *tx)
                .await?;
                if updated.disabled_at.is_some() {
                    sqlx::query("DELETE FROM sessions WHERE member_id = $1").bind(id).execute(&mut *tx).await?;
                }
                Self::insert_event(&mut tx, workspace_id, actor, "member.updated", ("member", id), None, json(&before), json(&updated)).await?;
                self.commit(tx).await?;
                Ok(updated)
            }

            async fn delete_member(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Member> {
                let mut tx = self.begin_write().await?;
                let (before, other_owners) = Self::member_for_change(&mut tx, workspace_id, id).await?;
                leasehold_core::perm::change_member(before.standing(), None, other_owners)?;
                sqlx::query("DELETE FROM sessions WHERE member_id = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM members WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .execute(&mut *tx)
                    .await?;
                Self::insert_event(&mut tx, workspace_id, actor, "member.removed", ("member", id), None, json(&before), None).await?;
                self.commit(tx).await?;
                Ok(before)
            }

            async fn create_session(&self, session: Session) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO sessions (token_hash, kind, workspace_id, member_id, license_id, csrf_token, \
                     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&session.token_hash)
                .bind(&session.kind)
                .bind(&session.workspace_id)
                .bind(&session.member_id)
                .bind(&session.license_id)
                .bind(&session.csrf_token)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(&mut *tx)
                .await?;
                self.commit(tx).await?;
                Ok(())
            }

            async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
                Ok(sqlx::query_as::<_, Session>("SELECT * FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                    .bind(token_hash)
                    .bind(now_ms())
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn delete_session(&self, token_hash: &str) -> Result<()> {
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn dismiss_reminder(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<Reminder> {
                let mut tx = self.begin_write().await?;
                let dismissed = sqlx::query_as::<_, Reminder>(
                    "UPDATE reminders SET state = 'dismissed', dismissed_at = $1 \
                     WHERE id = $2 AND workspace_id = $3 RETURNING *",
                )
                .bind(now_ms())
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                Self::insert_event(&mut tx, workspace_id, actor, "reminder.dismissed", ("reminder", id), Some(&dismissed.license_id), None, json(&dismissed)).await?;
                self.commit(tx).await?;
                Ok(dismissed)
            }

            async fn list_reminders(
                &self,
                workspace_id: &str,
                filter: &ReminderFilter,
                page: &PageRequest,
            ) -> Result<Page<Reminder>> {
                let (after_day, after_id) = match page.cursor.as_deref().and_then(|c| c.split_once('|')) {
                    Some((day, id)) => (
                        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                            .map_err(|_| StoreError::invalid("cursor", "not a cursor of this list"))?,
                        id.to_string(),
                    ),
                    None if page.cursor.is_some() => {
                        return Err(StoreError::invalid("cursor", "not a cursor of this list"))
                    }
                    None => ($crate::sql::first_day(), String::new()),
                };
                let rows = sqlx::query_as::<_, Reminder>(
                    "SELECT r.*, o.state AS delivery FROM reminders r JOIN licenses l ON l.id = r.license_id \
                     LEFT JOIN outbox o ON o.id = r.outbox_id WHERE r.workspace_id = $1 AND l.deleted_at IS NULL \
                     AND (r.due_on > $2 OR (r.due_on = $2 AND r.id > $3)) \
                     AND ($4 = '' OR r.license_id = $4) AND r.due_on <= $5 AND ($6 = '' OR r.state = $6) \
                     ORDER BY r.due_on, r.id LIMIT $7",
                )
                .bind(workspace_id)
                .bind(after_day)
                .bind(after_id)
                .bind(filter.license_id.as_deref().unwrap_or(""))
                .bind(filter.due_before.unwrap_or($crate::sql::last_day()))
                .bind(filter.state.map(|s| s.as_str()).unwrap_or(""))
                .bind(page.fetch_limit())
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |r| format!("{}|{}", r.due_on, r.id)))
            }

            async fn list_events(&self, workspace_id: &str, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>> {
                // One license's events are read through their own index (events_license
                // on PostgreSQL, the license_events table on SQLite): in one text,
                // `($3 = '' OR license_id = $3)` would keep SQLite (and a generic
                // PostgreSQL plan) on the workspace's index, reading every other
                // license's events too.
                let sql = if filter.license_id.is_some() {
                    match $backend {
                        Backend::Sqlite => $crate::sql::SQLITE_LICENSE_EVENTS,
                        Backend::Postgres => $crate::sql::LICENSE_EVENTS,
                    }
                } else {
                    $crate::sql::WORKSPACE_EVENTS
                };
                let rows = sqlx::query_as::<_, Event>(sql)
                .bind(workspace_id)
                .bind(page.cursor.as_deref().unwrap_or(TOP_CURSOR))
                .bind(filter.license_id.as_deref().unwrap_or(""))
                .bind(filter.action.as_deref().unwrap_or(""))
                .bind(page.fetch_limit())
                .bind(filter.scope.members_and_tokens)
                .bind(filter.scope.notifications)
                .fetch_all(self.reader())
                .await?;
                Ok(Page::from_fetched(rows, page, |e| e.id.clone()))
            }
        }
    };
}
