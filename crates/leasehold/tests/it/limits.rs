//! Limits that hold under abuse (DESIGN §11): what one license key can make the server
//! store is bounded.

use crate::harness::{both_stores, id, TestServer};
use reqwest::StatusCode;
use serde_json::json;

both_stores!(
    a_lease_counts_at_most_its_policys_instances,
    client_names_are_bounded_and_plain,
);

async fn a_lease_counts_at_most_its_policys_instances(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1,
                             "policy": {"max_instances_per_lease": 3}}))
        .await;
    assert_eq!(license["policy"]["max_instances_per_lease"], 3);
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let c = s.anonymous();
    let take = |instance: &str| json!({"key": key, "fingerprint": "m1", "os_user": "ann", "instance": instance});
    let lease = c
        .ok_post("/v1/client/leases", take("i1"), StatusCode::CREATED)
        .await;
    let lease_id = id(&lease);
    for instance in ["i2", "i3", "i1"] {
        c.ok_post("/v1/client/leases", take(instance), StatusCode::OK)
            .await;
    }
    let (status, answer) = c.post("/v1/client/leases", take("i4")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "INSTANCE_LIMIT");
    assert_eq!(answer["error"]["details"]["limit"], 3);
    // A heartbeat from an instance the lease does not count is refused alike; a counted
    // one keeps the lease.
    let heartbeat = format!("/v1/client/leases/{lease_id}/heartbeat");
    let (status, answer) = c
        .post(&heartbeat, json!({"key": key, "instance": "i5"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "INSTANCE_LIMIT");
    c.ok_post(
        &heartbeat,
        json!({"key": key, "instance": "i2"}),
        StatusCode::OK,
    )
    .await;
    // One checks in: another may join.
    let (status, answer) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{lease_id}/instances/i1"),
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let joined = c
        .ok_post("/v1/client/leases", take("i4"), StatusCode::OK)
        .await;
    assert_eq!(joined["instances"], json!(["i2", "i3", "i4"]));
    assert_eq!(admin.seats_used(&lid).await, 1);
    // The policy is checked like the others.
    let (status, answer) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"max_instances_per_lease": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["details"]["field"],
        "policy.max_instances_per_lease"
    );
}

async fn client_names_are_bounded_and_plain(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 5}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let c = s.anonymous();
    let long = "f".repeat(257);
    let longest = "f".repeat(256);
    for (field, value) in [
        ("fingerprint", long.as_str()),
        ("fingerprint", "m1\u{202E}exe.txt"),
        ("os_user", "ann\nroot"),
        ("identifier", "PC\u{2066}1"),
        ("instance", "i\u{0007}"),
    ] {
        let mut body = json!({"key": key, "fingerprint": "m1", "os_user": "ann",
                              "identifier": "PC", "instance": "i1"});
        body[field] = json!(value);
        let (status, answer) = c.post("/v1/client/leases", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
    }
    let (status, answer) = c
        .post(
            "/v1/client/validate",
            json!({"key": key, "fingerprint": "m\u{202D}1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "fingerprint");
    assert_eq!(admin.seats_used(&lid).await, 0, "nothing was taken");
    c.ok_post(
        "/v1/client/leases",
        json!({"key": key, "fingerprint": longest, "os_user": "ann", "instance": "i1"}),
        StatusCode::CREATED,
    )
    .await;
}
