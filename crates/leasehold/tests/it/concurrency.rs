//! The seat invariant under concurrent assignment: never more seats than seats_total.

use crate::harness::{both_stores, id, TestServer};
use reqwest::StatusCode;
use serde_json::json;

both_stores!(concurrent_assignments_never_exceed_seats_total);

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
