//! Heartbeats absorbed in memory and written in bulk (issue 33), on both stores: a beat
//! is answered from memory with the expiry the store already holds, the flush writes the
//! newest beat, a released lease is never brought back, a check-in makes the next beat
//! `410` at once, a stopped app is released on time, and a kill -9 ends no lease before
//! the time its last heartbeat answered. Two nodes on PostgreSQL: `nodes.rs`.

use crate::client::{client, lease_body};
use crate::harness::{
    eventually, id, init_store, process_stores, Api, Backend, ServerProcess, TestServer,
};
use chrono::{DateTime, Utc};
use leasehold_store::Beat;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Runs `$name(backend)` as a SQLite and a PostgreSQL test.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::harness::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await;
            }
        }
    )*};
}

on_both!(
    a_heartbeat_is_answered_from_memory_and_written_by_the_flush,
    a_flush_racing_a_checkin_does_not_revive_the_lease,
    a_checkin_or_an_admin_release_makes_the_next_heartbeat_410,
    a_stopped_client_is_released_expired_within_ttl_flush_and_sweep,
    a_lease_is_written_before_its_stored_expiry_draws_near,
    a_shorter_lease_period_is_written_not_promised_from_memory,
    idleness_goes_to_the_store_as_it_changes,
);

pub(crate) fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .with_timezone(&Utc)
}

/// A floating license whose leases last `ttl_s` with a heartbeat every second.
pub(crate) async fn beating_license(admin: &Api, seats: i64, ttl_s: i64) -> (String, String) {
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": seats,
            "policy": {"lease_ttl_s": ttl_s, "heartbeat_interval_s": 1}}))
        .await;
    (license["key"].as_str().unwrap().to_string(), id(&license))
}

/// Takes a lease for (`machine`, OS user `u`, instance `i`); answers it.
async fn take(c: &Api, key: &str, machine: &str) -> Value {
    c.ok_post(
        "/v1/client/leases",
        lease_body(key, machine, "u", "i"),
        StatusCode::CREATED,
    )
    .await
}

pub(crate) async fn beat(c: &Api, key: &str, lease_id: &str) -> (StatusCode, Value) {
    c.post(
        &format!("/v1/client/leases/{lease_id}/heartbeat"),
        json!({"key": key, "instance": "i"}),
    )
    .await
}

/// The lease as the admin API reads it from the store.
pub(crate) async fn stored(admin: &Api, license_id: &str, lease_id: &str) -> Value {
    let seats = admin
        .all_pages(
            &format!("/v1/licenses/{license_id}/seats?active=false"),
            200,
        )
        .await;
    seats
        .into_iter()
        .find(|s| s["id"] == lease_id)
        .unwrap_or_else(|| panic!("no lease {lease_id}"))
}

/// The lease period of [`flushed_by_hand`]'s licenses: a beat is absorbed only while the
/// stored expiry lies a heartbeat interval, a flush interval (there, an hour) and a margin
/// ahead, and only for a lease period that stays so even a heartbeat and a flush later.
const LONG_TTL_S: i64 = 10_800;

