//! Borrowed seats (DESIGN §7) on PostgreSQL: the domain's borrow decision applied under
//! the license lock, as SQLite's seat writer applies it (`sqlite/borrows.rs`), the early
//! return, and the sweeper's end of borrows whose time is up.

use super::PostgresStore;
use crate::records::*;
use crate::sql::json;
use crate::{Result, StoreError};
use leasehold_core::lease::{decide_borrow, BorrowInput, BorrowRefusal, BorrowStep, HeldFloating};
use leasehold_core::*;

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

impl PostgresStore {
    /// Lends `holder` a floating seat for `days` days, in the caller's transaction (inner
    /// `Result` as for `take_in`: commit it either way).
    pub(crate) async fn borrow_in(
        tx: &mut Tx,
        license: &License,
        holder: &LeaseHolder,
        days: i64,
        now: i64,
    ) -> Result<Result<(Seat, bool)>> {
        let current = Self::locked_license(tx, &license.workspace_id, &license.id).await?;
        let (fingerprint, os_user) = (holder.fingerprint.as_str(), holder.os_user.as_str());
        // The holder's own seats whose time is up end first, as a take's do: a borrow
        // (reason `borrow_ended`) or a lease (`expired`), so that it never holds two.
        let mut held_borrow: Option<Seat> = sqlx::query_as(crate::sql::ACTIVE_BORROW)
            .bind(&license.id)
            .bind(fingerprint)
            .bind(os_user)
            .fetch_optional(&mut **tx)
            .await?;
        let mut current = current;
        if let Some(ended) = held_borrow.take_if(|b| b.expires_at.unwrap_or(0) < now) {
            Self::end_lease_in(tx, license, &ended, ReleaseReason::BorrowEnded, now).await?;
            current = Self::license_in(tx, &license.workspace_id, &license.id).await?;
        }
        let mut held_lease =
            Self::active_seat_of(tx, &license.id, SeatKind::Lease, fingerprint, Some(os_user))
                .await?;
        if let Some(lapsed) = held_lease.take_if(|l| l.expires_at.unwrap_or(0) < now) {
            Self::end_lease_in(tx, license, &lapsed, ReleaseReason::Expired, now).await?;
            current = Self::license_in(tx, &license.workspace_id, &license.id).await?;
        }
        let held = match (&held_borrow, &held_lease) {
            (Some(_), _) => HeldFloating::Borrow,
            (None, Some(_)) => HeldFloating::Lease,
            (None, None) => HeldFloating::None,
        };
        let (borrowed,): (i64,) = sqlx::query_as(crate::sql::BORROWS_OUT)
            .bind(&license.id)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
        let last_admin_release = match held {
            HeldFloating::None => {
                Self::last_admin_release(tx, license, fingerprint, os_user).await?
            }
            _ => None,
        };
        let (queue, _) = Self::waiting(tx, license, holder, now).await?;
        let mut input = BorrowInput {
            now,
            days,
            policy: license.policy(),
            license: current.seats(today()),
            held,
            borrowed,
            waiters: queue.ahead,
            last_admin_release,
            lapsed_reclaimed: false,
        };
        let (id, created) = loop {
            match decide_borrow(&input) {
                BorrowStep::Renew { until } | BorrowStep::Convert { until } => {
                    let (seat, created) = match (&held_borrow, &held_lease) {
                        (Some(seat), _) => (seat, false),
                        (None, Some(seat)) => (seat, true),
                        (None, None) => return Err(StoreError::Corrupt("lent no seat".into())),
                    };
                    sqlx::query(crate::sql::LEND_SEAT)
                        .bind(until)
                        .bind(now)
                        .bind(&seat.id)
                        .execute(&mut **tx)
                        .await?;
                    break (seat.id.clone(), created);
                }
                BorrowStep::ReclaimLapsed => {
                    Self::expire_all_lapsed(tx, license, now).await?;
                    input.lapsed_reclaimed = true;
                    input.license = Self::license_in(tx, &license.workspace_id, &license.id)
                        .await?
                        .seats(today());
                }
                BorrowStep::Take { until } => {
                    if !Self::try_take_seat(tx, &license.id, SeatModel::Concurrent, true).await? {
                        return Err(StoreError::Corrupt(
                            "the seat count moved under the license lock".into(),
                        ));
                    }
                    let id = new_id();
                    sqlx::query(crate::sql::INSERT_BORROW)
                        .bind(&id)
                        .bind(&license.workspace_id)
                        .bind(&license.id)
                        .bind(fingerprint)
                        .bind(os_user)
                        .bind(&holder.identifier)
                        .bind(now)
                        .bind(until)
                        .execute(&mut **tx)
                        .await?;
                    break (id, true);
                }
                BorrowStep::Refuse(BorrowRefusal::Seat(refusal)) => {
                    let refused =
                        Self::refusal_in(tx, license, fingerprint, Some(os_user), refusal).await?;
                    return Ok(Err(refused));
                }
                BorrowStep::Refuse(refusal) => return Ok(Err(StoreError::borrow_refused(refusal))),
            }
        };
        let seat = Self::seat_in(tx, &license.workspace_id, &id).await?;
        Self::insert_event(
            tx,
            &license.workspace_id,
            &key_actor(license, seat.identifier.as_deref()),
            "seat.borrowed",
            ("seat", &seat.id),
            Some(&license.id),
            None,
            json(&seat),
        )
        .await?;
        Ok(Ok((seat, created)))
    }

    /// A machine's early return of its borrow (reason `returned`), in the caller's
    /// transaction; returning it again answers it as it is.
    pub(crate) async fn return_borrow_in(
        tx: &mut Tx,
        license: &License,
        borrow_id: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Seat> {
        Self::lock_license(tx, &license.id).await?;
        let seat = Self::seat_in(tx, &license.workspace_id, borrow_id).await?;
        if seat.license_id != license.id
            || seat.kind != SeatKind::Borrow
            || seat.fingerprint.as_deref() != Some(fingerprint)
        {
            return Err(StoreError::NotFound);
        }
        if seat.released_at.is_none() {
            Self::end_lease_in(tx, license, &seat, ReleaseReason::Returned, now).await?;
        }
        Self::seat_in(tx, &license.workspace_id, borrow_id).await
    }

    /// Ends up to `limit` of the license's borrows whose time is up (reason
    /// `borrow_ended`), under the caller's license lock, as SQLite's `end_due_borrows`.
    pub(crate) async fn end_due_borrows(
        tx: &mut Tx,
        license: &License,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Seat>> {
        let due: Vec<Seat> = sqlx::query_as(crate::sql::ENDED_BORROWS)
            .bind(&license.id)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        let mut ended = Vec::with_capacity(due.len());
        for seat in due {
            if Self::end_lease_in(tx, license, &seat, ReleaseReason::BorrowEnded, now).await? {
                ended.push(seat);
            }
        }
        Ok(ended)
    }
}
