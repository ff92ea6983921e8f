//! The client protocol over HTTP: validate, dedicated activations, floating leases,
//! expiry, on both stores (the sweeper: `sweep.rs`; concurrency: `concurrency.rs`;
//! signatures: `binding.rs`; rate limits: `limits.rs`).

use crate::harness::{both_stores, id, in_days, Api, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

both_stores!(
    validate_answers_each_code,
    a_machine_activates_once_and_moves_within_the_monthly_limit,
    admin_release_blocks_the_holder_for_the_cooldown,
    five_users_share_three_floating_seats,
    instances_share_a_seat_and_each_vm_user_takes_their_own,
    heartbeats_keep_a_lease_and_a_crashed_app_frees_its_seat,
);

/// The unauthenticated client side of the server.
pub(crate) fn client(s: &TestServer) -> Api {
    s.anonymous()
}

/// A concurrent license of `seats` whose leases lapse one second after their last
/// heartbeat.
pub(crate) async fn lapsing_license(admin: &Api, seats: i64) -> Value {
    admin
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": seats, "policy": {"lease_ttl_s": 1}}),
        )
        .await
}

pub(crate) fn lease_body(key: &str, machine: &str, user: &str, instance: &str) -> Value {
    json!({"key": key, "fingerprint": machine, "os_user": user, "identifier": format!("{machine}-pc"), "instance": instance})
}

