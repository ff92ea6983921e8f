//! SQLite's WAL under writes that never pause: SQLite alone starts the WAL over only when
//! a write finds all of it already copied into the database, which steady batches never
//! allow, so the file grew by gigabytes. The seat writer now starts it over once it passes
//! `sqlite_wal_limit` (1 MiB here).

use crate::harness::{id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const LIMIT: u64 = 1 << 20;
const WORKERS: usize = 16;
const MACHINES_PER_WORKER: usize = 32;
/// About 20 MB of WAL frames were appended in a run of this many heartbeats.
const HEARTBEATS: u64 = 5_000;

/// The WAL header's checkpoint sequence number (bytes 12..16, big-endian), which SQLite
/// increments each time it starts the WAL over; and the file's size.
pub fn wal_state(wal: &Path) -> Option<(u32, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(wal).ok()?;
    let mut header = [0u8; 16];
    file.read_exact(&mut header).ok()?;
    let sequence = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
    Some((sequence, file.metadata().ok()?.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_seat_writes_keep_the_wal_bounded() {
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        settings.store.sqlite_wal_limit = LIMIT;
        // Checked often, so that little is appended past so small a limit.
        settings.store.sqlite_checkpoint_every = std::time::Duration::from_millis(50);
        // Each heartbeat a write of its own, as the steady load this test needs.
        settings.heartbeat_flush = std::time::Duration::ZERO;
    })
    .await;
    let wal = Path::new(s.database_url.trim_start_matches("sqlite://")).with_extension("db-wal");
    let api = s.workspace("Acme").await;
    let seats = (WORKERS * MACHINES_PER_WORKER) as i64;
    let license = api
        .license_with(json!({"seat_model": "concurrent", "seats_total": seats}))
        .await;
    let key = license["key"].as_str().unwrap().to_string();

    let heartbeats = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (base, key) = (s.base.clone(), key.clone());
        let (heartbeats, done) = (heartbeats.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut leases = Vec::new();
            for machine in 0..MACHINES_PER_WORKER {
                let body = json!({"key": key, "fingerprint": format!("m-{worker}-{machine}"),
                                  "os_user": "u", "instance": "i"});
                let r = client
                    .post(format!("{base}/v1/client/leases"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                leases.push(id(&r.json::<Value>().await.unwrap()));
            }
            'rounds: loop {
                for lease in &leases {
                    if done.load(Ordering::Relaxed) {
                        break 'rounds;
                    }
                    let r = client
                        .post(format!("{base}/v1/client/leases/{lease}/heartbeat"))
                        .json(&json!({"key": key, "instance": "i"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                    heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Watch the WAL while the heartbeats go on.
    let (first_sequence, _) = wal_state(&wal).expect("the WAL exists");
    let (mut restarts, mut largest) = (0, 0);
    while heartbeats.load(Ordering::Relaxed) < HEARTBEATS {
        if let Some((sequence, size)) = wal_state(&wal) {
            restarts = sequence.wrapping_sub(first_sequence);
            largest = largest.max(size);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let total = heartbeats.load(Ordering::Relaxed);
    println!("wal: {total} heartbeats, {restarts} start-overs, largest {largest} bytes");
    // Left to SQLite, this run started the WAL over once and it reached 15 MB; bounded,
    // it started over 19 times and stayed under 3 MB.
    assert!(
        restarts >= 5,
        "the WAL started over {restarts} times in {total} heartbeats (largest {largest} bytes)"
    );
    // The limit, what is appended while the checkpointer copies, and a file cut back to
    // twice the limit only once it is past that.
    assert!(largest < 6 * LIMIT, "the WAL reached {largest} bytes");

    // Everything written before and after the start-overs is still there.
    let listed = api.ok_get(&format!("/v1/licenses/{}", id(&license))).await;
    assert_eq!(listed["seats_used"], json!(seats));
    s.stop().await;
}
