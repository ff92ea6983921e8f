//! SQLite's seat ledger as the `Store` offers it: every operation that writes seats or the
//! seat counter is an operation of the seat writer's batch (`writer.rs`), decided and
//! applied there (`seats.rs`, `admin.rs`); reads go to the reader pool.

use super::writer::{Done, Op};
use super::SqliteStore;
use crate::records::*;
use crate::{LicenseEdit, Result, Seats, StoreError};
use async_trait::async_trait;
use leasehold_core::SeatKind;
use std::sync::Arc;

fn unexpected() -> StoreError {
    StoreError::Corrupt("the seat writer answered another operation".into())
}

impl SqliteStore {
    /// Applies `op` on the seat writer, with whatever else is queued.
    async fn apply(&self, op: Op) -> Result<Done> {
        match self.seats.apply(op).await? {
            Done::Refused(refusal) => Err(refusal),
            done => Ok(done),
        }
    }

    /// An admin assigns a seat (`admin.rs`).
    pub(super) async fn assign(
        &self,
        actor: &Actor,
        workspace_id: &str,
        license_id: &str,
        assignment: NewAssignment,
    ) -> Result<Seat> {
        let op = Op::Assign {
            actor: actor.clone(),
            workspace_id: workspace_id.to_string(),
            license_id: license_id.to_string(),
            assignment,
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Seat(seat) => Ok(*seat),
            _ => Err(unexpected()),
        }
    }

    /// An admin reclaims or releases a seat.
    pub(super) async fn reclaim(
        &self,
        actor: &Actor,
        workspace_id: &str,
        seat_id: &str,
        force: bool,
    ) -> Result<Seat> {
        let op = Op::Reclaim {
            actor: actor.clone(),
            workspace_id: workspace_id.to_string(),
            seat_id: seat_id.to_string(),
            force,
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Seat(seat) => Ok(*seat),
            _ => Err(unexpected()),
        }
    }

