//! Borrowed seats (DESIGN §7) in the seat writer's batch: the domain's borrow decision
//! applied step by step, the early return, and the sweeper's end of borrows whose time is
//! up. PostgreSQL's `borrow_in` applies the same steps.

use super::seats::{
    count_seat, end_lease, expire_all_lapsed, insert_event, last_admin_release, license_seats,
    refuse, seat_by_id, seat_from_row, waiting, Webhooks,
};
use super::writer::Done;
use crate::records::{key_actor, new_id, LeaseHolder, License, Seat};
use crate::sql::{
    json, ACTIVE_BORROW, ACTIVE_LEASE, BORROWS_OUT, ENDED_BORROWS, INSERT_BORROW, LEND_SEAT,
};
use crate::StoreError;
use leasehold_core::lease::{decide_borrow, BorrowInput, BorrowRefusal, BorrowStep, HeldFloating};
use leasehold_core::{ReleaseReason, SeatKind, SeatModel};
use rusqlite::{params, Connection, OptionalExtension};

/// Lends `holder` a floating seat for `days` days: its borrow renewed, its live lease
/// turned into a borrow, or a new seat, each audited as `seat.borrowed`.
pub(super) fn borrow(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    holder: &LeaseHolder,
    days: i64,
    now: i64,
) -> Result<Done, StoreError> {
    let (fingerprint, os_user) = (holder.fingerprint.as_str(), holder.os_user.as_str());
    // The holder's own seats whose time is up end first, as a take's do: a borrow (reason
    // `borrow_ended`) or a lease (`expired`), so that it never holds two.
    let mut held_borrow = conn
        .prepare_cached(ACTIVE_BORROW)?
        .query_row(params![license.id, fingerprint, os_user], seat_from_row)
        .optional()?;
    if let Some(ended) = held_borrow.take_if(|b| b.expires_at.unwrap_or(0) < now) {
        end_lease(
            conn,
            hooks,
            license,
            &ended,
            ReleaseReason::BorrowEnded,
            now,
        )?;
    }
    let mut held_lease = conn
        .prepare_cached(ACTIVE_LEASE)?
        .query_row(params![license.id, fingerprint, os_user], seat_from_row)
        .optional()?;
    if let Some(lapsed) = held_lease.take_if(|l| l.expires_at.unwrap_or(0) < now) {
        end_lease(conn, hooks, license, &lapsed, ReleaseReason::Expired, now)?;
    }
    let held = match (&held_borrow, &held_lease) {
        (Some(_), _) => HeldFloating::Borrow,
        (None, Some(_)) => HeldFloating::Lease,
        (None, None) => HeldFloating::None,
    };
    let borrowed = conn
        .prepare_cached(BORROWS_OUT)?
        .query_row(params![license.id, now], |row| row.get(0))?;
    let last_release = match held {
        HeldFloating::None => last_admin_release(conn, license, fingerprint, os_user)?,
        _ => None,
    };
    let (queue, _) = waiting(conn, hooks, license, holder, now)?;
    let mut input = BorrowInput {
        now,
        days,
        policy: license.policy(),
        license: license_seats(conn, &license.id)?,
        held,
        borrowed,
        waiters: queue.ahead,
        last_admin_release: last_release,
        lapsed_reclaimed: false,
    };
    let (seat, created) = loop {
        match decide_borrow(&input) {
            BorrowStep::Renew { until } | BorrowStep::Convert { until } => {
                let (seat, created) = match (held_borrow, held_lease) {
                    (Some(seat), _) => (seat, false),
                    (None, Some(seat)) => (seat, true),
                    (None, None) => return Err(StoreError::Corrupt("lent no seat".into())),
                };
                conn.prepare_cached(LEND_SEAT)?
                    .execute(params![until, now, seat.id])?;
                break (seat_by_id(conn, &license.workspace_id, &seat.id)?, created);
            }
            BorrowStep::ReclaimLapsed => {
                let workspace_and_license = (license.workspace_id.as_str(), license.id.as_str());
                expire_all_lapsed(conn, hooks, workspace_and_license, now)?;
                input.lapsed_reclaimed = true;
                input.license = license_seats(conn, &license.id)?;
            }
            BorrowStep::Take { until } => {
                count_seat(conn, &license.id, SeatModel::Concurrent)?;
                let id = new_id();
                conn.prepare_cached(INSERT_BORROW)?.execute(params![
                    id,
                    license.workspace_id,
                    license.id,
                    fingerprint,
                    os_user,
                    holder.identifier,
                    now,
                    until
                ])?;
                break (seat_by_id(conn, &license.workspace_id, &id)?, true);
            }
            BorrowStep::Refuse(BorrowRefusal::Seat(refusal)) => {
                return refuse(
                    conn,
                    hooks,
                    license,
                    (fingerprint, Some(os_user)),
                    refusal,
                    now,
                );
            }
            BorrowStep::Refuse(refusal) => return Err(StoreError::borrow_refused(refusal)),
        }
    };
    insert_event(
        conn,
        hooks,
        (&license.workspace_id, &license.id),
        &key_actor(license, seat.identifier.as_deref()),
        "seat.borrowed",
        ("seat", &seat.id),
        None,
        json(&seat),
        now,
    )?;
    Ok(Done::Taken(Box::new(seat), created))
}

/// A machine's early return of its borrow (reason `returned`, audited as
/// `seat.returned`); returning it again answers it as it is.
pub(super) fn return_borrow(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    borrow_id: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Done, StoreError> {
    let seat = seat_by_id(conn, &license.workspace_id, borrow_id)?;
    if seat.license_id != license.id
        || seat.kind != SeatKind::Borrow
        || seat.fingerprint.as_deref() != Some(fingerprint)
    {
        return Err(StoreError::NotFound);
    }
    if seat.released_at.is_none() {
        end_lease(conn, hooks, license, &seat, ReleaseReason::Returned, now)?;
    }
    Ok(Done::Seat(Box::new(seat_by_id(
        conn,
        &license.workspace_id,
        borrow_id,
    )?)))
}

/// Ends up to `limit` of the license's borrows whose time is up (reason `borrow_ended`),
/// as PostgreSQL's `end_due_borrows` does. Answers those it ended.
pub(super) fn end_due_borrows(
    conn: &Connection,
    hooks: &mut Webhooks,
    license: &License,
    now: i64,
    limit: i64,
) -> Result<Vec<Seat>, StoreError> {
    let due = conn
        .prepare_cached(ENDED_BORROWS)?
        .query_map(params![license.id, now, limit], seat_from_row)?
        .collect::<rusqlite::Result<Vec<Seat>>>()?;
    let mut ended = Vec::with_capacity(due.len());
    for seat in due {
        if end_lease(conn, hooks, license, &seat, ReleaseReason::BorrowEnded, now)? {
            ended.push(seat);
        }
    }
    Ok(ended)
}
