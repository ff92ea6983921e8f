//! PostgreSQL's seat batcher: a node's lease takes and checkins, many per statement.
//!
//! A hot license's row is the ledger's point of contention: every take and checkin
//! updates its counter and holds its lock until the commit, fsync included, is done. One
//! operation per transaction moves one seat per lock hold. Here, the operations queued on
//! this node while its last batch ran are applied together: per license (in id order,
//! so two nodes' batches never wait on each other in a cycle) one statement for its
//! takes and checkins ([`APPLY_SEATS`]), after a statement of its own that locks the
//! license row ([`LOCK_LICENSE`]), deciding every operation of the batch under that lock,
//! and moving the counter once; the checkins' leases, for their audit events, are read
//! before, outside the lock.
//!
//! What that statement does not decide (a holder joining its live lease, a full license,
//! a cooldown, a lease that changed or keeps other instances) is decided right after it,
//! in the same transaction and under the same lock, one operation at a time, by the
//! seat decision every other path applies (`take_in`, `release_in`): every operation
//! leaves the batch with its typed answer, a refusal included, and nothing runs twice.
//! Should a statement fail, the transaction is rolled back and each operation runs
//! again on its own, so a failure is only its own.

use crate::postgres::{PostgresStore, SeatEvent};
use crate::records::{key_actor_of, now_ms, today, LeaseHolder, License, Seat};
use crate::sql::json;
use crate::StoreError;
use leasehold_core::{ReleaseReason, SeatModel};
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The most operations one transaction applies.
const MAX_BATCH: usize = 256;

/// One license's new leases and ended leases, in one statement, run once
/// [`LOCK_LICENSE`] holds the license row.
///
/// The license row (`$1`) is locked first, as every path locks it before its seats.
///
/// - **Ended leases** (`$18`…, one per element): a lease is ended only if it is still as
///   it was read before the statement (live, with only the leaving instance, the same
///   expiry and last heartbeat), so the `seat.released` event built from that read is
///   the truth; a lease that changed meanwhile is not matched, and `release_in` decides
///   right after the statement.
/// - **New leases** (`$4`…, one per element, in order): only while the license is in
///   force (`TRY_TAKE_SEAT`'s conditions for an application); a holder an admin released
///   after its `cooldown_until` is skipped; the first requests that fit the seats free
///   before this statement are inserted, except a holder that already has a live lease
///   (the unique index of live leases decides, `ON CONFLICT DO NOTHING`).
///
/// The counter moves once, by the seats taken less the seats ended (the seats taken
/// never exceed the seats free before, so the invariant holds whatever is ended). Each
/// seat taken or ended gets its audit event and webhook messages. Answers the ids of
/// the seats taken and ended.
const APPLY_SEATS: &str = concat!(
    "WITH license AS ( \
     SELECT id, workspace_id, \
       CASE WHEN seats_used < seats_total AND deleted_at IS NULL AND seat_model = $2 \
         AND NOT EXISTS (SELECT 1 FROM waiters w WHERE w.license_id = $1) AND ",
    in_force!("$3"),
    " THEN seats_total - seats_used ELSE 0 END AS free \
     FROM licenses WHERE id = $1 FOR NO KEY UPDATE), \
   leaving AS ( \
     SELECT * FROM UNNEST($18::text[], $19::text[], $20::text[], $21::int8[], $22::int8[], $23::text[], \
       $24::text[], $25::text[], $26::text[], $27::text[], $28::text[], $29::text[]) \
       AS l(id, workspace_id, instances, expires_at, last_seen_at, event_id, actor_kind, actor_id, \
         actor_label, before_json, after_json, webhook_data)), \
   ended AS ( \
     UPDATE seats s SET released_at = $30, release_reason = $31 FROM leaving l \
     WHERE EXISTS (SELECT 1 FROM license) AND s.id = l.id AND s.workspace_id = l.workspace_id \
       AND s.license_id = $1 AND s.kind = 'lease' AND s.released_at IS NULL AND s.instances = l.instances \
       AND s.expires_at = l.expires_at AND s.last_seen_at IS NOT DISTINCT FROM l.last_seen_at \
     RETURNING s.id), \
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
       AND NOT EXISTS (SELECT 1 FROM seats b WHERE b.license_id = $1 AND b.kind = 'borrow' \
       AND b.released_at IS NULL AND b.fingerprint = r.fingerprint AND b.os_user = r.os_user) \
     ORDER BY r.n LIMIT (SELECT free FROM license)), \
   seat AS ( \
     INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, identifier, instances, \
       created_at, last_seen_at, expires_at, sweep_at) \
     SELECT id, workspace_id, $1, 'lease', fingerprint, os_user, identifier, instances, now, now, expires_at, \
       expires_at \
     FROM chosen ORDER BY n \
     ON CONFLICT (license_id, fingerprint, os_user) WHERE released_at IS NULL AND kind = 'lease' DO NOTHING \
     RETURNING id), \
   counted AS ( \
     UPDATE licenses SET seats_used = seats_used + (SELECT COUNT(*) FROM seat) - (SELECT COUNT(*) FROM ended) \
     WHERE id = $1 AND (EXISTS (SELECT 1 FROM seat) OR EXISTS (SELECT 1 FROM ended)) RETURNING id), \
   written AS ( \
     SELECT c.event_id, c.workspace_id, c.actor_kind, c.actor_id, c.actor_label, 'seat.taken' AS action, \
       c.id AS seat_id, NULL::text AS before_json, c.after_json, c.webhook_data, c.now, $33 AS subscribed \
     FROM seat JOIN chosen c ON c.id = seat.id \
     UNION ALL \
     SELECT l.event_id, l.workspace_id, l.actor_kind, l.actor_id, l.actor_label, 'seat.released', \
       l.id, l.before_json, l.after_json, l.webhook_data, $30, $34 \
     FROM ended JOIN leaving l ON l.id = ended.id), \
   event AS ( \
     INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, subject_type, \
       subject_id, license_id, before_json, after_json, created_at) \
     SELECT event_id, workspace_id, actor_kind, actor_id, actor_label, action, 'seat', seat_id, $1, \
       before_json, after_json, now \
     FROM written), \
   hooks AS ( \
     INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, payload, state, attempts, \
       next_attempt_at, retry_until, created_at) \
     SELECT x.event_id || '.' || w.id, x.workspace_id, 'webhook', w.id, x.action, x.webhook_data, 'pending', 0, \
       x.now, x.now + $32, x.now \
     FROM written x \
     JOIN webhooks w ON w.workspace_id = x.workspace_id AND w.deleted_at IS NULL \
       AND w.events LIKE '%' || x.subscribed || '%' \
     ON CONFLICT (id) DO NOTHING) \
   SELECT id FROM seat UNION ALL SELECT id FROM ended"
);

