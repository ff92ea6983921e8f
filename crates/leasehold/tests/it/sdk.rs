//! The SDK and the binary's client commands: `leasehold run`, the lease guard's
//! signal handling, offline license files, and durability under kill -9.

use crate::harness::{
    both_stores, eventually, fresh_pg_database, id, init_store, Api, ServerProcess, TestServer,
};
use reqwest::StatusCode;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

both_stores!(
    leasehold_run_holds_a_seat_while_the_program_runs,
    leasehold_run_checks_in_when_it_is_terminated,
    leasehold_run_stopped_while_taking_its_seat_checks_it_in_and_never_starts_the_program,
    license_files_verify_offline_and_back_the_sdk_when_the_server_is_down,
    the_sdk_waits_in_the_queue_and_leaves_it,
    the_sdk_reports_idleness_and_learns_its_seat_went,
    the_sdk_borrows_and_runs_offline_on_the_borrow_file,
);

fn leasehold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
}

fn run_cmd(base: &str, key: &str, extra: &[&str], program: &[&str]) -> Command {
    let mut command = leasehold();
    command
        .args(["run", "--server", base, "--key", key])
        .args(extra)
        .arg("--")
        .args(program);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// Whether a line of `stderr` contains `text` within 20 s.
async fn says(stderr: std::process::ChildStderr, text: &'static str) -> bool {
    let told = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(text))
    });
    tokio::time::timeout(Duration::from_secs(20), told)
        .await
        .is_ok_and(|told| told.unwrap_or(false))
}

async fn seats_used(admin: &Api, license_id: &str) -> i64 {
    admin.ok_get(&format!("/v1/licenses/{license_id}")).await["seats_used"]
        .as_i64()
        .unwrap()
}

