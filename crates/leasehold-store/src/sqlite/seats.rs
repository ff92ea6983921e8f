//! The seat operations the writer applies inside its batch: take and activate (the
//! domain's seat decision applied step by step), check-in, deactivate, heartbeat and
//! the sweeper's chunks, with their audit events and webhook messages; an admin's are
//! in `admin.rs`.

use super::writer::{Done, Op};
use super::{admin, borrows};
use crate::outbox::{webhook_event_of, RETRY_WINDOW_MS};
use crate::records::{key_actor, new_id, today, Actor, LeaseHolder, License, Seat};
use crate::sql::{
    denial_data, json, subscribed_pattern, webhook_data, ACTIVE_ACTIVATION, ACTIVE_BORROW,
    ACTIVE_LEASE, COUNT_WAITERS, DROP_SILENT_WAITERS, END_SEAT, ENQUEUE_WEBHOOKS, EXPIRE_CHUNK,
    FLUSH_LEASE, FLUSH_LEASE_SOONER, FREE_SEAT, FREE_SEATS, HAS_WAITERS, HOLD_PLACE, IDLE_LEASES,
    IDLE_REPORT, INSERT_ACTIVATION, INSERT_EVENT, INSERT_LEASE, JOIN_INSTANCE, LAPSED_LEASES,
    LAST_ADMIN_RELEASE, LEAVE_QUEUE, LICENSE_SEATS, NEXT_LEASE_EXPIRY, RENEW_ACTIVATION,
    RENEW_LEASE, RESWEEP_LEASES, SEAT_BY_ID, SET_INSTANCES, TOUCH_LEASE, TOUCH_LEASE_SOONER,
    TRANSFERS_SINCE, TRY_TAKE_SEAT, WAITERS_AHEAD, WAITER_SINCE,
};
use crate::sql::{waiter_data, COUNT_DENIAL, PEAK_QUEUED};
use crate::{StoreError, Swept};
use leasehold_core::lease::{
    decide_activate, decide_take, ActivateStep, IdleReports, Instances, LicenseSeats, Refusal,
    TakeInput, TakeStep, Waiting,
};
use leasehold_core::{
    effective_status, usage, IdleReclaim, LicenseStatus, ReleaseReason, SeatKind, SeatModel,
};
use rusqlite::{params, Connection, OptionalExtension};

/// Workspace → whether it has webhooks, learnt once per batch: the batch is one write
/// transaction, so no webhook can appear or go while it runs.
pub(super) type Webhooks = std::collections::HashMap<String, bool>;

pub(super) const HAS_WEBHOOKS: &str =
    "SELECT EXISTS (SELECT 1 FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL)";

