//! The SQL texts both stores run, each written once: the seat operations' statements
//! (run by PostgreSQL's sqlx code and by SQLite's seat writer alike) and the lists and
//! columns the shared engine (`engine/`) reads. Keep them portable: `$n` placeholders (first appearing in
//! ascending order: SQLite's writer binds by order of first appearance), `ON CONFLICT`,
//! `RETURNING`, row values.

/// A [`Seat`]'s columns, from seats `s` and their contacts `c`: with the holder
/// contact's name and whether they were offboarded.
macro_rules! seat_columns {
    () => {
        "s.id, s.workspace_id, s.license_id, s.kind, s.contact_id, c.name AS contact_name, \
         COALESCE(c.status = 'terminated', FALSE) AS contact_terminated, s.assignee_name, \
         s.device_name, s.serial_key_enc, s.serial_key_masked, s.activated_on, s.fingerprint, \
         s.os_user, s.identifier, s.instances, s.created_at, s.last_seen_at, s.expires_at, \
         s.released_at, s.release_reason, s.reclaimed_on, s.idle_since, \
         s.idle_reports "
    };
}

/// Seats with their contacts, for a `WHERE` to follow.
macro_rules! seat_select {
    () => {
        concat!(
            "SELECT ",
            seat_columns!(),
            "FROM seats s LEFT JOIN contacts c ON c.id = s.contact_id "
        )
    };
}

/// A license in force on `$today` (the placeholder naming today's date): active and not
/// expired. One text for every statement that decides a take.
macro_rules! in_force {
    ($today:literal) => {
        concat!(
            "status = 'active' AND (expires_on IS NULL OR expires_on >= ",
            $today,
            ")"
        )
    };
}

macro_rules! license_select {
    () => {
        "SELECT * FROM licenses WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
    };
}

/// The columns of a license an admin sets (a `LicenseChange`), in the order
/// `bind_license_fields` binds them: `$1`…`$27` of [`INSERT_LICENSE`] and
/// [`UPDATE_LICENSE`].
macro_rules! license_fields {
    () => {
        "licensed_to, vendor, license_type, status, seat_model, seats_total, version, \
         cost_amount_minor, cost_currency, purchased_on, expires_on, maintenance_expires_on, \
         po_number, notes, lease_ttl_s, heartbeat_interval_s, license_file_ttl_s, \
         self_service_releases_per_month, admin_release, release_cooldown_s, max_instances_per_lease, \
         queue, queue_ttl_s, idle_timeout_s, idle_reclaim, max_borrow_days, max_borrowed_seats"
    };
}

/// `$1`…`$27`: the fields; then id, workspace, application, the key (sealed, hashed,
/// masked) and the time.
pub(crate) const INSERT_LICENSE: &str = concat!(
    "INSERT INTO licenses (",
    license_fields!(),
    ", id, workspace_id, application_id, key_enc, key_hash, key_masked, seats_used, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, 0, $34,      $34) RETURNING *"
);

/// `$1`…`$27`: the fields; then the time and the id. No row when the new `seats_total`
/// (`$6`) is below the seats in use.
pub(crate) const UPDATE_LICENSE: &str = concat!(
    "UPDATE licenses SET (",
    license_fields!(),
    ", updated_at) = ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28) WHERE id = $29 AND seats_used <= $6      RETURNING *"
);

/// "No cursor": lists read `($n = '' OR id < $n)`. (A sentinel that sorts above every
/// id would depend on the database's collation; en_US puts `~` before digits.)
pub(crate) const TOP_CURSOR: &str = "";

/// Which events the reader's role may read (`$6`: members and tokens, `$7`: webhooks and
/// notification settings; DESIGN §11), for the texts below.
macro_rules! event_scope {
    ($e:literal) => {
        concat!(
            "($6 OR ",
            $e,
            "subject_type NOT IN ('member', 'token')) AND ($7 OR (",
            $e,
            "subject_type <> 'webhook' AND ",
            $e,
            "action <> 'workspace.notifications_updated'))"
        )
    };
}

