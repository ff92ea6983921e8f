//! The lease sweeper: lapsed leases end without any checkout, in chunks that resume
//! where they stopped, and a renewed lease is moved on rather than ended.

use crate::client::{client, lapsing_license, lease_body};
use crate::harness::{id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn the_sweeper_releases_lapsed_leases_without_any_checkout() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = TestServer::start_with(backend, |settings| {
            settings.sweep_interval = Duration::from_millis(100)
        })
        .await;
        let admin = s.workspace("Acme").await;
        let license = lapsing_license(&admin, 3).await;
        let key = license["key"].as_str().unwrap();
        for user in ["a", "b", "c"] {
            client(&s)
                .ok_post(
                    "/v1/client/leases",
                    lease_body(key, user, user, "i"),
                    StatusCode::CREATED,
                )
                .await;
        }
        let path = format!("/v1/licenses/{}", id(&license));
        let mut freed = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if admin.ok_get(&path).await["seats_used"] == 0 {
                freed = true;
                break;
            }
        }
        assert!(
            freed,
            "{backend:?}: the sweeper did not free the lapsed seats"
        );
        let seats = admin.ok_get(&format!("{path}/seats")).await;
        assert!(seats["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["release_reason"] == "expired"));
        s.stop().await;
    }
}

/// A full license ends its lapsed leases itself before it refuses (no sweeper runs here):
/// each audited as `seat.expired` by the system; the seats they held are taken again, and
/// the refusal after that counts the seats as they are.
#[tokio::test]
async fn a_full_license_frees_its_lapsed_leases_before_refusing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = TestServer::without_sweeper(backend).await;
        let admin = s.workspace("Acme").await;
        let license = lapsing_license(&admin, 2).await;
        let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
        let c = client(&s);
        let take = |machine: &str| c.post("/v1/client/leases", lease_body(key, machine, "u", "i"));
        for machine in ["m1", "m2"] {
            assert_eq!(take(machine).await.0, StatusCode::CREATED, "{backend:?}");
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        for machine in ["m3", "m4"] {
            let (status, body) = take(machine).await;
            assert_eq!(status, StatusCode::CREATED, "{backend:?}: {body}");
        }
        let (status, denied) = take("m5").await;
        assert_eq!(status, StatusCode::CONFLICT, "{backend:?}");
        assert_eq!(denied["error"]["code"], "NO_SEATS");
        assert_eq!(denied["error"]["details"]["seats_total"], 2);
        assert_eq!(denied["error"]["details"]["seats_used"], 2);
        let retry = denied["error"]["details"]["retry_after_s"]
            .as_i64()
            .unwrap();
        assert!((1..=2).contains(&retry), "{backend:?}: {retry}");
        let expired = admin.events(&lid, "seat.expired").await;
        assert_eq!(expired.len(), 2, "{backend:?}: m1 and m2 lapsed, each once");
        assert!(expired.iter().all(|e| e["actor"]["kind"] == "system"));
        assert_eq!(admin.seats_used(&lid).await, 2, "{backend:?}");
        s.stop().await;
    }
}

