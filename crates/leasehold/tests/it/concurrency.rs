//! The seat invariant under concurrent assignment: never more seats than seats_total.

use crate::client::{client, lease_body};
use crate::harness::Api;
use crate::harness::{both_stores, id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use serde_json::Value;

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
pub(crate) async fn execute(s: &TestServer, sql: &str, a: i64, b: i64, c: &str) {
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

both_stores!(
    concurrent_checkouts_never_exceed_seats_total,
    checkouts_and_checkins_at_once_keep_the_ledger_and_the_audit_log,
    concurrent_activations_never_exceed_seats_total,
    a_seat_operation_failing_in_the_database_fails_alone,
    admin_and_client_seat_writes_racing_keep_the_invariant,
    waiters_and_newcomers_racing_keep_the_invariant,
    idle_reclaims_racing_checkouts_keep_the_invariant,
);

async fn concurrent_checkouts_never_exceed_seats_total(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 25}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    let attempts = 300;
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let c = client(s);
            let body = lease_body(&key, &format!("machine-{i}"), "user", "i1");
            tokio::spawn(async move { c.post("/v1/client/leases", body).await })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => granted.push(id(&body)),
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "NO_SEATS"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(granted.len(), 25);
    assert_ledger_holds(&admin, &id(&license), &mut granted).await;
}

/// Checkouts and checkins of one license arrive together (one batch, and on PostgreSQL
/// one statement, takes and ends them): the counter and the ledger agree throughout, and
/// the audit log has each take and each end once, an end with the live lease before and
/// the ended one after.
async fn checkouts_and_checkins_at_once_keep_the_ledger_and_the_audit_log(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 8}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    let lid = id(&license);
    // 24 machines, each checking out and in 4 times; every sixth keeps its last lease.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let c = client(s);
            let key = key.clone();
            tokio::spawn(async move {
                let (mut granted, mut kept) = (0, None);
                for cycle in 0..4 {
                    let body = lease_body(&key, &format!("machine-{i}"), "user", "i1");
                    let (status, lease) = c.post("/v1/client/leases", body).await;
                    match status {
                        StatusCode::CREATED => granted += 1,
                        StatusCode::CONFLICT => {
                            assert_eq!(lease["error"]["code"], "NO_SEATS");
                            continue;
                        }
                        other => panic!("unexpected {other}: {lease}"),
                    }
                    if i % 6 == 0 && cycle == 3 {
                        kept = Some(id(&lease));
                        break;
                    }
                    let path = format!("/v1/client/leases/{}/instances/i1", id(&lease));
                    let (status, answer) = c
                        .call(reqwest::Method::DELETE, &path, Some(json!({"key": key})))
                        .await;
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    assert_eq!(answer["released"], true);
                }
                (granted, kept)
            })
        })
        .collect();
    let (mut granted, mut kept) = (0, Vec::new());
    for task in tasks {
        let (n, lease) = task.await.unwrap();
        granted += n;
        kept.extend(lease);
    }
    assert!(granted >= 24, "most checkouts were granted: {granted}");
    assert_ledger_holds(&admin, &lid, &mut kept).await;

    let taken = admin.events(&lid, "seat.taken").await;
    let released = admin.events(&lid, "seat.released").await;
    assert_eq!(taken.len(), granted, "one seat.taken per lease granted");
    assert_eq!(
        released.len(),
        granted - kept.len(),
        "one seat.released per lease checked in"
    );
    let mut subjects: Vec<&str> = released
        .iter()
        .map(|e| e["subject_id"].as_str().unwrap())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), released.len(), "each lease ended once");
    for event in &released {
        assert_eq!(event["before"]["id"], event["subject_id"]);
        assert_eq!(event["before"]["released_at"], Value::Null, "{event}");
        assert_eq!(event["after"]["release_reason"], "checkin", "{event}");
        assert!(!event["after"]["released_at"].is_null(), "{event}");
        assert_eq!(event["actor"]["kind"], "license_key");
    }
}

/// The counter counts exactly the granted leases, and they are the active ones.
async fn assert_ledger_holds(admin: &Api, lid: &str, granted: &mut [String]) {
    assert_eq!(admin.seats_used(lid).await, granted.len());
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true&limit=200"))
        .await;
    let mut active: Vec<String> = active["items"].as_array().unwrap().iter().map(id).collect();
    active.sort();
    granted.sort();
    assert_eq!(active, granted, "exactly the granted leases are active");
}