/// A workspace's audit log, newest first, after a cursor, of one action if `$4`.
pub(crate) const WORKSPACE_EVENTS: &str = concat!(
    "SELECT * FROM events WHERE workspace_id = $1 AND ($2 = '' OR id < $2) \
     AND ($4 = '' OR action = $4) AND $3 = '' AND ",
    event_scope!(""),
    " ORDER BY id DESC LIMIT $5"
);
/// A machine's (`$2`) live seat of the license (`$1`) and when it expires (the latest, for
/// leases: one per OS user), one text per kind: the kind written out lets both databases
/// use the partial index of live activations or leases, where a parameter for it would
/// read every seat the license ever had.
pub(crate) const HOLDS_ACTIVATION: &str = "SELECT expires_at FROM seats WHERE license_id = $1 \
     AND kind = 'activation' AND fingerprint = $2 AND released_at IS NULL LIMIT 1";
pub(crate) const HOLDS_LEASE: &str = "SELECT expires_at FROM seats WHERE license_id = $1 \
     AND kind = 'lease' AND fingerprint = $2 AND released_at IS NULL \
     ORDER BY expires_at DESC LIMIT 1";
pub(crate) const HOLDS_BORROW: &str = "SELECT expires_at FROM seats WHERE license_id = $1 \
     AND kind = 'borrow' AND fingerprint = $2 AND released_at IS NULL \
     ORDER BY expires_at DESC LIMIT 1";
pub(crate) const HOLDS_ASSIGNMENT: &str = "SELECT expires_at FROM seats WHERE license_id = $1 \
     AND kind = 'assignment' AND fingerprint = $2 AND released_at IS NULL LIMIT 1";

/// One license's audit log (`$3`): as [`WORKSPACE_EVENTS`], through `events_license`
/// (PostgreSQL).
pub(crate) const LICENSE_EVENTS: &str = concat!(
    "SELECT * FROM events WHERE license_id = $3 AND workspace_id = $1 \
     AND ($2 = '' OR id < $2) AND ($4 = '' OR action = $4) AND ",
    event_scope!(""),
    " ORDER BY id DESC LIMIT $5"
);

/// One license's audit log on SQLite, as [`LICENSE_EVENTS`]: the events `license_events`
/// indexes (read in its order, so the merge stops at the limit) and those committed
/// since, past `through` at the end of the table (a short scan by rowid, sorted on its
/// own: `MATERIALIZED` keeps SQLite from reading the whole table in id order to merge
/// it, and `+` from reading the workspace's whole log through its index).
pub(crate) const SQLITE_LICENSE_EVENTS: &str = concat!(
    "WITH tail AS MATERIALIZED ( \
     SELECT * FROM events WHERE rowid > (SELECT through FROM license_events_through) AND +license_id = $3 \
     AND +workspace_id = $1 AND ($2 = '' OR +id < $2) AND ($4 = '' OR action = $4) AND ",
    event_scope!(""),
    ") SELECT l.event_id AS id, e.workspace_id, e.actor_kind, e.actor_id, e.actor_label, e.action, \
     e.subject_type, e.subject_id, e.license_id, e.before_json, e.after_json, e.created_at \
     FROM license_events l CROSS JOIN events e ON e.id = l.event_id \
     WHERE l.license_id = $3 AND ($2 = '' OR l.event_id < $2) AND e.workspace_id = $1 \
     AND ($4 = '' OR e.action = $4) AND ",
    event_scope!("e."),
    " UNION ALL SELECT * FROM tail ORDER BY id DESC LIMIT $5"
);

/// The earliest and latest days both databases store.
pub(crate) fn first_day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or_default()
}

pub(crate) fn last_day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default()
}