pub(super) fn apply_op(
    conn: &Connection,
    hooks: &mut Webhooks,
    op: &Op,
) -> Result<Done, StoreError> {
    match op {
        Op::Take {
            license,
            holder,
            now,
        } => take(conn, hooks, license, holder, *now),
        Op::Release {
            license,
            lease_id,
            instance,
            now,
        } => release(conn, hooks, license, lease_id, instance, *now),
        Op::Heartbeat {
            license,
            lease_id,
            instance,
            idle_s,
            expires_at,
            now,
        } => heartbeat(
            conn,
            hooks,
            license,
            (lease_id, instance, *idle_s),
            *expires_at,
            *now,
        ),
        Op::Expire {
            licenses,
            now,
            limit,
        } => expire(conn, hooks, licenses, *now, *limit).map(Done::Expired),
        Op::Activate {
            license,
            fingerprint,
            identifier,
            now,
        } => activate(
            conn,
            hooks,
            license,
            fingerprint,
            identifier.as_deref(),
            *now,
        ),
        Op::Deactivate {
            license,
            fingerprint,
            now,
        } => deactivate(conn, hooks, license, fingerprint, *now),
        Op::Assign {
            actor,
            workspace_id,
            license_id,
            assignment,
            now,
        } => admin::assign(
            conn,
            hooks,
            actor,
            (workspace_id, license_id),
            assignment,
            *now,
        ),
        Op::Reclaim {
            actor,
            workspace_id,
            seat_id,
            force,
            now,
        } => admin::reclaim(conn, hooks, actor, workspace_id, (seat_id, *force), *now),
        Op::EditLicense {
            actor,
            workspace_id,
            id,
            change,
            now,
        } => admin::edit_license(conn, hooks, actor, (workspace_id, id), change, *now),
        Op::DeleteLicense {
            actor,
            workspace_id,
            id,
            now,
        } => admin::delete_license(conn, hooks, actor, (workspace_id, id), *now),
        Op::LeaveQueue {
            license,
            fingerprint,
            os_user,
            now,
        } => {
            let left: Option<(String, String, Option<String>, i64)> = conn
                .prepare_cached(LEAVE_QUEUE)?
                .query_row(params![license.id, fingerprint, os_user], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            if let Some((fingerprint, os_user, identifier, since)) = &left {
                let actor = key_actor(license, identifier.as_deref());
                let place = (
                    fingerprint.as_str(),
                    os_user.as_str(),
                    identifier.as_deref(),
                    *since,
                );
                dequeued(conn, hooks, license, &actor, place, "left", *now)?;
            }
            Ok(Done::Released(left.is_some()))
        }
        Op::Borrow {
            license,
            holder,
            days,
            now,
        } => borrows::borrow(conn, hooks, license, holder, *days, *now),
        Op::ReturnBorrow {
            license,
            borrow_id,
            fingerprint,
            now,
        } => borrows::return_borrow(conn, hooks, license, borrow_id, fingerprint, *now),
        Op::Import {
            license_id,
            count,
            now,
            expires_at,
        } => admin::import_leases(conn, license_id, *count, *now, *expires_at),
        Op::Flush { beats } => flush(conn, beats).map(Done::Flushed),
    }
}

/// Heartbeats absorbed in memory, written row by row inside the writer's batch (so
/// ordered with every check-in, sweep and admin release): a released lease, or one that
/// had lapsed before its beat, is not touched. Answers the leases not written.
fn flush(conn: &Connection, beats: &[crate::Beat]) -> Result<Vec<String>, StoreError> {
    let mut touch = conn.prepare_cached(FLUSH_LEASE)?;
    let mut gone = Vec::new();
    for beat in beats {
        let row = params![
            beat.expires_at,
            beat.last_seen_at,
            beat.lease_id,
            beat.license_id
        ];
        if touch.execute(row)? == 0 && conn.prepare_cached(FLUSH_LEASE_SOONER)?.execute(row)? == 0 {
            gone.push(beat.lease_id.clone());
        }
    }
    Ok(gone)
}

/// A sweep's chunk in one transaction: up to `limit` lapsed leases of `licenses` (id,
/// workspace) end (or move their `sweep_at` on), license by license, so the chunk waits
/// for one commit and one fsync however thinly its leases are spread.
pub(super) fn expire(
    conn: &Connection,
    hooks: &mut Webhooks,
    licenses: &[(String, String)],
    now: i64,
    limit: i64,
) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    let mut handled = 0;
    for (license_id, workspace_id) in licenses {
        let (expired, moved) = expire_license(
            conn,
            hooks,
            (workspace_id, license_id),
            now,
            limit - handled,
        )?;
        handled += moved + expired.len() as i64;
        swept.expired.extend(expired);
        if handled >= limit {
            swept.ran_out_in = Some(license_id.clone());
            break;
        }
    }
    Ok(swept)
}

/// Ends up to `limit` of the license's lapsed leases, as PostgreSQL's
/// `expire_license_leases` does: each with its `seat.expired` event. Leases whose
/// `sweep_at` passed though they live on move it first, and count in `limit`: answers the
/// leases ended and how many moved.
pub(super) fn expire_license(
    conn: &Connection,
    hooks: &mut Webhooks,
    (workspace_id, license_id): (&str, &str),
    now: i64,
    limit: i64,
) -> Result<(Vec<Seat>, i64), StoreError> {
    let license = admin::license_by_id(conn, workspace_id, license_id)?;
    let mut expired = borrows::end_due_borrows(conn, hooks, &license, now, limit)?;
    if (expired.len() as i64) < limit {
        let left = limit - expired.len() as i64;
        expired.extend(end_idle_leases(conn, hooks, &license, now, left)?);
    }
    let limit = limit - expired.len() as i64;
    if limit <= 0 {
        return Ok((expired, 0));
    }
    let moved = conn
        .prepare_cached(RESWEEP_LEASES)?
        .execute(params![license_id, now, limit])? as i64;
    if moved >= limit {
        return Ok((expired, moved));
    }
    let lapsed = conn
        .prepare_cached(LAPSED_LEASES)?
        .query_map(params![license_id, now, limit - moved], seat_from_row)?
        .collect::<rusqlite::Result<Vec<Seat>>>()?;
    let idle = expired.len();
    for seat in lapsed {
        let ended = conn.prepare_cached(END_SEAT)?.execute(params![
            now,
            ReleaseReason::Expired.as_str(),
            seat.id
        ])?;
        if ended == 1 {
            insert_event(
                conn,
                hooks,
                (workspace_id, license_id),
                &Actor::system(),
                "seat.expired",
                ("seat", &seat.id),
                json(&seat),
                None,
                now,
            )?;
            expired.push(seat);
        }
    }
    if expired.len() > idle {
        conn.prepare_cached(FREE_SEATS)?
            .execute(params![(expired.len() - idle) as i64, license_id])?;
    }
    Ok((expired, moved))
}