/// A server whose flusher never runs by itself (every hour): the test flushes. With a
/// workspace (its admin) and a floating license of `seats` lasting [`LONG_TTL_S`] (its
/// key and id), and the client side.
async fn flushed_by_hand(backend: Backend, seats: i64) -> (TestServer, Api, String, String, Api) {
    let s = TestServer::start_with(backend, |settings| {
        settings.heartbeat_flush = Duration::from_secs(3600);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let (key, lid) = beating_license(&admin, seats, LONG_TTL_S).await;
    let c = client(&s);
    (s, admin, key, lid, c)
}

async fn a_heartbeat_is_answered_from_memory_and_written_by_the_flush(backend: Backend) {
    let (s, admin, key, lid, c) = flushed_by_hand(backend, 2).await;
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let taken = stored(&admin, &lid, &lease_id).await;

    // Answered from memory: the expiry the store holds, which is not written again.
    for _ in 0..3 {
        let (status, answer) = beat(&c, &key, &lease_id).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {answer}");
        assert_eq!(
            time(&answer["expires_at"]),
            time(&lease["expires_at"]),
            "{backend:?}: a beat promises what the store holds"
        );
    }
    assert_eq!(
        stored(&admin, &lid, &lease_id).await["last_seen_at"],
        taken["last_seen_at"],
        "{backend:?}: no heartbeat was written yet"
    );
    assert_eq!(s.state.live.heartbeats.len(), 1);

    // The flush writes the newest beat: its time, and a lease period from it.
    let flushed = s.state.live.heartbeats.flush(s.state.store.as_ref()).await;
    assert_eq!((flushed.written, flushed.gone, flushed.failed), (1, 0, 0));
    let after = stored(&admin, &lid, &lease_id).await;
    let seen = time(&after["last_seen_at"]);
    assert!(seen > time(&taken["last_seen_at"]), "{backend:?}: {after}");
    assert_eq!(
        time(&after["expires_at"]),
        seen + chrono::Duration::seconds(LONG_TTL_S),
        "{backend:?}"
    );
    // The next beat promises what was flushed, and an idle flush writes nothing.
    let (_, answer) = beat(&c, &key, &lease_id).await;
    assert_eq!(time(&answer["expires_at"]), time(&after["expires_at"]));
    assert_eq!(
        s.state
            .live
            .heartbeats
            .flush(s.state.store.as_ref())
            .await
            .written,
        1
    );
    assert_eq!(
        s.state
            .live
            .heartbeats
            .flush(s.state.store.as_ref())
            .await
            .written,
        0
    );

    // The flush itself: the newest beat wins, a released lease is left alone.
    let now = Utc::now().timestamp_millis();
    let older = Beat {
        lease_id: lease_id.clone(),
        license_id: lid.clone(),
        expires_at: now - 30_000,
        last_seen_at: now - 90_000,
    };
    let gone = s
        .state
        .store
        .flush_heartbeats(std::slice::from_ref(&older))
        .await
        .unwrap();
    assert_eq!(
        gone,
        leasehold_store::FlushOutcome::default(),
        "{backend:?}: the lease is live"
    );
    let kept = stored(&admin, &lid, &lease_id).await;
    assert!(
        time(&kept["expires_at"]) >= time(&after["expires_at"]),
        "{backend:?}: a late beat never moves the expiry back: {kept}"
    );
    c.call(
        Method::DELETE,
        &format!("/v1/client/leases/{lease_id}/instances/i"),
        Some(json!({"key": key})),
    )
    .await;
    let newer = Beat {
        expires_at: now + 600_000,
        last_seen_at: now + 1,
        ..older
    };
    let gone = s.state.store.flush_heartbeats(&[newer]).await.unwrap();
    assert_eq!(gone.gone, vec![lease_id.clone()], "{backend:?}");
    assert!(gone.busy.is_empty(), "{backend:?}");
    let released = stored(&admin, &lid, &lease_id).await;
    assert_eq!(released["release_reason"], "checkin", "{backend:?}");
    assert_eq!(
        (&released["expires_at"], &released["last_seen_at"]),
        (&kept["expires_at"], &kept["last_seen_at"]),
        "{backend:?}: a flush leaves a released lease as it was"
    );
    assert_eq!(admin.seats_used(&lid).await, 0);
    s.stop().await;
}

/// An admin shortens the lease period while a lease is beaten from memory: the next
/// heartbeat writes and promises the shorter period, never the longer one held before.
async fn a_shorter_lease_period_is_written_not_promised_from_memory(backend: Backend) {
    let (s, admin, key, lid, c) = flushed_by_hand(backend, 1).await;
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let (_, answer) = beat(&c, &key, &lease_id).await;
    assert_eq!(time(&answer["expires_at"]), time(&lease["expires_at"]));
    let shorter = 3_700;
    let (status, body) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"lease_ttl_s": shorter, "heartbeat_interval_s": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
    let (status, answer) = beat(&c, &key, &lease_id).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {answer}");
    let promised = time(&answer["expires_at"]);
    assert!(
        promised <= Utc::now() + chrono::Duration::seconds(shorter),
        "{backend:?}: {promised} promises the old period"
    );
    let row = stored(&admin, &lid, &lease_id).await;
    assert!(
        time(&row["expires_at"]) >= promised,
        "{backend:?}: the store holds less than the promise: {row}"
    );
    s.state.live.heartbeats.flush(s.state.store.as_ref()).await;
    let (_, again) = beat(&c, &key, &lease_id).await;
    let row = stored(&admin, &lid, &lease_id).await;
    assert!(
        time(&row["expires_at"]) >= time(&again["expires_at"]),
        "{backend:?}"
    );
    s.stop().await;
}

/// An instance saying its user went away, and came back, is written as it says so (the
/// queue and idle reclaim read it from the store, on any node); saying it again is not.
async fn idleness_goes_to_the_store_as_it_changes(backend: Backend) {
    let (s, _admin, key, lid, c) = flushed_by_hand(backend, 1).await;
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let path = format!("/v1/client/leases/{lease_id}/heartbeat");
    let idle = |idle_s: i64| {
        c.post(
            &path,
            json!({"key": key, "instance": "i", "idle_s": idle_s}),
        )
    };
    // What the store holds of the lease's idleness (the admin API does not show it).
    let idle_since = || async {
        let seat = s.state.store.machine_seat(&lid, &lease_id).await.unwrap();
        seat.expect("the lease is live").idle_since
    };
    assert_eq!(beat(&c, &key, &lease_id).await.0, StatusCode::OK);
    assert_eq!(idle(900).await.0, StatusCode::OK);
    let since = idle_since().await.expect("written at once");
    assert!(
        since < Utc::now().timestamp_millis() - 800_000,
        "{backend:?}: {since}"
    );
    // The same absence again: answered from memory, nothing to write.
    assert_eq!(idle(901).await.0, StatusCode::OK);
    assert_eq!(idle(902).await.0, StatusCode::OK);
    assert_eq!(idle_since().await, Some(since), "{backend:?}");
    // Back in use: written at once.
    assert_eq!(idle(0).await.0, StatusCode::OK);
    assert_eq!(idle_since().await, None, "{backend:?}");
    s.stop().await;
}

/// Check-ins race flushes of the same leases; no lease comes back, no seat is counted
/// twice.
async fn a_flush_racing_a_checkin_does_not_revive_the_lease(backend: Backend) {
    let (s, admin, key, lid, c) = flushed_by_hand(backend, 1).await;
    for round in 0..60 {
        let machine = format!("m{round}");
        let lease = take(&c, &key, &machine).await;
        let lease_id = id(&lease);
        assert_eq!(beat(&c, &key, &lease_id).await.0, StatusCode::OK);
        let path = format!("/v1/client/leases/{lease_id}/instances/i");
        let checkin = c.call(Method::DELETE, &path, Some(json!({"key": key})));
        let flush = s.state.live.heartbeats.flush(s.state.store.as_ref());
        let ((status, body), _) = tokio::join!(checkin, flush);
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = beat(&c, &key, &lease_id).await;
        assert_eq!(
            status,
            StatusCode::GONE,
            "{backend:?} round {round}: {body}"
        );
        let lease = stored(&admin, &lid, &lease_id).await;
        assert_eq!(lease["release_reason"], "checkin", "{backend:?}: {lease}");
    }
    s.state.live.heartbeats.flush(s.state.store.as_ref()).await;
    assert_eq!(admin.seats_used(&lid).await, 0, "{backend:?}");
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true"))
        .await;
    assert_eq!(active["items"].as_array().unwrap().len(), 0, "{backend:?}");
    s.stop().await;
}

async fn a_checkin_or_an_admin_release_makes_the_next_heartbeat_410(backend: Backend) {
    let (s, admin, key, lid, c) = flushed_by_hand(backend, 2).await;
    let mut leases = Vec::new();
    for machine in ["a", "b"] {
        let lease = take(&c, &key, machine).await;
        let lease_id = id(&lease);
        assert_eq!(beat(&c, &key, &lease_id).await.0, StatusCode::OK);
        leases.push(lease_id);
    }
    c.call(
        Method::DELETE,
        &format!("/v1/client/leases/{}/instances/i", leases[0]),
        Some(json!({"key": key})),
    )
    .await;
    let (status, body) = beat(&c, &key, &leases[0]).await;
    assert_eq!(status, StatusCode::GONE, "{backend:?}: {body}");
    let (status, body) = admin
        .post(&format!("/v1/seats/{}/reclaim", leases[1]), json!({}))
        .await;
    assert!(status.is_success(), "{backend:?}: {status} {body}");
    let (status, body) = beat(&c, &key, &leases[1]).await;
    assert_eq!(status, StatusCode::GONE, "{backend:?}: {body}");
    assert_eq!(admin.seats_used(&lid).await, 0);
    s.stop().await;
}

/// An app that stops heartbeating is released (`expired`) no earlier than its last
/// answer promised, and within a lease period, a flush, and a sweep of its last beat.
async fn a_stopped_client_is_released_expired_within_ttl_flush_and_sweep(backend: Backend) {
    let s = TestServer::start_with(backend, |settings| {
        settings.heartbeat_flush = Duration::from_millis(300);
        settings.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let (key, lid) = beating_license(&admin, 1, 6).await;
    let c = client(&s);
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let mut promised = time(&lease["expires_at"]);
    // Beats for longer than a lease period: the lease lives on them alone.
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, answer) = beat(&c, &key, &lease_id).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {answer}");
        let answered = time(&answer["expires_at"]);
        assert!(answered >= promised, "{backend:?}: promises never shrink");
        promised = answered;
    }
    assert!(promised > time(&lease["expires_at"]), "{backend:?}");
    let released = eventually(30, || async { admin.seats_used(&lid).await == 0 }).await;
    assert!(
        released,
        "{backend:?}: the stopped client's seat was never freed"
    );
    let lease = stored(&admin, &lid, &lease_id).await;
    assert_eq!(lease["release_reason"], "expired", "{backend:?}: {lease}");
    let released_at = time(&lease["released_at"]);
    assert!(
        released_at >= promised,
        "{backend:?}: released before the promise: {lease}"
    );
    // Bound: TTL + flush + margin + sweep after the last beat the store recorded, with a
    // few seconds' room for a loaded machine.
    let last_seen = time(&lease["last_seen_at"]);
    assert!(
        released_at
            <= last_seen + chrono::Duration::milliseconds(6_000 + 300 + 1_000 + 100 + 5_000),
        "{backend:?}: {lease}"
    );
    s.stop().await;
}

/// With no budget for anything but what must be written, the flusher still writes each
/// lease before its stored expiry draws near: a lease beaten only from memory outlives
/// its lease period several times, and the store holds at least every answer.
async fn a_lease_is_written_before_its_stored_expiry_draws_near(backend: Backend) {
    let s = TestServer::start_with(backend, |settings| {
        settings.heartbeat_flush = Duration::from_millis(1_000);
        settings.heartbeat_flush_budget_per_s = 0;
        settings.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let (key, lid) = beating_license(&admin, 1, 8).await;
    let c = client(&s);
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let mut promised = time(&lease["expires_at"]);
    // 18 s of heartbeats: more than two lease periods. A heartbeat is answered from memory
    // while the stored expiry lies 3 s ahead (1 s interval, 1 s flush, 1 s margin); the
    // flusher must write it once it is within 5 s (plus a flush).
    for _ in 0..36 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, answer) = beat(&c, &key, &lease_id).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {answer}");
        promised = promised.max(time(&answer["expires_at"]));
        let row = stored(&admin, &lid, &lease_id).await;
        assert!(
            time(&row["expires_at"]) >= promised,
            "{backend:?}: the store holds less than an answer: {row}"
        );
    }
    assert!(
        promised > time(&lease["expires_at"]) + chrono::Duration::seconds(8),
        "{backend:?}: the stored expiry moved on"
    );
    assert_eq!(admin.seats_used(&lid).await, 1);
    // Without the flusher keeping the stored expiry ahead, a beat every few seconds
    // would find it too near and be written as it came.
    let (memory, store) = s.state.live.heartbeats.answered();
    assert!(
        memory >= 35 && store <= 1,
        "{backend:?}: {memory} from memory, {store} by the store"
    );
    s.stop().await;
}

/// Leases beaten just before a kill -9 live at least to what their last heartbeat
/// answered, after the server comes back (restarted at once).
async fn kill_9_after_heartbeats_ends_no_lease_before_its_promise(store_args: Vec<String>) {
    let token = init_store(&store_args, "Acme");
    let mut store_args = store_args;
    store_args.extend([
        "--heartbeat-flush-ms".into(),
        "500".into(),
        "--sweep-interval-ms".into(),
        "100".into(),
    ]);
    let mut server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let (key, lid) = beating_license(&admin, 20, 8).await;
    let c = server.api("");
    let mut leases = Vec::new();
    for n in 0..20 {
        let lease = take(&c, &key, &format!("m{n}")).await;
        leases.push((id(&lease), time(&lease["expires_at"])));
    }
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for (lease_id, promised) in leases.iter_mut() {
            let (status, answer) = beat(&c, &key, lease_id).await;
            assert_eq!(status, StatusCode::OK, "round {round}: {answer}");
            *promised = (*promised).max(time(&answer["expires_at"]));
        }
    }
    server.kill_9();
    let server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let all_gone = eventually(40, || async { admin.seats_used(&lid).await == 0 }).await;
    assert!(all_gone, "the leases were never swept");
    for (lease_id, promised) in &leases {
        let lease = stored(&admin, &lid, lease_id).await;
        assert_eq!(lease["release_reason"], "expired", "{lease}");
        assert!(
            time(&lease["released_at"]) >= *promised,
            "released before its last heartbeat's promise ({promised}): {lease}"
        );
    }
}

/// `--heartbeat-flush-ms 0`: every heartbeat is written as it comes, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_off_writes_each_beat() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = TestServer::start_with(backend, |settings| {
            settings.heartbeat_flush = Duration::ZERO;
        })
        .await;
        let admin = s.workspace("Acme").await;
        let (key, lid) = beating_license(&admin, 1, 60).await;
        let c = client(&s);
        let lease = take(&c, &key, "m").await;
        let lease_id = id(&lease);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, answer) = beat(&c, &key, &lease_id).await;
        assert_eq!(status, StatusCode::OK);
        assert!(time(&answer["expires_at"]) > time(&lease["expires_at"]));
        let row = stored(&admin, &lid, &lease_id).await;
        assert_eq!(time(&row["expires_at"]), time(&answer["expires_at"]));
        assert!(s.state.live.heartbeats.is_empty());
        s.stop().await;
    }
}

