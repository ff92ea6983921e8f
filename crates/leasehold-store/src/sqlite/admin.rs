//! An admin's writes to the seat ledger, applied by the seat writer in its batch like the
//! client's seat operations: an assignment, a reclaim (or release of an application's
//! seat), a license's edit or deletion (which may release its seats), and the
//! benchmark's imported leases. So nothing but the writer thread writes seats or
//! `seats_used` on SQLite.
//!
//! Each runs in a savepoint of its own ([`atomically`]): a refusal found after a write
//! (a `seats_total` below the seats still in use once a revocation released the rest)
//! undoes the write and is answered as the operation's outcome, the batch going on.

use super::seats::{insert_event, seat_by_id, seat_from_row, Webhooks};
use super::writer::Done;
use crate::records::{new_id, today, Actor, License, NewAssignment, Seat};
use crate::sql::{json, FREE_SEATS, TRY_TAKE_SEAT, UPDATE_LICENSE};
use crate::LicenseEdit;
use crate::StoreError;
use leasehold_core::{
    reminders, AdminRelease, IdleReclaim, LicenseStatus, LicenseType, QueueMode, ReleaseReason,
    ReminderKind, SeatKind, SeatModel,
};
use rusqlite::{params, Connection, OptionalExtension};

/// Runs `op` in a savepoint: an error undoes whatever it wrote.
fn atomically<T>(
    conn: &Connection,
    op: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT admin")?;
    let outcome = op();
    if outcome.is_err() {
        conn.execute_batch("ROLLBACK TO admin")?;
    }
    conn.execute_batch("RELEASE admin")?;
    outcome
}

/// A seat an admin assigns to a person or a device on a dedicated license.
pub(super) fn assign(
    conn: &Connection,
    hooks: &mut Webhooks,
    actor: &Actor,
    (workspace_id, license_id): (&str, &str),
    assignment: &NewAssignment,
    now: i64,
) -> Result<Done, StoreError> {
    atomically(conn, || {
        let license = license_by_id(conn, workspace_id, license_id)?;
        if license.seat_model == SeatModel::Concurrent {
            return Err(StoreError::Conflict(
                "seats of a concurrent license are taken by leases, not assigned".into(),
            ));
        }
        if let Some(contact_id) = &assignment.contact_id {
            let known: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM contacts WHERE id = $1 AND workspace_id = $2")?
                .query_row(params![contact_id, workspace_id], |row| row.get(0))
                .optional()?;
            if known.is_none() {
                return Err(StoreError::invalid("contact_id", "no such contact"));
            }
        }
        // The invariant, decided in one statement: a seat is counted only if one is free.
        let counted = conn.prepare_cached(TRY_TAKE_SEAT)?.execute(params![
            license_id,
            SeatModel::Dedicated.as_str(),
            false,
            today()
        ])?;
        if counted != 1 {
            return Err(StoreError::SeatOverAllocated {
                seats_total: license.seats_total,
                seats_used: license.seats_used,
            });
        }
        let id = new_id();
        conn.prepare_cached(
            "INSERT INTO seats (id, workspace_id, license_id, kind, contact_id, assignee_name, \
             device_name, serial_key_enc, serial_key_masked, activated_on, created_at) \
             VALUES ($1, $2, $3, 'assignment', $4, $5, $6, $7, $8, $9, $10)",
        )?
        .execute(params![
            id,
            workspace_id,
            license_id,
            assignment.contact_id,
            assignment.assignee_name,
            assignment.device_name,
            assignment.serial_key_enc,
            assignment.serial_key_masked,
            assignment.activated_on,
            now
        ])?;
        let seat = seat_by_id(conn, workspace_id, &id)?;
        insert_event(
            conn,
            hooks,
            (workspace_id, license_id),
            actor,
            "seat.assigned",
            ("seat", &id),
            None,
            json(&seat),
            now,
        )?;
        Ok(Done::Seat(Box::new(seat)))
    })
}