async fn validate_answers_each_code(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let c = client(s);
    let (status, answer) = c
        .post("/v1/client/validate", json!({"key": "NO-SUCH-KEY"}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an unknown key is an answer, not an error"
    );
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["code"], "NOT_FOUND");
    assert_eq!(answer["license"], Value::Null);

    let license = admin.license(2).await;
    let key = license["key"].as_str().unwrap();
    let lid = id(&license);
    let answer = c
        .ok_post("/v1/client/validate", json!({"key": key}), StatusCode::OK)
        .await;
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["valid"], true);
    assert_eq!(answer["license"]["seats_total"], 2);
    assert!(answer["checked_at"].is_string());
    // The key may come in a header instead.
    let by_header = c
        .client
        .post(format!("{}/v1/client/validate", c.base))
        .header("authorization", format!("License {key}"))
        .json(&json!({"fingerprint": "m1"}))
        .send()
        .await
        .unwrap();
    let by_header: Value = by_header.json().await.unwrap();
    assert_eq!(
        by_header["code"], "NOT_ACTIVATED",
        "dedicated, fingerprint given, no activation"
    );
    c.ok_post(
        "/v1/client/activations",
        json!({"key": key, "fingerprint": "m1"}),
        StatusCode::CREATED,
    )
    .await;
    let answer = c
        .ok_post(
            "/v1/client/validate",
            json!({"key": key, "fingerprint": "m1"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["license"]["seats_used"], 1);

    for (status, code) in [("suspended", "SUSPENDED"), ("revoked", "REVOKED")] {
        admin
            .patch(&format!("/v1/licenses/{lid}"), json!({"status": status}))
            .await;
        let answer = c
            .ok_post("/v1/client/validate", json!({"key": key}), StatusCode::OK)
            .await;
        assert_eq!(answer["code"], code);
        assert_eq!(answer["valid"], false);
    }
    let yesterday = in_days(-1).to_string();
    let expired = admin.license_with(json!({"expires_on": yesterday})).await;
    let answer = c
        .ok_post(
            "/v1/client/validate",
            json!({"key": expired["key"]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(answer["code"], "EXPIRED");
    let (status, refused) = c
        .post(
            "/v1/client/activations",
            json!({"key": expired["key"], "fingerprint": "m9"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["error"]["code"], "EXPIRED");
    let (status, _) = c.post("/v1/client/validate", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no key at all");
}

async fn a_machine_activates_once_and_moves_within_the_monthly_limit(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seats_total": 2, "policy": {"self_service_releases_per_month": 1}}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = client(s);
    let first = c
        .ok_post(
            "/v1/client/activations",
            json!({"key": key, "fingerprint": "m1", "identifier": "ANN-LAPTOP"}),
            StatusCode::CREATED,
        )
        .await;
    let again = c
        .ok_post(
            "/v1/client/activations",
            json!({"key": key, "fingerprint": "m1"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        first["id"], again["id"],
        "the same machine is the same seat"
    );
    assert_eq!(again["identifier"], "ANN-LAPTOP");
    c.ok_post(
        "/v1/client/activations",
        json!({"key": key, "fingerprint": "m2"}),
        StatusCode::CREATED,
    )
    .await;
    let (status, full) = c
        .post(
            "/v1/client/activations",
            json!({"key": key, "fingerprint": "m3"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(full["error"]["code"], "NO_SEATS");
    assert_eq!(full["error"]["details"]["seats_total"], 2);
    assert_eq!(full["error"]["details"]["seats_used"], 2);

    // Move m1's seat to m3: a self-service release.
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            "/v1/client/activations/m1",
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    c.ok_post(
        "/v1/client/activations",
        json!({"key": key, "fingerprint": "m3"}),
        StatusCode::CREATED,
    )
    .await;
    // The second release this month is over the policy's limit of one.
    let (status, limited) = c
        .call(
            reqwest::Method::DELETE,
            "/v1/client/activations/m2",
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited["error"]["code"], "RELEASE_LIMIT");
    let seats = admin
        .ok_get(&format!("/v1/licenses/{}/seats", id(&license)))
        .await;
    let reasons: Vec<&Value> = seats["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["release_reason"])
        .collect();
    assert!(reasons.contains(&&json!("transferred")));
    assert_eq!(
        admin
            .ok_get(&format!("/v1/licenses/{}", id(&license)))
            .await["seats_used"],
        2
    );
}

async fn admin_release_blocks_the_holder_for_the_cooldown(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"release_cooldown_s": 600}}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = client(s);
    let lease = c
        .ok_post(
            "/v1/client/leases",
            lease_body(key, "m1", "ann", "i1"),
            StatusCode::CREATED,
        )
        .await;
    let released = admin
        .ok_post(
            &format!("/v1/seats/{}/reclaim", id(&lease)),
            json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(released["release_reason"], "admin_release");
    let (status, gone) = c
        .post(
            &format!("/v1/client/leases/{}/heartbeat", id(&lease)),
            json!({"key": key, "instance": "i1"}),
        )
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(gone["error"]["code"], "LEASE_EXPIRED");
    let (status, cooldown) = c
        .post("/v1/client/leases", lease_body(key, "m1", "ann", "i1"))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the running app cannot grab the seat straight back"
    );
    assert_eq!(cooldown["error"]["code"], "RELEASE_COOLDOWN");
    let left = cooldown["error"]["details"]["retry_after_s"]
        .as_i64()
        .unwrap();
    assert!(left > 500 && left <= 600, "{left}");
    // Another user may take the freed seat.
    c.ok_post(
        "/v1/client/leases",
        lease_body(key, "m2", "bob", "i1"),
        StatusCode::CREATED,
    )
    .await;
    let events = admin
        .ok_get(&format!(
            "/v1/events?license_id={}&action=seat.reclaimed",
            id(&license)
        ))
        .await;
    assert_eq!(
        events["items"].as_array().unwrap().len(),
        1,
        "admin release is audited"
    );

    let denied = admin
        .license_with(json!({"seats_total": 1, "policy": {"admin_release": "denied"}}))
        .await;
    let seat = c
        .ok_post(
            "/v1/client/activations",
            json!({"key": denied["key"], "fingerprint": "m1"}),
            StatusCode::CREATED,
        )
        .await;
    let (status, _) = admin
        .post(&format!("/v1/seats/{}/reclaim", id(&seat)), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the policy denies admin release"
    );
}

async fn five_users_share_three_floating_seats(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 3}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = client(s);
    let mut leases = Vec::new();
    for user in ["ann", "bob", "cy"] {
        leases.push(
            c.ok_post(
                "/v1/client/leases",
                lease_body(key, user, user, "i1"),
                StatusCode::CREATED,
            )
            .await,
        );
    }
    for user in ["dee", "eve"] {
        let (status, denied) = c
            .post("/v1/client/leases", lease_body(key, user, user, "i1"))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(denied["error"]["code"], "NO_SEATS");
        assert_eq!(
            denied["error"]["message"],
            "all 3 seats of this license are in use"
        );
        assert_eq!(denied["error"]["details"]["seats_total"], 3);
        assert_eq!(denied["error"]["details"]["seats_used"], 3);
        assert!(
            denied["error"]["details"]["retry_after_s"]
                .as_i64()
                .unwrap()
                >= 1
        );
        assert!(
            denied["error"].to_string().find("ann").is_none(),
            "holders are never shown to clients"
        );
    }
    let (status, exited) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{}/instances/i1", id(&leases[1])),
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exited["released"], true);
    c.ok_post(
        "/v1/client/leases",
        lease_body(key, "dee", "dee", "i1"),
        StatusCode::CREATED,
    )
    .await;
    let (status, _) = c
        .post("/v1/client/leases", lease_body(key, "eve", "eve", "i1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "eve still waits");
    assert_eq!(
        admin
            .ok_get(&format!("/v1/licenses/{}", id(&license)))
            .await["seats_used"],
        3
    );
}

async fn instances_share_a_seat_and_each_vm_user_takes_their_own(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 5}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = client(s);
    let first = c
        .ok_post(
            "/v1/client/leases",
            lease_body(key, "vm1", "ann", "a"),
            StatusCode::CREATED,
        )
        .await;
    let joined = c
        .ok_post(
            "/v1/client/leases",
            lease_body(key, "vm1", "ann", "b"),
            StatusCode::OK,
        )
        .await;
    assert_eq!(first["id"], joined["id"]);
    assert_eq!(joined["instances"], json!(["a", "b"]));
    let bob = c
        .ok_post(
            "/v1/client/leases",
            lease_body(key, "vm1", "bob", "a"),
            StatusCode::CREATED,
        )
        .await;
    assert_ne!(
        bob["id"], first["id"],
        "another user of the same VM is another seat"
    );
    let lid = id(&license);
    assert_eq!(admin.seats_used(&lid).await, 2);

    let exit = |instance: &'static str| {
        let c = c.clone();
        let path = format!("/v1/client/leases/{}/instances/{instance}", id(&first));
        async move {
            c.call(reqwest::Method::DELETE, &path, Some(json!({"key": key})))
                .await
        }
    };
    let (_, a) = exit("a").await;
    assert_eq!(a["released"], false, "b still runs");
    assert_eq!(admin.seats_used(&lid).await, 2);
    let (_, b) = exit("b").await;
    assert_eq!(b["released"], true, "the last instance frees the seat");
    assert_eq!(admin.seats_used(&lid).await, 1);
    let seats = admin.ok_get(&format!("/v1/licenses/{lid}/seats")).await;
    let ended = seats["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == first["id"])
        .unwrap()
        .clone();
    assert_eq!(ended["release_reason"], "checkin");
    assert_eq!(ended["os_user"], "ann");
    assert_eq!(ended["identifier"], "vm1-pc");
    // The audit log has the release once: by the key (labelled with the machine's
    // identifier), the live lease before (its last instance) and the ended one after.
    let events = admin
        .ok_get(&format!("/v1/events?license_id={lid}&limit=200"))
        .await;
    let released: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "seat.released" && e["subject_id"] == first["id"])
        .collect();
    assert_eq!(released.len(), 1, "{events:#}");
    let event = released[0];
    assert_eq!(event["actor"]["kind"], "license_key");
    assert_eq!(event["actor"]["label"], "vm1-pc");
    // A seat's fields without a value are left out, not written as null (a seat event is
    // written at every checkout and checkin, so its size is the audit log's).
    assert!(event["before"].get("released_at").is_none(), "{event:#}");
    assert!(event["before"].get("contact_id").is_none(), "{event:#}");
    assert_eq!(event["before"]["contact_terminated"], false);
    let instances = event["before"]["instances"].to_string();
    assert!(
        instances.contains('b') && !instances.contains('a'),
        "{instances}"
    );
    assert_eq!(event["after"]["release_reason"], "checkin");
    assert_eq!(event["after"]["id"], first["id"]);
    assert!(!event["after"]["released_at"].is_null());
}

async fn heartbeats_keep_a_lease_and_a_crashed_app_frees_its_seat(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"lease_ttl_s": 1, "heartbeat_interval_s": 1}}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = client(s);
    let lease = c
        .ok_post(
            "/v1/client/leases",
            lease_body(key, "m1", "ann", "i1"),
            StatusCode::CREATED,
        )
        .await;
    let heartbeat = format!("/v1/client/leases/{}/heartbeat", id(&lease));
    // Heartbeats every 400 ms keep a 1 s lease alive for well over its TTL.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let answer = c
            .ok_post(
                &heartbeat,
                json!({"key": key, "instance": "i1"}),
                StatusCode::OK,
            )
            .await;
        assert!(answer["expires_at"].is_string());
    }
    let (status, _) = c
        .post("/v1/client/leases", lease_body(key, "m2", "bob", "i1"))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the heartbeating app keeps its seat"
    );
    // Now the app "crashes": no more heartbeats. After the TTL the seat frees itself.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let taken = c
        .post("/v1/client/leases", lease_body(key, "m2", "bob", "i1"))
        .await;
    assert_eq!(taken.0, StatusCode::CREATED, "{}", taken.1);
    let (status, gone) = c
        .post(&heartbeat, json!({"key": key, "instance": "i1"}))
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(gone["error"]["code"], "LEASE_EXPIRED");
    let seats = admin
        .ok_get(&format!("/v1/licenses/{}/seats", id(&license)))
        .await;
    let crashed = seats["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == lease["id"])
        .unwrap()
        .clone();
    assert_eq!(crashed["release_reason"], "expired");
}
