//! Bad input answers 400 `INVALID_REQUEST` naming the field — never a 500.

use crate::harness::{both_stores, id, in_days, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_stores!(
    bad_bodies_name_their_field,
    bad_queries_and_raw_bodies_are_refused
);

async fn bad_bodies_name_their_field(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("App").await;
    let good =
        json!({"application_id": app, "licensed_to": "Acme", "type": "trial", "seats_total": 1});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/licenses", with("type", json!("lifetime")), "type"),
        ("/v1/licenses", with("status", json!("gone")), "status"),
        ("/v1/licenses", with("seats_total", json!(0)), "seats_total"),
        (
            "/v1/licenses",
            with("seats_total", json!(-3)),
            "seats_total",
        ),
        (
            "/v1/licenses",
            with("seats_total", json!("many")),
            "seats_total",
        ),
        (
            "/v1/licenses",
            with("seats_total", json!(1.5)),
            "seats_total",
        ),
        (
            "/v1/licenses",
            with("expires_on", json!("2026-02-30")),
            "expires_on",
        ),
        (
            "/v1/licenses",
            with("expires_on", json!("tomorrow")),
            "expires_on",
        ),
        (
            "/v1/licenses",
            with("favourite_colour", json!("blue")),
            "favourite_colour",
        ),
        (
            "/v1/licenses",
            with("cost", json!({"amount_minor": 100, "currency": "dollars"})),
            "cost.currency",
        ),
        (
            "/v1/licenses",
            with("cost", json!({"amount_minor": -1, "currency": "USD"})),
            "cost.amount_minor",
        ),
        (
            "/v1/licenses",
            with("cost", json!({"amount_minor": 100})),
            "cost.currency",
        ),
        (
            "/v1/licenses",
            with("policy", json!({"lease_ttl_s": 0})),
            "policy.lease_ttl_s",
        ),
        (
            "/v1/licenses",
            with("licensed_to", json!("   ")),
            "licensed_to",
        ),
        ("/v1/licenses", with("key", json!("")), "key"),
        ("/v1/licenses", without("licensed_to"), "licensed_to"),
        ("/v1/licenses", json!([1, 2]), "body"),
        (
            "/v1/applications",
            json!({"name": "x", "deployment_model": "mainframe"}),
            "deployment_model",
        ),
        (
            "/v1/contacts",
            json!({"name": "Ann", "email": "not-an-address"}),
            "email",
        ),
        ("/v1/tokens", json!({"name": "x", "role": "admin"}), "role"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = api.post(path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_REQUEST", "{answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{path} {body}: {answer}"
        );
    }
    let license = api.ok_post("/v1/licenses", good, StatusCode::CREATED).await;
    let lid = id(&license);
    let (status, answer) = api
        .post(&format!("/v1/licenses/{lid}/seats"), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["details"]["field"], "assignee_name");
    let (status, answer) = api
        .patch(&format!("/v1/licenses/{lid}"), json!({"seats_total": 0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["details"]["field"], "seats_total");
    let (status, answer) = api
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"purchased_on": in_days(30).to_string(), "expires_on": in_days(0).to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["details"]["field"], "expires_on");
}

async fn bad_queries_and_raw_bodies_are_refused(s: &TestServer) {
    let api = s.workspace("Acme").await;
    for (path, field) in [
        ("/v1/licenses?limit=0", "limit"),
        ("/v1/licenses?limit=abc", "limit"),
        ("/v1/licenses?status=unknown", "status"),
        ("/v1/reminders?due_before=someday", "due_before"),
        ("/v1/reminders?cursor=garbage", "cursor"),
    ] {
        let (status, answer) = api.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{path}: {answer}"
        );
    }
    let raw = |body: &'static str, content_type: &'static str| {
        api.client
            .post(format!("{}/v1/applications", api.base))
            .bearer_auth(api.token.as_deref().unwrap())
            .header("content-type", content_type)
            .body(body)
    };
    for (body, content_type) in [
        ("{\"name\": ", "application/json"),
        ("not json", "application/json"),
        (
            "{\"name\":\"a\",\"deployment_model\":\"cloud\"} trailing",
            "application/json",
        ),
        ("name=a", "application/x-www-form-urlencoded"),
    ] {
        let response = raw(body, content_type).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
    }
    let huge = format!(
        "{{\"name\": \"{}\", \"deployment_model\": \"cloud\"}}",
        "x".repeat(100 * 1024)
    );
    let response = api
        .client
        .post(format!("{}/v1/applications", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["details"]["field"], "body");
    let (status, answer) = api.get("/v1/no-such-route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "NOT_FOUND");

    // NUL characters (PostgreSQL refuses them in text): a 400 naming the field in a
    // body, a 404 in a path; never a 500.
    let license = api
        .license_with(json!({"seat_model": "concurrent", "seats_total": 2}))
        .await;
    let key = license["key"].as_str().unwrap();
    let (status, answer) = api
        .post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "m\u{0}1", "os_user": "u", "instance": "i"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "fingerprint");
    let (status, answer) = api
        .post(
            "/v1/applications",
            json!({"name": "a\u{0}b", "deployment_model": "cloud"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "name");
    for (method, path, body) in [
        (
            reqwest::Method::DELETE,
            "/v1/client/leases/x%00y/instances/i".to_string(),
            json!({"key": key}),
        ),
        (
            reqwest::Method::POST,
            "/v1/client/leases/x%00y/heartbeat".to_string(),
            json!({"key": key, "instance": "i"}),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/licenses/{}%00", id(&license)),
            Value::Null,
        ),
    ] {
        let (status, answer) = api
            .call(method, &path, (!body.is_null()).then_some(body))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
}
