//! `leasehold backup` and `leasehold restore` (DESIGN §10): a backup taken while
//! checkouts go on restores into an empty data directory and serves the ledger as it was
//! when the backup began; a restore refuses a store that has a database, a copy without
//! its master key or written with another, and a file that is not a sound store.

use crate::harness::{eventually, id, init_store, pg_admin_url, ServerProcess};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Runs `leasehold ARGS`; answers whether it succeeded, and its stderr.
async fn leasehold(args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(args)
        .env_remove("LEASEHOLD_MASTER_KEY")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_checkout_load_restores_and_serves_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let src_args = vec!["--data-dir".to_string(), text(&src).to_string()];
    let token = init_store(&src_args, "Acme");
    let server = ServerProcess::start(&src_args).await;
    let admin = server.api(&token);
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 100000}))
        .await;
    let (lid, key) = (id(&license), license["key"].as_str().unwrap().to_string());

    // Checkouts go on, four at a time, each acknowledged seat remembered.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (base, key) = (server.base.clone(), key.clone());
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let response = client
                        .post(format!("{base}/v1/client/leases"))
                        .json(&json!({"key": key, "fingerprint": format!("m-{worker}-{n}"), "os_user": "u", "instance": "1"}))
                        .send()
                        .await;
                    if let Ok(response) = response {
                        if response.status() == reqwest::StatusCode::CREATED {
                            let lease: serde_json::Value = response.json().await.unwrap();
                            acknowledged.lock().unwrap().push(id(&lease));
                        }
                    }
                }
            })
        })
        .collect();
    let loaded = eventually(60, || async { acknowledged.lock().unwrap().len() >= 100 }).await;
    assert!(loaded, "the checkout load did not start");
    // Every seat acknowledged before the backup begins must be in it.
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let backup = dir.path().join("leasehold-backup.db");
    let (ok, stderr) = leasehold(&["backup", text(&backup), "--data-dir", text(&src)]).await;
    assert!(ok, "backup failed: {stderr}");
    let (ok, stderr) = leasehold(&["backup", text(&backup), "--data-dir", text(&src)]).await;
    assert!(
        !ok && stderr.contains("exists"),
        "a second backup over the first: {stderr}"
    );
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    drop(server);

    // Without the master key the copy was written with, nothing is restored.
    let (ok, stderr) = leasehold(&["restore", text(&backup), "--data-dir", text(&dst)]).await;
    assert!(!ok && stderr.contains("no master key"), "{stderr}");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(
        dst.join("master.key"),
        leasehold_server::secrets::MasterKey::generate()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
    let (ok, stderr) = leasehold(&["restore", text(&backup), "--data-dir", text(&dst)]).await;
    assert!(!ok && stderr.contains("another master key"), "{stderr}");
    assert!(!dst.join("leasehold.db").exists());
    std::fs::copy(src.join("master.key"), dst.join("master.key")).unwrap();
    let (ok, stderr) = leasehold(&["restore", text(&backup), "--data-dir", text(&dst)]).await;
    assert!(ok, "restore failed: {stderr}");
    let (ok, stderr) = leasehold(&["restore", text(&backup), "--data-dir", text(&dst)]).await;
    assert!(!ok && stderr.contains("already has a database"), "{stderr}");

    // The restored store serves the ledger as of the backup.
    let restored = ServerProcess::start(&["--data-dir".to_string(), text(&dst).to_string()]).await;
    let admin = restored.api(&token);
    let seats = admin
        .all_pages(&format!("/v1/licenses/{lid}/seats?active=true"), 200)
        .await;
    let held: std::collections::HashSet<String> = seats.iter().map(id).collect();
    assert_eq!(
        admin.seats_used(&lid).await,
        seats.len(),
        "seats_used equals the active rows"
    );
    for seat in &before {
        assert!(
            held.contains(seat),
            "seat {seat}, acknowledged before the backup, is missing"
        );
    }
    assert!(held.len() <= acknowledged.lock().unwrap().len());
}

#[tokio::test]
async fn a_restore_refuses_what_is_not_a_sound_store_and_postgres_is_told_to_use_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database, only some bytes of text").unwrap();
    let dst = dir.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(
        dst.join("master.key"),
        leasehold_server::secrets::MasterKey::generate()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
    let (ok, stderr) = leasehold(&["restore", text(&junk), "--data-dir", text(&dst)]).await;
    assert!(!ok, "{stderr}");
    assert!(!dst.join("leasehold.db").exists());
    // No connection is made: the URL only says which kind of store it is.
    let url = pg_admin_url();
    let (ok, stderr) = leasehold(&[
        "backup",
        text(&dir.path().join("out.db")),
        "--database-url",
        &url,
    ])
    .await;
    assert!(!ok && stderr.contains("pg_dump"), "{stderr}");
}
