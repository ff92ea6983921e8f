//! What both stores' seat operations read the same way: a license by its key's hash, a
//! machine's held seat, and the sweeper's probe for licenses with lapsed leases.

use super::*;

/// The licenses a sweep's chunk probed: those that hold lapsed leases, and where the
/// next chunk starts.
pub(crate) struct Probed {
    pub(crate) lapsed: Vec<(String, String)>,
    reached_the_end: bool,
    count: usize,
    after: Option<String>,
}

impl Probed {
    /// The chunk's answer once `swept` ended what it could: a budget that ran out resumes
    /// at the license it ran out in; otherwise the next chunk starts after the licenses
    /// probed here, or the pass is over.
    pub(crate) fn chunk(self, swept: crate::Swept) -> crate::SweepChunk {
        let resume_at = match swept.ran_out_in {
            Some(license_id) => Some(license_id),
            None if self.reached_the_end => None,
            None => self.after,
        };
        crate::SweepChunk {
            expired: swept.expired,
            resume_at,
            probed: self.count,
        }
    }
}

impl This {
    /// The live license with this keyed hash, in any workspace.
    pub(crate) async fn read_license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>> {
        Ok(sqlx::query_as::<_, License>(
            "SELECT * FROM licenses WHERE key_hash = $1 AND deleted_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.reader())
        .await?)
    }

    /// The machine's active seat of this kind, if it holds one.
    /// A seat as stored now, from the reader pool.
    pub(crate) async fn read_seat(&self, workspace_id: &str, id: &str) -> Result<Option<Seat>> {
        Ok(sqlx::query_as::<_, Seat>(crate::sql::SEAT_BY_ID)
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(self.reader())
            .await?)
    }

    pub(crate) async fn read_held_seat(
        &self,
        license_id: &str,
        kind: SeatKind,
        fingerprint: &str,
    ) -> Result<Option<crate::HeldSeat>> {
        let sql = match kind {
            SeatKind::Activation => crate::sql::HOLDS_ACTIVATION,
            SeatKind::Lease => crate::sql::HOLDS_LEASE,
            SeatKind::Assignment => crate::sql::HOLDS_ASSIGNMENT,
            SeatKind::Borrow => crate::sql::HOLDS_BORROW,
        };
        let found: Option<(Option<i64>,)> = sqlx::query_as(sql)
            .bind(license_id)
            .bind(fingerprint)
            .fetch_optional(self.reader())
            .await?;
        Ok(found.map(|(expires_at,)| crate::HeldSeat { expires_at }))
    }

    /// A sweep chunk's probe: the next licenses that could hold lapsed leases (or borrows
    /// whose time is up, DESIGN §7), in id order
    /// from `from` (one probe of the per-license expiry index for each concurrent license
    /// holding seats, as a lapsed lease holds one until it ends), at most `probes` (at
    /// least 2: the next chunk starts at the last license probed, whose budget may have
    /// run out, so one probe would never get past it). A chunk's cost is thus bounded
    /// however many licenses there are.
    pub(crate) async fn probe_lapsed(&self, from: &str, probes: i64, now: i64) -> Result<Probed> {
        let probes = probes.max(2);
        let probed: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT l.id, l.workspace_id, EXISTS (SELECT 1 FROM seats s WHERE s.license_id = l.id \
             AND s.kind = 'lease' AND s.released_at IS NULL AND s.sweep_at < $2) \
             OR EXISTS (SELECT 1 FROM seats s WHERE s.license_id = l.id AND s.kind = 'borrow' \
             AND s.released_at IS NULL AND s.expires_at < $2) \
             FROM licenses l WHERE l.seat_model = 'concurrent' AND l.seats_used > 0 AND l.id >= $1 \
             ORDER BY l.id LIMIT $3",
        )
        .bind(from)
        .bind(now)
        .bind(probes)
        .fetch_all(self.reader())
        .await?;
        Ok(Probed {
            reached_the_end: (probed.len() as i64) < probes,
            count: probed.len(),
            after: probed.last().map(|(id, _, _)| id.clone()),
            lapsed: probed
                .into_iter()
                .filter(|(_, _, lapsed)| *lapsed)
                .map(|(id, workspace_id, _)| (id, workspace_id))
                .collect(),
        })
    }

    /// The license's waiters that still hold their place, head first.
    pub(crate) async fn read_waiters(
        &self,
        workspace_id: &str,
        license_id: &str,
    ) -> Result<Vec<Waiter>> {
        let license: License = self
            .one_in(license_select!(), workspace_id, license_id)
            .await?;
        let rows: Vec<(String, String, Option<String>, i64, i64)> =
            sqlx::query_as(crate::sql::LIST_WAITERS)
                .bind(&license.id)
                .bind(license.policy().queue_cutoff(now_ms()))
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .zip(1..)
            .map(
                |((fingerprint, os_user, identifier, since, last_seen_at), position)| Waiter {
                    position,
                    fingerprint,
                    os_user,
                    identifier,
                    since,
                    last_seen_at,
                },
            )
            .collect())
    }
}