/// Locks a license row (`$1`) before its seats are decided, as every path does.
const LOCK_LICENSE: &str = "SELECT 1 FROM licenses WHERE id = $1 FOR NO KEY UPDATE";

/// The live leases a batch's checkins would end, as they are before the batch's
/// statements (`$1`: their ids): their `seat.released` events are built from these.
const LEAVING_LEASES: &str = concat!(
    seat_select!(),
    "WHERE s.id = ANY($1) AND s.kind = 'lease' AND s.released_at IS NULL"
);

pub(crate) enum SeatOp {
    /// A new lease for `holder`, as built for it (`seat`), should the statement take it.
    Take {
        license: Arc<License>,
        holder: LeaseHolder,
        seat: Box<Seat>,
        cooldown_until: i64,
        event: SeatEvent,
        after: Option<String>,
    },
    /// The checkin of `instance` from lease `lease_id`.
    Release {
        license: Arc<License>,
        lease_id: String,
        instance: String,
        /// The instance list the statement ends the lease at: only the leaving instance.
        instances: String,
    },
}

/// What an operation did.
#[derive(Debug)]
pub(crate) enum Done {
    /// The lease, and whether it is new (`false`: the holder joined its own).
    Taken(Box<Seat>, bool),
    /// Whether the checkin freed the seat.
    Released(bool),
}

