//! PostgreSQL's seat batcher: a node's lease takes and checkins, many per statement.
//!
//! A hot license's row is the ledger's point of contention: every take and checkin
//! updates its counter and holds its lock until the commit, fsync included, is done. One
//! operation per transaction moves one seat per lock hold. Here, the operations queued on
//! this node while its last batch ran are applied together: per license (in id order,
//! so two nodes' batches never wait on each other in a cycle) one statement for its
//! takes ([`TAKE_LEASES`]) and one for its checkins ([`RELEASE_LEASES`]), each locking
//! the license row, deciding every operation of the batch under that lock, and moving the
//! counter once. All in one transaction, one commit.
//!
//! An operation that decides nothing (a full license, a holder with a live lease, a
//! changed lease) writes nothing; the general path then decides. Should a statement
//! fail, the transaction is rolled back and each operation runs again on its own, so a
//! failure is only its own.

use crate::backend::json;
use crate::postgres::SeatEvent;
use crate::records::{key_actor_of, now_ms, today, Seat};
use crate::StoreError;
use leasehold_core::{ReleaseReason, SeatModel};
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

/// The most operations one transaction applies.
const MAX_BATCH: usize = 256;

/// New leases on license `$1`, one per element of the arrays (`$4`…, in order). The
/// license row is locked and checked first (`TRY_TAKE_SEAT`'s conditions for an
/// application); a holder an admin released after its `cooldown_until` is skipped; the
/// first requests that fit the free seats are inserted, except a holder that already has
/// a live lease (the unique index of live leases decides, `ON CONFLICT DO NOTHING`); the
/// counter moves by the seats inserted; each gets its `seat.taken` event and webhook
/// messages. Answers the ids of the seats taken.
const TAKE_LEASES: &str = "WITH license AS ( \
     SELECT id, workspace_id, seats_total - seats_used AS free FROM licenses \
     WHERE id = $1 AND seats_used < seats_total AND deleted_at IS NULL AND seat_model = $2 \
     AND status = 'active' AND (expires_on IS NULL OR expires_on >= $3) \
     FOR NO KEY UPDATE), \
   request AS ( \
     SELECT * FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], \
       $10::int8[], $11::int8[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], \
       $17::text[]) WITH ORDINALITY \
       AS r(id, fingerprint, os_user, identifier, instances, now, expires_at, cooldown_until, event_id, \
         actor_kind, actor_id, actor_label, after_json, webhook_data, n)), \
   chosen AS ( \
     SELECT r.*, license.workspace_id FROM request r, license \
     WHERE NOT EXISTS (SELECT 1 FROM seats s WHERE s.license_id = $1 AND s.fingerprint = r.fingerprint \
       AND s.os_user = r.os_user AND s.release_reason = 'admin_release' AND s.released_at > r.cooldown_until) \
     ORDER BY r.n LIMIT (SELECT free FROM license)), \
   seat AS ( \
     INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, identifier, instances, \
       created_at, last_seen_at, expires_at) \
     SELECT id, workspace_id, $1, 'lease', fingerprint, os_user, identifier, instances, now, now, expires_at \
     FROM chosen ORDER BY n \
     ON CONFLICT (license_id, fingerprint, os_user) WHERE released_at IS NULL AND kind = 'lease' DO NOTHING \
     RETURNING id, workspace_id), \
   taken AS ( \
     UPDATE licenses SET seats_used = seats_used + (SELECT COUNT(*) FROM seat) \
     WHERE id = $1 AND EXISTS (SELECT 1 FROM seat) RETURNING id), \
   event AS ( \
     INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, subject_type, \
       subject_id, license_id, before_json, after_json, created_at) \
     SELECT c.event_id, c.workspace_id, c.actor_kind, c.actor_id, c.actor_label, 'seat.taken', 'seat', c.id, $1, \
       NULL, c.after_json, c.now \
     FROM seat JOIN chosen c ON c.id = seat.id), \
   hooks AS ( \
     INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, payload, state, attempts, \
       next_attempt_at, retry_until, created_at) \
     SELECT c.event_id || '.' || w.id, c.workspace_id, 'webhook', w.id, 'seat.taken', c.webhook_data, 'pending', 0, \
       c.now, c.now + $18, c.now \
     FROM seat JOIN chosen c ON c.id = seat.id \
     JOIN webhooks w ON w.workspace_id = c.workspace_id AND w.deleted_at IS NULL \
       AND w.events LIKE '%' || $19 || '%' \
     ON CONFLICT (id) DO NOTHING) \
   SELECT id FROM seat";