/// A heartbeat: one statement on one row, answering the instance list of a live lease.
/// It names no indexed column, so it changes the row's page only (migration 0010:
/// `sweep_at`, not the expiry, is indexed). A new expiry before the lease's `sweep_at` (its
/// license's lease period was shortened) matches no row here; the heartbeat then moves
/// `sweep_at` too ([`TOUCH_LEASE_SOONER`]), so a lease never lapses before its `sweep_at`.
/// The newest heartbeat wins: one that arrives late (a stalled node, a retry) after a
/// newer one was recorded (`last_seen_at` later than its own time) can't move the lease's
/// expiry back or its last-seen time. (A heartbeat after a shorter lease period still
/// shortens it, from its own time.) Parameters first appear in their order in these texts:
/// SQLite's seat writer binds `$n` by order of first appearance, not by number.
pub(crate) const TOUCH_LEASE: &str = "UPDATE seats SET \
     expires_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN expires_at ELSE $1 END, \
     last_seen_at = CASE WHEN last_seen_at > $2 THEN last_seen_at ELSE $2 END WHERE id = $3 \
     AND license_id = $4 AND kind = 'lease' AND released_at IS NULL AND expires_at >= $2 AND sweep_at <= $1 \
     RETURNING instances, idle_reports";
/// A heartbeat absorbed in memory, written by a flush: as [`TOUCH_LEASE`], with `$2` the
/// beat's own time, so a lease that had lapsed before its beat stays lapsed and a
/// released one is never touched. No row: try [`FLUSH_LEASE_SOONER`].
pub(crate) const FLUSH_LEASE: &str = "UPDATE seats SET \
     expires_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN expires_at ELSE $1 END, \
     last_seen_at = CASE WHEN last_seen_at > $2 THEN last_seen_at ELSE $2 END WHERE id = $3 \
     AND license_id = $4 AND kind = 'lease' AND released_at IS NULL AND expires_at >= $2 AND sweep_at <= $1";
/// A flushed heartbeat whose new expiry comes before the lease's `sweep_at` (the lease
/// period was shortened): as [`TOUCH_LEASE_SOONER`], for a live lease that had not lapsed.
pub(crate) const FLUSH_LEASE_SOONER: &str = "UPDATE seats SET \
     expires_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN expires_at ELSE $1 END, \
     sweep_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN sweep_at ELSE $1 END, \
     last_seen_at = CASE WHEN last_seen_at > $2 THEN last_seen_at ELSE $2 END \
     WHERE id = $3 AND license_id = $4 AND kind = 'lease' AND released_at IS NULL AND expires_at >= $2";
/// PostgreSQL's flush of a chunk of heartbeats, in one statement: as [`FLUSH_LEASE`] and
/// [`FLUSH_LEASE_SOONER`] row by row (`sweep_at` keeps its value unless the new expiry
/// comes first, so the update stays HOT). Answers the leases written.
pub(crate) const FLUSH_LEASES_PG: &str = "WITH b AS (SELECT * FROM \
     unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS b(id, license_id, expires_at, last_seen_at)), \
     n AS (SELECT s.id, CASE WHEN b.expires_at < s.expires_at AND s.last_seen_at > b.last_seen_at \
       THEN s.expires_at ELSE b.expires_at END AS expires_at, b.last_seen_at \
       FROM seats s JOIN b ON s.id = b.id AND s.license_id = b.license_id \
       WHERE s.kind = 'lease' AND s.released_at IS NULL AND s.expires_at >= b.last_seen_at) \
     UPDATE seats s SET expires_at = n.expires_at, \
       sweep_at = LEAST(s.sweep_at, n.expires_at), \
       last_seen_at = GREATEST(s.last_seen_at, n.last_seen_at) \
     FROM n WHERE s.id = n.id AND s.released_at IS NULL RETURNING s.id";
/// Locks a chunk's leases before [`FLUSH_LEASES_PG`], skipping those another transaction
/// holds (a sweep, a check-in's batch, another node's flush): the flush never waits for
/// a row lock, so it is in no deadlock; what it skipped waits for the next flush.
pub(crate) const LOCK_FLUSHED_PG: &str =
    "SELECT id FROM seats WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED";