/// A lease's `sweep_at` and `expires_at`, read straight from the database.
async fn sweep_and_expiry(s: &TestServer, lease_id: &str) -> (i64, i64) {
    let sql = "SELECT sweep_at, expires_at FROM seats WHERE id = $1";
    match s.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.database_url).await.unwrap();
            sqlx::query_as(sql)
                .bind(lease_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
            sqlx::query_as(sql)
                .bind(lease_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

/// A heartbeat pushes a lease's expiry and nothing else: its `sweep_at` (the indexed
/// column) stays. Once that passes, a sweep moves it on to the expiry of a lease that lives
/// on, counting the move in its budget, and ends a lapsed lease behind it.
#[tokio::test]
async fn a_sweep_moves_a_renewed_lease_on_and_ends_the_lapsed_one_behind_it() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = TestServer::without_sweeper(backend).await;
        let admin = s.workspace("Acme").await;
        let license = lapsing_license(&admin, 5).await;
        let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
        let c = client(&s);
        let mut leases = Vec::new();
        for machine in ["a", "b", "c"] {
            let lease = c
                .ok_post(
                    "/v1/client/leases",
                    lease_body(key, machine, "u", "i"),
                    StatusCode::CREATED,
                )
                .await;
            leases.push(id(&lease));
        }
        let taken: Vec<(i64, i64)> = {
            let mut all = Vec::new();
            for lease in &leases {
                all.push(sweep_and_expiry(&s, lease).await);
            }
            all
        };
        assert!(
            taken.iter().all(|(sweep, expiry)| sweep == expiry),
            "{backend:?}: {taken:?}"
        );
        // a and b heartbeat past their first expiry; c's app is gone.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            for lease in &leases[..2] {
                c.ok_post(
                    &format!("/v1/client/leases/{lease}/heartbeat"),
                    json!({"key": key, "instance": "i"}),
                    StatusCode::OK,
                )
                .await;
            }
        }
        for (n, lease) in leases[..2].iter().enumerate() {
            let (sweep, expiry) = sweep_and_expiry(&s, lease).await;
            assert_eq!(
                sweep, taken[n].0,
                "{backend:?}: a heartbeat leaves sweep_at"
            );
            assert!(expiry > sweep, "{backend:?}: a heartbeat pushes the expiry");
        }
        let store = &s.state.store;
        // A budget of one: a's sweep_at moves on, and the next chunk resumes in its license.
        let chunk = store.expire_leases("", 1, 100).await.unwrap();
        assert!(chunk.expired.is_empty(), "{backend:?}");
        assert_eq!(
            chunk.resume_at.as_deref(),
            Some(lid.as_str()),
            "{backend:?}"
        );
        let (sweep, expiry) = sweep_and_expiry(&s, &leases[0]).await;
        assert_eq!(sweep, expiry, "{backend:?}: a's sweep_at is its expiry now");
        assert_eq!(
            sweep_and_expiry(&s, &leases[1]).await.0,
            taken[1].0,
            "{backend:?}"
        );
        let chunk = store.expire_leases(&lid, 10, 100).await.unwrap();
        let ended: Vec<&str> = chunk.expired.iter().map(|seat| seat.id.as_str()).collect();
        assert_eq!(ended, [leases[2].as_str()], "{backend:?}: only c lapsed");
        assert_eq!(chunk.resume_at, None, "{backend:?}");
        let (sweep, expiry) = sweep_and_expiry(&s, &leases[1]).await;
        assert_eq!(sweep, expiry, "{backend:?}: b's sweep_at is its expiry now");
        assert_eq!(admin.seats_used(&lid).await, 2, "{backend:?}");
        // Nothing is due any more: the next sweep touches nothing.
        let chunk = store.expire_leases("", 10, 100).await.unwrap();
        assert!(
            chunk.expired.is_empty() && chunk.resume_at.is_none(),
            "{backend:?}"
        );
        for lease in &leases[..2] {
            c.ok_post(
                &format!("/v1/client/leases/{lease}/heartbeat"),
                json!({"key": key, "instance": "i"}),
                StatusCode::OK,
            )
            .await;
        }
        s.stop().await;
    }
}