/// Under `idle_reclaim: always`, ends up to `limit` of the license's idle leases (reason
/// `idle`, DESIGN §7), as PostgreSQL's `end_idle_leases` does. Answers those it ended.
fn end_idle_leases(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    now: i64,
    limit: i64,
) -> Result<Vec<Seat>, StoreError> {
    let policy = license.policy();
    let Some(cutoff) = policy
        .idle_cutoff(now)
        .filter(|_| policy.idle_reclaim == IdleReclaim::Always)
    else {
        return Ok(Vec::new());
    };
    let idle = conn
        .prepare_cached(IDLE_LEASES)?
        .query_map(params![license.id, cutoff, limit], seat_from_row)?
        .collect::<rusqlite::Result<Vec<Seat>>>()?;
    let mut ended = Vec::with_capacity(idle.len());
    for seat in idle {
        if end_lease(conn, hooks, license, &seat, ReleaseReason::Idle, now)? {
            ended.push(seat);
        }
    }
    Ok(ended)
}

/// Before a full license refuses: ends its lapsed leases (up to a chunk of them), however
/// many leases have their `sweep_at` to move on first. Answers how many ended.
pub(super) fn expire_all_lapsed(
    conn: &Connection,
    hooks: &mut Webhooks,
    workspace_and_license: (&str, &str),
    now: i64,
) -> Result<i64, StoreError> {
    loop {
        let (expired, moved) =
            expire_license(conn, hooks, workspace_and_license, now, EXPIRE_CHUNK)?;
        if moved < EXPIRE_CHUNK {
            return Ok(expired.len() as i64);
        }
    }
}

