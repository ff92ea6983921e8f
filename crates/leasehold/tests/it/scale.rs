//! Scale: a million leases in the store. Checkout, heartbeat and validate keep working
//! (latencies are printed, never asserted: timings are for `docs/benchmarks.md`), and a
//! sweep of 100,000 lapsed leases runs in chunks while live requests go on between them.

use crate::harness::{id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    a_million_leases_then_a_sweep_of_a_hundred_thousand(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    a_million_leases_then_a_sweep_of_a_hundred_thousand(Backend::Postgres).await;
}

const LICENSES: usize = 100;
const SEEDED_PER_LICENSE: i64 = 10_000;
const LAPSING_PER_LICENSE: i64 = 1_000;
const WORKERS: usize = 16;
/// Cycles each worker runs in the phases before the sweep: 16 × 150 × 4 = 9,600 requests,
/// enough for a p99 to compare with the sweep's (1,600 left it to a handful of requests).
const ROUNDS: u64 = 150;

/// Latencies of one phase, in milliseconds.
struct Phase {
    name: &'static str,
    millis: Vec<f64>,
    failures: Vec<String>,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        if sorted.is_empty() {
            return 0.0;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    fn report(&self) {
        println!(
            "scale {:<28} requests {:>6}  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.millis.len(),
            self.percentile(0.50),
            self.percentile(0.99)
        );
    }
}

/// Each worker cycles checkout → heartbeat → validate → checkin on fresh machines until
/// `rounds` cycles are done or `stop` is set; every answer must be the expected one.
async fn load(
    s: &TestServer,
    keys: &Arc<Vec<String>>,
    name: &'static str,
    rounds: Option<u64>,
    stop: Arc<AtomicBool>,
) -> Phase {
    static MACHINE: AtomicU64 = AtomicU64::new(0);
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let client = reqwest::Client::new();
        let base = s.base.clone();
        let keys = keys.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut millis = Vec::new();
            let mut failures = Vec::new();
            let mut round = 0u64;
            while rounds.map_or(!stop.load(Ordering::Relaxed), |r| round < r) {
                round += 1;
                let machine = MACHINE.fetch_add(1, Ordering::Relaxed);
                let key = &keys[(machine as usize + worker) % keys.len()];
                let mut timed = async |path: String, body: Value, method: reqwest::Method| {
                    let started = Instant::now();
                    let response = client
                        .request(method, format!("{base}{path}"))
                        .json(&body)
                        .send()
                        .await;
                    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            millis.push(elapsed);
                            r.json::<Value>().await.ok()
                        }
                        Ok(r) => {
                            failures.push(format!("{path}: {}", r.status()));
                            None
                        }
                        Err(e) => {
                            failures.push(format!("{path}: {e}"));
                            None
                        }
                    }
                };
                let body = json!({"key": key, "fingerprint": format!("live-{machine}"),
                                  "os_user": "u", "instance": "i"});
                let Some(lease) =
                    timed("/v1/client/leases".into(), body, reqwest::Method::POST).await
                else {
                    continue;
                };
                let lease_id = id(&lease);
                let heartbeat = format!("/v1/client/leases/{lease_id}/heartbeat");
                timed(
                    heartbeat,
                    json!({"key": key, "instance": "i"}),
                    reqwest::Method::POST,
                )
                .await;
                timed(
                    "/v1/client/validate".into(),
                    json!({"key": key}),
                    reqwest::Method::POST,
                )
                .await;
                let checkin = format!("/v1/client/leases/{lease_id}/instances/i");
                timed(checkin, json!({"key": key}), reqwest::Method::DELETE).await;
            }
            (millis, failures)
        }));
    }
    let mut phase = Phase {
        name,
        millis: Vec::new(),
        failures: Vec::new(),
    };
    for task in tasks {
        let (millis, failures) = task.await.unwrap();
        phase.millis.extend(millis);
        phase.failures.extend(failures);
    }
    phase.report();
    phase
}