/// What a heartbeat changed of a lease's idleness (DESIGN §7): its instances' reports,
/// since when it is unused, and (under `idle_reclaim: always`) a `sweep_at` no later than
/// when it turns idle (`$3`), so that the sweeper visits it then.
pub(crate) const IDLE_REPORT: &str = "UPDATE seats SET idle_reports = $1, idle_since = $2, \
     sweep_at = CASE WHEN sweep_at > $3 THEN $3 ELSE sweep_at END \
     WHERE id = $4 AND released_at IS NULL";
/// A license's live leases idle since at most `$2`, the longest-idle first, at most `$3`:
/// the one a checkout of a full license takes the seat of, or the ones the sweeper
/// releases under `idle_reclaim: always`.
pub(crate) const IDLE_LEASES: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'lease' AND s.released_at IS NULL \
     AND s.idle_since <= $2 ORDER BY s.idle_since LIMIT $3"
);
/// A heartbeat whose new expiry comes before the lease's `sweep_at` (the newest winning,
/// as above).
pub(crate) const TOUCH_LEASE_SOONER: &str = "UPDATE seats SET \
     expires_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN expires_at ELSE $1 END, \
     sweep_at = CASE WHEN $1 < expires_at AND last_seen_at > $2 THEN sweep_at ELSE $1 END, \
     last_seen_at = CASE WHEN last_seen_at > $2 THEN last_seen_at ELSE $2 END \
     WHERE id = $3 AND kind = 'lease' AND released_at IS NULL";

/// One more refusal of a holder in an hour (DESIGN §8): `$1` license, `$2` hour, `$3`
/// holder.
pub(crate) const COUNT_DENIAL: &str =
    "INSERT INTO usage_denials (license_id, hour, holder, denials) VALUES ($1, $2, $3, 1) \
     ON CONFLICT (license_id, hour, holder) DO UPDATE SET denials = usage_denials.denials + 1";
/// The most waiters a license's queue held in an hour: `$3` now.
pub(crate) const PEAK_QUEUED: &str =
    "INSERT INTO usage_queue (license_id, hour, peak_queued) VALUES ($1, $2, $3) \
     ON CONFLICT (license_id, hour) DO UPDATE SET peak_queued = CASE \
     WHEN usage_queue.peak_queued > excluded.peak_queued THEN usage_queue.peak_queued \
     ELSE excluded.peak_queued END";

/// A holder's borrow still out (DESIGN §7).
pub(crate) const ACTIVE_BORROW: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'borrow' AND s.fingerprint = $2 AND s.os_user = $3 \
     AND s.released_at IS NULL"
);
/// How many of a license's borrows are out (`$2`: now; one whose time is up is not, even
/// before the sweeper ends it).
pub(crate) const BORROWS_OUT: &str = "SELECT COUNT(*) FROM seats \
     WHERE license_id = $1 AND kind = 'borrow' AND released_at IS NULL AND expires_at >= $2";
/// A new borrow, held without heartbeats to `$8` (its `borrowed_until`).
pub(crate) const INSERT_BORROW: &str =
    "INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, \
     identifier, created_at, last_seen_at, expires_at, sweep_at) \
     VALUES ($1, $2, $3, 'borrow', $4, $5, $6, $7, $7, $8, $8)";
/// A borrow renewed, or a live lease turned into a borrow, to `$1`, at `$2`.
pub(crate) const LEND_SEAT: &str = "UPDATE seats SET kind = 'borrow', expires_at = $1, \
     sweep_at = $1, last_seen_at = $2, idle_since = NULL, idle_reports = NULL \
     WHERE id = $3 AND released_at IS NULL";
/// A license's borrows whose time is up (`$2`: now), at most `$3`.
pub(crate) const ENDED_BORROWS: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'borrow' AND s.released_at IS NULL \
     AND s.expires_at < $2 ORDER BY s.expires_at LIMIT $3"
);