/// Leases of license `$1` ended at their last instance's checkin, one per element of the
/// arrays (`$2`: lease ids, `$3`: their workspaces, `$4`: the instance list each must still
/// have, only the leaving instance). The license row is locked first, as every path locks
/// it before its seats; the counter moves by the seats ended. Answers the ended seats, for
/// their audit events ([`RELEASE_EVENTS`]). Nothing is read before: a lease that has other
/// instances, or is already ended, is not matched, and the general path decides.
const RELEASE_LEASES: &str = concat!(
    "WITH license AS ( \
       SELECT id FROM licenses WHERE id = $1 FOR NO KEY UPDATE), \
     request AS ( \
       SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[]) AS r(id, workspace_id, instances)), \
     ended AS ( \
       UPDATE seats s SET released_at = $5, release_reason = $6 FROM request r \
       WHERE s.id = r.id AND s.workspace_id = r.workspace_id AND s.license_id = $1 \
       AND s.kind = 'lease' AND s.released_at IS NULL AND s.instances = r.instances \
       AND EXISTS (SELECT 1 FROM license) \
       RETURNING s.*), \
     freed AS ( \
       UPDATE licenses SET seats_used = seats_used - (SELECT COUNT(*) FROM ended) \
       WHERE id = $1 AND EXISTS (SELECT 1 FROM ended) RETURNING id) \
     SELECT ",
    seat_columns!(),
    "FROM ended s LEFT JOIN contacts c ON c.id = s.contact_id"
);

/// The `seat.released` events of the seats [`RELEASE_LEASES`] ended (license `$1`, at
/// `$2`), one per element of the arrays (`$3`…), and their webhook messages.
const RELEASE_EVENTS: &str = "WITH request AS ( \
     SELECT * FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
       $9::text[], $10::text[], $11::text[]) \
       AS r(event_id, seat_id, workspace_id, actor_kind, actor_id, actor_label, before_json, \
         after_json, webhook_data)), \
   event AS ( \
     INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, subject_type, \
       subject_id, license_id, before_json, after_json, created_at) \
     SELECT r.event_id, r.workspace_id, r.actor_kind, r.actor_id, r.actor_label, 'seat.released', \
       'seat', r.seat_id, $1, r.before_json, r.after_json, $2 \
     FROM request r) \
   INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, payload, state, attempts, \
     next_attempt_at, retry_until, created_at) \
   SELECT r.event_id || '.' || w.id, r.workspace_id, 'webhook', w.id, 'seat.released', r.webhook_data, \
     'pending', 0, $2, $2 + $12, $2 \
   FROM request r \
   JOIN webhooks w ON w.workspace_id = r.workspace_id AND w.deleted_at IS NULL \
     AND w.events LIKE '%' || $13 || '%' \
   ON CONFLICT (id) DO NOTHING";

pub(crate) enum SeatOp {
    /// A new lease, as built for the holder.
    Take {
        seat: Box<Seat>,
        cooldown_until: i64,
        event: SeatEvent,
        after: Option<String>,
    },
    /// The end of lease `lease_id` at the checkin of its only instance.
    Release {
        lease_id: String,
        license_id: String,
        workspace_id: String,
        /// The key's masked form, the audit actor's label when the lease has no identifier.
        key_masked: String,
        /// The instance list the lease must still have: only the leaving instance.
        instances: String,
    },
}

impl SeatOp {
    fn license_id(&self) -> &str {
        match self {
            SeatOp::Take { seat, .. } => &seat.license_id,
            SeatOp::Release { license_id, .. } => license_id,
        }
    }