    /// An admin's change to a license, computed on the writer from the row as it is.
    pub(super) async fn edit_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        change: LicenseEdit,
    ) -> Result<License> {
        let op = Op::EditLicense {
            actor: actor.clone(),
            workspace_id: workspace_id.to_string(),
            id: id.to_string(),
            change,
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::License(license) => Ok(*license),
            _ => Err(unexpected()),
        }
    }

    /// An admin deletes a license, releasing its seats.
    pub(super) async fn remove_license(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> Result<()> {
        let op = Op::DeleteLicense {
            actor: actor.clone(),
            workspace_id: workspace_id.to_string(),
            id: id.to_string(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Nothing => Ok(()),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl Seats for SqliteStore {
    async fn import_leases(
        &self,
        license_id: &str,
        count: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let op = Op::Import {
            license_id: license_id.to_string(),
            count,
            now,
            expires_at,
        };
        match self.apply(op).await? {
            Done::Nothing => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>> {
        self.read_license_by_key_hash(key_hash).await
    }

    async fn held_seat(
        &self,
        license_id: &str,
        kind: SeatKind,
        fingerprint: &str,
    ) -> Result<Option<crate::HeldSeat>> {
        self.read_held_seat(license_id, kind, fingerprint).await
    }

    async fn activate(
        &self,
        license: &Arc<License>,
        fingerprint: &str,
        identifier: Option<&str>,
    ) -> Result<(Seat, bool)> {
        let op = Op::Activate {
            license: license.clone(),
            fingerprint: fingerprint.to_string(),
            identifier: identifier.map(String::from),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Taken(seat, created) => Ok((*seat, created)),
            _ => Err(unexpected()),
        }
    }

    async fn deactivate(&self, license: &Arc<License>, fingerprint: &str) -> Result<Seat> {
        let op = Op::Deactivate {
            license: license.clone(),
            fingerprint: fingerprint.to_string(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Deactivated(seat) => Ok(*seat),
            _ => Err(unexpected()),
        }
    }

    /// The writer decides and applies the take; a refusal is announced there and
    /// answered as an error.
    async fn take_lease(
        &self,
        license: &Arc<License>,
        holder: &LeaseHolder,
    ) -> Result<(Seat, bool)> {
        let op = Op::Take {
            license: license.clone(),
            holder: holder.clone(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Taken(seat, created) => Ok((*seat, created)),
            _ => Err(unexpected()),
        }
    }

    async fn heartbeat(
        &self,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
        idle_s: Option<i64>,
    ) -> Result<i64> {
        let now = now_ms();
        let op = Op::Heartbeat {
            license: license.clone(),
            lease_id: lease_id.to_string(),
            instance: instance.to_string(),
            idle_s,
            expires_at: license.policy().lease_expiry(now),
            now,
        };
        match self.apply(op).await? {
            Done::Beat(beat) => beat,
            _ => Err(unexpected()),
        }
    }

    async fn lease_state(&self, workspace_id: &str, lease_id: &str) -> Result<Option<Seat>> {
        self.read_seat(workspace_id, lease_id).await
    }

    /// One operation of the seat writer, so ordered with every check-in, sweep and admin
    /// release: nothing is ever busy.
    async fn flush_heartbeats(&self, beats: &[crate::Beat]) -> Result<crate::FlushOutcome> {
        if beats.is_empty() {
            return Ok(crate::FlushOutcome::default());
        }
        let op = Op::Flush {
            beats: beats.to_vec(),
        };
        match self.apply(op).await? {
            Done::Flushed(gone) => Ok(crate::FlushOutcome {
                gone,
                busy: Vec::new(),
            }),
            _ => Err(unexpected()),
        }
    }

    async fn release_instance(
        &self,
        license: &Arc<License>,
        lease_id: &str,
        instance: &str,
    ) -> Result<bool> {
        let op = Op::Release {
            license: license.clone(),
            lease_id: lease_id.to_string(),
            instance: instance.to_string(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Released(released) => Ok(released),
            _ => Err(unexpected()),
        }
    }

    async fn leave_queue(
        &self,
        license: &Arc<License>,
        fingerprint: &str,
        os_user: &str,
    ) -> Result<bool> {
        let op = Op::LeaveQueue {
            license: license.clone(),
            fingerprint: fingerprint.to_string(),
            os_user: os_user.to_string(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Released(left) => Ok(left),
            _ => Err(unexpected()),
        }
    }

    async fn borrow(
        &self,
        license: &Arc<License>,
        holder: &LeaseHolder,
        days: i64,
    ) -> Result<(Seat, bool)> {
        let op = Op::Borrow {
            license: license.clone(),
            holder: holder.clone(),
            days,
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Taken(seat, created) => Ok((*seat, created)),
            _ => Err(unexpected()),
        }
    }

    async fn return_borrow(
        &self,
        license: &Arc<License>,
        borrow_id: &str,
        fingerprint: &str,
    ) -> Result<Seat> {
        let op = Op::ReturnBorrow {
            license: license.clone(),
            borrow_id: borrow_id.to_string(),
            fingerprint: fingerprint.to_string(),
            now: now_ms(),
        };
        match self.apply(op).await? {
            Done::Seat(seat) => Ok(*seat),
            _ => Err(unexpected()),
        }
    }

    async fn waiters(&self, workspace_id: &str, license_id: &str) -> Result<Vec<Waiter>> {
        self.read_waiters(workspace_id, license_id).await
    }

    /// A sweep's chunk as one operation of the writer's batch, so the sweep never takes
    /// SQLite's write lock from it.
    async fn expire_leases(
        &self,
        from: &str,
        limit: i64,
        probes: i64,
    ) -> Result<crate::SweepChunk> {
        let now = now_ms();
        let probed = self.probe_lapsed(from, probes, now).await?;
        if probed.lapsed.is_empty() {
            return Ok(probed.chunk(crate::Swept::default()));
        }
        let op = Op::Expire {
            licenses: probed.lapsed.clone(),
            now,
            limit: limit.max(1),
        };
        match self.apply(op).await? {
            Done::Expired(swept) => Ok(probed.chunk(swept)),
            _ => Err(unexpected()),
        }
    }
}