impl SeatOp {
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

/// Runs one license's takes and checkins ([`APPLY_SEATS`]); answers the ids of the
/// seats taken or ended. A checkin whose lease is not in `leaving` as it must be (this
/// license's, live, with only the leaving instance) is left to [`decide_rest`].
async fn run(
    conn: &mut PgConnection,
    license_id: &str,
    ops: &[&SeatOp],
    leaving: &HashMap<String, Seat>,
) -> Result<HashSet<String>, sqlx::Error> {
    let now = now_ms();
    let mut takes = Takes::default();
    let mut ends = Ends::default();
    for op in ops {
        match op {
            SeatOp::Take {
                seat,
                cooldown_until,
                event,
                after,
                ..
            } => takes.push(seat, *cooldown_until, event, after),
            SeatOp::Release {
                license,
                lease_id,
                instances,
                ..
            } => {
                let Some(lease) = leaving.get(lease_id).filter(|lease| {
                    lease.license_id == license_id
                        && lease.workspace_id == license.workspace_id
                        && lease.instances.as_ref() == Some(instances)
                }) else {
                    continue;
                };
                ends.push(lease, &license.key_masked, now);
            }
        }
    }
    if takes.id.is_empty() && ends.id.is_empty() {
        return Ok(HashSet::new());
    }
    // The license row is locked by a statement of its own (in the batch's transaction), so
    // that APPLY_SEATS's snapshot is taken with the lock held and all of it reads the row
    // as it is. Locked only inside APPLY_SEATS, a row that another transaction changed
    // between the statement's snapshot and its lock was counted from two versions: the
    // seats free from one, the counter moved from the other, and seats_used went past
    // seats_total (the table's CHECK refused it: a 500 under concurrent checkouts).
    sqlx::query(LOCK_LICENSE)
        .bind(license_id)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<String> = sqlx::query_scalar(APPLY_SEATS)
        .bind(license_id)
        .bind(SeatModel::Concurrent.as_str())
        .bind(today())
        .bind(takes.id)
        .bind(takes.fingerprint)
        .bind(takes.os_user)
        .bind(takes.identifier)
        .bind(takes.instances)
        .bind(takes.now)
        .bind(takes.expires_at)
        .bind(takes.cooldown_until)
        .bind(takes.event_id)
        .bind(takes.actor_kind)
        .bind(takes.actor_id)
        .bind(takes.actor_label)
        .bind(takes.after_json)
        .bind(takes.webhook_data)
        .bind(ends.id)
        .bind(ends.workspace_id)
        .bind(ends.instances)
        .bind(ends.expires_at)
        .bind(ends.last_seen_at)
        .bind(ends.event_id)
        .bind(ends.actor_kind)
        .bind(ends.actor_id)
        .bind(ends.actor_label)
        .bind(ends.before_json)
        .bind(ends.after_json)
        .bind(ends.webhook_data)
        .bind(now)
        .bind(ReleaseReason::Checkin.as_str())
        .bind(crate::outbox::RETRY_WINDOW_MS)
        .bind(crate::sql::subscribed_pattern("seat.taken"))
        .bind(crate::sql::subscribed_pattern("seat.released"))
        .fetch_all(conn)
        .await?;
    Ok(ids.into_iter().collect())
}

/// [`APPLY_SEATS`]'s new leases, a column each.
#[derive(Default)]
struct Takes {
    id: Vec<String>,
    fingerprint: Vec<Option<String>>,
    os_user: Vec<Option<String>>,
    identifier: Vec<Option<String>>,
    instances: Vec<Option<String>>,
    now: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    cooldown_until: Vec<i64>,
    event_id: Vec<String>,
    actor_kind: Vec<&'static str>,
    actor_id: Vec<Option<String>>,
    actor_label: Vec<String>,
    after_json: Vec<Option<String>>,
    webhook_data: Vec<String>,
}

impl Takes {
    fn push(
        &mut self,
        seat: &Seat,
        cooldown_until: i64,
        event: &SeatEvent,
        after: &Option<String>,
    ) {
        self.id.push(seat.id.clone());
        self.fingerprint.push(seat.fingerprint.clone());
        self.os_user.push(seat.os_user.clone());
        self.identifier.push(seat.identifier.clone());
        self.instances.push(seat.instances.clone());
        self.now.push(seat.created_at);
        self.expires_at.push(seat.expires_at);
        self.cooldown_until.push(cooldown_until);
        self.event_id.push(event.id.clone());
        self.actor_kind.push(event.actor_kind);
        self.actor_id.push(event.actor_id.clone());
        self.actor_label.push(event.actor_label.clone());
        self.after_json.push(after.clone());
        self.webhook_data.push(event.webhook_data.clone());
    }
}

/// [`APPLY_SEATS`]'s ended leases, a column each: the lease as read (the statement
/// ends it only if it is still so) and its `seat.released` event.
#[derive(Default)]
struct Ends {
    id: Vec<String>,
    workspace_id: Vec<String>,
    instances: Vec<Option<String>>,
    expires_at: Vec<Option<i64>>,
    last_seen_at: Vec<Option<i64>>,
    event_id: Vec<String>,
    actor_kind: Vec<&'static str>,
    actor_id: Vec<Option<String>>,
    actor_label: Vec<String>,
    before_json: Vec<Option<String>>,
    after_json: Vec<Option<String>>,
    webhook_data: Vec<String>,
}

impl Ends {
    fn push(&mut self, lease: &Seat, key_masked: &str, now: i64) {
        let before = json(lease);
        let after = json(&lease.ended(now, ReleaseReason::Checkin));
        let actor = key_actor_of(&lease.license_id, key_masked, lease.identifier.as_deref());
        let event = SeatEvent::new(
            &lease.license_id,
            actor,
            &lease.id,
            before.as_deref(),
            after.as_deref(),
        );
        self.id.push(lease.id.clone());
        self.workspace_id.push(lease.workspace_id.clone());
        self.instances.push(lease.instances.clone());
        self.expires_at.push(lease.expires_at);
        self.last_seen_at.push(lease.last_seen_at);
        self.event_id.push(event.id);
        self.actor_kind.push(event.actor_kind);
        self.actor_id.push(event.actor_id);
        self.actor_label.push(event.actor_label);
        self.before_json.push(before);
        self.after_json.push(after);
        self.webhook_data.push(event.webhook_data);
    }
}

/// The live leases the batch's checkins would end, by id, as they are now.
async fn leaving_leases(
    conn: &mut PgConnection,
    ops: &[SeatOp],
) -> Result<HashMap<String, Seat>, sqlx::Error> {
    let ids: Vec<&str> = ops
        .iter()
        .filter(|op| !op.is_take())
        .map(SeatOp::seat_id)
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let leases: Vec<Seat> = sqlx::query_as(LEAVING_LEASES)
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(leases
        .into_iter()
        .map(|lease| (lease.id.clone(), lease))
        .collect())
}

type Outcome = Result<Done, StoreError>;
type Reply = oneshot::Sender<Outcome>;

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