/// An admin ends a seat: an assignment is reclaimed (its date kept); an application's
/// seat is released, where the license's policy lets admins do so.
pub(super) fn reclaim(
    conn: &Connection,
    hooks: &mut Webhooks,
    actor: &Actor,
    workspace_id: &str,
    (seat_id, force): (&str, bool),
    now: i64,
) -> Result<Done, StoreError> {
    atomically(conn, || {
        let before = seat_by_id(conn, workspace_id, seat_id)?;
        let license = license_by_id(conn, workspace_id, &before.license_id)?;
        let reason =
            leasehold_core::lease::admin_release(before.kind, license.admin_release, force)
                .map_err(|refused| StoreError::Conflict(refused.message().into()))?;
        let reclaimed_on = (reason == ReleaseReason::Reclaimed).then(today);
        let ended = conn
            .prepare_cached(
                "UPDATE seats SET released_at = $1, release_reason = $2, reclaimed_on = $3 \
                 WHERE id = $4 AND released_at IS NULL",
            )?
            .execute(params![now, reason.as_str(), reclaimed_on, seat_id])?;
        if ended == 0 {
            return Err(StoreError::Conflict("the seat is released already".into()));
        }
        conn.prepare_cached(FREE_SEATS)?
            .execute(params![1, license.id])?;
        let after = seat_by_id(conn, workspace_id, seat_id)?;
        insert_event(
            conn,
            hooks,
            (workspace_id, &license.id),
            actor,
            "seat.reclaimed",
            ("seat", seat_id),
            json(&before),
            json(&after),
            now,
        )?;
        Ok(Done::Seat(Box::new(after)))
    })
}

/// An admin's change to a license, computed from the row as it is inside the batch.
/// A revocation releases its applications' seats; a new `seats_total` below the seats
/// in use is refused.
pub(super) fn edit_license(
    conn: &Connection,
    hooks: &mut Webhooks,
    actor: &Actor,
    (workspace_id, id): (&str, &str),
    change: &LicenseEdit,
    now: i64,
) -> Result<Done, StoreError> {
    atomically(conn, || {
        let before = license_by_id(conn, workspace_id, id)?;
        let c = change(&before)?;
        if c.seat_model != before.seat_model && before.seats_used > 0 {
            return Err(StoreError::Conflict(
                "the seat model cannot change while seats are in use".into(),
            ));
        }
        if c.status == LicenseStatus::Revoked && before.status != LicenseStatus::Revoked {
            release_seats(
                conn,
                hooks,
                actor,
                &before,
                &[SeatKind::Activation, SeatKind::Lease, SeatKind::Borrow],
                ReleaseReason::LicenseRevoked,
                now,
            )?;
        }
        let policy = &c.policy;
        let updated = conn
            .prepare_cached(UPDATE_LICENSE)?
            .query_row(
                params![
                    c.licensed_to,
                    c.vendor,
                    c.license_type.as_str(),
                    c.status.as_str(),
                    c.seat_model.as_str(),
                    c.seats_total,
                    c.version,
                    c.cost.as_ref().map(|m| m.amount_minor),
                    c.cost.as_ref().map(|m| m.currency.as_str()),
                    c.purchased_on,
                    c.expires_on,
                    c.maintenance_expires_on,
                    c.po_number,
                    c.notes,
                    policy.lease_ttl_s,
                    policy.heartbeat_interval_s,
                    policy.license_file_ttl_s,
                    policy.self_service_releases_per_month,
                    policy.admin_release.as_str(),
                    policy.release_cooldown_s,
                    policy.max_instances_per_lease,
                    policy.queue.as_str(),
                    policy.queue_ttl_s,
                    policy.idle_timeout_s,
                    policy.idle_reclaim.as_str(),
                    policy.max_borrow_days,
                    policy.max_borrowed_seats,
                    now,
                    id
                ],
                license_from_row,
            )
            .optional()?;
        let Some(after) = updated else {
            let current = license_by_id(conn, workspace_id, id)?;
            return Err(StoreError::SeatsInUse {
                requested: c.seats_total,
                seats_used: current.seats_used,
            });
        };
        sync_reminders(conn, &after, now)?;
        insert_event(
            conn,
            hooks,
            (workspace_id, id),
            actor,
            "license.updated",
            ("license", id),
            json(&before),
            json(&after),
            now,
        )?;
        Ok(Done::License(Box::new(after)))
    })
}

