//! `leasehold-bench`: with `--url` it drives a server it did not start, through its API
//! only, reads the ledger back through the API and cleans up after itself; its Redis
//! baseline is a service of its own, in its own process.

use crate::harness::{both_stores, TestServer};
use serde_json::Value;
use std::process::Command;

both_stores!(bench_drives_a_running_server_through_its_api);

/// Runs `leasehold-bench` with `args` off the runtime's threads (the server under test
/// answers on them); answers (success, stdout, stderr).
async fn bench(args: Vec<String>) -> (bool, String, String) {
    bench_with(args, &[]).await
}

/// The `leasehold-bench` binary, built next to `leasehold` (`scripts/test` builds it
/// before the tests run).
fn bench_exe() -> std::path::PathBuf {
    let exe =
        std::path::Path::new(env!("CARGO_BIN_EXE_leasehold")).with_file_name("leasehold-bench");
    assert!(
        exe.is_file(),
        "{} is missing: cargo build -p leasehold-bench",
        exe.display()
    );
    exe
}

/// The environment variable that marks the processes a test's bench runs start.
const MARK: &str = "LHTEST_BENCH_MARK";

/// `bench`, with more environment variables.
async fn bench_with(args: Vec<String>, vars: &[(&str, &str)]) -> (bool, String, String) {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bench_exe())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("LEASEHOLD_BENCH_TOKEN")
            .envs(vars)
            .output()
            .expect("the binary runs")
    })
    .await
    .expect("the bench task");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The summary: the last line the bench prints.
fn summary(stdout: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A run of seconds on two licenses.
const SHORT_RUN: [&str; 6] = ["--duration", "1", "--connections", "4", "--licenses", "2"];

fn args(base: &str, token: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--url", base, "--token", token]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(SHORT_RUN.iter().map(|s| s.to_string()));
    args.push("--no-baseline".to_string());
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

async fn bench_drives_a_running_server_through_its_api(s: &TestServer) {
    let api = s.workspace("Acme").await;
    let token = api.token.clone().expect("the owner's token");

    // Checkout: 2 licenses of 3 seats (5 machines each), so some takes are refused.
    let (ok, out, err) = bench(args(
        &s.base,
        &token,
        &["--scenario", "checkout", "--machines", "10"],
    ))
    .await;
    assert!(ok, "bench failed: {err}\n{out}");
    let result = summary(&out);
    assert_eq!(result["scenario"], "checkout");
    assert_eq!(
        result["store"], "remote",
        "no --store: the servers' store is unknown"
    );
    assert_eq!(result["nodes"], 1);
    assert_eq!(result["errors"], 0, "{out}");
    assert_eq!(result["over_allocations"], 0, "{out}");
    assert!(
        result["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{out}"
    );
    assert!(
        result["ceiling_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{out}"
    );
    assert!(
        result["server_peak_rss_mib"].is_null(),
        "not its process: {out}"
    );
    assert!(
        !out.contains("429"),
        "the test server has no rate limit: {out}"
    );

    // The load reached this server: its audit log has the takes and checkins ...
    let taken = api.ok_get("/v1/events?action=seat.taken&limit=10").await;
    assert!(
        !taken["items"].as_array().expect("a page").is_empty(),
        "{taken}"
    );
    let released = api.ok_get("/v1/events?action=seat.released&limit=10").await;
    assert!(
        !released["items"].as_array().expect("a page").is_empty(),
        "{released}"
    );
    // ... and the bench deleted what it made.
    let licenses = api.ok_get("/v1/licenses").await;
    assert_eq!(
        licenses["items"].as_array().map(Vec::len),
        Some(0),
        "{licenses}"
    );
    let applications = api.ok_get("/v1/applications").await;
    assert_eq!(
        applications["items"].as_array().map(Vec::len),
        Some(0),
        "{applications}"
    );

    // Heartbeat: the leases are taken through the API (no access to the store).
    let (ok, out, err) = bench(args(
        &s.base,
        &token,
        &[
            "--scenario",
            "heartbeat",
            "--leases",
            "6",
            "--store",
            "sqlite",
        ],
    ))
    .await;
    assert!(ok, "bench failed: {err}\n{out}");
    assert!(err.contains("took 6 leases through the API"), "{err}");
    let result = summary(&out);
    assert_eq!(result["scenario"], "heartbeat");
    assert_eq!(
        result["store"], "sqlite",
        "--store labels the servers' store"
    );
    assert_eq!(result["errors"], 0, "{out}");
    assert_eq!(result["over_allocations"], 0, "{out}");

    // Refusals: no token, a token that may not manage licenses, not a server's URL.
    let (ok, _, err) = bench(vec![
        "--url".into(),
        s.base.clone(),
        "--scenario".into(),
        "validate".into(),
    ])
    .await;
    assert!(!ok && err.contains("--url needs --token"), "{err}");
    let viewer = api.token("viewer").await;
    let (ok, _, err) = bench(args(
        &s.base,
        viewer.token.as_deref().expect("a token"),
        &["--scenario", "validate"],
    ))
    .await;
    assert!(!ok && err.contains("license.manage"), "{err}");
    let (ok, _, err) = bench(vec![
        "--url".into(),
        "ftp://127.0.0.1/".into(),
        "--token".into(),
        token.clone(),
        "--scenario".into(),
        "validate".into(),
    ])
    .await;
    assert!(!ok && err.contains("http://HOST"), "{err}");
}

/// A server whose client rate limit is on: seeding stops with the way out, not a
/// measurement of 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_names_the_rate_limit_of_a_server_that_throttles_it() {
    let s = TestServer::start_with(crate::harness::Backend::Sqlite, |settings| {
        settings.client_rate_limit = 2
    })
    .await;
    let api = s.workspace("Acme").await;
    let token = api.token.clone().expect("the owner's token");
    let (ok, out, err) = bench(args(
        &s.base,
        &token,
        &["--scenario", "heartbeat", "--leases", "200"],
    ))
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("--client-rate-limit 0"), "{err}");
    // The run failed after making its application and licenses; it deleted them all
    // the same.
    for path in ["/v1/licenses", "/v1/applications"] {
        let page = api.ok_get(path).await;
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(0),
            "{err}\n{page}"
        );
    }
    s.stop().await;
}

/// The baseline service the bench measures against: a Lua sorted-set semaphore over
/// Redis that never hands out more than a license's seats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_baseline_takes_at_most_the_seats_and_frees_them() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let seats = dir.path().join("seats.json");
    std::fs::write(&seats, r#"{"L": 2}"#).expect("the seats file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let redis_url = std::env::var("LEASEHOLD_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("lhtest:{}:", uuid::Uuid::new_v4().simple());
    let _service = Stopped(
        Command::new(bench_exe())
            .arg("baseline")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--prefix", &prefix])
            .arg("--seats")
            .arg(&seats)
            .env("LEASEHOLD_BENCH_REDIS_URL", &redis_url)
            .spawn()
            .expect("the baseline starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        up,
        "the baseline service did not answer (is Redis up at {redis_url}?)"
    );
    let call = |path: &'static str, license: &'static str, holder: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"license": license, "holder": holder}))
                .send()
                .await
                .expect("the baseline answers")
                .status()
                .as_u16()
        }
    };
    assert_eq!(call("/take", "L", "a").await, 201);
    assert_eq!(call("/take", "L", "b").await, 201);
    assert_eq!(call("/take", "L", "c").await, 409, "two seats, both taken");
    assert_eq!(call("/take", "L", "a").await, 200, "a holder's own seat");
    assert_eq!(call("/take", "other", "a").await, 404);
    assert_eq!(call("/heartbeat", "L", "b").await, 200);
    assert_eq!(call("/release", "L", "a").await, 200);
    assert_eq!(
        call("/heartbeat", "L", "a").await,
        410,
        "a let go of its seat"
    );
    assert_eq!(call("/take", "L", "c").await, 201, "a's seat went to c");
    let mut redis = redis::Client::open(redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let holders: i64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}L"))
        .query(&mut redis)
        .expect("ZCARD");
    assert_eq!(holders, 2, "b and c");
    // Empty sorted sets leave Redis.
    assert_eq!(call("/release", "L", "b").await, 200);
    assert_eq!(call("/release", "L", "c").await, 200);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}L"))
        .query(&mut redis)
        .expect("EXISTS");
    assert_eq!(exists, 0);
}

