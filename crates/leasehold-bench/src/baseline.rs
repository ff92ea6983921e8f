//! The baseline: a minimal axum service over Redis taking and freeing seats with a Lua
//! sorted-set semaphore with expiry, run as its own process (`leasehold-bench baseline`).

use crate::bench::{BenchArgs, Scenario};
use crate::load::{Follow, Load, Step};
use crate::servers::{wait_until_up, Fleet};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// Takes a seat: drop expired holders, refresh a holder's own seat, or add one if free.
pub(crate) const TAKE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return 2
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return 1
end
return 0";

/// Pushes a live holder's expiry.
pub(crate) const HEARTBEAT: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) >= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0";

#[derive(Clone)]
pub(crate) struct Baseline {
    pub(crate) redis: redis::aio::ConnectionManager,
    pub(crate) seats: Arc<HashMap<String, i64>>,
    pub(crate) prefix: String,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct SeatRequest {
    pub(crate) license: String,
    pub(crate) holder: String,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) async fn baseline_take(
    State(b): State<Baseline>,
    Json(r): Json<SeatRequest>,
) -> StatusCode {
    let Some(total) = b.seats.get(&r.license) else {
        return StatusCode::NOT_FOUND;
    };
    let now = now_ms();
    let taken: redis::RedisResult<i64> = redis::Script::new(TAKE)
        .key(format!("{}{}", b.prefix, r.license))
        .arg(now)
        .arg(&r.holder)
        .arg(now + 3_600_000)
        .arg(*total)
        .invoke_async(&mut b.redis.clone())
        .await;
    match taken {
        Ok(1) => StatusCode::CREATED,
        Ok(2) => StatusCode::OK,
        Ok(_) => StatusCode::CONFLICT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) async fn baseline_release(
    State(b): State<Baseline>,
    Json(r): Json<SeatRequest>,
) -> StatusCode {
    let removed: redis::RedisResult<i64> = redis::cmd("ZREM")
        .arg(format!("{}{}", b.prefix, r.license))
        .arg(&r.holder)
        .query_async(&mut b.redis.clone())
        .await;
    if removed.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

pub(crate) async fn baseline_heartbeat(
    State(b): State<Baseline>,
    Json(r): Json<SeatRequest>,
) -> StatusCode {
    let now = now_ms();
    let alive: redis::RedisResult<i64> = redis::Script::new(HEARTBEAT)
        .key(format!("{}{}", b.prefix, r.license))
        .arg(&r.holder)
        .arg(now)
        .arg(now + 3_600_000)
        .invoke_async(&mut b.redis.clone())
        .await;
    match alive {
        Ok(1) => StatusCode::OK,
        Ok(_) => StatusCode::GONE,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `leasehold-bench baseline` (hidden): the baseline service, run by the bench as its own
/// process, as the servers under test are, so that it shares neither the load generator's
/// runtime nor its threads.
#[derive(clap::Args, Debug)]
pub struct BaselineArgs {
    /// Where it listens.
    #[arg(long)]
    pub(crate) listen: std::net::SocketAddr,
    /// Redis it keeps its seats in (from the environment, so that a password in it is
    /// not on a command line).
    #[arg(long, env = "LEASEHOLD_BENCH_REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: String,
    /// The prefix of its Redis keys.
    #[arg(long)]
    pub(crate) prefix: String,
    /// A JSON file of each license's seats total, `{"license id": seats}`.
    #[arg(long)]
    pub(crate) seats: PathBuf,
}

/// Serves the baseline until killed.
pub async fn serve_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let seats: HashMap<String, i64> = serde_json::from_slice(
        &std::fs::read(&args.seats).with_context(|| format!("reading {}", args.seats.display()))?,
    )
    .context("the seats file")?;
    let client = redis::Client::open(args.redis_url.as_str())?;
    let redis = redis::aio::ConnectionManager::new(client)
        .await
        .context("connecting to Redis")?;
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { StatusCode::OK }))
        .route("/take", post(baseline_take))
        .route("/release", post(baseline_release))
        .route("/heartbeat", post(baseline_heartbeat))
        .with_state(Baseline {
            redis,
            seats: Arc::new(seats),
            prefix: args.prefix,
        });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Kills the baseline's process when the measurement is over, however it ends.
pub(crate) struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis baseline's service, started in its own process, its holders seeded.
pub(crate) struct BaselineService {
    pub(crate) _process: KillOnDrop,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) base: String,
    pub(crate) redis: redis::aio::ConnectionManager,
    /// Of every key the bench writes in Redis.
    pub(crate) prefix: String,
    /// The licenses' ids.
    pub(crate) ids: Arc<Vec<String>>,
    /// How many holders were seeded for heartbeats (the heartbeat scenario), if any.
    pub(crate) seeded: Option<usize>,
}

impl BaselineService {
    pub(crate) async fn start(args: &BenchArgs, fleet: &Fleet) -> anyhow::Result<BaselineService> {
        let client = redis::Client::open(args.redis_url.as_str())?;
        let redis = redis::aio::ConnectionManager::new(client)
            .await
            .context("connecting to Redis")?;
        let prefix = format!("lhbench:{}:", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir()?;
        let seats_file = dir.path().join("seats.json");
        let seats: HashMap<&str, i64> = fleet
            .licenses
            .iter()
            .map(|(id, _, seats)| (id.as_str(), *seats))
            .collect();
        std::fs::write(&seats_file, serde_json::to_vec(&seats)?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let mut process = KillOnDrop(
            Command::new(std::env::current_exe()?)
                .arg("baseline")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--prefix", &prefix])
                .arg("--seats")
                .arg(&seats_file)
                .env("LEASEHOLD_BENCH_REDIS_URL", &args.redis_url)
                .env("LEASEHOLD_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
        wait_until_up(&mut process.0, &format!("{base}/healthz"))
            .await
            .context("the baseline service did not start")?;
        let ids = Arc::new(fleet.licenses.iter().map(|l| l.0.clone()).collect());
        let mut service = BaselineService {
            _process: process,
            _dir: dir,
            base,
            redis,
            prefix,
            ids,
            seeded: None,
        };
        if args.scenario == Scenario::Heartbeat {
            let (redis, prefix, ids) = (&mut service.redis, &service.prefix, &service.ids);
            if let Err(error) = seed_baseline_holders(redis, prefix, ids, args.leases).await {
                service.clean_up().await;
                return Err(error);
            }
            service.seeded = Some(args.leases);
        }
        Ok(service)
    }

    /// Heartbeats of the seeded holders, if any were seeded, or takes of random machines
    /// each followed by its release.
    pub(crate) fn load(&self, machines_per_license: usize) -> Load {
        let ids = self.ids.clone();
        let seeded = self.seeded;
        let make = move |_: usize| -> Step {
            let ids = ids.clone();
            Box::new(move |rng: &mut rand::rngs::StdRng| {
                let (path, license, holder) = match seeded {
                    Some(count) => {
                        let i = rng.gen_range(0..count.max(1));
                        ("/heartbeat", &ids[i % ids.len()], format!("seed-{i}"))
                    }
                    None => {
                        let license = &ids[rng.gen_range(0..ids.len())];
                        let machine = rng.gen_range(0..machines_per_license);
                        ("/take", license, format!("m{machine}/u"))
                    }
                };
                (
                    reqwest::Method::POST,
                    path.to_string(),
                    Some(json!({"license": license, "holder": holder})),
                )
            })
        };
        let release: Follow = Arc::new(|request: &Value, _| {
            Some((
                reqwest::Method::POST,
                "/release".to_string(),
                request.clone(),
            ))
        });
        Load {
            bases: vec![self.base.clone()],
            make: Box::new(make),
            follow: seeded.is_none().then_some(release),
        }
    }

    /// Deletes the bench's keys from Redis and stops the service.
    pub(crate) async fn clean_up(mut self) {
        for id in self.ids.iter() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL")
                .arg(format!("{}{id}", self.prefix))
                .query_async(&mut self.redis)
                .await;
        }
    }
}

/// `count` holders, `seed-0` to `seed-{count-1}`, spread over the licenses as the
/// server's seeded leases are, written straight into Redis (pipelined `ZADD`s).
pub(crate) async fn seed_baseline_holders(
    redis: &mut redis::aio::ConnectionManager,
    prefix: &str,
    ids: &[String],
    count: usize,
) -> anyhow::Result<()> {
    const PER_PIPELINE: usize = 10_000;
    let expires_at = now_ms() + 3_600_000;
    for start in (0..count).step_by(PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for i in start..(start + PER_PIPELINE).min(count) {
            pipe.cmd("ZADD")
                .arg(format!("{prefix}{}", ids[i % ids.len()]))
                .arg(expires_at)
                .arg(format!("seed-{i}"))
                .ignore();
        }
        let () = pipe
            .query_async(redis)
            .await
            .context("seeding the baseline's holders")?;
    }
    Ok(())
}
