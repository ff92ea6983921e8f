//! The `leasehold` binary itself: `init` and `serve`, on both stores.

use crate::harness::{drop_pg_database, fresh_pg_database};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn leasehold() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    command
        .env_remove("LEASEHOLD_MASTER_KEY")
        .env("NO_COLOR", "1");
    command
}

/// Runs `leasehold init` with `password` on stdin; answers (success, stdout, stderr).
fn init(
    store: &[String],
    workspace: &str,
    password: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut child = leasehold()
        .args([
            "init",
            "--workspace",
            workspace,
            "--email",
            "owner@example.com",
        ])
        .args(store)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn init_then_serve(store: Vec<String>) {
    let (ok, out, err) = init(&store, "Acme", "correct horse battery", &[]);
    assert!(ok, "init failed: {err}");
    let acme = out.lines().last().unwrap().to_string();
    assert!(acme.starts_with("lh_"), "the token is the last line: {out}");
    assert!(!err.contains(&acme), "the token is not logged");

    let (ok, out, err) = init(&store, "Globex", "another good password", &[]);
    assert!(ok, "a second workspace on the same store: {err}");
    let globex = out.lines().last().unwrap().to_string();
    assert_ne!(acme, globex);

    let (ok, _, err) = init(&store, "Acme", "correct horse battery", &[]);
    assert!(!ok, "the same workspace twice must fail");
    assert!(err.contains("exists"), "{err}");
    let (ok, _, err) = init(&store, "Short", "pw", &[]);
    assert!(!ok && err.contains("at least 8"), "{err}");

    let port = free_port();
    let mut server = leasehold()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            healthy = r.status().is_success();
            if healthy {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(healthy, "serve did not come up");
    assert!(client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    for (token, name) in [(&acme, "Acme"), (&globex, "Globex")] {
        let me: serde_json::Value = client
            .get(format!("{base}/v1/workspace"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["name"], name);
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = server.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let exited = exited.unwrap_or_else(|| {
        let _ = server.kill();
        panic!("serve did not stop on SIGTERM")
    });
    assert!(exited.success(), "graceful shutdown exits 0: {exited}");
}

#[tokio::test]
async fn init_and_serve_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    init_then_serve(vec!["--data-dir".into(), dir.path().display().to_string()]).await;
    let key_file = dir.path().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the master key file is owner-only");
    }
}

#[tokio::test]
async fn init_and_serve_on_postgres() {
    let (url, name) = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    init_then_serve(vec![
        "--database-url".into(),
        url,
        "--data-dir".into(),
        dir.path().display().to_string(),
    ])
    .await;
    drop_pg_database(&name).await;
}

#[tokio::test]
async fn another_master_key_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    let (ok, _, err) = init(&store, "Acme", "correct horse battery", &[]);
    assert!(ok, "{err}");
    let other = ("LEASEHOLD_MASTER_KEY", "ab".repeat(32));
    let (ok, _, err) = init(
        &store,
        "Globex",
        "correct horse battery",
        &[(other.0, &other.1)],
    );
    assert!(!ok, "a different master key must be refused");
    assert!(err.contains("master key differs"), "{err}");
    let mut forced = store.clone();
    forced.push("--force".into());
    let (ok, _, err) = init(
        &forced,
        "Globex",
        "correct horse battery",
        &[(other.0, &other.1)],
    );
    assert!(ok, "--force starts anyway: {err}");
}