/// The seat statements both the sqlx paths and SQLite's seat writer run (one text each).
/// A holder's live lease (`$3`: its OS user). (No `$n = '' OR …` shortcut in these two:
/// SQLite re-prepares a statement on every run whose plan depends on such a value.)
pub(crate) const ACTIVE_LEASE: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'lease' AND s.fingerprint = $2 AND s.os_user = $3 \
     AND s.released_at IS NULL"
);
/// A machine's activation.
pub(crate) const ACTIVE_ACTIVATION: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'activation' AND s.fingerprint = $2 AND s.released_at IS NULL"
);
/// A machine's new activation (`$7`: now, its first and last sighting).
pub(crate) const INSERT_ACTIVATION: &str =
    "INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, identifier, activated_on, \
     created_at, last_seen_at) VALUES ($1, $2, $3, 'activation', $4, $5, $6, $7, $7)";
/// A machine seen again on its activation.
pub(crate) const RENEW_ACTIVATION: &str =
    "UPDATE seats SET last_seen_at = $1, identifier = COALESCE($2, identifier) WHERE id = $3";
/// A license's self-service releases since `$2` (the month's start).
pub(crate) const TRANSFERS_SINCE: &str = "SELECT COUNT(*) FROM seats WHERE license_id = $1 \
     AND release_reason = 'transferred' AND released_at >= $2";
pub(crate) const SEAT_BY_ID: &str =
    concat!(seat_select!(), "WHERE s.id = $1 AND s.workspace_id = $2");
/// Counts one more seat if one is free: the invariant, in one statement. It re-checks what
/// the caller read before its transaction: the seat model and, for applications
/// (`$3`, in force), that the license is active on `$4` (today).
pub(crate) const TRY_TAKE_SEAT: &str = concat!(
    "UPDATE licenses SET seats_used = seats_used + 1 \
     WHERE id = $1 AND seats_used < seats_total AND deleted_at IS NULL AND seat_model = $2 \
     AND ($3 = FALSE OR (",
    in_force!("$4"),
    "))"
);
/// A license's seats and standing, for the seat decision (no row: deleted).
pub(crate) const LICENSE_SEATS: &str = "SELECT seat_model, status, expires_on, seats_total, \
     seats_used FROM licenses WHERE id = $1 AND deleted_at IS NULL";
/// The soonest a live lease of the license could lapse (a refusal's `retry_after_s`): its
/// earliest `sweep_at`, never later than the earliest expiry, and the expiry itself for
/// every lease not renewed since [`RESWEEP_LEASES`] last moved it. One probe of the index.
pub(crate) const NEXT_LEASE_EXPIRY: &str = "SELECT MIN(sweep_at) FROM seats \
     WHERE license_id = $1 AND kind = 'lease' AND released_at IS NULL";
pub(crate) const INSERT_LEASE: &str =
    "INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, \
     identifier, instances, created_at, last_seen_at, expires_at, sweep_at) \
     VALUES ($1, $2, $3, 'lease', $4, $5, $6, $7, $8, $8, $9, $9)";
/// A live lease taken again by another instance of its holder (`sweep_at` kept no later
/// than the new expiry, as [`TOUCH_LEASE`] keeps it).
pub(crate) const RENEW_LEASE: &str =
    "UPDATE seats SET instances = $1, \
     expires_at = CASE WHEN $2 < expires_at AND last_seen_at > $3 THEN expires_at ELSE $2 END, \
     last_seen_at = CASE WHEN last_seen_at > $3 THEN last_seen_at ELSE $3 END, \
     identifier = COALESCE($4, identifier), idle_since = NULL, \
     sweep_at = CASE WHEN sweep_at > $2 THEN $2 ELSE sweep_at END WHERE id = $5 AND released_at IS NULL";
/// An instance counted into a live lease by its heartbeat.
pub(crate) const JOIN_INSTANCE: &str =
    "UPDATE seats SET instances = $1 WHERE id = $2 AND released_at IS NULL";
