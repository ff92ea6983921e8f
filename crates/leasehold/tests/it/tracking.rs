//! The license-tracking walkthrough: applications, licenses, keys, seats, contacts.

use crate::client::{client, lease_body};
use crate::harness::{both_stores, id, in_days, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use serde_json::Value;
use std::time::Duration;

both_stores!(
    a_license_records_every_field_and_shows_its_key_once,
    generated_keys_are_encrypted_at_rest_and_found_by_keyed_hash,
    revealing_a_key_needs_manage_and_is_audited,
    third_assignment_on_two_seats_is_over_allocated,
    reclaim_frees_the_seat_and_keeps_the_row,
    seats_total_cannot_drop_below_seats_in_use,
    terminated_contacts_flag_their_seats,
    deleting_a_license_releases_seats_and_keeps_history,
    applications_are_edited_and_deleted_when_empty,
    lists_page_with_cursors,
    duplicate_keys_conflict,
);

async fn a_license_records_every_field_and_shows_its_key_once(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("AutoCAD").await;
    let [purchased, expires, maintenance] =
        [-320, 4 * 365, 400].map(|days| in_days(days).to_string());
    let created = api
        .ok_post(
            "/v1/licenses",
            json!({
                "application_id": app, "key": "AB12C-DE34F-GH56J-KM78N-7K2QD", "licensed_to": "Acme Ltd",
                "vendor": "Autodesk", "type": "perpetual", "status": "active", "seat_model": "dedicated",
                "seats_total": 5, "version": "2025", "cost": {"amount_minor": 199_999, "currency": "EUR"},
                "purchased_on": purchased, "expires_on": expires, "maintenance_expires_on": maintenance,
                "po_number": "PO-1042", "notes": "five seats for design",
                "policy": {"lease_ttl_s": 60, "admin_release": "denied"}
            }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["key"], "AB12C-DE34F-GH56J-KM78N-7K2QD");
    assert_eq!(created["key_masked"], "•••••-•••••-•••••-•••••-7K2QD");
    let read = api.ok_get(&format!("/v1/licenses/{}", id(&created))).await;
    assert!(
        read.get("key").is_none(),
        "key must not be shown after creation: {read}"
    );
    assert_eq!(read["key_masked"], "•••••-•••••-•••••-•••••-7K2QD");
    for (field, value) in [
        ("licensed_to", json!("Acme Ltd")),
        ("vendor", json!("Autodesk")),
        ("type", json!("perpetual")),
        ("status", json!("active")),
        ("seat_model", json!("dedicated")),
        ("seats_total", json!(5)),
        ("seats_used", json!(0)),
        ("version", json!("2025")),
        ("cost", json!({"amount_minor": 199_999, "currency": "EUR"})),
        ("purchased_on", json!(purchased)),
        ("expires_on", json!(expires)),
        ("maintenance_expires_on", json!(maintenance)),
        ("effective_status", json!("active")),
        ("po_number", json!("PO-1042")),
        ("notes", json!("five seats for design")),
    ] {
        assert_eq!(read[field], value, "field {field}");
    }
    assert_eq!(read["policy"]["lease_ttl_s"], 60);
    assert_eq!(
        read["policy"]["heartbeat_interval_s"], 300,
        "unset policy fields keep defaults"
    );
    assert_eq!(read["policy"]["admin_release"], "denied");

    let listed = api
        .ok_get(&format!("/v1/licenses?application_id={app}"))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["items"][0].get("key").is_none());
    let patched = api
        .patch(
            &format!("/v1/licenses/{}", id(&created)),
            json!({"notes": null, "version": "2026", "status": "suspended"}),
        )
        .await;
    assert_eq!(patched.0, StatusCode::OK, "{}", patched.1);
    assert_eq!(patched.1["notes"], json!(null));
    assert_eq!(patched.1["version"], "2026");
    assert_eq!(patched.1["effective_status"], "suspended");
    assert_eq!(
        patched.1["po_number"], "PO-1042",
        "absent fields are left alone"
    );
}

async fn generated_keys_are_encrypted_at_rest_and_found_by_keyed_hash(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(1).await;
    let key = license["key"].as_str().unwrap();
    let groups: Vec<&str> = key.split('-').collect();
    assert_eq!(groups.len(), 5);
    assert!(groups.iter().all(|g| g.len() == 5));
    assert!(key
        .chars()
        .all(|c| c == '-' || "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)));

    // Read the row as stored: neither the ciphertext nor the lookup hash holds the key.
    let (key_enc, key_hash) = crate::harness::stored_key(s).await;
    assert!(
        !key_enc.windows(key.len()).any(|w| w == key.as_bytes()),
        "key stored in clear"
    );
    assert_ne!(key_hash, key);
    assert_eq!(
        key_hash,
        s.state.master.key_hash(key),
        "found by keyed hash"
    );
    assert_eq!(s.state.master.decrypt_string(&key_enc).unwrap(), key);
}

async fn revealing_a_key_needs_manage_and_is_audited(s: &TestServer) {
    let owner = s.workspace("Acme").await;
    let license = owner.license(1).await;
    let path = format!("/v1/licenses/{}/reveal-key", id(&license));
    let assigner = owner.token("assigner").await;
    let (status, body) = assigner.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    let manager = owner.token("manager").await;
    let revealed = manager.ok_post(&path, json!({}), StatusCode::OK).await;
    assert_eq!(revealed["key"], license["key"]);
    let events = owner
        .ok_get(&format!(
            "/v1/events?license_id={}&action=license.key_revealed",
            id(&license)
        ))
        .await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one reveal, one event: {events}");
    assert_eq!(items[0]["actor"]["kind"], "token");
    assert_eq!(items[0]["actor"]["label"], "manager");
}

async fn third_assignment_on_two_seats_is_over_allocated(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(2).await;
    let seats = format!("/v1/licenses/{}/seats", id(&license));
    let activated = in_days(-30).to_string();
    let first = api
        .ok_post(
            &seats,
            json!({"assignee_name": "Ann", "device_name": "WS-01", "seat_serial_key": "SER-123-456-789", "activated_on": activated}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(first["kind"], "assignment");
    assert_eq!(first["seat_serial_key_masked"], "•••-•••-••6-789");
    assert_eq!(first["activated_on"], activated);
    api.ok_post(&seats, json!({"device_name": "WS-02"}), StatusCode::CREATED)
        .await;
    let (status, body) = api.post(&seats, json!({"assignee_name": "Cid"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "SEAT_OVER_ALLOCATED");
    assert_eq!(
        body["error"]["message"],
        "Seat over-allocated: reclaim a seat or raise Seats Total"
    );
    assert_eq!(body["error"]["details"]["seats_total"], 2);
    let read = api.ok_get(&format!("/v1/licenses/{}", id(&license))).await;
    assert_eq!(read["seats_used"], 2);
    // Raising seats_total makes room.
    let (status, _) = api
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"seats_total": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.ok_post(&seats, json!({"assignee_name": "Cid"}), StatusCode::CREATED)
        .await;
}

async fn reclaim_frees_the_seat_and_keeps_the_row(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(1).await;
    let seats = format!("/v1/licenses/{}/seats", id(&license));
    let seat = api
        .ok_post(&seats, json!({"assignee_name": "Ann"}), StatusCode::CREATED)
        .await;
    let reclaimed = api
        .ok_post(
            &format!("/v1/seats/{}/reclaim", id(&seat)),
            json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(reclaimed["active"], false);
    assert_eq!(reclaimed["release_reason"], "reclaimed");
    assert_eq!(
        reclaimed["reclaimed_on"],
        chrono::Utc::now().date_naive().to_string()
    );
    let (status, body) = api
        .post(&format!("/v1/seats/{}/reclaim", id(&seat)), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        api.ok_get(&format!("/v1/licenses/{}", id(&license))).await["seats_used"],
        0
    );
    api.ok_post(&seats, json!({"assignee_name": "Bo"}), StatusCode::CREATED)
        .await;
    let all = api.ok_get(&seats).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2,
        "history kept: {all}"
    );
    let active = api.ok_get(&format!("{seats}?active=true")).await;
    let active = active["items"].as_array().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["assignee_name"], "Bo");
}

async fn seats_total_cannot_drop_below_seats_in_use(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(3).await;
    let seats = format!("/v1/licenses/{}/seats", id(&license));
    for name in ["A", "B"] {
        api.ok_post(&seats, json!({"assignee_name": name}), StatusCode::CREATED)
            .await;
    }
    let (status, body) = api
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"seats_total": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["details"]["seats_used"], 2);
    let (status, _) = api
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"seats_total": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn terminated_contacts_flag_their_seats(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(2).await;
    let seats = format!("/v1/licenses/{}/seats", id(&license));
    let ann = api
        .ok_post(
            "/v1/contacts",
            json!({"name": "Ann", "email": "ann@example.com"}),
            StatusCode::CREATED,
        )
        .await;
    let seat = api
        .ok_post(&seats, json!({"contact_id": id(&ann)}), StatusCode::CREATED)
        .await;
    assert_eq!(seat["contact_name"], "Ann");
    assert_eq!(seat["contact_terminated"], false);
    let terminated = api
        .ok_post(
            &format!("/v1/contacts/{}/terminate", id(&ann)),
            json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(terminated["status"], "terminated");
    assert_eq!(terminated["active_seats"].as_array().unwrap().len(), 1);
    let listed = api.ok_get(&format!("{seats}?active=true")).await;
    assert_eq!(listed["items"][0]["contact_terminated"], true);
    // An unknown contact is a bad request, not a seat.
    let (status, body) = api.post(&seats, json!({"contact_id": "nobody"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "contact_id");
}

async fn deleting_a_license_releases_seats_and_keeps_history(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("App").await;
    let license = api
        .ok_post(
            "/v1/licenses",
            json!({"application_id": app, "licensed_to": "Acme", "type": "subscription", "seats_total": 2,
                   "expires_on": in_days(60).to_string()}),
            StatusCode::CREATED,
        )
        .await;
    let lid = id(&license);
    let seat = api
        .ok_post(
            &format!("/v1/licenses/{lid}/seats"),
            json!({"assignee_name": "Ann"}),
            StatusCode::CREATED,
        )
        .await;
    assert!(
        !api.ok_get(&format!("/v1/reminders?license_id={lid}")).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, _) = api.delete(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&format!("/v1/licenses/{lid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete(&format!("/v1/licenses/{lid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        api.ok_get(&format!("/v1/reminders?license_id={lid}")).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let events = api.ok_get(&format!("/v1/events?license_id={lid}")).await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "license.deleted",
            "seat.released",
            "seat.assigned",
            "license.created"
        ]
    );
    let released = &events["items"][1];
    assert_eq!(released["subject_id"], id(&seat));
    assert_eq!(released["after"]["release_reason"], "license_deleted");
    assert_eq!(released["before"]["assignee_name"], "Ann");
}

async fn applications_are_edited_and_deleted_when_empty(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let license = api.license(1).await;
    let app = license["application_id"].as_str().unwrap().to_string();
    let (status, body) = api
        .patch(
            &format!("/v1/applications/{app}"),
            json!({"name": "AutoCAD LT", "vendor": null, "deployment_model": "hybrid"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "AutoCAD LT");
    assert_eq!(body["vendor"], json!(null));
    assert_eq!(body["deployment_model"], "hybrid");
    let (status, body) = api.delete(&format!("/v1/applications/{app}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    api.delete(&format!("/v1/licenses/{}", id(&license))).await;
    assert_eq!(
        api.delete(&format!("/v1/applications/{app}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get(&format!("/v1/applications/{app}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(api.ok_get("/v1/applications").await["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

async fn lists_page_with_cursors(s: &TestServer) {
    let api = s.workspace("Acme").await;
    for i in 0..5 {
        api.ok_post(
            "/v1/contacts",
            json!({"name": format!("C{i}")}),
            StatusCode::CREATED,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/contacts?limit=2&cursor={c}"),
            None => "/v1/contacts?limit=2".to_string(),
        };
        let page = api.ok_get(&path).await;
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["C4", "C3", "C2", "C1", "C0"],
        "newest first, each once"
    );
}

async fn duplicate_keys_conflict(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let app = api.application("App").await;
    let body = json!({"application_id": app, "key": "SAME-KEY-1", "licensed_to": "A", "type": "trial", "seats_total": 1});
    api.ok_post("/v1/licenses", body.clone(), StatusCode::CREATED)
        .await;
    let (status, error) = api.post("/v1/licenses", body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"]["code"], "CONFLICT");
}

both_stores!(a_licenses_audit_log_is_the_workspaces_log_of_that_license,);

/// A license's log (`license_id=`) is the workspace's log cut to that license, whether
/// its events are fresh or already indexed by license (SQLite indexes them in bulk, a
/// few times a second, and reads the rest from the end of the log).
async fn a_licenses_audit_log_is_the_workspaces_log_of_that_license(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let licenses = [
        admin
            .license_with(json!({"seat_model": "concurrent", "seats_total": 3}))
            .await,
        admin
            .license_with(json!({"seat_model": "concurrent", "seats_total": 3}))
            .await,
    ];
    let c = client(s);
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    let compare = |round: &'static str| {
        let admin = admin.clone();
        let lids: Vec<String> = licenses.iter().map(id).collect();
        async move {
            let workspace = admin.all_pages("/v1/events?", 200).await;
            for lid in &lids {
                let expected: Vec<Value> = workspace
                    .iter()
                    .filter(|e| e["license_id"] == lid.as_str())
                    .cloned()
                    .collect();
                assert!(expected.len() >= 8, "{round}: {expected:#?}");
                for limit in [1, 3, 200] {
                    let log = admin
                        .all_pages(&format!("/v1/events?license_id={lid}"), limit)
                        .await;
                    assert_eq!(ids(&log), ids(&expected), "{round}, pages of {limit}");
                }
                let released = admin
                    .all_pages(
                        &format!("/v1/events?license_id={lid}&action=seat.released"),
                        2,
                    )
                    .await;
                let expected_released: Vec<Value> = expected
                    .iter()
                    .filter(|e| e["action"] == "seat.released")
                    .cloned()
                    .collect();
                assert_eq!(ids(&released), ids(&expected_released), "{round}: releases");
            }
        }
    };
    for round in ["first", "second"] {
        for cycle in 0..4 {
            for license in &licenses {
                let key = license["key"].as_str().unwrap();
                let machine = format!("{round}-{cycle}");
                let lease = c
                    .ok_post(
                        "/v1/client/leases",
                        lease_body(key, &machine, "u", "i1"),
                        StatusCode::CREATED,
                    )
                    .await;
                let path = format!("/v1/client/leases/{}/instances/i1", id(&lease));
                let (status, _) = c
                    .call(reqwest::Method::DELETE, &path, Some(json!({"key": key})))
                    .await;
                assert_eq!(status, StatusCode::OK);
            }
        }
        // An event of the general path among the seat writer's.
        let (status, body) = admin
            .patch(
                &format!("/v1/licenses/{}", id(&licenses[0])),
                json!({"notes": round}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // At once, while some are likely not indexed yet; and again once SQLite's writer
        // has indexed them (every 50 ms). The assertions hold wherever the seam falls;
        // the pause only makes both sides of it likely (the store's own tests place the
        // seam exactly).
        compare(round).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        compare(round).await;
    }
}
