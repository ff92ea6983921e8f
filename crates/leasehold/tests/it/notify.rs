//! Notifications: signed webhooks and reminder emails, delivered from the outbox to a
//! real HTTP receiver and a real SMTP server on loopback; retried, never lost on kill -9,
//! never doubled by two nodes.

use crate::harness::{
    id, in_days, init_store, shared_pg_store, Backend, ServerProcess, TestServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

use crate::sinks::{signature_valid, Receiver, SmtpSink};

// ---- the tests ----

fn local(settings: &mut leasehold_server::Settings) {
    settings.notify.webhook_allow_local = true;
    settings.notify.retry_base = Duration::from_millis(100);
    settings.notify.poll_interval = Duration::from_millis(50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_checked_and_their_secret_shown_once() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.workspace("Acme").await;
    for (url, events) in [
        ("http://127.0.0.1:9/hook", json!(["seat.taken"])),
        ("http://localhost/hook", json!(["seat.taken"])),
        (
            "http://169.254.169.254/latest/meta-data",
            json!(["seat.taken"]),
        ),
        ("ftp://example.com/", json!(["seat.taken"])),
    ] {
        let (status, answer) = admin
            .post("/v1/webhooks", json!({"url": url, "events": events}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        assert_eq!(answer["error"]["details"]["field"], "url");
    }
    for events in [json!([]), json!(["seat.stolen"])] {
        let (status, answer) = admin
            .post(
                "/v1/webhooks",
                json!({"url": "https://hooks.example.com/x", "events": events}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], "events");
    }
    let created = admin
        .ok_post(
            "/v1/webhooks",
            json!({"url": "https://hooks.example.com/x", "events": ["seat.taken", "license.expiring"]}),
            StatusCode::CREATED,
        )
        .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 30);
    let path = format!("/v1/webhooks/{}", id(&created));
    let fetched = admin.ok_get(&path).await;
    assert!(
        fetched.get("secret").is_none(),
        "the secret is shown once: {fetched}"
    );
    assert_eq!(fetched["events"], json!(["seat.taken", "license.expiring"]));
    let listed = admin.ok_get("/v1/webhooks").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["items"][0].get("secret").is_none());
    // Another workspace sees nothing of it; a viewer may not manage webhooks.
    let other = s.workspace("Other").await;
    assert_eq!(other.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(other.delete(&path).await.0, StatusCode::NOT_FOUND);
    let viewer = admin.token("viewer").await;
    assert_eq!(viewer.get("/v1/webhooks").await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.delete(&path).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&path).await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

async fn seat_and_license_events_arrive_signed(backend: Backend) {
    let s = TestServer::start_with(backend, local).await;
    let receiver = Receiver::start(0, false).await;
    let admin = s.workspace("Acme").await;
    let hook = admin
        .ok_post(
            "/v1/webhooks",
            json!({"url": receiver.url, "events": leasehold_store::WEBHOOK_EVENTS, "secret": "a-shared-secret-0123456789"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(hook["secret"], "a-shared-secret-0123456789");
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let key = license["key"].as_str().unwrap();
    let c = s.anonymous();
    let lease = c
        .ok_post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "m1", "os_user": "ann", "instance": "i1"}),
            StatusCode::CREATED,
        )
        .await;
    let (status, _) = c
        .post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "m2", "os_user": "bob", "instance": "i1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/client/leases/{}/instances/i1", id(&lease)),
            Some(json!({"key": key})),
        )
        .await;
    assert!(status.is_success());
    let contact = admin
        .ok_post(
            "/v1/contacts",
            json!({"name": "Carol", "email": "carol@example.com"}),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok_post(
            &format!("/v1/contacts/{}/terminate", id(&contact)),
            json!({}),
            StatusCode::OK,
        )
        .await;
    let path = format!("/v1/licenses/{}", id(&license));
    let (status, _) = admin.patch(&path, json!({"notes": "renewed"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin.delete(&path).await.0, StatusCode::NO_CONTENT);

    let expected = [
        "license.created",
        "seat.taken",
        "seat.denied",
        "seat.released",
        "contact.terminated",
        "license.updated",
        "license.deleted",
    ];
    let got = receiver
        .wait_for(|got| {
            expected
                .iter()
                .all(|t| got.iter().any(|r| r.json["type"] == *t))
        })
        .await;
    for received in &got {
        assert!(
            signature_valid("a-shared-secret-0123456789", received),
            "{backend:?}: bad signature on {}",
            received.body
        );
        assert!(!signature_valid("another-secret-0123456789", received));
        assert_eq!(received.id_header, received.json["id"].as_str().unwrap());
        assert!(received.json["time"].as_str().unwrap().ends_with('Z'));
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.id_header.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "each message once: {got:#?}");
    let released = got
        .iter()
        .find(|r| r.json["type"] == "seat.released")
        .unwrap();
    assert_eq!(released.json["data"]["reason"], "checkin");
    assert_eq!(released.json["data"]["license_id"], id(&license));
    let taken = got.iter().find(|r| r.json["type"] == "seat.taken").unwrap();
    assert_eq!(taken.json["data"]["seat"]["fingerprint"], "m1");
    // As the rest of the API reads: times in RFC 3339, a lease's instances an array; and
    // the audit log's after alike.
    let is_time = |v: &Value| {
        v.as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    };
    let seat = &taken.json["data"]["seat"];
    assert!(
        is_time(&seat["created_at"]) && is_time(&seat["expires_at"]),
        "{seat}"
    );
    assert_eq!(seat["instances"], json!(["i1"]), "{seat}");
    let audited = admin.events(&id(&license), "seat.taken").await;
    let after = &audited.last().expect("the take is audited")["after"];
    assert!(is_time(&after["created_at"]), "{after}");
    assert_eq!(after["instances"], json!(["i1"]), "{after}");
    let denied = got
        .iter()
        .find(|r| r.json["type"] == "seat.denied")
        .unwrap();
    assert_eq!(denied.json["data"]["fingerprint"], "m2");
    // The delivery log shows them delivered.
    let log = admin
        .ok_get(&format!("/v1/webhooks/{}/deliveries?limit=200", id(&hook)))
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), got.len());
    assert!(items
        .iter()
        .all(|d| d["state"] == "delivered" && d["last_status"] == 200));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_and_license_events_arrive_signed_sqlite() {
    seat_and_license_events_arrive_signed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_and_license_events_arrive_signed_postgres() {
    seat_and_license_events_arrive_signed(Backend::Postgres).await;
}

async fn a_failing_receiver_gets_the_event_once_more(backend: Backend) {
    let s = TestServer::start_with(backend, local).await;
    let receiver = Receiver::start(3, false).await;
    let admin = s.workspace("Acme").await;
    let hook = receiver.subscribe(&admin, &["license.created"]).await;
    admin.license(1).await;
    let got = receiver.wait_for(|got| got.len() >= 4).await;
    // Backoff is 100, 200, 400 ms here: wait well past another would-be retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = receiver.got();
    assert_eq!(
        got_after.len(),
        4,
        "{backend:?}: three failures, then one success, then nothing more"
    );
    assert!(
        got.iter().all(|r| r.id_header == got[0].id_header),
        "the same id on every attempt"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same body on every attempt"
    );
    let log = admin
        .ok_get(&format!("/v1/webhooks/{}/deliveries", id(&hook)))
        .await;
    let delivery = &log["items"][0];
    assert_eq!(delivery["state"], "delivered");
    assert_eq!(delivery["attempts"], 4);
    assert_eq!(delivery["last_status"], 200);
    assert_eq!(delivery["id"], got[0].id_header.as_str());
    // Re-sending delivers it once more, with the same id.
    admin
        .ok_post(
            &format!(
                "/v1/webhooks/{}/deliveries/{}/resend",
                id(&hook),
                got[0].id_header
            ),
            json!({}),
            StatusCode::OK,
        )
        .await;
    let again = receiver.wait_for(|got| got.len() >= 5).await;
    assert_eq!(again[4].id_header, got[0].id_header);
    let (status, _) = admin
        .post(
            &format!("/v1/webhooks/{}/deliveries/nope/resend", id(&hook)),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_once_more_sqlite() {
    a_failing_receiver_gets_the_event_once_more(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_once_more_postgres() {
    a_failing_receiver_gets_the_event_once_more(Backend::Postgres).await;
}

async fn due_reminders_are_emailed_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let receiver = Receiver::start(0, false).await;
    let smtp = sink.url.clone();
    let s = TestServer::start_with(backend, move |settings| {
        local(settings);
        settings.notify.smtp_url = Some(smtp);
        settings.notify.public_url = "https://licenses.example.com".into();
        // The test queues reminders itself.
        settings.notify.reminder_interval = Duration::from_secs(3600);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let (status, settings) = admin
        .patch("/v1/notifications", json!({"emails": ["it@example.com"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["smtp_configured"], true);
    let (status, _) = admin
        .patch("/v1/notifications", json!({"emails": ["not an address"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    receiver.subscribe(&admin, &["license.expiring"]).await;
    let app = admin
        .ok_post(
            "/v1/applications",
            json!({"name": "CAD Pro", "vendor": "V", "deployment_model": "on_premise"}),
            StatusCode::CREATED,
        )
        .await;
    let expires = in_days(7);
    let maintenance = in_days(30);
    let license = admin
        .ok_post(
            "/v1/licenses",
            json!({"application_id": id(&app), "licensed_to": "Design Team", "type": "subscription",
                   "seats_total": 5, "expires_on": expires.to_string(),
                   "maintenance_expires_on": maintenance.to_string()}),
            StatusCode::CREATED,
        )
        .await;
    // Due today: the 7-day expiry reminder and the 30-day maintenance reminder.
    assert_eq!(leasehold_server::notify::queue_reminders(&s.state).await, 2);
    assert_eq!(
        leasehold_server::notify::queue_reminders(&s.state).await,
        0,
        "queued once"
    );
    for _ in 0..200 {
        if sink.mails().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = sink.mails();
    assert_eq!(
        mails.len(),
        2,
        "{backend:?}: one email per due reminder: {mails:#?}"
    );
    let expiry = mails
        .iter()
        .find(|m| m.text().contains(&format!("license expires {expires}")))
        .unwrap_or_else(|| panic!("no expiry email: {mails:#?}"));
    assert!(expiry.text().contains("CAD Pro"));
    assert!(expiry.text().contains("Design Team"));
    assert!(
        expiry.text().contains("Seats in use: 0 of 5"),
        "{}",
        expiry.text()
    );
    assert!(expiry.text().contains(&format!(
        "https://licenses.example.com/licenses/{}",
        id(&license)
    )));
    assert!(mails.iter().any(|m| m
        .text()
        .contains(&format!("maintenance expires {maintenance}"))));
    for mail in &mails {
        assert!(
            mail.to.contains(&"owner@example.com".to_string()),
            "{:?}",
            mail.to
        );
        assert!(
            mail.to.contains(&"it@example.com".to_string()),
            "{:?}",
            mail.to
        );
        // Each recipient is a blind copy: an outside address never sees the members'.
        let headers = mail.data.split("\r\n\r\n").next().unwrap_or_default();
        let headers = headers.split("\n\n").next().unwrap_or_default();
        assert!(
            !headers.contains("owner@example.com") && !headers.contains("it@example.com"),
            "{headers}"
        );
        assert!(
            mail.message_id().starts_with("<reminder."),
            "{}",
            mail.message_id()
        );
    }
    let reminders = admin
        .ok_get(&format!(
            "/v1/reminders?license_id={}&state=sent",
            id(&license)
        ))
        .await;
    let items = reminders["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|r| r["delivery"] == "delivered"),
        "{reminders}"
    );
    let hooks = receiver.wait_for(|got| got.len() >= 2).await;
    assert!(hooks.iter().all(|r| r.json["type"] == "license.expiring"));
    assert!(hooks
        .iter()
        .all(|r| r.json["data"]["application"] == "CAD Pro"));

    // A digest workspace gets one email for the day's reminders.
    let digest = s.workspace("Digest").await;
    digest
        .patch("/v1/notifications", json!({"digest": true}))
        .await;
    for name in ["One", "Two"] {
        digest
            .license_with(json!({"licensed_to": name, "expires_on": expires.to_string()}))
            .await;
    }
    assert_eq!(leasehold_server::notify::queue_reminders(&s.state).await, 2);
    for _ in 0..200 {
        if sink.mails().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 3, "one digest email: {mails:#?}");
    let digest_mail = &mails[2];
    assert!(digest_mail.message_id().starts_with("<digest."));
    assert!(digest_mail.text().contains("One") && digest_mail.text().contains("Two"));

    // The SMTP test.
    let (status, _) = admin
        .post(
            "/v1/notifications/test-email",
            json!({"to": "x@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(sink.mails().len(), 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_reminders_are_emailed_once_sqlite() {
    due_reminders_are_emailed_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_reminders_are_emailed_once_postgres() {
    due_reminders_are_emailed_once(Backend::Postgres).await;
}

/// The monthly usage digest names the license to change, once a month, on both stores.
async fn the_monthly_usage_digest_names_what_to_change(backend: Backend) {
    let sink = SmtpSink::start().await;
    let smtp = sink.url.clone();
    let s = TestServer::start_with(backend, move |settings| {
        local(settings);
        settings.notify.smtp_url = Some(smtp);
        settings.notify.public_url = "https://licenses.example.com".into();
        settings.notify.reminder_interval = Duration::from_secs(3600);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let renews = in_days(60);
    let license = admin
        .license_with(
            json!({"licensed_to": "Design Team", "seat_model": "concurrent",
            "seats_total": 1, "expires_on": renews.to_string()}),
        )
        .await;
    let key = license["key"].as_str().unwrap();
    let c = s.anonymous();
    for (machine, expected) in [("a", StatusCode::CREATED), ("b", StatusCode::CONFLICT)] {
        let (status, body) = c
            .post(
                "/v1/client/leases",
                json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1"}),
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
    assert_eq!(
        leasehold_server::notify::queue_usage_digests(&s.state).await,
        0,
        "off by default"
    );
    let (status, settings) = admin
        .patch("/v1/notifications", json!({"usage_digest": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["usage_digest"], true);
    assert_eq!(
        leasehold_server::notify::queue_usage_digests(&s.state).await,
        1
    );
    assert_eq!(
        leasehold_server::notify::queue_usage_digests(&s.state).await,
        0,
        "once a month"
    );
    for _ in 0..200 {
        if !sink.mails().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert!(
        mail.message_id().starts_with("<usage-digest."),
        "{}",
        mail.message_id()
    );
    assert!(
        mail.to.contains(&"owner@example.com".to_string()),
        "{:?}",
        mail.to
    );
    let text = mail.text();
    assert!(
        text.contains(&format!(
            "* Design Team: increase to 2 seats; renews {renews}"
        )),
        "{text}"
    );
    assert!(text.contains("1 person was refused a seat"), "{text}");
    assert!(
        text.contains("https://licenses.example.com/usage"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_usage_digest_names_what_to_change_sqlite() {
    the_monthly_usage_digest_names_what_to_change(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_usage_digest_names_what_to_change_postgres() {
    the_monthly_usage_digest_names_what_to_change(Backend::Postgres).await;
}

fn node_args(store: &[String]) -> Vec<String> {
    let mut args = store.to_vec();
    args.extend(
        [
            "--webhook-allow-local",
            "--retry-base-ms",
            "100",
            "--delivery-claim-ms",
            "1500",
        ]
        .map(String::from),
    );
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_repeats_at_most_the_message_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    let token = init_store(&store, "Acme");
    let receiver = Receiver::start(0, true).await;
    let mut server = ServerProcess::start(&node_args(&store)).await;
    let admin = server.api(&token);
    receiver.subscribe(&admin, &["license.created"]).await;
    let mut created = Vec::new();
    for _ in 0..6 {
        created.push(id(&admin.license(1).await));
    }
    // The first delivery is in flight (the receiver holds it); then the server dies.
    receiver.wait_for(|got| !got.is_empty()).await;
    server.kill_9();
    let restarted = ServerProcess::start(&node_args(&store)).await;
    let got = receiver
        .wait_for(|got| {
            created.iter().all(|license| {
                got.iter()
                    .any(|r| r.json["data"]["license_id"] == license.as_str())
            })
        })
        .await;
    // The message in flight at the kill is retried once its claim lapses: same id.
    let in_flight = got[0].id_header.clone();
    let got = receiver
        .wait_for(|got| got.iter().filter(|r| r.id_header == in_flight).count() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if receiver.got().len() > got.len() {
        receiver.got()
    } else {
        got
    };
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for received in &got {
        *counts.entry(received.id_header.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 6, "every message arrived: {got:#?}");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.len() <= 1,
        "at most the message in flight repeats: {repeated:?}"
    );
    if let Some((repeated_id, n)) = repeated.first() {
        assert_eq!(**n, 2);
        assert_eq!(**repeated_id, got[0].id_header, "only the one in flight");
    }
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_message_once() {
    let (store, name, _dir) = shared_pg_store().await;
    let token = init_store(&store, "Acme");
    let receiver = Receiver::start(0, false).await;
    let nodes = [
        ServerProcess::start(&node_args(&store)).await,
        ServerProcess::start(&node_args(&store)).await,
    ];
    let apis: Vec<_> = nodes.iter().map(|n| n.api(&token)).collect();
    receiver.subscribe(&apis[0], &["license.created"]).await;
    let app = apis[0].application("App").await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let api = apis[n % 2].clone();
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            api.ok_post(
                "/v1/licenses",
                json!({"application_id": app, "licensed_to": format!("L{n}"), "type": "subscription", "seats_total": 1}),
                StatusCode::CREATED,
            )
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    receiver.wait_for(|got| got.len() >= 40).await;
    // Both nodes poll every second; give a would-be duplicate time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.got();
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.id_header.as_str()).collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(got.len(), 40, "each message delivered by one node only");
    drop(nodes);
    crate::harness::drop_pg_database(&name).await;
}

/// Three nodes' reminder jobs find the same due reminders at once: each becomes one
/// email and one webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_turn_each_due_reminder_into_one_message() {
    const LICENSES: usize = 30;
    let (store, name, dir) = shared_pg_store().await;
    let token = init_store(&store, "Acme");
    let sink = SmtpSink::start().await;
    let receiver = Receiver::start(0, false).await;
    let mut args = node_args(&store);
    args.extend(["--smtp-url".to_string(), sink.url.clone()]);

    // The licenses are made on a node whose reminder job ran (at its start) before any
    // of them existed and does not run again...
    let mut quiet = args.clone();
    quiet.extend(["--reminder-interval-ms".to_string(), "3600000".to_string()]);
    let setup = ServerProcess::start(&quiet).await;
    let admin = setup.api(&token);
    receiver.subscribe(&admin, &["license.expiring"]).await;
    let app = admin.application("App").await;
    let expires = in_days(7);
    for n in 0..LICENSES {
        admin
            .ok_post(
                "/v1/licenses",
                json!({"application_id": app, "licensed_to": format!("L{n}"), "type": "subscription",
                       "seats_total": 1, "expires_on": expires.to_string()}),
                StatusCode::CREATED,
            )
            .await;
    }
    drop(setup);

    // ... so that three nodes starting together all find every reminder due, and keep
    // looking every 50 ms.
    let mut busy = args.clone();
    busy.extend(["--reminder-interval-ms".to_string(), "50".to_string()]);
    let logs: Vec<_> = (0..3)
        .map(|n| dir.path().join(format!("node{n}.log")))
        .collect();
    let nodes: Vec<ServerProcess> = logs
        .iter()
        .map(|log| ServerProcess::spawn_logging(&busy, Some(log)))
        .collect();
    for node in &nodes {
        node.ready().await;
    }
    receiver.wait_for(|got| got.len() >= LICENSES).await;
    assert!(
        crate::harness::eventually(20, || async { sink.mails().len() >= LICENSES }).await,
        "every reminder was emailed: {} of {LICENSES}",
        sink.mails().len()
    );
    // Dozens more reminder ticks and delivery polls: time for a duplicate to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mails = sink.mails();
    assert_eq!(mails.len(), LICENSES, "one email per reminder");
    let message_ids: std::collections::HashSet<String> =
        mails.iter().map(|m| m.message_id()).collect();
    assert_eq!(message_ids.len(), LICENSES);
    for n in 0..LICENSES {
        let to = format!("licensed to L{n}:");
        assert_eq!(
            mails.iter().filter(|m| m.text().contains(&to)).count(),
            1,
            "L{n}'s reminder, once"
        );
    }
    let hooks = receiver.got();
    assert_eq!(hooks.len(), LICENSES, "one webhook per reminder");
    let hook_ids: std::collections::HashSet<&str> =
        hooks.iter().map(|r| r.id_header.as_str()).collect();
    assert_eq!(hook_ids.len(), LICENSES);
    assert!(hooks.iter().all(|r| r.json["type"] == "license.expiring"));
    let sent = nodes[2]
        .api(&token)
        .ok_get("/v1/reminders?state=sent&limit=100")
        .await;
    assert_eq!(
        sent["items"].as_array().map(Vec::len),
        Some(LICENSES),
        "{sent}"
    );
    drop(nodes);
    // Not only the outcome: the work itself was done once. One node queued each reminder;
    // the others, waiting for its lock, then found none pending.
    let queued: u64 = logs
        .iter()
        .map(|log| queued_reminders(&std::fs::read_to_string(log).unwrap_or_default()))
        .sum();
    assert_eq!(queued, LICENSES as u64, "reminders queued, over all nodes");
    crate::harness::drop_pg_database(&name).await;
}

/// The reminders a node's log says it queued (`queued reminder messages reminders=N`).
fn queued_reminders(log: &str) -> u64 {
    let mut plain = String::new();
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI colour: up to its closing 'm'.
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|line| line.contains("queued reminder messages"))
        .filter_map(|line| line.split("reminders=").nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A holder refused for the admin-release cooldown is announced like a full license:
/// `seat.denied`, on the lease path (the SQLite seat writer decides it as the general
/// path does; PostgreSQL's batch skips it) and on the activation path.
async fn a_cooldown_refusal_is_announced(backend: Backend) {
    let s = TestServer::start_with(backend, local).await;
    let receiver = Receiver::start(0, false).await;
    let admin = s.workspace("Acme").await;
    receiver.subscribe(&admin, &["seat.denied"]).await;
    let c = s.anonymous();
    for (model, path, body) in [
        (
            "concurrent",
            "/v1/client/leases",
            json!({"fingerprint": "lease-m", "os_user": "ann", "instance": "i1"}),
        ),
        (
            "dedicated",
            "/v1/client/activations",
            json!({"fingerprint": "node-m"}),
        ),
    ] {
        let license = admin
            .license_with(json!({"seat_model": model, "seats_total": 5, "policy": {"release_cooldown_s": 600}}))
            .await;
        let mut request = body.clone();
        request["key"] = license["key"].clone();
        let seat = c.ok_post(path, request.clone(), StatusCode::CREATED).await;
        admin
            .ok_post(
                &format!("/v1/seats/{}/reclaim", id(&seat)),
                json!({}),
                StatusCode::OK,
            )
            .await;
        let (status, refused) = c.post(path, request).await;
        assert_eq!(status, StatusCode::CONFLICT, "{model}: {refused}");
        assert_eq!(refused["error"]["code"], "RELEASE_COOLDOWN");
    }
    let got = receiver.wait_for(|got| got.len() >= 2).await;
    let mut fingerprints: Vec<&str> = got
        .iter()
        .map(|r| {
            assert_eq!(r.json["type"], "seat.denied");
            assert!(
                r.json["data"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("admin released"),
                "{}",
                r.body
            );
            r.json["data"]["fingerprint"].as_str().unwrap()
        })
        .collect();
    fingerprints.sort();
    assert_eq!(fingerprints, ["lease-m", "node-m"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_refusal_is_announced_sqlite() {
    a_cooldown_refusal_is_announced(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_refusal_is_announced_postgres() {
    a_cooldown_refusal_is_announced(Backend::Postgres).await;
}

/// Leases the sweeper ends (on SQLite inside the seat writer's batches, on PostgreSQL
/// under each license's lock) are each audited once, by the system, with the live lease
/// as it was, and announced as `seat.expired`; a lease that kept heartbeating is not.
async fn swept_leases_are_audited_and_announced(backend: Backend) {
    let s = TestServer::start_with(backend, |settings| {
        local(settings);
        settings.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let receiver = Receiver::start(0, false).await;
    let admin = s.workspace("Acme").await;
    receiver.subscribe(&admin, &["seat.expired"]).await;
    let license = admin
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": 5, "policy": {"lease_ttl_s": 2}}),
        )
        .await;
    let key = license["key"].as_str().unwrap();
    let lid = id(&license);
    let c = s.anonymous();
    let mut leases = Vec::new();
    for machine in ["m1", "m2", "m3"] {
        let lease = c
            .ok_post(
                "/v1/client/leases",
                json!({"key": key, "fingerprint": machine, "os_user": "ann", "instance": "i1"}),
                StatusCode::CREATED,
            )
            .await;
        leases.push(id(&lease));
    }
    // m3 keeps heartbeating while the other two lapse and are swept.
    let mut waited = 0;
    let got = loop {
        waited += 1;
        assert!(
            waited < 80,
            "{backend:?}: no expiry announced: {:#?}",
            receiver.got()
        );
        c.ok_post(
            &format!("/v1/client/leases/{}/heartbeat", leases[2]),
            json!({"key": key, "instance": "i1"}),
            StatusCode::OK,
        )
        .await;
        let got = receiver.got();
        if got.len() >= 2 {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut announced: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.json["type"], "seat.expired");
            assert_eq!(r.json["data"]["license_id"], lid);
            assert_eq!(r.json["data"]["seat"]["os_user"], "ann");
            r.json["data"]["seat"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    announced.sort();
    let mut lapsed = leases[..2].to_vec();
    lapsed.sort();
    assert_eq!(
        announced, lapsed,
        "{backend:?}: each lapsed lease announced once"
    );
    let license = admin.ok_get(&format!("/v1/licenses/{lid}")).await;
    assert_eq!(
        license["seats_used"], 1,
        "{backend:?}: only m3 holds a seat"
    );
    let events = admin.events(&lid, "seat.expired").await;
    assert_eq!(events.len(), 2, "{backend:?}: {events:#?}");
    for event in events {
        assert_eq!(event["actor"]["kind"], "system");
        assert!(lapsed.contains(&event["subject_id"].as_str().unwrap().to_string()));
        assert_eq!(event["before"]["released_at"], Value::Null);
        assert_eq!(event["before"]["kind"], "lease");
    }
    let seats = admin.ok_get(&format!("/v1/licenses/{lid}/seats")).await;
    for seat in seats["items"].as_array().unwrap() {
        let expected = if seat["id"] == leases[2].as_str() {
            Value::Null
        } else {
            json!("expired")
        };
        assert_eq!(seat["release_reason"], expected, "{backend:?}: {seat:#}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swept_leases_are_audited_and_announced_sqlite() {
    swept_leases_are_audited_and_announced(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swept_leases_are_audited_and_announced_postgres() {
    swept_leases_are_audited_and_announced(Backend::Postgres).await;
}

/// A retry due sooner than the next poll is not held to it: with the poll an hour apart,
/// a delivery queued again (Re-send wakes the loop) fails twice and still arrives, its
/// retries 100 and 200 ms after the attempts before them. (It used to wait for the poll:
/// a retry base below a second did not double, and here nothing would arrive.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_sooner_than_the_poll_are_not_held_to_it() {
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        local(settings);
        settings.notify.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let admin = s.workspace("Acme").await;
    let receiver = Receiver::start(2, false).await;
    let webhook = id(&receiver.subscribe(&admin, &["license.updated"]).await);
    let license = admin.license(1).await;
    admin
        .patch(
            &format!("/v1/licenses/{}", id(&license)),
            json!({"notes": "changed"}),
        )
        .await;
    let deliveries = admin
        .ok_get(&format!("/v1/webhooks/{webhook}/deliveries"))
        .await;
    let delivery = deliveries["items"][0]["id"].as_str().unwrap().to_string();
    assert!(receiver.got().is_empty(), "the poll is an hour away");
    admin
        .ok_post(
            &format!("/v1/webhooks/{webhook}/deliveries/{delivery}/resend"),
            json!({}),
            StatusCode::OK,
        )
        .await;
    let got = receiver.wait_for(|got| got.len() >= 3).await;
    assert!(
        got.iter().all(|r| r.id_header == delivery),
        "one message, three attempts"
    );
    assert!(
        crate::harness::eventually(20, || async {
            let page = admin
                .ok_get(&format!("/v1/webhooks/{webhook}/deliveries"))
                .await;
            page["items"][0]["state"] == "delivered"
        })
        .await
    );
    s.stop().await;
}