    /// Applies `op` with whatever else is queued; answers what it did, or its refusal.
    pub(crate) async fn apply(&self, op: SeatOp) -> Outcome {
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

/// What places an operation in the batch's statements: its license, whether it takes,
/// and who it is for (a holder's machine and OS user, or a lease).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Placing<'a> {
    license: &'a str,
    take: bool,
    who: (&'a str, &'a str),
}

impl SeatOp {
    fn placing(&self) -> Placing<'_> {
        match self {
            SeatOp::Take {
                license, holder, ..
            } => Placing {
                license: &license.id,
                take: true,
                who: (&holder.fingerprint, &holder.os_user),
            },
            SeatOp::Release {
                license, lease_id, ..
            } => Placing {
                license: &license.id,
                take: false,
                who: (lease_id, ""),
            },
        }
    }
}

/// The batch's statements: one per license, in id order (so two nodes' batches lock
/// licenses in one order), takes before checkins, each the indexes of its operations.
/// A seat or holder that appears twice goes to a later statement, so that a statement
/// decides each once.
fn statements<'a>(ops: &[Placing<'a>]) -> Vec<(&'a str, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].license, !ops[i].take));
    let mut statements: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut seen: HashSet<Placing> = HashSet::new();
    for index in order {
        let op = ops[index];
        let fresh = seen.insert(op);
        match statements.last_mut() {
            Some((license, batch)) if fresh && *license == op.license => batch.push(index),
            _ => {
                if !fresh {
                    seen.clear();
                    seen.insert(op);
                }
                statements.push((op.license, vec![index]))
            }
        }
    }
    statements
}

