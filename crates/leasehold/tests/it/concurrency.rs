//! The seat invariant under concurrent assignment: never more seats than seats_total.

use crate::harness::{both_stores, id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;

both_stores!(
    concurrent_assignments_never_exceed_seats_total,
    floating_checkouts_of_shared_holders_never_fail_or_overcount,
    a_late_heartbeat_never_moves_a_lease_back,
);

async fn concurrent_assignments_never_exceed_seats_total(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(10).await;
    let lid = id(&license);
    let path = format!("/v1/licenses/{lid}/seats");
    let attempts = 120;
    let mut tasks = Vec::new();
    for i in 0..attempts {
        let api = api.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            api.post(&path, json!({"assignee_name": format!("user-{i}")}))
                .await
        }));
    }
    let mut granted = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => granted += 1,
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "SEAT_OVER_ALLOCATED");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(granted, 10);
    assert_eq!(refused, attempts - 10);
    let read = api.ok_get(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(read["seats_used"], 10);
    let active = api.ok_get(&format!("{path}?active=true&limit=200")).await;
    assert_eq!(
        active["items"].as_array().unwrap().len(),
        10,
        "ledger agrees with the counter"
    );
}

/// Checkouts and checkins racing on a small floating license, where holders share a
/// lease (another instance joins it, on the general path) while new leases and checkins
/// go through the batcher: never a 5xx, and the count is the live leases. On PostgreSQL a
/// take that committed between the batch statement's snapshot and its lock of the
/// license row was counted twice over (seats_used 4 of 3, refused by the table's CHECK).
async fn floating_checkouts_of_shared_holders_never_fail_or_overcount(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api
        .license_with(json!({"seat_model": "concurrent", "seats_total": 3}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap().to_string(), id(&license));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (c, key) = (s.anonymous(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..40 {
                let machine = format!("m{}", (worker + round) % 5);
                let instance = format!("w{worker}-{round}");
                let (status, lease) = c
                    .post(
                        "/v1/client/leases",
                        json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": instance}),
                    )
                    .await;
                match status {
                    StatusCode::CREATED | StatusCode::OK => {
                        let (status, body) = c
                            .call(
                                reqwest::Method::DELETE,
                                &format!("/v1/client/leases/{}/instances/{instance}", id(&lease)),
                                Some(json!({"key": key})),
                            )
                            .await;
                        if status != StatusCode::OK {
                            failures.push(format!("checkin {status}: {body}"));
                        }
                    }
                    StatusCode::CONFLICT => assert_eq!(lease["error"]["code"], "NO_SEATS"),
                    other => failures.push(format!("checkout {other}: {lease}")),
                }
            }
            failures
        }));
    }
    for task in tasks {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let live = api
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true&limit=200"))
        .await;
    let live = live["items"].as_array().unwrap().len();
    assert!(live <= 3);
    assert_eq!(api.seats_used(&lid).await, live as i64);
}

/// Runs one statement with `(i64, i64, &str)` parameters against the server's database,
/// as another node of the cluster would.
async fn execute(s: &TestServer, sql: &str, a: i64, b: i64, c: &str) {
    match s.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.database_url).await.unwrap();
            sqlx::query(sql)
                .bind(a)
                .bind(b)
                .bind(c)
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
            sqlx::query(sql)
                .bind(a)
                .bind(b)
                .bind(c)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// A heartbeat that reaches the store after a newer one (a stalled node delivering it
/// late) leaves the newer one's expiry: it can't shorten the lease.
async fn a_late_heartbeat_never_moves_a_lease_back(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"lease_ttl_s": 600}}),
        )
        .await;
    let key = license["key"].as_str().unwrap();
    let c = s.anonymous();
    let lease = c
        .ok_post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "m1", "os_user": "u", "instance": "i"}),
            StatusCode::CREATED,
        )
        .await;
    let lease_id = id(&lease);
    // Another node recorded a heartbeat stamped a minute from now (its clock, or simply
    // later than the one below is delivered).
    let newer_seen = chrono::Utc::now().timestamp_millis() + 60_000;
    let newer_expiry = newer_seen + 600_000;
    execute(
        s,
        "UPDATE seats SET last_seen_at = $1, expires_at = $2, sweep_at = $2 WHERE id = $3",
        newer_seen,
        newer_expiry,
        &lease_id,
    )
    .await;
    c.ok_post(
        &format!("/v1/client/leases/{lease_id}/heartbeat"),
        json!({"key": key, "instance": "i"}),
        StatusCode::OK,
    )
    .await;
    let seats = api
        .ok_get(&format!("/v1/licenses/{}/seats?active=true", id(&license)))
        .await;
    let seat = &seats["items"][0];
    let stored = chrono::DateTime::parse_from_rfc3339(seat["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert_eq!(
        stored, newer_expiry,
        "the late heartbeat moved the expiry back: {seat}"
    );
}