async fn leasehold_run_holds_a_seat_while_the_program_runs(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap().to_string(), id(&license));

    let status = run_cmd(&s.base, &key, &[], &["sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "the program's exit code passes through"
    );
    assert_eq!(seats_used(&admin, &lid).await, 0, "released when it exits");

    let mut holder = run_cmd(&s.base, &key, &[], &["sleep", "3"])
        .spawn()
        .unwrap();
    assert!(eventually(10, || async { seats_used(&admin, &lid).await == 1 }).await);
    // Another machine (another fingerprint salt) is refused; the same one would share the seat.
    let denied = run_cmd(&s.base, &key, &["--app-salt", "other"], &["true"])
        .output()
        .unwrap();
    assert_eq!(
        denied.status.code(),
        Some(75),
        "all seats in use has its own exit code"
    );
    let message = String::from_utf8_lossy(&denied.stderr);
    assert!(
        message.contains("all 1 seats are in use; retry in"),
        "{message}"
    );
    // --wait gets the seat when the holder exits.
    let waited = run_cmd(
        &s.base,
        &key,
        &["--app-salt", "other", "--wait", "20"],
        &["true"],
    )
    .output()
    .unwrap();
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let held = tokio::task::spawn_blocking(move || holder.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(held.success());
    assert_eq!(seats_used(&admin, &lid).await, 0);

    // On a dedicated license `run` uses (and keeps) this machine's activation.
    let dedicated = admin.license(1).await;
    let status = run_cmd(&s.base, dedicated["key"].as_str().unwrap(), &[], &["true"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(seats_used(&admin, &id(&dedicated)).await, 1);
    let unknown = run_cmd(&s.base, "NO-SUCH-KEY", &[], &["true"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(77));
}

async fn leasehold_run_checks_in_when_it_is_terminated(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap().to_string(), id(&license));
    let mut run = run_cmd(&s.base, &key, &[], &["sleep", "60"])
        .spawn()
        .unwrap();
    assert!(eventually(10, || async { seats_used(&admin, &lid).await == 1 }).await);
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || run.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "the program was terminated: 128 + SIGTERM"
    );
    assert_eq!(
        seats_used(&admin, &lid).await,
        0,
        "the seat was checked in on the way out"
    );
    let seats = admin.ok_get(&format!("/v1/licenses/{lid}/seats")).await;
    assert_eq!(seats["items"][0]["release_reason"], "checkin");

    // Terminated while it waits in the queue (another holder has the only one): it stops
    // once its pending request is answered (a few seconds at most) with 128 + SIGTERM,
    // holding nothing and no place in the queue.
    s.anonymous()
        .ok_post(
            "/v1/client/leases",
            json!({"key": key, "fingerprint": "other", "os_user": "u", "instance": "1"}),
            StatusCode::CREATED,
        )
        .await;
    let mut waiting = run_cmd(&s.base, &key, &["--wait", "60"], &["sleep", "60"])
        .spawn()
        .unwrap();
    let stderr = waiting.stderr.take().unwrap();
    assert!(
        says(stderr, "waiting up to").await,
        "run said it waits for a seat"
    );
    Command::new("kill")
        .args(["-TERM", &waiting.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || waiting.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(143), "stopped by SIGTERM while waiting");
    assert_eq!(
        seats_used(&admin, &lid).await,
        1,
        "only the other holder's seat"
    );
    let queue = admin.ok_get(&format!("/v1/licenses/{lid}/queue")).await;
    assert_eq!(queue["items"], json!([]), "it left the queue");
}

/// Terminated after it asked for a seat but before the answer came: `run` waits for the
/// answer, checks the seat it was given back in, exits 143, and never starts the program.
/// A proxy between `run` and the server holds the checkout's answer until the signal is
/// sent.
async fn leasehold_run_stopped_while_taking_its_seat_checks_it_in_and_never_starts_the_program(
    s: &TestServer,
) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap().to_string(), id(&license));
    let proxy = HoldingProxy::start(&s.base, "POST /v1/client/leases ").await;
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("started");
    let program = format!("touch {}; sleep 60", started.display());
    let mut run = run_cmd(&proxy.base, &key, &[], &["sh", "-c", &program])
        .spawn()
        .unwrap();
    let stderr = run.stderr.take().unwrap();
    // The server counted the seat; its answer is held on the way back.
    assert!(eventually(10, || async { seats_used(&admin, &lid).await == 1 }).await);
    assert!(
        eventually(10, || async { proxy.holding() }).await,
        "the checkout's answer is held"
    );
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    // Released only once run has taken the signal in.
    assert!(
        says(stderr, "stopping once the seat request is answered").await,
        "run said it stops once answered"
    );
    proxy.release();
    let status = tokio::task::spawn_blocking(move || run.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(143), "stopped by SIGTERM: 128 + 15");
    assert!(!started.exists(), "the program was never started");
    assert_eq!(
        seats_used(&admin, &lid).await,
        0,
        "the seat it was given was checked in"
    );
    let seats = admin.ok_get(&format!("/v1/licenses/{lid}/seats")).await;
    assert_eq!(seats["items"][0]["release_reason"], "checkin");
}

/// A TCP proxy to a server that forwards everything, except that once a request starting
/// with `held` passed through, the server's next bytes on that connection wait for
/// [`HoldingProxy::release`].
struct HoldingProxy {
    base: String,
    holding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    released: std::sync::Arc<tokio::sync::Notify>,
}

impl HoldingProxy {
    async fn start(server: &str, held: &'static str) -> HoldingProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = server.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let holding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let released = std::sync::Arc::new(tokio::sync::Notify::new());
        let (hold, release) = (holding.clone(), released.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = server.into_split();
                let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let seen = asked.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_in.read(&mut buf).await {
                        if buf[..n].starts_with(held.as_bytes()) {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if server_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let (hold, release) = (hold.clone(), release.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = server_in.read(&mut buf).await {
                        if asked.swap(false, Ordering::SeqCst) {
                            hold.store(true, Ordering::SeqCst);
                            release.notified().await;
                            hold.store(false, Ordering::SeqCst);
                        }
                        if client_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        HoldingProxy {
            base,
            holding,
            released,
        }
    }

    fn holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn release(&self) {
        self.released.notify_one();
    }
}

/// The child half of `sdk_guard_checks_in_when_its_process_gets_sigterm`: holds a lease
/// through the SDK's guard until a signal ends the process.
#[tokio::test]
#[ignore = "run by sdk_guard_checks_in_when_its_process_gets_sigterm as its child process"]
async fn sdk_guard_child() {
    let (Ok(base), Ok(key)) = (
        std::env::var("LH_CHILD_BASE"),
        std::env::var("LH_CHILD_KEY"),
    ) else {
        return;
    };
    let client = leasehold_client::Client::new(&base, &key).unwrap();
    let holder = leasehold_client::Holder {
        fingerprint: "child-machine".into(),
        os_user: "child".into(),
        identifier: Some("CHILD".into()),
    };
    let _guard = client.lease(&holder).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_guard_checks_in_when_its_process_gets_sigterm() {
    let s = TestServer::start(crate::harness::Backend::Sqlite).await;
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let lid = id(&license);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sdk::sdk_guard_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("LH_CHILD_BASE", &s.base)
        .env("LH_CHILD_KEY", license["key"].as_str().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(20, || async { seats_used(&admin, &lid).await == 1 }).await,
        "the child took a seat"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // Wait off the runtime: the in-process server must answer the child's checkin.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        seats_used(&admin, &lid).await,
        0,
        "the guard checked in before the process ended"
    );
    s.stop().await;
}

async fn license_files_verify_offline_and_back_the_sdk_when_the_server_is_down(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license_with(json!({"seats_total": 2})).await;
    let key = license["key"].as_str().unwrap();
    let public_key = admin.ok_get("/v1/public-key").await["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let client = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(&public_key)
        .unwrap();
    let holder = leasehold_client::Holder {
        fingerprint: "m1".into(),
        os_user: "ann".into(),
        identifier: None,
    };
    let not_yet = client.license_file("m1").await.unwrap_err();
    assert_eq!(not_yet.code(), Some("NOT_ACTIVATED"));
    client.activate(&holder).await.unwrap();
    let file = client.license_file("m1").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.json");
    std::fs::write(&path, &file).unwrap();

    let verify = |args: &[&str], stdin: Option<&str>| {
        let mut command = leasehold();
        command
            .args(["verify-license-file", "--public-key", &public_key])
            .args(args);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            std::io::Write::write_all(&mut input, text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait().unwrap().code()
    };
    let path_str = path.display().to_string();
    assert_eq!(verify(&[&path_str], None), Some(0));
    assert_eq!(verify(&["--fingerprint", "m1", "-"], Some(&file)), Some(0));
    assert_eq!(
        verify(&["--fingerprint", "m2", &path_str], None),
        Some(3),
        "another machine"
    );
    let mut doc: serde_json::Value = serde_json::from_str(&file).unwrap();
    let signature = doc["signature"].as_str().unwrap().to_string();
    let flipped = if signature.starts_with('A') {
        signature.replacen('A', "B", 1)
    } else {
        format!("A{}", &signature[1..])
    };
    doc["signature"] = json!(flipped);
    assert_eq!(
        verify(&["-"], Some(&doc.to_string())),
        Some(1),
        "tampered signature"
    );
    assert_eq!(verify(&["-"], Some("not a license file")), Some(4));

    // The server goes away: the SDK falls back to the file, for this machine only.
    let offline = leasehold_client::Client::new("http://127.0.0.1:9", key)
        .unwrap()
        .with_public_key(&public_key)
        .unwrap()
        .with_attempts(1);
    match offline
        .validate_or_offline(&holder, Some(&file))
        .await
        .unwrap()
    {
        leasehold_client::Validity::Offline(payload) => {
            assert_eq!(payload.license.id, id(&license))
        }
        other => panic!("expected an offline answer, got {other:?}"),
    }
    let elsewhere = leasehold_client::Holder {
        fingerprint: "m2".into(),
        ..holder.clone()
    };
    assert!(offline
        .validate_or_offline(&elsewhere, Some(&file))
        .await
        .is_err());

    // A file's window follows the policy.
    let short = admin
        .license_with(json!({"seat_model": "concurrent", "policy": {"license_file_ttl_s": 1}}))
        .await;
    let short_client =
        leasehold_client::Client::new(&s.base, short["key"].as_str().unwrap()).unwrap();
    let refused = short_client.license_file("m1").await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some("NOT_ACTIVATED"),
        "a floating file needs a lease first"
    );
    let _lease = short_client.lease_with(&holder, false).await.unwrap();
    let short_file = short_client.license_file("m1").await.unwrap();
    assert_eq!(verify(&["-"], Some(&short_file)), Some(0));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verify(&["-"], Some(&short_file)), Some(2), "expired");
}

/// Checkouts acknowledged with 201 survive kill -9 of the server.
async fn no_acknowledged_seat_is_lost_on_kill_9(store_args: Vec<String>) {
    no_acknowledged_seat_is_lost_on_kill_9_after(store_args, 200, None).await;
}

/// Kills the server once `before_kill` seats are acknowledged. With `wal`, the SQLite WAL
/// file, it must also have started over (`--sqlite-wal-limit-mib`) by then.
async fn no_acknowledged_seat_is_lost_on_kill_9_after(
    store_args: Vec<String>,
    before_kill: usize,
    wal: Option<std::path::PathBuf>,
) {
    let token = init_store(&store_args, "Acme");
    let mut server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 100000}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();
    let lid = id(&license);
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let client = reqwest::Client::new();
        let (base, key, acknowledged) = (server.base.clone(), key.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let body = json!({"key": key, "fingerprint": format!("w{w}-m{i}"), "os_user": "u", "instance": "i"});
                match client.post(format!("{base}/v1/client/leases")).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let lease: serde_json::Value = match r.json().await {
                            Ok(lease) => lease,
                            Err(_) => return,
                        };
                        acknowledged.lock().unwrap().push(lease["id"].as_str().unwrap().to_string());
                    }
                    _ => return,
                }
            }
        }));
    }
    let first_sequence = wal
        .as_deref()
        .map(|wal| crate::wal::wal_state(wal).unwrap().0);
    assert!(
        eventually(60, || async {
            acknowledged.lock().unwrap().len() >= before_kill
        })
        .await
    );
    if let (Some(wal), Some(first)) = (wal.as_deref(), first_sequence) {
        assert!(
            eventually(20, || async {
                crate::wal::wal_state(wal).unwrap().0 != first
            })
            .await,
            "the WAL started over before the kill"
        );
    }
    server.kill_9();
    for worker in workers {
        let _ = worker.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let server = ServerProcess::start(&store_args).await;
    let admin = server.api(&token);
    let active: std::collections::HashSet<String> = admin
        .all_pages(&format!("/v1/licenses/{lid}/seats?active=true"), 200)
        .await
        .iter()
        .map(id)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|a| !active.contains(*a))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged seats lost",
        lost.len(),
        acknowledged.len()
    );
    let used = admin.ok_get(&format!("/v1/licenses/{lid}")).await["seats_used"]
        .as_i64()
        .unwrap();
    assert_eq!(
        used as usize,
        active.len(),
        "the counter agrees with the ledger after the crash"
    );
}