/// A floating seat for `holder`: the domain's seat decision ([`decide_take`]) on what
/// this transaction reads, applied step by step. Nothing else writes the seat tables
/// meanwhile (this thread is SQLite's only writer of them), and the guarded count
/// (`TRY_TAKE_SEAT`) is still the invariant's last word.
pub(super) fn take(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    holder: &LeaseHolder,
    now: i64,
) -> Result<Done, StoreError> {
    let mut held = conn
        .prepare_cached(ACTIVE_LEASE)?
        .query_row(
            params![license.id, holder.fingerprint, holder.os_user],
            seat_from_row,
        )
        .optional()?;
    let last_release = match held {
        Some(_) => None,
        None => last_admin_release(conn, license, &holder.fingerprint, &holder.os_user)?,
    };
    let borrow = conn
        .prepare_cached(ACTIVE_BORROW)?
        .query_row(
            params![license.id, holder.fingerprint, holder.os_user],
            seat_from_row,
        )
        .optional()?
        .filter(|borrow| borrow.expires_at.unwrap_or(0) >= now);
    let (waiting, queued) = waiting(conn, hooks, license, holder, now)?;
    let mut input = TakeInput {
        instance: &holder.instance,
        now,
        policy: license.policy(),
        license: license_seats(conn, &license.id)?,
        held: held.as_ref().map(Seat::held_lease),
        borrowed: borrow.is_some(),
        last_admin_release: last_release,
        lapsed_reclaimed: false,
        idle_reclaimed: false,
        waiting,
        queue: holder.queue,
    };
    let expires_at = loop {
        match decide_take(&input) {
            TakeStep::OnBorrow => {
                let seat = borrow.ok_or_else(|| StoreError::Corrupt("no borrow".into()))?;
                return Ok(Done::Taken(Box::new(seat), false));
            }
            TakeStep::Join {
                instances,
                expires_at,
                ..
            } => {
                let seat = held.ok_or_else(|| StoreError::Corrupt("joined no lease".into()))?;
                let instances = Some(instances.to_stored());
                conn.prepare_cached(RENEW_LEASE)?.execute(params![
                    instances,
                    expires_at,
                    now,
                    holder.identifier,
                    seat.id
                ])?;
                // As RENEW_LEASE leaves it (the newest heartbeat's expiry winning).
                let expires_at = leasehold_core::lease::renewed_expiry(
                    seat.expires_at.unwrap_or(0),
                    seat.last_seen_at.unwrap_or(0),
                    expires_at,
                    now,
                );
                let seat = Seat {
                    instances,
                    expires_at: Some(expires_at),
                    last_seen_at: seat.last_seen_at.max(Some(now)),
                    identifier: holder.identifier.clone().or(seat.identifier),
                    ..seat
                };
                return Ok(Done::Taken(Box::new(seat), false));
            }
            TakeStep::EndOwnLapsed => {
                // The holder's old seat ends as expired (kept even if this take is
                // refused); decided again without it.
                if let Some(seat) = held.take() {
                    end_lease(conn, hooks, license, &seat, ReleaseReason::Expired, now)?;
                }
                input.held = None;
                input.last_admin_release =
                    last_admin_release(conn, license, &holder.fingerprint, &holder.os_user)?;
                input.license = license_seats(conn, &license.id)?;
            }
            TakeStep::ReclaimLapsed => {
                // Free what crashed apps left behind (kept even if this take is refused).
                let workspace_and_license = (license.workspace_id.as_str(), license.id.as_str());
                expire_all_lapsed(conn, hooks, workspace_and_license, now)?;
                input.lapsed_reclaimed = true;
                input.license = license_seats(conn, &license.id)?;
            }
            TakeStep::ReclaimIdle { idle_before } => {
                // The longest-idle lease's seat, for this holder (DESIGN §7).
                let idlest = conn
                    .prepare_cached(IDLE_LEASES)?
                    .query_row(params![license.id, idle_before, 1], seat_from_row)
                    .optional()?;
                if let Some(seat) = idlest {
                    end_lease(conn, hooks, license, &seat, ReleaseReason::Idle, now)?;
                }
                input.idle_reclaimed = true;
                input.license = license_seats(conn, &license.id)?;
            }
            TakeStep::Refuse(refusal) => {
                let who = (holder.fingerprint.as_str(), Some(holder.os_user.as_str()));
                return match refuse(conn, hooks, license, who, refusal, now)? {
                    Done::Refused(error) => Ok(Done::Refused(error.queued(queued, None))),
                    done => Ok(done),
                };
            }
            TakeStep::Wait => {
                if !input.waiting.queued {
                    // The queue's length now; a refusal only if the holder leaves it
                    // without a seat (`dequeued`).
                    conn.prepare_cached(PEAK_QUEUED)?.execute(params![
                        license.id,
                        usage::hour_of(now),
                        queued + 1
                    ])?;
                    let place = (
                        holder.fingerprint.as_str(),
                        holder.os_user.as_str(),
                        holder.identifier.as_deref(),
                        now,
                    );
                    insert_event(
                        conn,
                        hooks,
                        (&license.workspace_id, &license.id),
                        &key_actor(license, holder.identifier.as_deref()),
                        "seat.queued",
                        ("license", &license.id),
                        None,
                        waiter_data(place, None),
                        now,
                    )?;
                }
                conn.prepare_cached(HOLD_PLACE)?.execute(params![
                    license.id,
                    holder.fingerprint,
                    holder.os_user,
                    license.workspace_id,
                    holder.identifier,
                    now
                ])?;
                let (position, queued) = match input.waiting.queued {
                    true => (input.waiting.ahead + 1, queued),
                    false => (queued + 1, queued + 1),
                };
                let full = Refusal::Full {
                    seats_total: input.license.seats_total,
                    seats_used: input.license.seats_used,
                };
                let next_expiry = conn
                    .prepare_cached(NEXT_LEASE_EXPIRY)?
                    .query_row(params![license.id], |row| row.get(0))?;
                let error = StoreError::refused(full, next_expiry).queued(queued, Some(position));
                return Ok(Done::Refused(error));
            }
            TakeStep::Take { expires_at } => {
                count_seat(conn, &license.id, SeatModel::Concurrent)?;
                if input.waiting.queued {
                    // Served: the place ends with the seat taken (its `seat.taken` says so).
                    conn.prepare_cached(LEAVE_QUEUE)?
                        .query(params![license.id, holder.fingerprint, holder.os_user])?
                        .next()?;
                }
                break expires_at;
            }
        }
    };
    let seat = Seat::new_lease(license, holder, new_id(), now, expires_at);
    conn.prepare_cached(INSERT_LEASE)?.execute(params![
        seat.id,
        seat.workspace_id,
        seat.license_id,
        seat.fingerprint,
        seat.os_user,
        seat.identifier,
        seat.instances,
        now,
        expires_at
    ])?;
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        &key_actor(license, holder.identifier.as_deref()),
        "seat.taken",
        ("seat", &seat.id),
        None,
        json(&seat),
        now,
    )?;
    Ok(Done::Taken(Box::new(seat), true))
}