async fn apply_batch(pool: &PgPool, ops: &[SeatOp]) -> Vec<Outcome> {
    match in_one_transaction(pool, ops).await {
        Ok(outcomes) => outcomes,
        // A statement failed: each operation again on its own, so the failure is only
        // its own. Anything else (no connection, say) would fail them all the same.
        Err(error @ sqlx::Error::Database(_)) if ops.len() > 1 => {
            tracing::debug!(%error, size = ops.len(), "seat batch failed; applying one by one");
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                let outcome = match in_one_transaction(pool, std::slice::from_ref(op)).await {
                    Ok(mut one) => one.pop().unwrap_or_else(|| Err(undecided())),
                    Err(error) => Err(error.into()),
                };
                outcomes.push(outcome);
            }
            outcomes
        }
        Err(error) => {
            // sqlx's errors don't clone: each operation gets one of the same kind.
            let again = |error: &sqlx::Error| match error {
                sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
                other => sqlx::Error::Protocol(other.to_string()),
            };
            let mut outcomes: Vec<Outcome> = ops
                .iter()
                .skip(1)
                .map(|_| Err(again(&error).into()))
                .collect();
            outcomes.insert(0, Err(error.into()));
            outcomes
        }
    }
}

fn undecided() -> StoreError {
    StoreError::Corrupt("the seat batch left an operation undecided".into())
}

/// Applies the operations in one transaction and answers each one's outcome, in order.
/// The checkins' leases are read first, before any lock is taken. Per license: its
/// statement, then the seat decision for what the statement did not decide.
async fn in_one_transaction(pool: &PgPool, ops: &[SeatOp]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx: Tx = pool.begin().await?;
    let leaving = leaving_leases(&mut tx, ops).await?;
    let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
    let placings: Vec<Placing> = ops.iter().map(SeatOp::placing).collect();
    for (license_id, indexes) in statements(&placings) {
        let statement: Vec<&SeatOp> = indexes.iter().map(|&i| &ops[i]).collect();
        let done = run(&mut tx, license_id, &statement, &leaving).await?;
        for index in indexes {
            let op = &ops[index];
            outcomes[index] = Some(if done.contains(op.seat_id()) {
                Ok(match op {
                    SeatOp::Take { seat, .. } => Done::Taken(seat.clone(), true),
                    SeatOp::Release { .. } => Done::Released(true),
                })
            } else {
                decide_rest(&mut tx, op).await?
            });
        }
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err(undecided())))
        .collect())
}

/// An operation the statement did not decide, decided under the license lock the
/// statement took, in the batch's transaction. A database error fails the batch; any
/// other error is the operation's answer.
async fn decide_rest(tx: &mut Tx, op: &SeatOp) -> Result<Outcome, sqlx::Error> {
    let decided = match op {
        SeatOp::Take {
            license, holder, ..
        } => PostgresStore::take_in(tx, license, holder, now_ms())
            .await
            .map(|answer| answer.map(|(seat, new)| Done::Taken(Box::new(seat), new))),
        SeatOp::Release {
            license,
            lease_id,
            instance,
            ..
        } => PostgresStore::release_in(tx, license, lease_id, instance, now_ms())
            .await
            .map(|answer| answer.map(Done::Released)),
    };
    match decided {
        Ok(answer) => Ok(answer),
        Err(StoreError::Database(error)) => Err(error),
        Err(other) => Ok(Err(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take<'a>(license: &'a str, machine: &'a str) -> Placing<'a> {
        Placing {
            license,
            take: true,
            who: (machine, "u"),
        }
    }

    fn release<'a>(license: &'a str, lease: &'a str) -> Placing<'a> {
        Placing {
            license,
            take: false,
            who: (lease, ""),
        }
    }

    #[test]
    fn a_statement_per_license_in_id_order() {
        let ops = [
            release("b", "r1"),
            take("b", "m1"),
            take("a", "m2"),
            release("a", "r2"),
            take("b", "m3"),
        ];
        assert_eq!(
            statements(&ops),
            vec![("a", vec![2, 3]), ("b", vec![1, 4, 0])]
        );
    }

    #[test]
    fn a_holder_or_seat_twice_goes_to_a_later_statement() {
        let ops = [
            take("a", "m1"),
            take("a", "m1"),
            take("a", "m2"),
            release("a", "r1"),
            release("a", "r1"),
        ];
        assert_eq!(
            statements(&ops),
            vec![("a", vec![0]), ("a", vec![1, 2, 3]), ("a", vec![4])]
        );
    }
}