#[tokio::test]
async fn no_acknowledged_seat_is_lost_on_kill_9_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    no_acknowledged_seat_is_lost_on_kill_9(vec![
        "--data-dir".into(),
        dir.path().display().to_string(),
    ])
    .await;
}

/// The same across SQLite WAL start-overs: a 1 MiB limit makes the WAL start over every
/// few hundred checkouts while they go on.
#[tokio::test]
async fn no_acknowledged_seat_is_lost_on_kill_9_across_wal_start_overs() {
    let dir = tempfile::tempdir().unwrap();
    no_acknowledged_seat_is_lost_on_kill_9_after(
        vec![
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--sqlite-wal-limit-mib".into(),
            "1".into(),
        ],
        2_000,
        Some(dir.path().join("leasehold.db-wal")),
    )
    .await;
}

#[tokio::test]
async fn no_acknowledged_seat_is_lost_on_kill_9_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (url, name) = fresh_pg_database().await;
    no_acknowledged_seat_is_lost_on_kill_9(vec![
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--database-url".into(),
        url,
    ])
    .await;
    crate::harness::drop_pg_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_sdk_keeps_a_lease_alive_and_releases_it() {
    let s = TestServer::start(crate::harness::Backend::Sqlite).await;
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"lease_ttl_s": 3}}),
        )
        .await;
    let lid = id(&license);
    let (base, key) = (s.base.clone(), license["key"].as_str().unwrap().to_string());
    // The blocking client owns a runtime: make, use and drop it off the async runtime.
    let (client, guard) = tokio::task::spawn_blocking(move || {
        let client = leasehold_client::blocking::Client::new(&base, &key).unwrap();
        assert!(client.validate(None, None).unwrap().valid);
        let holder = leasehold_client::Holder {
            fingerprint: "m1".into(),
            os_user: "ann".into(),
            identifier: None,
        };
        let guard = client.lease(&holder).unwrap();
        assert_eq!(
            guard.lease().unwrap().heartbeat_interval_s,
            1,
            "a third of the 3 s TTL"
        );
        (client, guard)
    })
    .await
    .unwrap();
    // Twice the TTL later the background heartbeats still hold the seat.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(seats_used(&admin, &lid).await, 1);
    let released = tokio::task::spawn_blocking(move || {
        let released = guard.release().unwrap();
        drop(client);
        released
    })
    .await
    .unwrap();
    assert!(released);
    assert_eq!(seats_used(&admin, &lid).await, 0);
    s.stop().await;
}