    /// The seat the operation takes or ends.
    fn seat_id(&self) -> &str {
        match self {
            SeatOp::Take { seat, .. } => &seat.id,
            SeatOp::Release { lease_id, .. } => lease_id,
        }
    }

    fn is_take(&self) -> bool {
        matches!(self, SeatOp::Take { .. })
    }
}

/// Runs one license's takes, or its checkins, (one statement, and for checkins one more
/// for their audit events); answers the ids of the seats taken or ended.
async fn run(
    conn: &mut PgConnection,
    license_id: &str,
    ops: &[&SeatOp],
) -> Result<HashSet<String>, sqlx::Error> {
    macro_rules! column {
        ($pattern:pat => $value:expr) => {
            ops.iter()
                .map(|op| match op {
                    $pattern => $value,
                    _ => unreachable!("one statement runs one kind of operation"),
                })
                .collect::<Vec<_>>()
        };
    }
    let ids: Vec<String> = match ops.first() {
        Some(SeatOp::Take { .. }) => {
            sqlx::query_scalar(TAKE_LEASES)
                .bind(license_id)
                .bind(SeatModel::Concurrent.as_str())
                .bind(today())
                .bind(column!(SeatOp::Take { seat, .. } => seat.id.clone()))
                .bind(column!(SeatOp::Take { seat, .. } => seat.fingerprint.clone()))
                .bind(column!(SeatOp::Take { seat, .. } => seat.os_user.clone()))
                .bind(column!(SeatOp::Take { seat, .. } => seat.identifier.clone()))
                .bind(column!(SeatOp::Take { seat, .. } => seat.instances.clone()))
                .bind(column!(SeatOp::Take { seat, .. } => seat.created_at))
                .bind(column!(SeatOp::Take { seat, .. } => seat.expires_at))
                .bind(column!(SeatOp::Take { cooldown_until, .. } => *cooldown_until))
                .bind(column!(SeatOp::Take { event, .. } => event.id.clone()))
                .bind(column!(SeatOp::Take { event, .. } => event.actor_kind))
                .bind(column!(SeatOp::Take { event, .. } => event.actor_id.clone()))
                .bind(column!(SeatOp::Take { event, .. } => event.actor_label.clone()))
                .bind(column!(SeatOp::Take { after, .. } => after.clone()))
                .bind(column!(SeatOp::Take { event, .. } => event.webhook_data.clone()))
                .bind(crate::outbox::RETRY_WINDOW_MS)
                .bind(crate::backend::subscribed_pattern("seat.taken"))
                .fetch_all(conn)
                .await?
        }
        Some(SeatOp::Release { key_masked, .. }) => {
            let now = now_ms();
            let ended: Vec<Seat> = sqlx::query_as(RELEASE_LEASES)
                .bind(license_id)
                .bind(column!(SeatOp::Release { lease_id, .. } => lease_id.as_str()))
                .bind(column!(SeatOp::Release { workspace_id, .. } => workspace_id.as_str()))
                .bind(column!(SeatOp::Release { instances, .. } => instances.as_str()))
                .bind(now)
                .bind(ReleaseReason::Checkin.as_str())
                .fetch_all(&mut *conn)
                .await?;
            if !ended.is_empty() {
                release_events(conn, license_id, key_masked, now, &ended).await?;
            }
            ended.into_iter().map(|seat| seat.id).collect()
        }
        None => Vec::new(),
    };
    Ok(ids.into_iter().collect())
}

