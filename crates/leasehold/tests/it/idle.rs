//! Idle leases (DESIGN §7): an app reports its user's absence in its heartbeats; a full
//! license gives the longest-idle lease's seat to someone who needs it (`when_needed`),
//! or the sweeper releases idle leases (`always`); never a lease in use.

use crate::client::client;
use crate::harness::{both_stores, eventually, id, Api, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_stores!(
    an_idle_seat_goes_to_a_newcomer_only_when_the_license_is_full,
    a_lease_in_use_keeps_its_seat,
    a_waiter_is_served_an_idle_seat,
    always_releases_idle_leases_without_anyone_asking,
    idle_reports_and_policies_are_checked,
);

async fn floating(admin: &Api, seats: i64, policy: Value) -> (String, String) {
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": seats, "policy": policy}))
        .await;
    (license["key"].as_str().unwrap().to_string(), id(&license))
}

fn wants(key: &str, machine: &str, instance: &str) -> Value {
    json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": instance})
}

/// Takes a seat; answers the lease id.
async fn take(c: &Api, key: &str, machine: &str) -> String {
    let (status, body) = c.post("/v1/client/leases", wants(key, machine, "1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id(&body)
}

/// A heartbeat of instance `instance` reporting `idle_s`; answers the status and body.
async fn beat(
    c: &Api,
    key: &str,
    lease: &str,
    instance: &str,
    idle_s: Option<i64>,
) -> (StatusCode, Value) {
    let mut body = json!({"key": key, "instance": instance});
    if let Some(idle_s) = idle_s {
        body["idle_s"] = json!(idle_s);
    }
    c.post(&format!("/v1/client/leases/{lease}/heartbeat"), body)
        .await
}

fn refused_as_idle((status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "LEASE_EXPIRED", "{body}");
    assert_eq!(body["error"]["details"]["reason"], "idle", "{body}");
}

/// The license's `seat.released` events with reason `idle`, by machine.
async fn idle_releases(admin: &Api, license_id: &str) -> Vec<String> {
    admin
        .events(license_id, "seat.released")
        .await
        .iter()
        .filter(|e| e["after"]["release_reason"] == "idle")
        .map(|e| {
            assert_eq!(e["actor"]["kind"], "system", "{e}");
            e["before"]["fingerprint"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn an_idle_seat_goes_to_a_newcomer_only_when_the_license_is_full(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 2, json!({"idle_timeout_s": 600})).await;
    let c = client(s);
    let a = take(&c, &key, "a").await;
    // a's user has been away for an hour, b's for a minute: both are asked to stay.
    assert_eq!(beat(&c, &key, &a, "1", Some(3600)).await.0, StatusCode::OK);
    let b = take(&c, &key, "b").await;
    assert_eq!(beat(&c, &key, &b, "1", Some(60)).await.0, StatusCode::OK);
    assert_eq!(
        beat(&c, &key, &a, "1", Some(3601)).await.0,
        StatusCode::OK,
        "a seat nobody needs stays with its idle holder"
    );
    // The license is full: a newcomer gets the seat of a (idle past the timeout), not b's.
    take(&c, &key, "c").await;
    assert_eq!(admin.seats_used(&lid).await, 2);
    refused_as_idle(beat(&c, &key, &a, "1", Some(3602)).await);
    assert_eq!(beat(&c, &key, &b, "1", Some(61)).await.0, StatusCode::OK);
    assert_eq!(idle_releases(&admin, &lid).await, ["a"]);
    // b is not idle long enough: the next newcomer is refused.
    let (status, body) = c.post("/v1/client/leases", wants(&key, "d", "1")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "NO_SEATS");
    assert_eq!(admin.seats_used(&lid).await, 2);
}

async fn a_lease_in_use_keeps_its_seat(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"idle_timeout_s": 60})).await;
    let c = client(s);
    let a = take(&c, &key, "a").await;
    // Two instances on one seat: one idle for an hour, the other in use.
    let (status, _) = c.post("/v1/client/leases", wants(&key, "a", "2")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the second instance joins the lease"
    );
    assert_eq!(beat(&c, &key, &a, "1", Some(3600)).await.0, StatusCode::OK);
    assert_eq!(beat(&c, &key, &a, "2", Some(0)).await.0, StatusCode::OK);
    let (status, body) = c.post("/v1/client/leases", wants(&key, "b", "1")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // An instance that says nothing of its user counts as in use too.
    assert_eq!(beat(&c, &key, &a, "2", None).await.0, StatusCode::OK);
    let (status, _) = c.post("/v1/client/leases", wants(&key, "b", "1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Once both are idle, the seat goes.
    assert_eq!(beat(&c, &key, &a, "2", Some(120)).await.0, StatusCode::OK);
    take(&c, &key, "b").await;
    refused_as_idle(beat(&c, &key, &a, "1", Some(3700)).await);
    assert_eq!(admin.seats_used(&lid).await, 1);
}

async fn a_waiter_is_served_an_idle_seat(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"idle_timeout_s": 60})).await;
    let c = client(s);
    let a = take(&c, &key, "a").await;
    // b waits, long-polling, while a is in use.
    let waiter = {
        let (c, key) = (c.clone(), key.clone());
        tokio::spawn(async move {
            let mut body = wants(&key, "b", "1");
            body["queue"] = json!(true);
            body["wait_s"] = json!(60);
            c.post("/v1/client/leases", body).await
        })
    };
    let queued = eventually(20, || async {
        let queue = admin.ok_get(&format!("/v1/licenses/{lid}/queue")).await;
        queue["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    assert!(queued, "b never queued");
    // a's user leaves: b's open request gets a's seat.
    assert_eq!(beat(&c, &key, &a, "1", Some(600)).await.0, StatusCode::OK);
    let (status, lease) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    refused_as_idle(beat(&c, &key, &a, "1", Some(601)).await);
    assert_eq!(idle_releases(&admin, &lid).await, ["a"]);
    assert_eq!(admin.seats_used(&lid).await, 1);
}

async fn always_releases_idle_leases_without_anyone_asking(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let policy = json!({"idle_timeout_s": 2, "idle_reclaim": "always"});
    let (key, lid) = floating(&admin, 3, policy).await;
    let c = client(s);
    let a = take(&c, &key, "a").await;
    let b = take(&c, &key, "b").await;
    let busy = take(&c, &key, "busy").await;
    // A heartbeat that reports idleness past the timeout ends the lease at once.
    refused_as_idle(beat(&c, &key, &a, "1", Some(5)).await);
    // One not yet idle long enough is released by the sweeper when it is.
    assert_eq!(beat(&c, &key, &b, "1", Some(1)).await.0, StatusCode::OK);
    assert_eq!(beat(&c, &key, &busy, "1", Some(0)).await.0, StatusCode::OK);
    let freed = eventually(30, || async { admin.seats_used(&lid).await == 1 }).await;
    assert!(freed, "the sweeper did not release the idle lease");
    refused_as_idle(beat(&c, &key, &b, "1", Some(10)).await);
    assert_eq!(beat(&c, &key, &busy, "1", None).await.0, StatusCode::OK);
    let mut released = idle_releases(&admin, &lid).await;
    released.sort();
    assert_eq!(released, ["a", "b"]);
}

async fn idle_reports_and_policies_are_checked(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    for (policy, field) in [
        (json!({"idle_timeout_s": 0}), "policy.idle_timeout_s"),
        (json!({"idle_reclaim": "sometimes"}), "policy.idle_reclaim"),
    ] {
        let (status, body) = admin
            .post(
                "/v1/licenses",
                json!({"application_id": admin.application("App").await, "licensed_to": "x", "type": "trial",
                       "seat_model": "concurrent", "seats_total": 1, "policy": policy}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["details"]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{body}"
        );
    }
    // The policy reads back, and `null` turns the timeout off again.
    let (key, lid) = floating(&admin, 1, json!({"idle_timeout_s": 30})).await;
    let license = admin.ok_get(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(license["policy"]["idle_timeout_s"], 30, "{license}");
    assert_eq!(
        license["policy"]["idle_reclaim"], "when_needed",
        "{license}"
    );
    let (status, body) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"idle_timeout_s": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policy"]["idle_timeout_s"], Value::Null, "{body}");
    // A negative absence is refused, naming the field.
    let c = client(s);
    let a = take(&c, &key, "a").await;
    let (status, body) = beat(&c, &key, &a, "1", Some(-1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], "idle_s", "{body}");
}
