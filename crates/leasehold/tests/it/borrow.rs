//! Borrowed floating seats (DESIGN §7): lent for days of offline use within the policy,
//! renewed, turned from a lease, returned early, ended by time; the signed borrow file
//! verifies offline for its own machine only; an admin reclaims one only with force; and
//! the SDK and the CLI (`leasehold borrow`, `run`, `return`) use them.

use crate::client::client;
use crate::concurrency::execute;
use crate::harness::{
    both_stores, eventually, id, init_store, process_stores, Api, ServerProcess, TestServer,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

both_stores!(
    borrows_are_lent_within_the_policy_renewed_and_returned,
    a_lease_becomes_a_borrow_and_an_admin_reclaims_one_only_with_force,
    a_borrow_ends_by_itself_at_its_time,
    borrows_racing_checkouts_keep_the_invariant,
    the_cli_borrows_runs_offline_on_the_borrow_and_returns_it,
);

async fn floating(admin: &Api, seats: i64, policy: Value) -> (String, String) {
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": seats, "policy": policy}))
        .await;
    (license["key"].as_str().unwrap().to_string(), id(&license))
}

fn asks(key: &str, machine: &str, days: i64) -> Value {
    json!({"key": key, "fingerprint": machine, "os_user": "u", "days": days})
}

async fn borrow(c: &Api, key: &str, machine: &str, days: i64) -> (StatusCode, Value) {
    c.post("/v1/client/borrows", asks(key, machine, days)).await
}

async fn give_back(c: &Api, key: &str, borrow_id: &str, machine: &str) -> (StatusCode, Value) {
    c.call(
        Method::DELETE,
        &format!("/v1/client/borrows/{borrow_id}?fingerprint={machine}&key={key}"),
        None,
    )
    .await
}

fn public_key_of(v: &Value) -> ed25519_dalek::VerifyingKey {
    leasehold_client::parse_public_key(v["public_key"].as_str().unwrap()).unwrap()
}

async fn borrows_are_lent_within_the_policy_renewed_and_returned(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 3, json!({})).await;
    let c = client(s);
    // Off by default.
    let (status, body) = borrow(&c, &key, "a", 1).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "BORROW_NOT_ALLOWED");
    assert_eq!(
        body["error"]["message"],
        "borrowing is off for this license"
    );
    let (status, body) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"policy": {"max_borrow_days": 5, "max_borrowed_seats": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for days in [0, 6] {
        let (status, body) = borrow(&c, &key, "a", days).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["details"]["field"], "days", "{body}");
    }
    // Lent for 2 days: a seat counted, and a file that verifies offline for this machine.
    let before = chrono::Utc::now();
    let (status, lent) = borrow(&c, &key, "a", 2).await;
    assert_eq!(status, StatusCode::CREATED, "{lent}");
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(lent["borrowed_until"].clone()).unwrap();
    let two_days = chrono::Duration::days(2);
    assert!(
        until >= before + two_days - chrono::Duration::seconds(1),
        "{lent}"
    );
    assert!(until <= chrono::Utc::now() + two_days, "{lent}");
    assert_eq!(admin.seats_used(&lid).await, 1);
    let public_key = public_key_of(&admin.ok_get("/v1/public-key").await);
    let file = lent["license_file"].to_string();
    let payload =
        leasehold_client::verify_license_file(&file, &public_key, Some("a"), chrono::Utc::now())
            .expect("the borrow file verifies for its machine");
    assert_eq!(payload.kind.as_deref(), Some("borrow"));
    assert_eq!(payload.os_user.as_deref(), Some("u"));
    assert_eq!(payload.borrow_id.as_deref(), Some(id(&lent).as_str()));
    assert_eq!(payload.valid_until, until);
    assert_eq!(
        leasehold_client::verify_license_file(&file, &public_key, Some("b"), chrono::Utc::now()),
        Err(leasehold_client::LicenseFileError::WrongMachine)
    );
    // The second borrow passes max_borrowed_seats.
    let (status, body) = borrow(&c, &key, "b", 1).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "BORROW_LIMIT");
    // Asked again before the end: renewed from now, same seat.
    let (status, renewed) = borrow(&c, &key, "a", 3).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(id(&renewed), id(&lent));
    let renewed_until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(renewed["borrowed_until"].clone()).unwrap();
    assert!(renewed_until > until, "{renewed}");
    assert_eq!(admin.seats_used(&lid).await, 1);
    // Shown with its end date among the live seats.
    let seats = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true"))
        .await;
    assert_eq!(seats["items"][0]["kind"], "borrow", "{seats}");
    assert!(seats["items"][0]["expires_at"].is_string(), "{seats}");
    // Returned early: by its own machine only.
    let (status, _) = give_back(&c, &key, &id(&lent), "b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = give_back(&c, &key, &id(&lent), "a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(admin.seats_used(&lid).await, 0);
    let returned = admin.events(&lid, "seat.returned").await;
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(returned[0]["after"]["release_reason"], "returned");
    assert_eq!(admin.events(&lid, "seat.borrowed").await.len(), 2);
    // The seat is free for someone else.
    let (status, body) = borrow(&c, &key, "b", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn a_lease_becomes_a_borrow_and_an_admin_reclaims_one_only_with_force(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"max_borrow_days": 7})).await;
    let c = client(s);
    let (status, lease) = c
        .post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "a", "os_user": "u", "instance": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    // The license is full: the holder's own lease becomes the borrow.
    let (status, lent) = borrow(&c, &key, "a", 7).await;
    assert_eq!(status, StatusCode::CREATED, "{lent}");
    assert_eq!(id(&lent), id(&lease), "the lease itself is lent");
    assert_eq!(admin.seats_used(&lid).await, 1);
    // The app still running on it is told the borrow's end, not refused.
    let (status, beat) = c
        .post(
            &format!("/v1/client/leases/{}/heartbeat", id(&lease)),
            json!({"key": key, "instance": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    assert_eq!(beat["expires_at"], lent["borrowed_until"]);
    // The app started again on the borrowing machine runs on the borrow: no second seat,
    // and its exit leaves the borrow in place.
    let (status, again) = c
        .post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "a", "os_user": "u", "instance": "2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(id(&again), id(&lent));
    assert_eq!(again["expires_at"], lent["borrowed_until"]);
    let (status, exited) = c
        .call(
            Method::DELETE,
            &format!("/v1/client/leases/{}/instances/2", id(&lent)),
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{exited}");
    assert_eq!(exited["released"], false, "{exited}");
    assert_eq!(admin.seats_used(&lid).await, 1);
    // Nobody else gets a seat, nor does a borrow.
    let (status, body) = borrow(&c, &key, "b", 1).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("NO_SEATS"))
    );
    // An admin's reclaim is refused without force; with it, audited.
    let path = format!("/v1/seats/{}/reclaim", id(&lent));
    let (status, body) = admin.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("force=true"),
        "{body}"
    );
    assert_eq!(admin.seats_used(&lid).await, 1);
    let (status, body) = admin.post(&format!("{path}?force=true"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(admin.seats_used(&lid).await, 0);
    let reclaimed = admin.events(&lid, "seat.reclaimed").await;
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed[0]["before"]["kind"], "borrow");
    assert_eq!(
        reclaimed[0]["actor"]["kind"], "token",
        "the admin's, audited"
    );
    // The app still running on the borrow learns it is over.
    let (status, beat) = c
        .post(
            &format!("/v1/client/leases/{}/heartbeat", id(&lease)),
            json!({"key": key, "instance": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{beat}");
    assert_eq!(
        beat["error"]["details"]["reason"], "admin_release",
        "{beat}"
    );
}

async fn a_borrow_ends_by_itself_at_its_time(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"max_borrow_days": 1})).await;
    let c = client(s);
    let (status, lent) = borrow(&c, &key, "a", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{lent}");
    // A day passes for this borrow (its end moved to a moment ago, as a test clock would).
    let ago = chrono::Utc::now().timestamp_millis() - 1000;
    execute(
        s,
        "UPDATE seats SET expires_at = $1, sweep_at = $2 WHERE id = $3",
        ago,
        ago,
        &id(&lent),
    )
    .await;
    let ended = eventually(30, || async { admin.seats_used(&lid).await == 0 }).await;
    assert!(ended, "the sweeper did not end the borrow");
    let released = admin.events(&lid, "seat.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["after"]["release_reason"], "borrow_ended");
    assert_eq!(released[0]["actor"]["kind"], "system");
    let (status, body) = borrow(&c, &key, "b", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Borrowers (a borrowed-seat limit of 2) and lease takers racing for 4 seats: every
/// grant is counted once, and the counter equals the active ledger rows.
async fn borrows_racing_checkouts_keep_the_invariant(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let policy = json!({"max_borrow_days": 3, "max_borrowed_seats": 2});
    let (key, lid) = floating(&admin, 4, policy).await;
    let tasks: Vec<_> = (0..40)
        .map(|worker| {
            let (c, key) = (client(s), key.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let machine = format!("m{worker}");
                for round in 0..6 {
                    if worker % 2 == 0 {
                        let (status, body) = borrow(&c, &key, &machine, 1).await;
                        match status {
                            StatusCode::CREATED | StatusCode::OK if round % 2 == 1 => {
                                let (status, back) = give_back(&c, &key, &id(&body), &machine).await;
                                if status != StatusCode::OK {
                                    failures.push(format!("return {status}: {back}"));
                                }
                            }
                            StatusCode::CREATED | StatusCode::OK => {}
                            StatusCode::CONFLICT
                                if matches!(
                                    body["error"]["code"].as_str(),
                                    Some("NO_SEATS" | "BORROW_LIMIT")
                                ) => {}
                            other => failures.push(format!("borrow {other}: {body}")),
                        }
                        continue;
                    }
                    let body = json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "1"});
                    let (status, lease) = c.post("/v1/client/leases", body).await;
                    match status {
                        StatusCode::CREATED | StatusCode::OK => {
                            let path = format!("/v1/client/leases/{}/instances/1", id(&lease));
                            let (status, body) =
                                c.call(Method::DELETE, &path, Some(json!({"key": key}))).await;
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
    let active = active["items"].as_array().unwrap();
    assert!(active.len() <= 4, "{active:?}");
    assert!(
        active.iter().filter(|s| s["kind"] == "borrow").count() <= 2,
        "{active:?}"
    );
    assert!(
        active.iter().all(|s| s["kind"] == "borrow"),
        "leases were checked in: {active:?}"
    );
    assert_eq!(admin.seats_used(&lid).await, active.len() as i64);
}

async fn the_cli_borrows_runs_offline_on_the_borrow_and_returns_it(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let (key, lid) = floating(&admin, 1, json!({"max_borrow_days": 2})).await;
    let public_key = admin.ok_get("/v1/public-key").await["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("borrow.json");
    let file_arg = file.display().to_string();
    let cli = |server: &str, args: &[&str]| {
        let (subcommand, rest) = args.split_first().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_leasehold"));
        command
            .arg(subcommand)
            .args([
                "--server",
                server,
                "--key",
                &key,
                "--public-key",
                &public_key,
            ])
            .args(["--borrow-file", &file_arg])
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let out = cli(&s.base, &["borrow", "--days", "2"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(admin.seats_used(&lid).await, 1);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("leasehold-license-file/v1"), "{text}");
    // `verify-license-file` accepts it.
    let status = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args([
            "verify-license-file",
            "--public-key",
            &public_key,
            &file_arg,
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // `run` uses the borrow without the server: a server nobody listens on.
    let offline = "http://127.0.0.1:9";
    let out = cli(offline, &["run", "--", "true"]).output().unwrap();
    let told = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{told}");
    assert!(told.contains("using the seat borrowed until"), "{told}");
    // Returned: the seat is free and the file gone.
    let out = cli(&s.base, &["return"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(admin.seats_used(&lid).await, 0);
    assert!(!file.exists());
}

/// A server killed with -9 right after borrows were acknowledged keeps every one of them,
/// and the seats they count.
async fn acknowledged_borrows_survive_kill_9(store_args: Vec<String>) {
    let token = init_store(&store_args, "Acme");
    let mut server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let (key, lid) = floating(&admin, 5, json!({"max_borrow_days": 3})).await;
    let c = server.api("");
    let mut lent = Vec::new();
    for machine in ["a", "b", "c"] {
        let (status, body) = borrow(&c, &key, machine, 3).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        lent.push(id(&body));
    }
    server.kill_9();
    let server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let active = admin
        .ok_get(&format!("/v1/licenses/{lid}/seats?active=true"))
        .await;
    let mut kept: Vec<String> = active["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "borrow")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    lent.sort();
    assert_eq!(kept, lent, "every acknowledged borrow survived");
    assert_eq!(admin.seats_used(&lid).await, 3);
}

process_stores!(acknowledged_borrows_survive_kill_9);