/// Deletes a license: its seats are released, its reminders removed, its ledger kept.
pub(super) fn delete_license(
    conn: &Connection,
    hooks: &mut Webhooks,
    actor: &Actor,
    (workspace_id, id): (&str, &str),
    now: i64,
) -> Result<Done, StoreError> {
    atomically(conn, || {
        let before = license_by_id(conn, workspace_id, id)?;
        release_seats(
            conn,
            hooks,
            actor,
            &before,
            SeatKind::ALL,
            ReleaseReason::LicenseDeleted,
            now,
        )?;
        conn.prepare_cached("DELETE FROM reminders WHERE license_id = $1")?
            .execute(params![id])?;
        conn.prepare_cached("UPDATE licenses SET deleted_at = $1 WHERE id = $2")?
            .execute(params![now, id])?;
        insert_event(
            conn,
            hooks,
            (workspace_id, id),
            actor,
            "license.deleted",
            ("license", id),
            json(&before),
            None,
            now,
        )?;
        Ok(Done::Nothing)
    })
}

/// The benchmark's leases, loaded at once (see `Seats::import_leases`).
pub(super) fn import_leases(
    conn: &Connection,
    license_id: &str,
    count: i64,
    now: i64,
    expires_at: i64,
) -> Result<Done, StoreError> {
    atomically(conn, || {
        let counted = conn
            .prepare_cached(
                "UPDATE licenses SET seats_used = seats_used + ?1 WHERE id = ?2 \
                 AND seat_model = 'concurrent' AND seats_used + ?1 <= seats_total",
            )?
            .execute(params![count, license_id])?;
        if counted != 1 {
            return Err(StoreError::Conflict(format!(
                "{count} leases do not fit license {license_id} (or it is not concurrent)"
            )));
        }
        // Numbered (`?n`) parameters: this text names them out of order.
        conn.prepare_cached(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3) \
             INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, \
             instances, created_at, last_seen_at, expires_at, sweep_at) \
             SELECT ?1 || '-' || CAST(i AS TEXT), (SELECT workspace_id FROM licenses WHERE id = ?1), \
             ?1, 'lease', 'seed-' || CAST(i AS TEXT), 'u', '[\"i\"]', ?2, ?2, ?4, ?4 FROM n",
        )?
        .execute(params![license_id, now, count, expires_at])?;
        Ok(Done::Nothing)
    })
}

