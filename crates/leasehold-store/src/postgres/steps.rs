//! The steps of PostgreSQL's seat operations inside their transaction: the license
//! locked, the holder's seat and last admin release read, the domain's seat decision
//! asked and each of its steps applied (`take_in`, `release_in`, activations, expiries),
//! a refusal announced. `seats.rs` and the batch (`batch.rs`) run them.

use super::PostgresStore;
use crate::records::*;
use crate::sql::{json, EXPIRE_CHUNK};
use crate::{Result, StoreError};
use leasehold_core::*;

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Steps that run inside a seat operation's transaction.
impl PostgresStore {
    pub(crate) async fn locked_license(
        tx: &mut Tx,
        workspace_id: &str,
        id: &str,
    ) -> Result<License> {
        sqlx::query_as::<_, License>(concat!(license_select!(), " FOR NO KEY UPDATE"))
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub(crate) async fn seat_in(tx: &mut Tx, workspace_id: &str, id: &str) -> Result<Seat> {
        sqlx::query_as::<_, Seat>(crate::sql::SEAT_BY_ID)
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Announces a refused seat request (`seat.denied`) to the workspace's webhooks.
    pub(crate) async fn announce_denial(
        tx: &mut Tx,
        license: &License,
        fingerprint: &str,
        os_user: Option<&str>,
        refusal: &StoreError,
    ) -> Result<()> {
        let data = crate::sql::denial_data(license, fingerprint, os_user, refusal);
        Self::enqueue_webhooks(
            tx,
            &license.workspace_id,
            "seat.denied",
            &new_id(),
            &data,
            now_ms(),
        )
        .await
    }

    /// Counts one more seat if one is free: the invariant, in one statement. The same
    /// statement re-checks what the caller read before its transaction: the seat
    /// model and, for applications (`in_force`), that the license is active today.
    pub(crate) async fn try_take_seat(
        tx: &mut Tx,
        license_id: &str,
        model: SeatModel,
        in_force: bool,
    ) -> Result<bool> {
        let taken = sqlx::query(crate::sql::TRY_TAKE_SEAT)
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
    pub(crate) async fn lock_license(tx: &mut Tx, license_id: &str) -> Result<()> {
        sqlx::query(concat!(
            "SELECT id FROM licenses WHERE id = $1",
            " FOR NO KEY UPDATE"
        ))
        .bind(license_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(())
    }

    /// Ends one active seat (if it still is) and frees it in the counter.
    pub(crate) async fn end_seat(
        tx: &mut Tx,
        seat: &Seat,
        reason: ReleaseReason,
        now: i64,
    ) -> Result<bool> {
        let ended = sqlx::query(crate::sql::END_SEAT)
            .bind(now)
            .bind(reason)
            .bind(&seat.id)
            .execute(&mut **tx)
            .await?;
        if ended.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(crate::sql::FREE_SEAT)
            .bind(&seat.license_id)
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// Ends one live lease with `reason` (if it still is live), frees its seat and audits
    /// it: `seat.expired`, or `seat.released` by the system (idle) or by its holder.
    pub(crate) async fn end_lease_in(
        tx: &mut Tx,
        license: &License,
        seat: &Seat,
        reason: ReleaseReason,
        now: i64,
    ) -> Result<bool> {
        if !Self::end_seat(tx, seat, reason, now).await? {
            return Ok(false);
        }
        let (actor, action, after) = seat.end_event(license, reason, now);
        Self::insert_event(
            tx,
            &license.workspace_id,
            &actor,
            action,
            ("seat", &seat.id),
            Some(&license.id),
            json(seat),
            after,
        )
        .await?;
        Ok(true)
    }

    /// Under `idle_reclaim: always`, ends up to `limit` of the license's idle leases
    /// (reason `idle`, DESIGN §7), as SQLite's `end_idle_leases` does: those it ended.
    async fn end_idle_leases(
        tx: &mut Tx,
        license: &License,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Seat>> {
        let policy = license.policy();
        let Some(cutoff) = policy
            .idle_cutoff(now)
            .filter(|_| policy.idle_reclaim == IdleReclaim::Always)
        else {
            return Ok(Vec::new());
        };
        let idle: Vec<Seat> = sqlx::query_as(crate::sql::IDLE_LEASES)
            .bind(&license.id)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        let mut ended = Vec::with_capacity(idle.len());
        for seat in idle {
            if Self::end_lease_in(tx, license, &seat, ReleaseReason::Idle, now).await? {
                ended.push(seat);
            }
        }
        Ok(ended)
    }

    /// Before a full license refuses: ends its lapsed leases (up to a chunk of them),
    /// however many leases have their `sweep_at` to move on first. Answers how many ended.
    pub(crate) async fn expire_all_lapsed(
        tx: &mut Tx,
        license: &License,
        now: i64,
    ) -> Result<usize> {
        loop {
            let (expired, moved) =
                Self::expire_license_leases(tx, license, now, EXPIRE_CHUNK).await?;
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
    pub(crate) async fn expire_license_leases(
        tx: &mut Tx,
        license: &License,
        now: i64,
        limit: i64,
    ) -> Result<(Vec<Seat>, i64)> {
        let mut idle = Self::end_due_borrows(tx, license, now, limit).await?;
        if (idle.len() as i64) < limit {
            let left = limit - idle.len() as i64;
            idle.extend(Self::end_idle_leases(tx, license, now, left).await?);
        }
        if idle.is_empty() {
            return Self::expire_lapsed_leases(tx, license, now, limit).await;
        }
        let left = limit - idle.len() as i64;
        if left <= 0 {
            return Ok((idle, 0));
        }
        let (expired, moved) = Self::expire_lapsed_leases(tx, license, now, left).await?;
        Ok((idle.into_iter().chain(expired).collect(), moved))
    }

    /// The lapsed part of [`Self::expire_license_leases`].
    async fn expire_lapsed_leases(
        tx: &mut Tx,
        license: &License,
        now: i64,
        limit: i64,
    ) -> Result<(Vec<Seat>, i64)> {
        let moved = sqlx::query(crate::sql::RESWEEP_LEASES)
            .bind(&license.id)
            .bind(now)
            .bind(limit)
            .execute(&mut **tx)
            .await?
            .rows_affected() as i64;
        if moved >= limit {
            return Ok((Vec::new(), moved));
        }
        let lapsed: Vec<Seat> = sqlx::query_as::<_, Seat>(crate::sql::LAPSED_LEASES)
            .bind(&license.id)
            .bind(now)
            .bind(limit - moved)
            .fetch_all(&mut **tx)
            .await?;
        if lapsed.is_empty() {
            return Ok((lapsed, moved));
        }
        let mut ended =
            sqlx::QueryBuilder::<sqlx::Postgres>::new("UPDATE seats SET released_at = ");
        ended
            .push_bind(now)
            .push(", release_reason = ")
            .push_bind(ReleaseReason::Expired);
        ended.push(" WHERE released_at IS NULL AND id IN (");
        let mut ids = ended.separated(", ");
        for seat in &lapsed {
            ids.push_bind(&seat.id);
        }
        ended.push(") RETURNING id");
        let ended: std::collections::HashSet<String> = ended
            .build_query_scalar::<String>()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        let expired: Vec<Seat> = lapsed
            .into_iter()
            .filter(|s| ended.contains(&s.id))
            .collect();
        if expired.is_empty() {
            return Ok((expired, moved));
        }
        sqlx::query(crate::sql::FREE_SEATS)
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
                let data = crate::sql::webhook_data(
                    ("seat", &seat.id),
                    Some(&license.id),
                    json(seat).as_deref(),
                    None,
                );
                Self::enqueue_webhooks(tx, &license.workspace_id, "seat.expired", id, &data, now)
                    .await?;
            }
        }
        let mut events = sqlx::QueryBuilder::<sqlx::Postgres>::new(
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
    pub(crate) async fn last_admin_release(
        tx: &mut Tx,
        license: &License,
        fingerprint: &str,
        os_user: &str,
    ) -> Result<Option<i64>> {
        if !license.policy().has_release_cooldown() {
            return Ok(None);
        }
        let (last,): (Option<i64>,) = sqlx::query_as(crate::sql::LAST_ADMIN_RELEASE)
            .bind(&license.id)
            .bind(fingerprint)
            .bind(os_user)
            .fetch_one(&mut **tx)
            .await?;
        Ok(last)
    }

    /// Answers the seat decision's refusal ([`Self::refusal_in`]), committed with what
    /// the transaction did before (expiries it made).
    pub(crate) async fn refuse<T>(
        &self,
        mut tx: Tx,
        license: &License,
        fingerprint: &str,
        os_user: Option<&str>,
        refusal: leasehold_core::lease::Refusal,
    ) -> Result<T> {
        let refused = Self::refusal_in(&mut tx, license, fingerprint, os_user, refusal).await?;
        self.commit(tx).await?;
        Err(refused)
    }

    /// The error a refusal answers, in the caller's transaction: a full license says when
    /// its earliest lease could lapse, and an announced refusal queues `seat.denied`.
    pub(crate) async fn refusal_in(
        tx: &mut Tx,
        license: &License,
        fingerprint: &str,
        os_user: Option<&str>,
        refusal: leasehold_core::lease::Refusal,
    ) -> Result<StoreError> {
        let next_expiry_ms = match refusal {
            leasehold_core::lease::Refusal::Full { .. } => {
                let (next,): (Option<i64>,) = sqlx::query_as(crate::sql::NEXT_LEASE_EXPIRY)
                    .bind(&license.id)
                    .fetch_one(&mut **tx)
                    .await?;
                next
            }
            _ => None,
        };
        let error = StoreError::refused(refusal, next_expiry_ms);
        if matches!(refusal, leasehold_core::lease::Refusal::Full { .. }) {
            Self::count_denial(tx, &license.id, (fingerprint, os_user)).await?;
        }
        if refusal.is_announced() {
            Self::announce_denial(tx, license, fingerprint, os_user, &error).await?;
        }
        Ok(error)
    }

    /// Counts a refusal of `who` (machine, OS user) this hour for usage (DESIGN §8): a
    /// `NO_SEATS` answer, or a waiter leaving the queue without a seat.
    async fn count_denial(
        tx: &mut Tx,
        license_id: &str,
        (fingerprint, os_user): (&str, Option<&str>),
    ) -> Result<()> {
        sqlx::query(crate::sql::COUNT_DENIAL)
            .bind(license_id)
            .bind(usage::hour_of(now_ms()))
            .bind(usage::holder_key(Some(fingerprint), os_user, ""))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(crate) async fn active_seat_of(
        tx: &mut Tx,
        license_id: &str,
        kind: SeatKind,
        fingerprint: &str,
        os_user: Option<&str>,
    ) -> Result<Option<Seat>> {
        let query = match (kind, os_user) {
            (SeatKind::Lease, Some(os_user)) => sqlx::query_as::<_, Seat>(crate::sql::ACTIVE_LEASE)
                .bind(license_id)
                .bind(fingerprint)
                .bind(os_user),
            (SeatKind::Activation, None) => {
                sqlx::query_as::<_, Seat>(crate::sql::ACTIVE_ACTIVATION)
                    .bind(license_id)
                    .bind(fingerprint)
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "a lease is held per OS user, an activation per machine".into(),
                ))
            }
        };
        Ok(query.fetch_optional(&mut **tx).await?)
    }

    pub(crate) async fn activate_once(
        &self,
        license: &License,
        fingerprint: &str,
        identifier: Option<&str>,
    ) -> Result<(Seat, bool)> {
        use leasehold_core::lease::{decide_activate, ActivateStep};
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let current = Self::locked_license(&mut tx, &license.workspace_id, &license.id).await?;
        let held = Self::active_seat_of(
            &mut tx,
            &license.id,
            SeatKind::Activation,
            fingerprint,
            None,
        )
        .await?;
        let last_release = match held {
            Some(_) => None,
            None => Self::last_admin_release(&mut tx, license, fingerprint, "").await?,
        };
        match decide_activate(
            &license.policy(),
            &current.seats(today()),
            held.is_some(),
            last_release,
            now,
        ) {
            ActivateStep::Renew => {
                let seat =
                    held.ok_or_else(|| StoreError::Corrupt("renewed no activation".into()))?;
                sqlx::query(crate::sql::RENEW_ACTIVATION)
                    .bind(now)
                    .bind(identifier)
                    .bind(&seat.id)
                    .execute(&mut *tx)
                    .await?;
                let seat = Self::seat_in(&mut tx, &license.workspace_id, &seat.id).await?;
                self.commit(tx).await?;
                return Ok((seat, false));
            }
            ActivateStep::Refuse(refusal) => {
                return self.refuse(tx, license, fingerprint, None, refusal).await
            }
            ActivateStep::Activate => {
                // The guarded count is the invariant's last word (the license is locked).
                if !Self::try_take_seat(&mut tx, &license.id, SeatModel::Dedicated, true).await? {
                    return Err(StoreError::Corrupt(
                        "the seat count moved under the license lock".into(),
                    ));
                }
            }
        }
        let id = new_id();
        sqlx::query(crate::sql::INSERT_ACTIVATION)
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
        Self::insert_event(
            &mut tx,
            &license.workspace_id,
            &key_actor(license, identifier),
            "seat.activated",
            ("seat", &id),
            Some(&license.id),
            None,
            json(&seat),
        )
        .await?;
        self.commit(tx).await?;
        Ok((seat, true))
    }

    /// Audits a place in the queue that ended (`seat.dequeued`, with why).
    pub(crate) async fn dequeued(
        tx: &mut Tx,
        license: &License,
        actor: &Actor,
        place: (&str, &str, Option<&str>, i64),
        reason: &str,
    ) -> Result<()> {
        // A waiter that leaves without a seat was refused one (DESIGN §8).
        Self::count_denial(tx, &license.id, (place.0, Some(place.1))).await?;
        Self::insert_event(
            tx,
            &license.workspace_id,
            actor,
            "seat.dequeued",
            ("license", &license.id),
            Some(&license.id),
            crate::sql::waiter_data(place, Some(reason)),
            None,
        )
        .await
    }

    /// The license's queue as `holder`'s take sees it, and how many wait (nothing more to
    /// read while nobody waits; otherwise silent waiters lose their place first).
    pub(crate) async fn waiting(
        tx: &mut Tx,
        license: &License,
        holder: &LeaseHolder,
        now: i64,
    ) -> Result<(leasehold_core::lease::Waiting, i64)> {
        let (anyone,): (bool,) = sqlx::query_as(crate::sql::HAS_WAITERS)
            .bind(&license.id)
            .fetch_one(&mut **tx)
            .await?;
        if !anyone {
            return Ok((Default::default(), 0));
        }
        let dropped: Vec<(String, String, Option<String>, i64)> =
            sqlx::query_as(crate::sql::DROP_SILENT_WAITERS)
                .bind(&license.id)
                .bind(license.policy().queue_cutoff(now))
                .fetch_all(&mut **tx)
                .await?;
        for (fingerprint, os_user, identifier, since) in &dropped {
            let place = (
                fingerprint.as_str(),
                os_user.as_str(),
                identifier.as_deref(),
                *since,
            );
            Self::dequeued(tx, license, &Actor::system(), place, "silent").await?;
        }
        let since: Option<(i64,)> = sqlx::query_as(crate::sql::WAITER_SINCE)
            .bind(&license.id)
            .bind(&holder.fingerprint)
            .bind(&holder.os_user)
            .fetch_optional(&mut **tx)
            .await?;
        let since = since.map(|(since,)| since);
        let (ahead,): (i64,) = sqlx::query_as(crate::sql::WAITERS_AHEAD)
            .bind(&license.id)
            .bind(since.unwrap_or(i64::MAX))
            .bind(&holder.fingerprint)
            .bind(&holder.os_user)
            .fetch_one(&mut **tx)
            .await?;
        let (queued,): (i64,) = sqlx::query_as(crate::sql::COUNT_WAITERS)
            .bind(&license.id)
            .fetch_one(&mut **tx)
            .await?;
        let waiting = leasehold_core::lease::Waiting {
            ahead,
            queued: since.is_some(),
        };
        Ok((waiting, queued))
    }

    /// The seat decision for a lease, applied in the caller's transaction: the license is
    /// locked, the holder's lease and last admin release read, and each [`TakeStep`]
    /// applied until the holder joins, takes or is refused. The outer `Result` is the
    /// database's; the inner one is the answer, a refusal included (its expiries and its
    /// `seat.denied` are in the transaction: commit it either way).
    pub(crate) async fn take_in(
        tx: &mut Tx,
        license: &License,
        holder: &LeaseHolder,
        now: i64,
    ) -> Result<Result<(Seat, bool)>> {
        use leasehold_core::lease::{decide_take, TakeInput, TakeStep};
        let tx = &mut *tx;
        // The license lock also serialises changes to a lease's instance list.
        let current = Self::locked_license(tx, &license.workspace_id, &license.id).await?;
        let mut held = Self::active_seat_of(
            tx,
            &license.id,
            SeatKind::Lease,
            &holder.fingerprint,
            Some(&holder.os_user),
        )
        .await?;
        let last_admin_release = match held {
            Some(_) => None,
            None => {
                Self::last_admin_release(tx, license, &holder.fingerprint, &holder.os_user).await?
            }
        };
        let borrow: Option<Seat> = sqlx::query_as::<_, Seat>(crate::sql::ACTIVE_BORROW)
            .bind(&license.id)
            .bind(&holder.fingerprint)
            .bind(&holder.os_user)
            .fetch_optional(&mut **tx)
            .await?
            .filter(|borrow| borrow.expires_at.unwrap_or(0) >= now);
        let (waiting, queued) = Self::waiting(tx, license, holder, now).await?;
        let mut input = TakeInput {
            instance: &holder.instance,
            now,
            policy: license.policy(),
            license: current.seats(today()),
            held: held.as_ref().map(Seat::held_lease),
            borrowed: borrow.is_some(),
            last_admin_release,
            lapsed_reclaimed: false,
            idle_reclaimed: false,
            waiting,
            queue: holder.queue,
        };
        let expires_at = loop {
            match decide_take(&input) {
                TakeStep::OnBorrow => {
                    let seat = borrow.ok_or_else(|| StoreError::Corrupt("no borrow".into()))?;
                    return Ok(Ok((seat, false)));
                }
                TakeStep::Join {
                    instances,
                    expires_at,
                    ..
                } => {
                    let seat = held.ok_or_else(|| StoreError::Corrupt("joined no lease".into()))?;
                    sqlx::query(crate::sql::RENEW_LEASE)
                        .bind(instances.to_stored())
                        .bind(expires_at)
                        .bind(now)
                        .bind(&holder.identifier)
                        .bind(&seat.id)
                        .execute(&mut **tx)
                        .await?;
                    let seat = Self::seat_in(tx, &license.workspace_id, &seat.id).await?;
                    return Ok(Ok((seat, false)));
                }
                TakeStep::EndOwnLapsed => {
                    // This holder's old seat ends as expired (kept even if the take is
                    // refused), and it is decided again without it.
                    if let Some(seat) = held.take() {
                        Self::end_lease_in(tx, license, &seat, ReleaseReason::Expired, now).await?;
                    }
                    input.held = None;
                    input.last_admin_release =
                        Self::last_admin_release(tx, license, &holder.fingerprint, &holder.os_user)
                            .await?;
                    input.license = Self::license_in(tx, &license.workspace_id, &license.id)
                        .await?
                        .seats(today());
                }
                TakeStep::ReclaimLapsed => {
                    // Free what crashed apps left behind (kept even if the take is refused).
                    Self::expire_all_lapsed(tx, license, now).await?;
                    input.lapsed_reclaimed = true;
                    input.license = Self::license_in(tx, &license.workspace_id, &license.id)
                        .await?
                        .seats(today());
                }
                TakeStep::ReclaimIdle { idle_before } => {
                    // The longest-idle lease's seat, for this holder (DESIGN §7).
                    let idlest: Option<Seat> = sqlx::query_as(crate::sql::IDLE_LEASES)
                        .bind(&license.id)
                        .bind(idle_before)
                        .bind(1_i64)
                        .fetch_optional(&mut **tx)
                        .await?;
                    if let Some(seat) = idlest {
                        Self::end_lease_in(tx, license, &seat, ReleaseReason::Idle, now).await?;
                    }
                    input.idle_reclaimed = true;
                    input.license = Self::license_in(tx, &license.workspace_id, &license.id)
                        .await?
                        .seats(today());
                }
                TakeStep::Refuse(refusal) => {
                    let refused = Self::refusal_in(
                        tx,
                        license,
                        &holder.fingerprint,
                        Some(&holder.os_user),
                        refusal,
                    )
                    .await?;
                    return Ok(Err(refused.queued(queued, None)));
                }
                TakeStep::Wait => {
                    if !input.waiting.queued {
                        // The queue's length now; a refusal only if the holder leaves it
                        // without a seat (`dequeued`).
                        sqlx::query(crate::sql::PEAK_QUEUED)
                            .bind(&license.id)
                            .bind(usage::hour_of(now))
                            .bind(queued + 1)
                            .execute(&mut **tx)
                            .await?;
                        let place = (
                            holder.fingerprint.as_str(),
                            holder.os_user.as_str(),
                            holder.identifier.as_deref(),
                            now,
                        );
                        Self::insert_event(
                            tx,
                            &license.workspace_id,
                            &key_actor(license, holder.identifier.as_deref()),
                            "seat.queued",
                            ("license", &license.id),
                            Some(&license.id),
                            None,
                            crate::sql::waiter_data(place, None),
                        )
                        .await?;
                    }
                    sqlx::query(crate::sql::HOLD_PLACE)
                        .bind(&license.id)
                        .bind(&holder.fingerprint)
                        .bind(&holder.os_user)
                        .bind(&license.workspace_id)
                        .bind(&holder.identifier)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                    let (position, queued) = match input.waiting.queued {
                        true => (input.waiting.ahead + 1, queued),
                        false => (queued + 1, queued + 1),
                    };
                    let (next,): (Option<i64>,) = sqlx::query_as(crate::sql::NEXT_LEASE_EXPIRY)
                        .bind(&license.id)
                        .fetch_one(&mut **tx)
                        .await?;
                    let full = leasehold_core::lease::Refusal::Full {
                        seats_total: input.license.seats_total,
                        seats_used: input.license.seats_used,
                    };
                    let error = StoreError::refused(full, next).queued(queued, Some(position));
                    return Ok(Err(error));
                }
                TakeStep::Take { expires_at } => {
                    // The guarded count is the invariant's last word (the license is locked).
                    if !Self::try_take_seat(tx, &license.id, SeatModel::Concurrent, true).await? {
                        return Err(StoreError::Corrupt(
                            "the seat count moved under the license lock".into(),
                        ));
                    }
                    if input.waiting.queued {
                        sqlx::query(crate::sql::LEAVE_QUEUE)
                            .bind(&license.id)
                            .bind(&holder.fingerprint)
                            .bind(&holder.os_user)
                            .execute(&mut **tx)
                            .await?;
                    }
                    break expires_at;
                }
            }
        };
        let id = new_id();
        sqlx::query(crate::sql::INSERT_LEASE)
            .bind(&id)
            .bind(&license.workspace_id)
            .bind(&license.id)
            .bind(&holder.fingerprint)
            .bind(&holder.os_user)
            .bind(&holder.identifier)
            .bind(json(&[&holder.instance]))
            .bind(now)
            .bind(expires_at)
            .execute(&mut **tx)
            .await?;
        let seat = Self::seat_in(tx, &license.workspace_id, &id).await?;
        Self::insert_event(
            tx,
            &license.workspace_id,
            &key_actor(license, holder.identifier.as_deref()),
            "seat.taken",
            ("seat", &id),
            Some(&license.id),
            None,
            json(&seat),
        )
        .await?;
        Ok(Ok((seat, true)))
    }

    /// One instance's checkin, in the caller's transaction (inner `Result` as for
    /// [`Self::take_in`]): the lease ends with its last instance.
    pub(crate) async fn release_in(
        tx: &mut Tx,
        license: &License,
        lease_id: &str,
        instance: &str,
        now: i64,
    ) -> Result<Result<bool>> {
        // The license lock serialises changes to the instance list.
        Self::lock_license(tx, &license.id).await?;
        let seat = Self::seat_in(tx, &license.workspace_id, lease_id).await?;
        if seat.license_id == license.id && seat.kind == SeatKind::Borrow {
            // An app that ran on a borrow exits: the borrow keeps its seat to its end.
            return Ok(Ok(seat.released_at.is_some()));
        }
        if seat.license_id != license.id || seat.kind != SeatKind::Lease {
            return Ok(Err(StoreError::NotFound));
        }
        if seat.released_at.is_some() {
            return Ok(Ok(true));
        }
        let mut instances = seat.instance_set();
        if instances.leave(instance) {
            if Self::end_seat(tx, &seat, ReleaseReason::Checkin, now).await? {
                let after = Self::seat_in(tx, &license.workspace_id, lease_id).await?;
                Self::insert_event(
                    tx,
                    &license.workspace_id,
                    &key_actor(license, seat.identifier.as_deref()),
                    "seat.released",
                    ("seat", lease_id),
                    Some(&license.id),
                    json(&seat),
                    json(&after),
                )
                .await?;
            }
            return Ok(Ok(true));
        }
        sqlx::query(crate::sql::SET_INSTANCES)
            .bind(instances.to_stored())
            .bind(now)
            .bind(lease_id)
            .execute(&mut **tx)
            .await?;
        Ok(Ok(false))
    }
}