/// A process a test started, killed however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A short bench run of `scenario` on a server of its own, baseline included: it must
/// succeed without errors and measure the baseline. Answers (summary, stdout).
async fn own_run(scenario: &str, more: &[&str], mark: &str) -> (Value, String) {
    let args: Vec<String> = ["--scenario", scenario]
        .iter()
        .chain(&SHORT_RUN)
        .chain(more)
        .map(|s| s.to_string())
        .collect();
    let (ok, out, err) = bench_with(args, &[(MARK, mark)]).await;
    assert!(ok, "bench failed: {err}\n{out}");
    let result = summary(&out);
    assert_eq!(result["errors"], 0, "{out}");
    assert!(
        result["baseline_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{err}\n{out}"
    );
    (result, out)
}

/// Runs of its own: the baseline is measured, and its process ends with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_the_baseline_and_stops_its_process() {
    // The processes these runs start inherit a mark of their own.
    let mark = uuid::Uuid::new_v4().to_string();
    let (result, out) = own_run("checkout", &["--machines", "20"], &mark).await;
    assert_eq!(result["store"], "sqlite");
    assert_eq!(result["over_allocations"], 0, "{out}");

    // Heartbeats: the baseline's holders are seeded as the server's leases are, so
    // neither measures refusals.
    // More holders than one seeding pipeline's 10,000.
    let (_, out) = own_run("heartbeat", &["--leases", "10050"], &mark).await;
    assert!(!out.contains("refused"), "{out}");

    let marked = format!("{MARK}={mark}");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let environ = std::fs::read(dir.join("environ")).ok()?;
            let marked = environ.split(|b| *b == 0).any(|v| v == marked.as_bytes());
            marked.then(|| std::fs::read(dir.join("cmdline")).ok())?
        })
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .collect();
    assert!(left.is_empty(), "processes outlived the bench: {left:?}");
}