/// Ends the license's active seats of `kinds` with `reason`, frees them in the counter
/// and audits each (`seat.released`).
fn release_seats(
    conn: &Connection,
    hooks: &mut Webhooks,
    actor: &Actor,
    license: &License,
    kinds: &[SeatKind],
    reason: ReleaseReason,
    now: i64,
) -> Result<i64, StoreError> {
    let active: Vec<Seat> = conn
        .prepare_cached(concat!(
            seat_select!(),
            "WHERE s.license_id = $1 AND s.released_at IS NULL"
        ))?
        .query_map(params![license.id], seat_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut released = 0;
    for seat in active.iter().filter(|s| kinds.contains(&s.kind)) {
        let ended = conn.prepare_cached(crate::sql::END_SEAT)?.execute(params![
            now,
            reason.as_str(),
            seat.id
        ])?;
        if ended == 0 {
            continue;
        }
        insert_event(
            conn,
            hooks,
            (&license.workspace_id, &license.id),
            actor,
            "seat.released",
            ("seat", &seat.id),
            json(seat),
            json(&seat.ended(now, reason)),
            now,
        )?;
        released += 1;
    }
    if released > 0 {
        conn.prepare_cached(FREE_SEATS)?
            .execute(params![released, license.id])?;
    }
    Ok(released)
}

/// Brings the license's pending reminders in line with its dates and status: drops
/// pending ones no longer due, adds missing ones, keeps sent and dismissed ones.
fn sync_reminders(conn: &Connection, license: &License, now: i64) -> Result<(), StoreError> {
    let lead_days: String = conn
        .prepare_cached("SELECT reminder_lead_days FROM workspaces WHERE id = $1")?
        .query_row(params![license.workspace_id], |row| row.get(0))?;
    let lead_days: Vec<u32> = serde_json::from_str(&lead_days)
        .map_err(|e| StoreError::Corrupt(format!("workspace lead days: {e}")))?;
    let wanted = reminders::due_reminders(
        license.status,
        license.expires_on,
        license.maintenance_expires_on,
        &lead_days,
        today(),
    );
    let pending: Vec<(String, String, chrono::NaiveDate)> = conn
        .prepare_cached(
            "SELECT id, kind, due_on FROM reminders WHERE license_id = $1 AND state = 'pending'",
        )?
        .query_map(params![license.id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, kind, due_on) in pending {
        let still_due = ReminderKind::parse(&kind).is_some_and(|k| wanted.contains(&(k, due_on)));
        if !still_due {
            conn.prepare_cached("DELETE FROM reminders WHERE id = $1")?
                .execute(params![id])?;
        }
    }
    for (kind, due_on) in wanted {
        conn.prepare_cached(
            "INSERT INTO reminders (id, workspace_id, license_id, kind, due_on, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6) \
             ON CONFLICT (license_id, kind, due_on) DO NOTHING",
        )?
        .execute(params![
            new_id(),
            license.workspace_id,
            license.id,
            kind.as_str(),
            due_on,
            now
        ])?;
    }
    Ok(())
}

/// The workspace's live license with this id.
pub(super) fn license_by_id(
    conn: &Connection,
    workspace_id: &str,
    id: &str,
) -> Result<License, StoreError> {
    conn.prepare_cached(license_select!())?
        .query_row(params![id, workspace_id], license_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// A `licenses` row, read by column name.
fn license_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<License> {
    fn word<T>(
        row: &rusqlite::Row<'_>,
        column: &str,
        parse: fn(&str) -> Option<T>,
    ) -> rusqlite::Result<T> {
        let text: String = row.get(column)?;
        parse(&text).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown {column} {text:?}").into(),
            )
        })
    }
    Ok(License {
        id: row.get("id")?,
        workspace_id: row.get("workspace_id")?,
        application_id: row.get("application_id")?,
        key_enc: row.get("key_enc")?,
        key_hash: row.get("key_hash")?,
        key_masked: row.get("key_masked")?,
        licensed_to: row.get("licensed_to")?,
        vendor: row.get("vendor")?,
        license_type: word(row, "license_type", LicenseType::parse)?,
        status: word(row, "status", LicenseStatus::parse)?,
        seat_model: word(row, "seat_model", SeatModel::parse)?,
        seats_total: row.get("seats_total")?,
        seats_used: row.get("seats_used")?,
        version: row.get("version")?,
        cost_amount_minor: row.get("cost_amount_minor")?,
        cost_currency: row.get("cost_currency")?,
        purchased_on: row.get("purchased_on")?,
        expires_on: row.get("expires_on")?,
        maintenance_expires_on: row.get("maintenance_expires_on")?,
        po_number: row.get("po_number")?,
        notes: row.get("notes")?,
        lease_ttl_s: row.get("lease_ttl_s")?,
        heartbeat_interval_s: row.get("heartbeat_interval_s")?,
        license_file_ttl_s: row.get("license_file_ttl_s")?,
        self_service_releases_per_month: row.get("self_service_releases_per_month")?,
        admin_release: word(row, "admin_release", AdminRelease::parse)?,
        release_cooldown_s: row.get("release_cooldown_s")?,
        max_instances_per_lease: row.get("max_instances_per_lease")?,
        queue: word(row, "queue", QueueMode::parse)?,
        queue_ttl_s: row.get("queue_ttl_s")?,
        idle_timeout_s: row.get("idle_timeout_s")?,
        idle_reclaim: word(row, "idle_reclaim", IdleReclaim::parse)?,
        max_borrow_days: row.get("max_borrow_days")?,
        max_borrowed_seats: row.get("max_borrowed_seats")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}