/// Seat operations are applied in batches (SQLite's seat writer, PostgreSQL's batcher).
/// A trigger makes the database refuse some new leases: those checkouts fail, and only
/// they: every other one of the same batches is granted, and counter and ledger agree.
async fn a_seat_operation_failing_in_the_database_fails_alone(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 40}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    match s.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.database_url).await.unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON seats WHEN NEW.fingerprint LIKE 'boom%' \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
            sqlx::query(
                "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN \
                 IF NEW.fingerprint LIKE 'boom%' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON seats FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    let machines: Vec<String> = (0..36)
        .map(|i| {
            if i % 6 == 3 {
                format!("boom-{i}")
            } else {
                format!("machine-{i}")
            }
        })
        .collect();
    let tasks: Vec<_> = machines
        .iter()
        .map(|machine| {
            let c = client(s);
            let body = lease_body(&key, machine, "user", "i1");
            tokio::spawn(async move { c.post("/v1/client/leases", body).await })
        })
        .collect();
    let mut granted = Vec::new();
    for (machine, task) in machines.iter().zip(tasks) {
        let (status, body) = task.await.unwrap();
        if machine.starts_with("boom") {
            assert_eq!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{machine}: {body}"
            );
        } else {
            assert_eq!(status, StatusCode::CREATED, "{machine}: {body}");
            granted.push(id(&body));
        }
    }
    assert_eq!(granted.len(), 30);
    let lid = id(&license);
    assert_ledger_holds(&admin, &lid, &mut granted).await;

    // Their checkins, all at once, free every seat.
    let tasks: Vec<_> = granted
        .iter()
        .map(|lease| {
            let c = client(s);
            let path = format!("/v1/client/leases/{lease}/instances/i1");
            let body = json!({"key": key});
            tokio::spawn(async move { c.call(reqwest::Method::DELETE, &path, Some(body)).await })
        })
        .collect();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["released"], true);
    }
    assert_eq!(admin.seats_used(&lid).await, 0);
}

async fn concurrent_activations_never_exceed_seats_total(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license_with(json!({"seats_total": 20})).await;
    let key = license["key"].as_str().unwrap().to_string();
    // 200 requests from 150 machines: some machines ask twice at once.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let c = client(s);
            let body = json!({"key": key, "fingerprint": format!("m{}", i % 150)});
            tokio::spawn(async move { c.post("/v1/client/activations", body).await })
        })
        .collect();
    let mut machines = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                machines.insert(body["fingerprint"].as_str().unwrap().to_string());
            }
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "NO_SEATS"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(machines.len(), 20);
    let lid = id(&license);
    assert_eq!(admin.seats_used(&lid).await, 20);
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true&limit=200"))
        .await;
    assert_eq!(active["items"].as_array().unwrap().len(), 20);
}