/// The SDK waits in the queue (`lease_waiting`), verified answers included, and gets the
/// seat once its holder checks in; a waiter that gives up leaves its place.
async fn the_sdk_waits_in_the_queue_and_leaves_it(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let public_key = admin.ok_get("/v1/public-key").await["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let client = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(&public_key)
        .unwrap();
    let holder = |machine: &str| leasehold_client::Holder {
        fingerprint: machine.into(),
        os_user: "ann".into(),
        identifier: None,
    };
    let first = client.lease_with(&holder("m1"), false).await.unwrap();
    // No time to wait: told its place, which it keeps until it leaves.
    let refused = client
        .lease_queued(&holder("m2"), 0, false)
        .await
        .err()
        .expect("the seat is taken");
    assert_eq!(refused.queue_position(), Some(1), "{refused}");
    assert!(client.leave_queue(&holder("m2")).await.unwrap());
    assert!(!client.leave_queue(&holder("m2")).await.unwrap());

    let waiting = {
        let (client, holder) = (client.clone(), holder("m3"));
        tokio::spawn(async move { client.lease_waiting(&holder, Duration::from_secs(60)).await })
    };
    assert!(
        eventually(20, || async {
            let queue = admin.ok_get(&format!("/v1/licenses/{lid}/queue")).await;
            queue["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        })
        .await,
        "m3 waits in the queue"
    );
    first.release().await.unwrap();
    let second = waiting.await.unwrap().expect("m3 gets the seat");
    assert_eq!(seats_used(&admin, &lid).await, 1);
    second.release().await.unwrap();
}

async fn the_sdk_reports_idleness_and_learns_its_seat_went(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1,
            "policy": {"lease_ttl_s": 3, "idle_timeout_s": 1}}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let client = leasehold_client::Client::new(&s.base, key).unwrap();
    let holder = |machine: &str| leasehold_client::Holder {
        fingerprint: machine.into(),
        os_user: "ann".into(),
        identifier: None,
    };
    let idle = client.lease_with(&holder("m1"), false).await.unwrap();
    // In use: another machine is refused, however long it tries.
    let refused = client.lease_with(&holder("m2"), false).await.err();
    assert_eq!(
        refused.and_then(|e| e.code().map(String::from)).as_deref(),
        Some("NO_SEATS")
    );
    // The user walks away: once a heartbeat has said so for the timeout, m2 gets the seat.
    idle.set_idle_since(Some(std::time::Instant::now()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let taken = loop {
        match client.lease_with(&holder("m2"), false).await {
            Ok(guard) => break guard,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "the idle seat never went to m2: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        eventually(20, || async { idle.is_lost() }).await,
        "the idle app learns on its next heartbeat"
    );
    assert_eq!(idle.lost_reason().as_deref(), Some("idle"));
    assert_eq!(seats_used(&admin, &lid).await, 1);
    taken.release().await.unwrap();
}

async fn the_sdk_borrows_and_runs_offline_on_the_borrow_file(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1,
            "policy": {"max_borrow_days": 3}}))
        .await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let public_key = admin.ok_get("/v1/public-key").await["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let client = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(&public_key)
        .unwrap();
    let holder = leasehold_client::Holder {
        fingerprint: "laptop".into(),
        os_user: "ann".into(),
        identifier: Some("ANN-LAPTOP".into()),
    };
    let borrowed = client.borrow(&holder, 3).await.unwrap();
    assert_eq!(seats_used(&admin, &lid).await, 1);
    let file = serde_json::to_string(&borrowed.license_file).unwrap();
    // Away from the network (a server nobody listens on), the borrow file vouches for it.
    let offline = leasehold_client::Client::new("http://127.0.0.1:9", key)
        .unwrap()
        .with_public_key(&public_key)
        .unwrap()
        .with_attempts(1);
    match offline
        .validate_or_offline(&holder, Some(&file))
        .await
        .unwrap()
    {
        leasehold_client::Validity::Offline(payload) => {
            assert_eq!(payload.kind.as_deref(), Some("borrow"));
            assert_eq!(payload.valid_until, borrowed.borrowed_until);
        }
        other => panic!("expected the offline borrow: {other:?}"),
    }
    let elsewhere = leasehold_client::Holder {
        fingerprint: "desktop".into(),
        ..holder.clone()
    };
    assert!(
        offline
            .validate_or_offline(&elsewhere, Some(&file))
            .await
            .is_err(),
        "the file is for its own machine only"
    );
    client
        .return_borrow(&borrowed.id, &holder.fingerprint)
        .await
        .unwrap();
    assert_eq!(seats_used(&admin, &lid).await, 0);
}