pub(crate) const SET_INSTANCES: &str =
    "UPDATE seats SET instances = $1, last_seen_at = $2 WHERE id = $3 AND released_at IS NULL";
pub(crate) const END_SEAT: &str =
    "UPDATE seats SET released_at = $1, release_reason = $2 WHERE id = $3 AND released_at IS NULL";
pub(crate) const FREE_SEAT: &str = "UPDATE licenses SET seats_used = seats_used - 1 WHERE id = $1";
/// A license's live leases whose `sweep_at` has passed (`$2`: now) though they have not
/// lapsed (heartbeats pushed their expiry): at most `$3` of them, in index order, get their
/// expiry as their `sweep_at`. Run before [`LAPSED_LEASES`], so that it reads only lapsed
/// leases when fewer than `$3` were moved.
pub(crate) const RESWEEP_LEASES: &str = "UPDATE seats SET sweep_at = expires_at WHERE id IN (\
     SELECT id FROM seats WHERE license_id = $1 AND kind = 'lease' AND released_at IS NULL \
     AND sweep_at < $2 AND expires_at >= $2 ORDER BY sweep_at LIMIT $3)";
/// A license's lapsed leases (`$2`: now), at most `$3`, in `sweep_at` order (oldest
/// first, but for leases renewed since their `sweep_at` last moved).
pub(crate) const LAPSED_LEASES: &str = concat!(
    seat_select!(),
    "WHERE s.license_id = $1 AND s.kind = 'lease' AND s.released_at IS NULL AND s.sweep_at < $2 \
     AND s.expires_at < $2 ORDER BY s.sweep_at LIMIT $3"
);
/// Frees `$1` seats of license `$2` at once (the expired leases of a sweep's chunk).
pub(crate) const FREE_SEATS: &str =
    "UPDATE licenses SET seats_used = seats_used - $1 WHERE id = $2";
pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (id, workspace_id, actor_kind, actor_id, actor_label, action, \
     subject_type, subject_id, license_id, before_json, after_json, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/// Queues an event for every webhook of the workspace subscribed to it (`$7`: its quoted
/// type, as the webhook's JSON list holds it); ids are `event_id.webhook_id`, so queuing
/// twice is once. (`LIKE $7` would make SQLite re-prepare the statement whenever `$7`
/// changes, for its LIKE optimisation; an expression does not.)
pub(crate) const ENQUEUE_WEBHOOKS: &str =
    "INSERT INTO outbox (id, workspace_id, channel, webhook_id, event_type, \
     payload, state, attempts, next_attempt_at, retry_until, created_at) \
     SELECT $1 || '.' || w.id, $2, 'webhook', w.id, $3, $4, 'pending', 0, $5, $6, $5 \
     FROM webhooks w WHERE w.workspace_id = $2 AND w.deleted_at IS NULL AND w.events LIKE '%' || $7 || '%' \
     ON CONFLICT (id) DO NOTHING";

/// When an admin last released this holder's seat (`$3`: the OS user, `''` for any).
pub(crate) const LAST_ADMIN_RELEASE: &str =
    "SELECT MAX(released_at) FROM seats WHERE license_id = $1 \
     AND fingerprint = $2 AND ($3 = '' OR os_user = $3) AND release_reason = 'admin_release'";

/// The `seat.denied` webhook message's data: who was refused a seat of `license`, and why.
pub(crate) fn denial_data(
    license: &crate::License,
    fingerprint: &str,
    os_user: Option<&str>,
    refusal: &crate::StoreError,
) -> String {
    serde_json::json!({
        "license_id": license.id,
        "fingerprint": fingerprint,
        "os_user": os_user,
        "reason": refusal.to_string(),
        "seats_total": license.seats_total,
    })
    .to_string()
}

/// How a webhook's JSON list of events holds `event_type`.
pub(crate) fn subscribed_pattern(event_type: &str) -> String {
    format!("\"{event_type}\"")
}

/// How many lapsed leases one transaction ends (bind-parameter and lock-time bound).
pub(crate) const EXPIRE_CHUNK: i64 = 500;

/// A webhook event's `data`: the subject as it is after the change (before, if it is
/// gone), the license it concerns, and a seat's release reason.
pub(crate) fn webhook_data(
    subject: (&str, &str),
    license_id: Option<&str>,
    before: Option<&str>,
    after: Option<&str>,
) -> String {
    let object: serde_json::Value = after
        .or(before)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut data = serde_json::json!({ "license_id": license_id });
    if let Some(reason) = object.get("release_reason").filter(|r| !r.is_null()) {
        data["reason"] = reason.clone();
    }
    data[subject.0] = object;
    if data[subject.0].is_null() {
        data[subject.0] = serde_json::json!({ "id": subject.1 });
    }
    data.to_string()
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

// The wait queue (DESIGN §7). A place is (license, machine, OS user), in order of
// `since` and then of the holder, so that two waiters never share a place.

/// Whether anyone waits for a seat of the license (`$1`): one probe of its index, so a
/// take costs nothing more while nobody queues.
pub(crate) const HAS_WAITERS: &str = "SELECT EXISTS (SELECT 1 FROM waiters WHERE license_id = $1)";
/// Waiters of license `$1` silent since before `$2` lose their place; answers them.
pub(crate) const DROP_SILENT_WAITERS: &str =
    "DELETE FROM waiters WHERE license_id = $1 AND last_seen_at < $2 \
     RETURNING fingerprint, os_user, identifier, since";
/// The holder's place (`since`), if it has one.
pub(crate) const WAITER_SINCE: &str =
    "SELECT since FROM waiters WHERE license_id = $1 AND fingerprint = $2 AND os_user = $3";
/// The waiters ahead of a place (`$2` since, `$3` machine, `$4` OS user; `since` past
/// every place counts them all).
pub(crate) const WAITERS_AHEAD: &str = "SELECT COUNT(*) FROM waiters WHERE license_id = $1 \
     AND (since < $2 OR (since = $2 AND (fingerprint < $3 OR (fingerprint = $3 AND os_user < $4))))";
pub(crate) const COUNT_WAITERS: &str = "SELECT COUNT(*) FROM waiters WHERE license_id = $1";
/// Holds a place at the end (`$6`: now), or sees the holder's place again.
pub(crate) const HOLD_PLACE: &str = "INSERT INTO waiters (license_id, fingerprint, os_user, \
     workspace_id, identifier, since, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
     ON CONFLICT (license_id, fingerprint, os_user) DO UPDATE SET last_seen_at = $6, \
     identifier = COALESCE($5, waiters.identifier)";
/// The holder gives up its place; answers it, if it had one.
pub(crate) const LEAVE_QUEUE: &str =
    "DELETE FROM waiters WHERE license_id = $1 AND fingerprint = $2 AND os_user = $3 \
     RETURNING fingerprint, os_user, identifier, since";

/// A place in a queue as the audit log and webhooks carry it (`seat.queued`,
/// `seat.dequeued` with the reason it ended: `left`, `silent`), times in RFC 3339.
pub(crate) fn waiter_data(
    (fingerprint, os_user, identifier, since): (&str, &str, Option<&str>, i64),
    reason: Option<&str>,
) -> Option<String> {
    let since = chrono::DateTime::from_timestamp_millis(since).map(|t| t.to_rfc3339());
    let mut data = serde_json::json!({
        "fingerprint": fingerprint, "os_user": os_user, "identifier": identifier, "since": since,
    });
    if let Some(reason) = reason {
        data["reason"] = serde_json::json!(reason);
    }
    Some(data.to_string())
}
/// The waiters of license `$1` that still hold their place (seen since `$2`), head first.
pub(crate) const LIST_WAITERS: &str = "SELECT fingerprint, os_user, identifier, since, \
     last_seen_at FROM waiters WHERE license_id = $1 AND last_seen_at >= $2 \
     ORDER BY since, fingerprint, os_user";