/// An admin's seat writes (assignments, reclaims, a revocation and its restoring, a change
/// of `seats_total`) racing machines' activations on one dedicated license: on SQLite
/// both go through the one seat writer, on PostgreSQL both lock the license row. Every
/// answer is a seat or its refusal, never a 5xx, and the counter is the active rows.
async fn admin_and_client_seat_writes_racing_keep_the_invariant(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license_with(json!({"seats_total": 12})).await;
    let key = license["key"].as_str().unwrap().to_string();
    let lid = id(&license);
    let seats = format!("/v1/licenses/{lid}/seats");
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (c, admin, key, seats) = (client(s), admin.clone(), key.clone(), seats.clone());
        tasks.push(tokio::spawn(async move {
            let (status, body) = if i % 2 == 0 {
                let body = json!({"key": key, "fingerprint": format!("m{i}")});
                c.post("/v1/client/activations", body).await
            } else {
                admin
                    .post(&seats, json!({"assignee_name": format!("user-{i}")}))
                    .await
            };
            match status {
                StatusCode::CREATED => {}
                StatusCode::CONFLICT => assert!(
                    ["NO_SEATS", "SEAT_OVER_ALLOCATED"]
                        .contains(&body["error"]["code"].as_str().unwrap_or("")),
                    "{body}"
                ),
                other => panic!("unexpected {other}: {body}"),
            }
            // Reclaim half the assignments made, while others still arrive.
            if status == StatusCode::CREATED && i % 4 == 1 {
                let (status, reclaimed) = admin
                    .post(&format!("/v1/seats/{}/reclaim", id(&body)), json!({}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{reclaimed}");
            }
        }));
    }
    // Meanwhile the admin lowers and raises seats_total: refused while the seats in use
    // do not fit, never a 5xx.
    for total in [10, 14, 12] {
        let (status, body) = admin
            .patch(
                &format!("/v1/licenses/{lid}"),
                json!({"seats_total": total}),
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}: {body}"
        );
    }
    for task in tasks {
        task.await.unwrap();
    }
    let active = admin
        .ok_get(&format!("{seats}?active=true&limit=200"))
        .await;
    let active = active["items"].as_array().unwrap().len() as i64;
    let read = admin.ok_get(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(read["seats_used"], active, "the counter is the active rows");
    assert!(active <= read["seats_total"].as_i64().unwrap(), "{read}");

    // A revocation releases the activations and keeps the assignments, in one step.
    let assigned = admin
        .ok_get(&format!("{seats}?active=true&limit=200"))
        .await;
    let assignments = assigned["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|seat| seat["kind"] == "assignment")
        .count();
    let (status, body) = admin
        .patch(&format!("/v1/licenses/{lid}"), json!({"status": "revoked"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seats_used"], assignments as i64, "{body}");
}

/// Hundreds of checkouts, half of them waiting in the queue (some long-polling), racing
/// check-ins on a small floating license: never a 5xx, never more seats than bought, and
/// the counter is the active rows.
async fn waiters_and_newcomers_racing_keep_the_invariant(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 4}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    let lid = id(&license);
    let tasks: Vec<_> = (0..40)
        .map(|worker| {
            let (c, key) = (client(s), key.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for round in 0..8 {
                    let queue = worker % 2 == 0;
                    let mut body = lease_body(&key, &format!("m{worker}"), "u", "1");
                    body["queue"] = json!(queue);
                    if queue && round % 4 == 0 {
                        body["wait_s"] = json!(1);
                    }
                    let (status, lease) = c.post("/v1/client/leases", body).await;
                    match status {
                        StatusCode::CREATED | StatusCode::OK => {
                            let path = format!("/v1/client/leases/{}/instances/1", id(&lease));
                            let (status, body) = c
                                .call(reqwest::Method::DELETE, &path, Some(json!({"key": key})))
                                .await;
                            if status != StatusCode::OK {
                                failures.push(format!("checkin {status}: {body}"));
                            }
                        }
                        StatusCode::CONFLICT if lease["error"]["code"] == "NO_SEATS" => {}
                        other => failures.push(format!("checkout {other}: {lease}")),
                    }
                }
                failures
            })
        })
        .collect();
    for task in tasks {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true&limit=200"))
        .await;
    let active = active["items"].as_array().unwrap().len();
    assert_eq!(active, 0, "every lease taken was checked in");
    assert_eq!(admin.seats_used(&lid).await, 0);
}

/// Holders that go idle and never check in (even machines), and holders in use that
/// check in (odd ones), racing for 4 seats with a 1 s idle timeout: every seat an idle
/// holder lost is in the ledger as an `idle` release, and the counter equals the active
/// rows.
async fn idle_reclaims_racing_checkouts_keep_the_invariant(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 4,
            "policy": {"idle_timeout_s": 1}}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    let lid = id(&license);
    let tasks: Vec<_> = (0..40)
        .map(|worker| {
            let (c, key) = (client(s), key.clone());
            tokio::spawn(async move {
                let (mut failures, mut idle_leases) = (Vec::new(), Vec::new());
                let idle = worker % 2 == 0;
                for _ in 0..6 {
                    let body = lease_body(&key, &format!("m{worker}"), "u", "1");
                    let (status, lease) = c.post("/v1/client/leases", body).await;
                    match status {
                        StatusCode::CREATED | StatusCode::OK => {}
                        StatusCode::CONFLICT if lease["error"]["code"] == "NO_SEATS" => continue,
                        other => {
                            failures.push(format!("checkout {other}: {lease}"));
                            continue;
                        }
                    }
                    let lease_id = id(&lease);
                    let beat =
                        json!({"key": key, "instance": "1", "idle_s": if idle { 3600 } else { 0 }});
                    let path = format!("/v1/client/leases/{lease_id}/heartbeat");
                    let (status, body) = c.post(&path, beat).await;
                    if !(status == StatusCode::OK
                        || status == StatusCode::GONE
                            && body["error"]["details"]["reason"] == "idle"
                            && idle)
                    {
                        failures.push(format!("heartbeat {status}: {body}"));
                    }
                    if idle {
                        if !idle_leases.contains(&lease_id) {
                            idle_leases.push(lease_id);
                        }
                        continue;
                    }
                    let path = format!("/v1/client/leases/{lease_id}/instances/1");
                    let (status, body) = c
                        .call(reqwest::Method::DELETE, &path, Some(json!({"key": key})))
                        .await;
                    if status != StatusCode::OK {
                        failures.push(format!("checkin {status}: {body}"));
                    }
                }
                (failures, idle_leases)
            })
        })
        .collect();
    let mut idle_leases = Vec::new();
    for task in tasks {
        let (failures, leases) = task.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        idle_leases.extend(leases);
    }
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true&limit=200"))
        .await;
    let active = active["items"].as_array().unwrap();
    assert!(active.len() <= 4, "{active:?}");
    assert_eq!(admin.seats_used(&lid).await, active.len() as i64);
    // The idle holders never checked in: each lease of theirs that is not active ended as
    // idle, and nothing else did.
    let still_active = active
        .iter()
        .filter(|seat| idle_leases.iter().any(|l| seat["id"] == l.as_str()))
        .count();
    let idle_releases = admin
        .events(&lid, "seat.released")
        .await
        .into_iter()
        .filter(|e| e["after"]["release_reason"] == "idle")
        .count();
    assert_eq!(idle_releases, idle_leases.len() - still_active);
}