/// Writes the `seat.released` events (and webhook messages) of the leases `ended` (as
/// they are now; before, they were the same but live).
async fn release_events(
    conn: &mut PgConnection,
    license_id: &str,
    key_masked: &str,
    now: i64,
    ended: &[Seat],
) -> Result<(), sqlx::Error> {
    let mut columns: [Vec<Option<String>>; 9] = Default::default();
    for after in ended {
        let before = Seat {
            released_at: None,
            release_reason: None,
            ..after.clone()
        };
        let (before, after_json) = (json(&before), json(after));
        let actor = key_actor_of(license_id, key_masked, after.identifier.as_deref());
        let event = SeatEvent::new(
            license_id,
            actor,
            &after.id,
            before.as_deref(),
            after_json.as_deref(),
        );
        let row = [
            Some(event.id),
            Some(after.id.clone()),
            Some(after.workspace_id.clone()),
            Some(event.actor_kind.to_string()),
            event.actor_id,
            Some(event.actor_label),
            before,
            after_json,
            Some(event.webhook_data),
        ];
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    let mut query = sqlx::query(RELEASE_EVENTS).bind(license_id).bind(now);
    for column in columns {
        query = query.bind(column);
    }
    query
        .bind(crate::outbox::RETRY_WINDOW_MS)
        .bind(crate::backend::subscribed_pattern("seat.released"))
        .execute(conn)
        .await?;
    Ok(())
}

type Reply = oneshot::Sender<Result<bool, StoreError>>;

pub(crate) struct SeatBatcher {
    queue: mpsc::UnboundedSender<(SeatOp, Reply)>,
}

impl SeatBatcher {
    /// Starts the node's batching task on the current runtime.
    pub(crate) fn start(pool: PgPool) -> SeatBatcher {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batches(pool, waiting));
        SeatBatcher { queue }
    }

    /// Applies `op` with whatever else is queued; answers whether it took or ended its
    /// seat.
    pub(crate) async fn apply(&self, op: SeatOp) -> Result<bool, StoreError> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Corrupt("the seat batcher stopped".into());
        self.queue.send((op, reply)).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn batches(pool: PgPool, mut waiting: mpsc::UnboundedReceiver<(SeatOp, Reply)>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<SeatOp>, Vec<Reply>) = batch.into_iter().unzip();
        let outcomes = apply_batch(&pool, &ops).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

/// The batch's statements: per license in id order, its takes, then its checkins. A
/// seat or holder that appears twice goes to a later statement, so that a statement
/// decides each once.
fn statements(ops: &[SeatOp]) -> Vec<(String, Vec<&SeatOp>)> {
    let mut order: Vec<&SeatOp> = ops.iter().collect();
    order.sort_by(|a, b| (a.license_id(), !a.is_take()).cmp(&(b.license_id(), !b.is_take())));
    let mut statements: Vec<(String, Vec<&SeatOp>)> = Vec::new();
    let mut seen: HashSet<(bool, &str, &str, &str)> = HashSet::new();
    for op in order {
        let key = match op {
            SeatOp::Take { seat, .. } => (
                true,
                seat.license_id.as_str(),
                seat.fingerprint.as_deref().unwrap_or(""),
                seat.os_user.as_deref().unwrap_or(""),
            ),
            SeatOp::Release {
                license_id,
                lease_id,
                ..
            } => (false, license_id.as_str(), lease_id.as_str(), ""),
        };
        let fresh = seen.insert(key);
        match statements.last_mut() {
            Some((license, batch))
                if fresh
                    && license == op.license_id()
                    && batch.first().is_some_and(|b| b.is_take() == op.is_take()) =>
            {
                batch.push(op)
            }
            _ => {
                if !fresh {
                    seen.clear();
                    seen.insert(key);
                }
                statements.push((op.license_id().to_string(), vec![op]))
            }
        }
    }
    statements
}

async fn apply_batch(pool: &PgPool, ops: &[SeatOp]) -> Vec<Result<bool, StoreError>> {
    match in_one_transaction(pool, ops).await {
        Ok(done) => ops
            .iter()
            .map(|op| Ok(done.contains(op.seat_id())))
            .collect(),
        // A statement failed: each operation again on its own, so the failure is only
        // its own. Anything else (no connection, say) would fail them all the same.
        Err(error @ sqlx::Error::Database(_)) if ops.len() > 1 => {
            tracing::debug!(%error, size = ops.len(), "seat batch failed; applying one by one");
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(
                    in_one_transaction(pool, std::slice::from_ref(op))
                        .await
                        .map(|done| done.contains(op.seat_id()))
                        .map_err(StoreError::from),
                );
            }
            outcomes
        }
        Err(error) => {
            // sqlx's errors don't clone: each operation gets one of the same kind.
            let again = |error: &sqlx::Error| match error {
                sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
                other => sqlx::Error::Protocol(other.to_string()),
            };
            let mut outcomes: Vec<Result<bool, StoreError>> = ops
                .iter()
                .skip(1)
                .map(|_| Err(again(&error).into()))
                .collect();
            outcomes.insert(0, Err(error.into()));
            outcomes
        }
    }
}