/// The license's queue as `holder`'s take sees it, and how many wait: nothing more to
/// read while nobody waits; otherwise the waiters silent past the policy's `queue_ttl_s`
/// lose their place first.
pub(super) fn waiting(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    holder: &LeaseHolder,
    now: i64,
) -> Result<(Waiting, i64), StoreError> {
    let anyone: bool = conn
        .prepare_cached(HAS_WAITERS)?
        .query_row(params![license.id], |row| row.get(0))?;
    if !anyone {
        return Ok((Waiting::default(), 0));
    }
    let cutoff = license.policy().queue_cutoff(now);
    let dropped: Vec<(String, String, Option<String>, i64)> = conn
        .prepare_cached(DROP_SILENT_WAITERS)?
        .query_map(params![license.id, cutoff], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (fingerprint, os_user, identifier, since) in &dropped {
        let place = (
            fingerprint.as_str(),
            os_user.as_str(),
            identifier.as_deref(),
            *since,
        );
        dequeued(conn, hooks, license, &Actor::system(), place, "silent", now)?;
    }
    let since: Option<i64> = conn
        .prepare_cached(WAITER_SINCE)?
        .query_row(
            params![license.id, holder.fingerprint, holder.os_user],
            |row| row.get(0),
        )
        .optional()?;
    let ahead: i64 = conn.prepare_cached(WAITERS_AHEAD)?.query_row(
        params![
            license.id,
            since.unwrap_or(i64::MAX),
            holder.fingerprint,
            holder.os_user
        ],
        |row| row.get(0),
    )?;
    let queued: i64 = conn
        .prepare_cached(COUNT_WAITERS)?
        .query_row(params![license.id], |row| row.get(0))?;
    let waiting = Waiting {
        ahead,
        queued: since.is_some(),
    };
    Ok((waiting, queued))
}

/// Audits a place in the queue that ended (`seat.dequeued`, with why).
fn dequeued(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    actor: &Actor,
    place: (&str, &str, Option<&str>, i64),
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    // A waiter that leaves without a seat was refused one (DESIGN §8).
    count_denial(conn, &license.id, (place.0, Some(place.1)), now)?;
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        actor,
        "seat.dequeued",
        ("license", &license.id),
        waiter_data(place, Some(reason)),
        None,
        now,
    )
}

/// Counts the seat the decision gave: the guarded update (`seats_used < seats_total`, in
/// force, this seat model) is still the invariant's last word. Nothing else writes the
/// counter meanwhile, so a refusal here means the ledger is not what was read.
pub(super) fn count_seat(
    conn: &Connection,
    license_id: &str,
    model: SeatModel,
) -> Result<(), StoreError> {
    let taken = conn.prepare_cached(TRY_TAKE_SEAT)?.execute(params![
        license_id,
        model.as_str(),
        true,
        today()
    ])?;
    if taken != 1 {
        return Err(StoreError::Corrupt(
            "the seat count moved under the seat writer".into(),
        ));
    }
    Ok(())
}