/// A license's lease period shortened while leases are held applies from their next
/// heartbeat, and such a lease then lapses on time: its `sweep_at` moves back with its
/// expiry, so a full license finds it lapsed (it is not left to its old period).
#[tokio::test]
async fn a_shorter_lease_period_applies_from_the_next_heartbeat() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = TestServer::without_sweeper(backend).await;
        let admin = s.workspace("Acme").await;
        let license = admin
            .license_with(json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"lease_ttl_s": 3600}}))
            .await;
        let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
        let c = client(&s);
        let lease = c
            .ok_post(
                "/v1/client/leases",
                lease_body(key, "m1", "u", "i"),
                StatusCode::CREATED,
            )
            .await;
        let (status, body) = admin
            .patch(
                &format!("/v1/licenses/{lid}"),
                json!({"policy": {"lease_ttl_s": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let answer = c
            .ok_post(
                &format!("/v1/client/leases/{}/heartbeat", id(&lease)),
                json!({"key": key, "instance": "i"}),
                StatusCode::OK,
            )
            .await;
        let expires_at =
            chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
        let (sweep, expiry) = sweep_and_expiry(&s, &id(&lease)).await;
        assert_eq!((sweep, expiry), (expires_at, expires_at), "{backend:?}");
        assert!(
            expires_at < chrono::Utc::now().timestamp_millis() + 2_000,
            "{backend:?}"
        );
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let (status, body) = c
            .post("/v1/client/leases", lease_body(key, "m2", "u", "i"))
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{backend:?}: m1's lease lapsed: {body}"
        );
        assert_eq!(
            admin.events(&lid, "seat.expired").await.len(),
            1,
            "{backend:?}"
        );
        s.stop().await;
    }
}

/// A sweep goes through the licenses holding seats in id order, a chunk at a time, and
/// each chunk says where the next starts: a chunk whose budget runs out inside a license
/// leaves that license's other lapsed leases to the next one, no lease ends twice, no
/// license is skipped, and the last chunk says the pass is over.
#[tokio::test]
async fn a_sweep_resumes_where_its_last_chunk_stopped() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // The test sweeps by hand.
        let s = TestServer::without_sweeper(backend).await;
        let admin = s.workspace("Acme").await;
        let mut licenses = Vec::new();
        for _ in 0..3 {
            let license = lapsing_license(&admin, 5).await;
            let key = license["key"].as_str().unwrap();
            for user in ["a", "b", "c"] {
                client(&s)
                    .ok_post(
                        "/v1/client/leases",
                        lease_body(key, "vm", user, "i"),
                        StatusCode::CREATED,
                    )
                    .await;
            }
            licenses.push((id(&license), key.to_string()));
        }
        licenses.sort();
        let keys: Vec<String> = licenses.iter().map(|(_, key)| key.clone()).collect();
        let licenses: Vec<String> = licenses.into_iter().map(|(id, _)| id).collect();
        tokio::time::sleep(Duration::from_millis(1_100)).await;

        let store = &s.state.store;
        let mut from = String::new();
        let mut chunks = Vec::new();
        loop {
            let chunk = store.expire_leases(&from, 4, 1_000).await.unwrap();
            assert_eq!(chunk.probed, 3 - chunks.len().min(2), "{backend:?}");
            let mut per_license: Vec<(String, usize)> = Vec::new();
            for seat in &chunk.expired {
                match per_license.last_mut() {
                    Some((license, n)) if *license == seat.license_id => *n += 1,
                    _ => per_license.push((seat.license_id.clone(), 1)),
                }
            }
            let resume_at = chunk.resume_at.clone();
            chunks.push(per_license);
            match resume_at {
                // A full budget resumes in the license it ran out in.
                Some(at) => {
                    assert_eq!(Some(&at), chunks.last().unwrap().last().map(|(l, _)| l));
                    from = at;
                }
                None => break,
            }
            assert!(chunks.len() <= 4, "{backend:?}: the sweep does not end");
        }
        let (l0, l1, l2) = (&licenses[0], &licenses[1], &licenses[2]);
        assert_eq!(
            chunks,
            vec![
                vec![(l0.clone(), 3), (l1.clone(), 1)],
                vec![(l1.clone(), 2), (l2.clone(), 2)],
                vec![(l2.clone(), 1)],
            ],
            "{backend:?}: chunks of 4 leases, in license order, each lease once"
        );
        for license in &licenses {
            assert_eq!(admin.seats_used(license).await, 0, "{backend:?}");
            let events = admin.events(license, "seat.expired").await;
            assert_eq!(events.len(), 3, "{backend:?}");
        }

        // Chunks probe a bounded number of licenses and go on from there: the first
        // license holds a live lease, the other two lapsed ones; two probes a chunk.
        let c = client(&s);
        let take = |key: &str| {
            c.ok_post(
                "/v1/client/leases",
                lease_body(key, "vm2", "a", "i"),
                StatusCode::CREATED,
            )
        };
        take(&keys[1]).await;
        take(&keys[2]).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        take(&keys[0]).await;
        let first = store.expire_leases("", 100, 2).await.unwrap();
        assert_eq!(first.probed, 2, "{backend:?}");
        assert_eq!(first.expired.len(), 1, "{backend:?}");
        assert_eq!(first.expired[0].license_id, licenses[1], "{backend:?}");
        assert_eq!(first.resume_at.as_ref(), Some(&licenses[1]), "{backend:?}");
        let second = store.expire_leases(&licenses[1], 100, 2).await.unwrap();
        assert_eq!(
            second.probed, 1,
            "{backend:?}: the first two hold no seat now"
        );
        assert_eq!(second.expired.len(), 1, "{backend:?}");
        assert_eq!(second.expired[0].license_id, licenses[2], "{backend:?}");
        assert_eq!(second.resume_at, None, "{backend:?}: the pass is over");
        assert_eq!(
            admin.seats_used(&licenses[0]).await,
            1,
            "{backend:?}: the live lease stays"
        );

        // A background tick stops after its probe budget, and the next tick goes on
        // from where it stopped: lapsed leases on all three licenses, two probes a tick.
        for key in &keys {
            c.ok_post(
                "/v1/client/leases",
                lease_body(key, "vm3", "a", "i"),
                StatusCode::CREATED,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let mut cursor = String::new();
        let first = leasehold_server::jobs::sweep_from(&s.state, &mut cursor, 2, 2).await;
        assert_eq!(
            first, 3,
            "{backend:?}: vm2 and vm3 of the first, vm3 of the second"
        );
        assert_eq!(cursor, licenses[1], "{backend:?}");
        assert_eq!(admin.seats_used(&licenses[1]).await, 0, "{backend:?}");
        assert_eq!(
            admin.seats_used(&licenses[2]).await,
            1,
            "{backend:?}: past the tick's budget"
        );
        let second = leasehold_server::jobs::sweep_from(&s.state, &mut cursor, 2, 2).await;
        assert_eq!(second, 1, "{backend:?}");
        assert_eq!(cursor, "", "{backend:?}: the pass is over");
        for license in &licenses {
            assert_eq!(admin.seats_used(license).await, 0, "{backend:?}");
        }
        s.stop().await;
    }
}
