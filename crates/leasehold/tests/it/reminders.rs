//! Reminders follow a license's dates and status in the same transaction as each change.

use crate::harness::{both_stores, id, in_days, Api, TestServer};
use chrono::{Days, NaiveDate};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_stores!(
    reminders_follow_the_license_dates,
    perpetual_revoked_and_deleted_licenses_have_none_pending,
    audit_log_records_every_change_with_before_and_after,
);

async fn reminders_of(api: &Api, license_id: &str) -> Vec<(String, String)> {
    let page = api
        .ok_get(&format!("/v1/reminders?license_id={license_id}&limit=200"))
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["due_on"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn due(kind: &str, date: NaiveDate, lead: u64) -> (String, String) {
    (kind.to_string(), (date - Days::new(lead)).to_string())
}

async fn reminders_follow_the_license_dates(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("App").await;
    let expires = in_days(100);
    let maintenance = in_days(50);
    let license = api
        .ok_post(
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "A", "type": "subscription", "seats_total": 1,
                   "expires_on": expires.to_string(), "maintenance_expires_on": maintenance.to_string()}),
            StatusCode::CREATED,
        )
        .await;
    let lid = id(&license);
    let mut expected = vec![
        due("maintenance_expiry", maintenance, 30),
        due("maintenance_expiry", maintenance, 7),
        due("maintenance_expiry", maintenance, 1),
        due("expiry", expires, 30),
        due("expiry", expires, 7),
        due("expiry", expires, 1),
    ];
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(reminders_of(&api, &lid).await, expected);

    // Moving the expiry moves its reminders; dropping the maintenance date drops its own.
    let moved = in_days(20);
    let (status, _) = api
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"expires_on": moved.to_string(), "maintenance_expires_on": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reminders_of(&api, &lid).await,
        vec![due("expiry", moved, 7), due("expiry", moved, 1)],
        "the 30-day reminder would be in the past"
    );

    let upcoming = api
        .ok_get(&format!("/v1/reminders?due_before={}", in_days(15)))
        .await;
    let items = upcoming["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{upcoming}");
    assert_eq!(items[0]["state"], "pending");
}

async fn perpetual_revoked_and_deleted_licenses_have_none_pending(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("App").await;
    let perpetual = api
        .ok_post(
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "A", "type": "perpetual", "seats_total": 1}),
            StatusCode::CREATED,
        )
        .await;
    assert!(reminders_of(&api, &id(&perpetual)).await.is_empty());

    let license = api
        .ok_post(
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "A", "type": "subscription", "seats_total": 1,
                   "expires_on": in_days(40).to_string()}),
            StatusCode::CREATED,
        )
        .await;
    let lid = id(&license);
    assert_eq!(reminders_of(&api, &lid).await.len(), 3);
    api.patch(&format!("/v1/licenses/{lid}"), json!({"status": "revoked"}))
        .await;
    assert!(
        reminders_of(&api, &lid).await.is_empty(),
        "revoked: none pending"
    );
    api.patch(&format!("/v1/licenses/{lid}"), json!({"status": "active"}))
        .await;
    assert_eq!(reminders_of(&api, &lid).await.len(), 3, "reinstated: back");
    api.delete(&format!("/v1/licenses/{lid}")).await;
    assert!(reminders_of(&api, &lid).await.is_empty(), "deleted: none");
}

async fn audit_log_records_every_change_with_before_and_after(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(2).await;
    let lid = id(&license);
    api.patch(
        &format!("/v1/licenses/{lid}"),
        json!({"seats_total": 4, "po_number": "PO-9"}),
    )
    .await;
    let seat = api
        .ok_post(
            &format!("/v1/licenses/{lid}/seats"),
            json!({"assignee_name": "Ann"}),
            StatusCode::CREATED,
        )
        .await;
    api.ok_post(
        &format!("/v1/seats/{}/reclaim", id(&seat)),
        json!({}),
        StatusCode::OK,
    )
    .await;

    let events = api.ok_get(&format!("/v1/events?license_id={lid}")).await;
    let items: &Vec<Value> = events["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "seat.reclaimed",
            "seat.assigned",
            "license.updated",
            "license.created"
        ]
    );
    let updated = &items[2];
    assert_eq!(updated["before"]["seats_total"], 2);
    assert_eq!(updated["after"]["seats_total"], 4);
    assert_eq!(updated["after"]["po_number"], "PO-9");
    assert!(
        updated["after"].get("key_enc").is_none(),
        "no secrets in the audit log"
    );
    assert_eq!(updated["actor"]["kind"], "token");
    assert_eq!(items[0]["before"]["released_at"], json!(null));
    assert_eq!(items[0]["after"]["release_reason"], "reclaimed");

    // The whole workspace log pages newest first.
    let first = api.ok_get("/v1/events?limit=3").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = api
        .ok_get(&format!("/v1/events?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert!(first["items"][2]["id"].as_str().unwrap() > second["items"][0]["id"].as_str().unwrap());
}