/// The license's seats as the seat decision sees them today.
pub(super) fn license_seats(
    conn: &Connection,
    license_id: &str,
) -> Result<LicenseSeats, StoreError> {
    let row = conn
        .prepare_cached(LICENSE_SEATS)?
        .query_row(params![license_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<chrono::NaiveDate>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    let (model, status, expires_on, seats_total, seats_used) = row.ok_or(StoreError::NotFound)?;
    let model = SeatModel::parse(&model)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown seat model {model:?}")))?;
    let status = LicenseStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown license status {status:?}")))?;
    Ok(LicenseSeats {
        model,
        standing: effective_status(status, expires_on, today()),
        seats_total,
        seats_used,
    })
}

/// When an admin last released the holder's seat, read only under a cooldown policy.
pub(super) fn last_admin_release(
    conn: &Connection,
    license: &License,
    fingerprint: &str,
    os_user: &str,
) -> Result<Option<i64>, StoreError> {
    if !license.policy().has_release_cooldown() {
        return Ok(None);
    }
    Ok(conn
        .prepare_cached(LAST_ADMIN_RELEASE)?
        .query_row(params![license.id, fingerprint, os_user], |row| row.get(0))?)
}

/// Ends one live lease with `reason`, frees its seat and audits it (`seat.expired` or
/// `seat.released`). Answers whether it was live.
pub(super) fn end_lease(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    seat: &Seat,
    reason: ReleaseReason,
    now: i64,
) -> Result<bool, StoreError> {
    let ended = conn
        .prepare_cached(END_SEAT)?
        .execute(params![now, reason.as_str(), seat.id])?;
    if ended != 1 {
        return Ok(false);
    }
    conn.prepare_cached(FREE_SEAT)?
        .execute(params![license.id])?;
    let (actor, action, after) = seat.end_event(license, reason, now);
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        &actor,
        action,
        ("seat", &seat.id),
        json(seat),
        after,
        now,
    )?;
    Ok(true)
}

pub(super) fn release(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    lease_id: &str,
    instance: &str,
    now: i64,
) -> Result<Done, StoreError> {
    let seat = seat_by_id(conn, &license.workspace_id, lease_id)?;
    if seat.license_id == license.id && seat.kind == SeatKind::Borrow {
        // An app that ran on a borrow exits: the borrow keeps its seat to its end.
        return Ok(Done::Released(seat.released_at.is_some()));
    }
    if seat.license_id != license.id || seat.kind != SeatKind::Lease {
        return Err(StoreError::NotFound);
    }
    if seat.released_at.is_some() {
        return Ok(Done::Released(true));
    }
    let mut instances = seat.instance_set();
    if !instances.leave(instance) {
        conn.prepare_cached(SET_INSTANCES)?.execute(params![
            instances.to_stored(),
            now,
            lease_id
        ])?;
        return Ok(Done::Released(false));
    }
    end_lease(conn, hooks, license, &seat, ReleaseReason::Checkin, now)?;
    Ok(Done::Released(true))
}

/// Answers the seat decision's refusal of `who` (machine, OS user): a full license also
/// says when its earliest lease could lapse, and every refusal of a seat is told to the
/// webhooks (`seat.denied`), as PostgreSQL's `refusal_in` does. Answered as an outcome,
/// not an error, so that the announcement commits with the batch even when the batch is
/// applied again with savepoints.
pub(super) fn refuse(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    (fingerprint, os_user): (&str, Option<&str>),
    refusal: Refusal,
    now: i64,
) -> Result<Done, StoreError> {
    let next_expiry_ms = match refusal {
        Refusal::Full { .. } => conn
            .prepare_cached(NEXT_LEASE_EXPIRY)?
            .query_row(params![license.id], |row| row.get(0))?,
        _ => None,
    };
    let error = StoreError::refused(refusal, next_expiry_ms);
    if matches!(refusal, Refusal::Full { .. }) {
        count_denial(conn, &license.id, (fingerprint, os_user), now)?;
    }
    if !refusal.is_announced() {
        return Err(error);
    }
    enqueue_webhooks(
        conn,
        hooks,
        &license.workspace_id,
        "seat.denied",
        &new_id(),
        now,
        || denial_data(license, fingerprint, os_user, &error),
    )?;
    Ok(Done::Refused(error))
}

/// Counts a refusal of `who` (machine, OS user) in the hour of `now` for usage (DESIGN
/// §8): a `NO_SEATS` answer, or a waiter leaving the queue without a seat.
fn count_denial(
    conn: &Connection,
    license_id: &str,
    (fingerprint, os_user): (&str, Option<&str>),
    now: i64,
) -> Result<(), StoreError> {
    let hour = usage::hour_of(now);
    let holder = usage::holder_key(Some(fingerprint), os_user, "");
    conn.prepare_cached(COUNT_DENIAL)?
        .execute(params![license_id, hour, holder])?;
    Ok(())
}

/// A dedicated seat for a machine: the domain's [`decide_activate`] on what this
/// transaction reads (the machine's activation, the license's seats, its last admin
/// release), applied here as PostgreSQL's `activate_once` applies it.
pub(super) fn activate(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    fingerprint: &str,
    identifier: Option<&str>,
    now: i64,
) -> Result<Done, StoreError> {
    let held = conn
        .prepare_cached(ACTIVE_ACTIVATION)?
        .query_row(params![license.id, fingerprint], seat_from_row)
        .optional()?;
    let last_release = match held {
        Some(_) => None,
        None => last_admin_release(conn, license, fingerprint, "")?,
    };
    let seats = license_seats(conn, &license.id)?;
    match decide_activate(&license.policy(), &seats, held.is_some(), last_release, now) {
        ActivateStep::Renew => {
            let seat = held.ok_or_else(|| StoreError::Corrupt("renewed no activation".into()))?;
            conn.prepare_cached(RENEW_ACTIVATION)?
                .execute(params![now, identifier, seat.id])?;
            let seat = seat_by_id(conn, &license.workspace_id, &seat.id)?;
            Ok(Done::Taken(Box::new(seat), false))
        }
        ActivateStep::Refuse(refusal) => {
            refuse(conn, hooks, license, (fingerprint, None), refusal, now)
        }
        ActivateStep::Activate => {
            count_seat(conn, &license.id, SeatModel::Dedicated)?;
            let id = new_id();
            conn.prepare_cached(INSERT_ACTIVATION)?.execute(params![
                id,
                license.workspace_id,
                license.id,
                fingerprint,
                identifier,
                today(),
                now
            ])?;
            let seat = seat_by_id(conn, &license.workspace_id, &id)?;
            insert_event(
                conn,
                hooks,
                (&license.workspace_id, &license.id),
                &key_actor(license, identifier),
                "seat.activated",
                ("seat", &seat.id),
                None,
                json(&seat),
                now,
            )?;
            Ok(Done::Taken(Box::new(seat), true))
        }
    }
}

/// A heartbeat, decided whole in the writer: the hot case is one statement
/// (`TOUCH_LEASE`); a lease that lapsed ends here (`seat.expired`), one whose new expiry
/// comes before its `sweep_at` moves both (`TOUCH_LEASE_SOONER`), an instance the server
/// had not seen is counted in, up to the policy's limit, and what the instance says of
/// its user's absence (`idle_s`) is recorded: a lease idle past the timeout of a policy
/// that reclaims `always` ends here (reason `idle`).
pub(super) fn heartbeat(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    (lease_id, instance, idle_s): (&str, &str, Option<i64>),
    expires_at: i64,
    now: i64,
) -> Result<Done, StoreError> {
    let live: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(TOUCH_LEASE)?
        .query_row(params![expires_at, now, lease_id, license.id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (stored, reports) = match live {
        Some(stored) => stored,
        None => {
            let seat = match seat_by_id(conn, &license.workspace_id, lease_id) {
                Ok(seat) if seat.license_id == license.id && seat.kind == SeatKind::Lease => seat,
                // A borrow an app runs on: held without heartbeats to its end, then over.
                Ok(seat) if seat.license_id == license.id && seat.kind == SeatKind::Borrow => {
                    return Ok(Done::Beat(seat.borrow_beat(now)));
                }
                Ok(_) | Err(StoreError::NotFound) => {
                    return Ok(Done::Beat(Err(StoreError::NotFound)))
                }
                Err(error) => return Err(error),
            };
            if let Some(reason) = seat.release_reason {
                return Ok(Done::Beat(Err(StoreError::LeaseEnded(reason))));
            }
            if seat.released_at.is_some() || seat.expires_at.unwrap_or(0) < now {
                end_lease(conn, hooks, license, &seat, ReleaseReason::Expired, now)?;
                return Ok(Done::Beat(Err(StoreError::LeaseEnded(
                    ReleaseReason::Expired,
                ))));
            }
            conn.prepare_cached(TOUCH_LEASE_SOONER)?
                .execute(params![expires_at, now, lease_id])?;
            (seat.instances, seat.idle_reports)
        }
    };
    let mut instances = Instances::from_stored(stored.as_deref());
    match instances.join(instance, license.max_instances_per_lease) {
        Ok(false) => {}
        Ok(true) => {
            conn.prepare_cached(JOIN_INSTANCE)?
                .execute(params![instances.to_stored(), lease_id])?;
        }
        Err(limit) => return Ok(Done::Beat(Err(limit.into()))),
    }
    let Some(idle) = IdleReports::beat(reports.as_deref(), &instances, instance, idle_s, now)
    else {
        return Ok(Done::Beat(Ok(expires_at)));
    };
    let policy = license.policy();
    if idle.changed {
        conn.prepare_cached(IDLE_REPORT)?.execute(params![
            idle.stored,
            idle.idle_since,
            policy.idle_release_at(idle.idle_since).unwrap_or(i64::MAX),
            lease_id
        ])?;
    }
    if policy.releases_idle(idle.idle_since, now) {
        let seat = seat_by_id(conn, &license.workspace_id, lease_id)?;
        end_lease(conn, hooks, license, &seat, ReleaseReason::Idle, now)?;
        return Ok(Done::Beat(Err(StoreError::LeaseEnded(ReleaseReason::Idle))));
    }
    Ok(Done::Beat(Ok(expires_at)))
}

/// A machine's own release of its activation (to move it), within the policy's
/// self-service releases this calendar month.
pub(super) fn deactivate(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    fingerprint: &str,
    now: i64,
) -> Result<Done, StoreError> {
    let seat = conn
        .prepare_cached(ACTIVE_ACTIVATION)?
        .query_row(params![license.id, fingerprint], seat_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let month_start = leasehold_core::lease::month_start(today());
    let used: i64 = conn
        .prepare_cached(TRANSFERS_SINCE)?
        .query_row(params![license.id, month_start], |row| row.get(0))?;
    license.policy().self_service_release(used)?;
    if !end_lease(conn, hooks, license, &seat, ReleaseReason::Transferred, now)? {
        return Err(StoreError::NotFound);
    }
    Ok(Done::Deactivated(Box::new(
        seat.ended(now, ReleaseReason::Transferred),
    )))
}

/// Queues a message of `event_type` for each of the workspace's webhooks subscribed to
/// it; `data` is made only when the workspace has webhooks (asked once per batch).
pub(super) fn enqueue_webhooks(
    conn: &Connection,
    hooks: &mut Webhooks,
    workspace_id: &str,
    event_type: &str,
    event_id: &str,
    now: i64,
    data: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    let has_webhooks = match hooks.get(workspace_id) {
        Some(known) => *known,
        None => {
            let known = conn
                .prepare_cached(HAS_WEBHOOKS)?
                .query_row(params![workspace_id], |row| row.get(0))?;
            hooks.insert(workspace_id.to_string(), known);
            known
        }
    };
    if has_webhooks {
        conn.prepare_cached(ENQUEUE_WEBHOOKS)?.execute(params![
            event_id,
            workspace_id,
            event_type,
            data(),
            now,
            now.saturating_add(RETRY_WINDOW_MS),
            subscribed_pattern(event_type)
        ])?;
    }
    Ok(())
}

/// Records an event about `subject` (type, id) of a license in the audit log and queues it
/// for subscribed webhooks.
// One row's columns; a struct for them would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_event(
    conn: &Connection,
    hooks: &mut Webhooks,
    (workspace_id, license_id): (&str, &str),
    actor: &Actor,
    action: &str,
    subject: (&str, &str),
    before: Option<String>,
    after: Option<String>,
    now: i64,
) -> Result<(), StoreError> {
    let id = new_id();
    if let Some(event_type) = webhook_event_of(action) {
        enqueue_webhooks(conn, hooks, workspace_id, event_type, &id, now, || {
            webhook_data(
                subject,
                Some(license_id),
                before.as_deref(),
                after.as_deref(),
            )
        })?;
    }
    conn.prepare_cached(INSERT_EVENT)?.execute(params![
        id,
        workspace_id,
        actor.kind,
        actor.id,
        actor.label,
        action,
        subject.0,
        subject.1,
        license_id,
        before,
        after,
        now
    ])?;
    Ok(())
}

pub(super) fn seat_by_id(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> Result<Seat, StoreError> {
    conn.prepare_cached(SEAT_BY_ID)?
        .query_row(params![id, workspace_id], seat_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// A row of `seat_select!()`, in its column order.
pub(super) fn seat_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Seat> {
    let vocabulary = |index: usize, name: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown {name}").into(),
        )
    };
    let kind: String = row.get(3)?;
    let reason: Option<String> = row.get(20)?;
    Ok(Seat {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        license_id: row.get(2)?,
        kind: SeatKind::parse(&kind).ok_or_else(|| vocabulary(3, "seat kind"))?,
        contact_id: row.get(4)?,
        contact_name: row.get(5)?,
        contact_terminated: row.get(6)?,
        assignee_name: row.get(7)?,
        device_name: row.get(8)?,
        serial_key_enc: row.get(9)?,
        serial_key_masked: row.get(10)?,
        activated_on: row.get(11)?,
        fingerprint: row.get(12)?,
        os_user: row.get(13)?,
        identifier: row.get(14)?,
        instances: row.get(15)?,
        created_at: row.get(16)?,
        last_seen_at: row.get(17)?,
        expires_at: row.get(18)?,
        released_at: row.get(19)?,
        release_reason: match reason {
            Some(r) => {
                Some(ReleaseReason::parse(r.as_str()).ok_or_else(|| vocabulary(20, "reason"))?)
            }
            None => None,
        },
        reclaimed_on: row.get(21)?,
        idle_since: row.get(22)?,
        idle_reports: row.get(23)?,
    })
}
