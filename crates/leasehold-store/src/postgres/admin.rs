//! An admin's writes to PostgreSQL's seat ledger: assignments, reclaims, and license
//! edits and deletions that release seats, each one transaction under the license's row
//! lock.

use super::PostgresStore;
use crate::records::*;
use crate::sql::json;
use crate::{LicenseEdit, Result, StoreError};
use leasehold_core::*;

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

impl PostgresStore {
    pub(crate) async fn assign(
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
                return Err(StoreError::refused(
                    leasehold_core::lease::Refusal::OtherModel(current.seat_model),
                    None,
                ));
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
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "seat.assigned",
            ("seat", &id),
            Some(license_id),
            None,
            json(&seat),
        )
        .await?;
        self.commit(tx).await?;
        Ok(seat)
    }

    pub(crate) async fn reclaim(
        &self,
        actor: &Actor,
        workspace_id: &str,
        seat_id: &str,
        force: bool,
    ) -> Result<Seat> {
        let mut tx = self.begin_write().await?;
        let found = Self::seat_in(&mut tx, workspace_id, seat_id).await?;
        Self::lock_license(&mut tx, &found.license_id).await?;
        let before = Self::seat_in(&mut tx, workspace_id, seat_id).await?;
        let license = Self::license_in(&mut tx, workspace_id, &before.license_id).await?;
        let reason =
            leasehold_core::lease::admin_release(before.kind, license.admin_release, force)
                .map_err(|refused| StoreError::Conflict(refused.message().into()))?;
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
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "seat.reclaimed",
            ("seat", seat_id),
            Some(&license.id),
            json(&before),
            json(&after),
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    pub(crate) async fn edit_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: LicenseEdit,
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
                &[SeatKind::Activation, SeatKind::Lease, SeatKind::Borrow],
                ReleaseReason::LicenseRevoked,
            )
            .await?;
        }
        let updated =
            Self::bind_license_fields(sqlx::query_as::<_, License>(crate::sql::UPDATE_LICENSE), &c)
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
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "license.updated",
            ("license", id),
            Some(id),
            json(&before),
            json(&after),
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    pub(crate) async fn remove_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<()> {
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
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "license.deleted",
            ("license", id),
            Some(id),
            json(&before),
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Ends the license's active seats matching `kinds` with `reason`, frees them in
    /// the counter, and audits each.
    pub(crate) async fn release_seats(
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
}