/// Seeds each license with `SEEDED_PER_LICENSE` live leases straight in the database
/// (through the API it would take minutes), `LAPSING_PER_LICENSE` of them already lapsed.
async fn seed(s: &TestServer, license_ids: &[String]) {
    let now = chrono::Utc::now().timestamp_millis();
    let insert = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $4) \
        INSERT INTO seats (id, workspace_id, license_id, kind, fingerprint, os_user, instances, \
        created_at, last_seen_at, expires_at, sweep_at) \
        SELECT $1 || '-' || CAST(i AS TEXT), (SELECT workspace_id FROM licenses WHERE id = $1), $1, 'lease', 'seed-' || CAST(i AS TEXT), 'u', '[\"i\"]', \
        $2, $2, CASE WHEN i <= $5 THEN $2 - 1000 ELSE $3 END, CASE WHEN i <= $5 THEN $2 - 1000 ELSE $3 END FROM n";
    let count = "UPDATE licenses SET seats_used = seats_used + $1 WHERE id = $2";
    let far = now + 86_400_000;
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool;
            for license in license_ids {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(insert)
                    .bind(license)
                    .bind(now)
                    .bind(far)
                    .bind(SEEDED_PER_LICENSE)
                    .bind(LAPSING_PER_LICENSE)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(count)
                    .bind(SEEDED_PER_LICENSE)
                    .bind(license)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            if s.backend == Backend::Postgres {
                // What autovacuum does a minute after a bulk load; the test doesn't wait.
                sqlx::query("ANALYZE").execute(&pool).await.unwrap();
            }
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM seats WHERE released_at IS NULL")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(total, LICENSES as i64 * SEEDED_PER_LICENSE);
        }};
    }
    match s.backend {
        Backend::Sqlite => run!(sqlx::SqlitePool::connect(&s.database_url).await.unwrap()),
        Backend::Postgres => run!(sqlx::PgPool::connect(&s.database_url).await.unwrap()),
    }
}

async fn a_million_leases_then_a_sweep_of_a_hundred_thousand(backend: Backend) {
    // The test sweeps by hand, to time it; the background sweeper stays out of the way.
    let server = TestServer::without_sweeper(backend).await;
    let s = &server;
    let admin = s.workspace("Acme").await;
    let mut keys = Vec::new();
    let mut license_ids = Vec::new();
    for _ in 0..LICENSES {
        let license = admin
            .license_with(json!({
                "seat_model": "concurrent",
                "seats_total": SEEDED_PER_LICENSE + 100,
                "policy": {"lease_ttl_s": 3600, "heartbeat_interval_s": 600}
            }))
            .await;
        keys.push(license["key"].as_str().unwrap().to_string());
        license_ids.push(id(&license));
    }
    let keys = Arc::new(keys);
    let never = Arc::new(AtomicBool::new(false));

    let empty = load(s, &keys, "empty store", Some(ROUNDS), never.clone()).await;
    assert!(empty.failures.is_empty(), "{:?}", empty.failures);

    let seeding = Instant::now();
    seed(s, &license_ids).await;
    println!(
        "scale {:?}: seeded {} leases in {:.1} s",
        s.backend,
        LICENSES as i64 * SEEDED_PER_LICENSE,
        seeding.elapsed().as_secs_f64()
    );

    let full = load(s, &keys, "1,000,000 leases", Some(ROUNDS), never.clone()).await;
    assert!(full.failures.is_empty(), "{:?}", full.failures);

    // The sweep, with live requests running beside it.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let stopper = stop.clone();
        let state = s.state.clone();
        let sweep = tokio::spawn(async move {
            // Let the load get going first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = Instant::now();
            let expired = leasehold_server::jobs::sweep(&state).await;
            let took = started.elapsed();
            stopper.store(true, Ordering::Relaxed);
            (expired, took)
        });
        let during = load(s, &keys, "during a 100,000-lease sweep", None, stop).await;
        let (expired, took) = sweep.await.unwrap();
        println!(
            "scale {:?}: swept {expired} lapsed leases in {:.1} s",
            s.backend,
            took.as_secs_f64()
        );
        assert_eq!(
            expired,
            (LICENSES as i64 * LAPSING_PER_LICENSE) as u64,
            "every lapsed lease expires once"
        );
        during
    };
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    assert!(
        during.millis.len() > WORKERS * 4,
        "live requests were answered between the sweep's chunks ({} answered)",
        during.millis.len()
    );

    // The counters agree with the ledger after it all.
    for license in license_ids.iter().take(5) {
        let answer = admin.ok_get(&format!("/v1/licenses/{license}")).await;
        assert_eq!(
            answer["seats_used"],
            SEEDED_PER_LICENSE - LAPSING_PER_LICENSE,
            "{license}"
        );
    }
    let (status, _) = admin.get("/v1/licenses?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