/// PostgreSQL: a flush waits for no row lock (so it deadlocks with no sweep, check-in
/// batch or other node's flush): a lease another transaction holds is left for the next
/// flush, which writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_skips_a_lease_another_transaction_holds() {
    use sqlx::Connection;
    let (s, admin, key, lid, c) = flushed_by_hand(Backend::Postgres, 1).await;
    let lease = take(&c, &key, "m").await;
    let lease_id = id(&lease);
    let now = Utc::now().timestamp_millis();
    let beat = Beat {
        lease_id: lease_id.clone(),
        license_id: lid.clone(),
        expires_at: now + LONG_TTL_S * 1_000,
        last_seen_at: now,
    };
    let mut other = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT id FROM seats WHERE id = $1 FOR UPDATE")
        .bind(&lease_id)
        .execute(&mut other)
        .await
        .unwrap();
    let held = s
        .state
        .store
        .flush_heartbeats(std::slice::from_ref(&beat))
        .await
        .unwrap();
    assert_eq!(held.busy, vec![lease_id.clone()]);
    assert!(held.gone.is_empty());
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let free = s.state.store.flush_heartbeats(&[beat]).await.unwrap();
    assert_eq!(free, leasehold_store::FlushOutcome::default());
    let row = stored(&admin, &lid, &lease_id).await;
    assert_eq!(time(&row["last_seen_at"]).timestamp_millis(), now);
    s.stop().await;
}

process_stores!(kill_9_after_heartbeats_ends_no_lease_before_its_promise);