/// Applies the operations' statements in one transaction (none for a lone statement of
/// takes); answers the ids of the seats taken or ended.
async fn in_one_transaction(pool: &PgPool, ops: &[SeatOp]) -> Result<HashSet<String>, sqlx::Error> {
    let statements = statements(ops);
    let mut done = HashSet::new();
    if let [(license_id, ops)] = statements.as_slice() {
        if ops.first().is_some_and(|op| op.is_take()) {
            let mut conn = pool.acquire().await?;
            return run(&mut conn, license_id, ops).await;
        }
    }
    let mut tx = pool.begin().await?;
    for (license_id, ops) in &statements {
        done.extend(run(&mut tx, license_id, ops).await?);
    }
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::SeatKind;

    fn seat(license: &str, id: &str, fingerprint: &str) -> Seat {
        Seat {
            id: id.into(),
            workspace_id: "w".into(),
            license_id: license.into(),
            kind: SeatKind::Lease,
            contact_id: None,
            contact_name: None,
            contact_terminated: false,
            assignee_name: None,
            device_name: None,
            serial_key_enc: None,
            serial_key_masked: None,
            activated_on: None,
            fingerprint: Some(fingerprint.into()),
            os_user: Some("u".into()),
            identifier: None,
            instances: Some("[\"1\"]".into()),
            created_at: 0,
            last_seen_at: Some(0),
            expires_at: Some(1),
            released_at: None,
            release_reason: None,
            reclaimed_on: None,
        }
    }

    fn event() -> SeatEvent {
        SeatEvent {
            id: "e".into(),
            actor_kind: "license_key",
            actor_id: None,
            actor_label: "key".into(),
            webhook_data: "{}".into(),
        }
    }

    fn take(license: &str, id: &str, fingerprint: &str) -> SeatOp {
        SeatOp::Take {
            seat: Box::new(seat(license, id, fingerprint)),
            cooldown_until: i64::MAX,
            event: event(),
            after: None,
        }
    }

    fn release(license: &str, id: &str) -> SeatOp {
        SeatOp::Release {
            lease_id: id.into(),
            license_id: license.into(),
            workspace_id: "w".into(),
            key_masked: "key".into(),
            instances: "[\"1\"]".into(),
        }
    }

    fn shape(ops: &[SeatOp]) -> Vec<(String, Vec<String>)> {
        statements(ops)
            .into_iter()
            .map(|(license, ops)| {
                (
                    license,
                    ops.iter().map(|op| op.seat_id().to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn statements_go_by_license_in_id_order_takes_before_checkins() {
        let ops = [
            release("b", "r1"),
            take("b", "t1", "m1"),
            take("a", "t2", "m2"),
            release("a", "r2"),
            take("b", "t3", "m3"),
        ];
        let expected = [
            ("a", vec!["t2"]),
            ("a", vec!["r2"]),
            ("b", vec!["t1", "t3"]),
            ("b", vec!["r1"]),
        ];
        let expected: Vec<(String, Vec<String>)> = expected
            .into_iter()
            .map(|(l, ids)| (l.to_string(), ids.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(shape(&ops), expected);
    }

    #[test]
    fn a_holder_or_seat_twice_goes_to_a_later_statement() {
        let ops = [
            take("a", "t1", "m1"),
            take("a", "t2", "m1"),
            take("a", "t3", "m2"),
            release("a", "r1"),
            release("a", "r1"),
        ];
        let shape = shape(&ops);
        let ids: Vec<Vec<&str>> = shape
            .iter()
            .map(|(_, ids)| ids.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            ids,
            vec![vec!["t1"], vec!["t2", "t3"], vec!["r1"], vec!["r1"]]
        );
        assert!(shape.iter().all(|(license, _)| license == "a"));
    }
}
