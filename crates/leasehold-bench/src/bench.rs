//! `leasehold-bench`: starts its own server(s) on loopback (the `leasehold` binary), drives a fixed number of
//! connections at one scenario, and measures in the same run, with the same load
//! generator: the HTTP ceiling of this machine (the server's own `GET /healthz`) and, for
//! checkout and heartbeat, the usual alternative — a minimal axum service over Redis with
//! a Lua sorted-set semaphore, in its own process as the server is. Over-allocations are counted from the ledger afterwards.
//! With `--url` it drives running servers instead, through their API only.

use crate::baseline::BaselineService;
use crate::load::{measure_in_turns, Follow, Load, Measured, Step, TURN};
use crate::servers::{
    connect_servers, create_licenses, delete_fleet, over_allocations, peak_rss_mib, rss_mib,
    seed_leases, start_servers, Fleet,
};
use rand::Rng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Debug)]
pub enum Scenario {
    Validate,
    Checkout,
    Heartbeat,
    Mixed,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Debug)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    pub(crate) scenario: Scenario,
    /// The store of the servers it starts (sqlite by default); with `--url`, only the
    /// label the summary gives the servers' store ("remote" without it).
    #[arg(long, value_enum)]
    pub(crate) store: Option<StoreKind>,
    /// Server processes it starts (PostgreSQL only for more than one).
    #[arg(long, default_value_t = 1)]
    pub(crate) nodes: usize,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 200)]
    pub(crate) connections: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Active leases seeded before the heartbeat scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) leases: usize,
    /// Licenses the load is spread over (1 = one hot license).
    #[arg(long, default_value_t = 100)]
    pub(crate) licenses: usize,
    /// Distinct machines checking out (checkout and mixed).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) machines: usize,
    /// PostgreSQL server the bench makes (and drops) its database on.
    #[arg(
        long,
        env = "LEASEHOLD_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) pg_url: String,
    /// Redis for the baseline.
    #[arg(
        long,
        env = "LEASEHOLD_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) redis_url: String,
    /// Skip the Redis baseline.
    #[arg(long)]
    pub(crate) no_baseline: bool,
    /// Drive running servers instead of starting them: their base URLs, comma-separated
    /// (connections are spread over them). Everything goes through their API; start them
    /// with `--client-rate-limit 0`, or the limiter's 429s are what gets measured.
    #[arg(long, value_delimiter = ',', value_parser = parse_base_url)]
    pub(crate) url: Vec<String>,
    /// With `--url`: an API token (license.manage) of the workspace the bench creates its
    /// application and licenses in; they are deleted after the run.
    #[arg(long, env = "LEASEHOLD_BENCH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The `leasehold` binary whose servers it starts (by default the one next to this
    /// binary).
    #[arg(long, env = "LEASEHOLD_BIN")]
    pub(crate) server_bin: Option<PathBuf>,
    /// One more argument for the servers it starts, e.g. `--server-arg=--heartbeat-flush-ms=0`
    /// (repeatable): two settings of one build compared in one run.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub(crate) server_args: Vec<String>,
}

/// A server's base URL: http(s), no query, no trailing slash kept.
pub(crate) fn parse_base_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected http://HOST[:PORT] or https://…".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let servers = if args.url.is_empty() {
        start_servers(&args).await?
    } else {
        connect_servers(&args).await?
    };
    let duration = Duration::from_secs(args.duration.max(1));
    let licenses = args.licenses.max(1);
    let scenario = args.scenario;
    let nodes = servers.bases.len();
    eprintln!(
        "bench: {scenario:?} on {}, {nodes} node(s), {} connections, {} s",
        servers.store, args.connections, args.duration
    );

    let machines_per_license = (args.machines / licenses).max(1);
    let (seats, concurrent) = match scenario {
        Scenario::Validate => (10, false),
        // Fewer seats than machines, so some checkouts are refused and the invariant is exercised.
        Scenario::Checkout => ((machines_per_license as i64 * 3 / 5).max(1), true),
        Scenario::Heartbeat | Scenario::Mixed => (
            args.leases.div_ceil(licenses) as i64 + machines_per_license as i64,
            true,
        ),
    };
    let fleet = Arc::new(create_licenses(&servers, licenses, seats, concurrent).await?);
    let wants_baseline =
        matches!(scenario, Scenario::Checkout | Scenario::Heartbeat) && !args.no_baseline;
    let outcome = async {
        let leases = match scenario {
            Scenario::Heartbeat | Scenario::Mixed => {
                seed_leases(&servers, &fleet, args.leases).await?
            }
            Scenario::Validate | Scenario::Checkout => Vec::new(),
        };
        let leases = Arc::new(leases);
        // Every seeded lease beaten once first (not measured): the measurement is then of
        // the steady state, not of each lease's first heartbeat on a node. The servers'
        // memory before and after gives what a lease held in memory costs.
        let memory = if scenario == Scenario::Heartbeat {
            let before = rss_mib(&servers, "VmRSS:");
            warm_up(&servers.bases, &leases, args.connections).await?;
            let after = rss_mib(&servers, "VmRSS:");
            before
                .zip(after)
                .map(|(b, a)| ((a - b).max(0.0) * 1_048_576.0 / leases.len().max(1) as f64).round())
        } else {
            None
        };
        let baseline = if wants_baseline {
            BaselineService::start(&args, &fleet)
                .await
                .inspect_err(|error| eprintln!("bench: Redis baseline skipped: {error:#}"))
                .ok()
        } else {
            None
        };
        let mut loads = vec![
            scenario_load(
                &servers.bases,
                scenario,
                &fleet,
                &leases,
                machines_per_license,
            ),
            ceiling_load(&servers.bases),
        ];
        if let Some(service) = &baseline {
            loads.push(service.load(machines_per_license));
        }
        let mut measured = measure_in_turns(&loads, args.connections, duration, TURN)
            .await
            .into_iter();
        if let Some(service) = baseline {
            service.clean_up().await;
        }
        let (Some(leasehold), Some(ceiling)) = (measured.next(), measured.next()) else {
            anyhow::bail!("a measurement is missing");
        };
        let over = over_allocations(&servers, &fleet).await?;
        anyhow::Ok((leasehold, ceiling, measured.next(), over, memory))
    }
    .await;
    // What the bench made on servers it did not start goes, however the run ended; the
    // run's own error, if any, is the one reported.
    let cleanup = if servers.remote() {
        delete_fleet(&servers, &fleet).await
    } else {
        Ok(())
    };
    if let (Err(_), Err(error)) = (&outcome, &cleanup) {
        eprintln!("bench: {error:#}");
    }
    let (measured, ceiling, baseline, over, bytes_per_lease) = outcome?;
    cleanup?;

    let rss = peak_rss_mib(&servers);
    let pg_database = servers.pg_database.clone();
    let store = servers.store.clone();
    drop(servers);
    if let Some((admin, name)) = &pg_database {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    println!(
        "{:<22} {:>14} {:>10} {:>10} {:>8}",
        "measurement", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    let row = |name: &str, m: &Measured| {
        println!(
            "{:<22} {:>14.0} {:>10.2} {:>10.2} {:>8}",
            name,
            m.throughput(),
            m.percentile_ms(0.50),
            m.percentile_ms(0.99),
            m.errors
        )
    };
    row(&format!("leasehold {scenario:?}").to_lowercase(), &measured);
    row("ceiling (/healthz)", &ceiling);
    if let Some(b) = &baseline {
        row("baseline (axum+redis)", b);
    }
    if let Some(rss) = rss {
        println!("server peak RSS: {rss:.0} MiB");
    }
    if let Some(bytes) = bytes_per_lease {
        println!("server memory per lease heartbeaten: {bytes:.0} bytes");
    }
    for (name, m) in [("scenario", &measured), ("ceiling", &ceiling)] {
        if let Some(error) = &m.first_error {
            println!("{name}: the first of {} errors was {error}", m.errors);
        }
    }
    for (name, m) in [("scenario", &measured), ("ceiling", &ceiling)] {
        if m.throttled > 0 {
            println!(
                "warning: {} {name} answers were 429 (the server's client rate limit): \
                 start it with --client-rate-limit 0",
                m.throttled
            );
        }
    }
    if scenario == Scenario::Heartbeat {
        let measurements = [
            Some(("leasehold", &measured)),
            baseline.as_ref().map(|b| ("baseline", b)),
        ];
        for (name, m) in measurements.into_iter().flatten() {
            if m.refused > 0 {
                println!(
                    "warning: {} of the {name}'s heartbeats were refused (4xx: a lease that is \
                     gone answers 404 or 410)",
                    m.refused
                );
            }
        }
    }
    println!(
        "ratio to ceiling: {:.2}{}; over-allocations: {over}",
        measured.throughput() / ceiling.throughput().max(1e-9),
        baseline
            .as_ref()
            .map(|b| format!(
                "; ratio to baseline: {:.2}",
                measured.throughput() / b.throughput().max(1e-9)
            ))
            .unwrap_or_default()
    );
    let summary = json!({
        "scenario": format!("{scenario:?}").to_lowercase(),
        "store": store,
        "nodes": nodes,
        "throughput_per_s": measured.throughput().round(),
        "p50_ms": (measured.percentile_ms(0.50) * 100.0).round() / 100.0,
        "p99_ms": (measured.percentile_ms(0.99) * 100.0).round() / 100.0,
        "errors": measured.errors,
        "over_allocations": over,
        "ceiling_per_s": ceiling.throughput().round(),
        "baseline_per_s": baseline.as_ref().map(|b| b.throughput().round()),
        "server_peak_rss_mib": rss.map(f64::round),
        "bytes_per_lease": bytes_per_lease,
    });
    println!("{summary}");
    Ok(())
}

/// Beats every lease once, `connections` at a time, spread over the servers; the run
/// stops on an answer other than 200 (a seeded lease is live for an hour).
async fn warm_up(
    bases: &[String],
    leases: &Arc<Vec<(String, String, String)>>,
    connections: usize,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..connections.max(1) {
        let (leases, next, client) = (leases.clone(), next.clone(), client.clone());
        let base = bases[t % bases.len()].clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, key, instance)) = leases.get(i) else {
                    return anyhow::Ok(());
                };
                let answer = client
                    .post(format!("{base}/v1/client/leases/{id}/heartbeat"))
                    .json(&json!({"key": key, "instance": instance}))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    anyhow::bail!("warm-up heartbeat of {id} answered {}", answer.status());
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    eprintln!(
        "bench: beat {} leases once in {:.1} s (warm-up, not measured)",
        leases.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The scenario's load on Leasehold's servers.
pub(crate) fn scenario_load(
    bases: &[String],
    scenario: Scenario,
    fleet: &Arc<Fleet>,
    leases: &Arc<Vec<(String, String, String)>>,
    machines_per_license: usize,
) -> Load {
    let checkin: Follow = Arc::new(|request: &Value, answer: &Value| {
        let id = answer["id"].as_str()?;
        request.get("instance")?;
        Some((
            reqwest::Method::DELETE,
            format!(
                "/v1/client/leases/{id}/instances/{}",
                request["instance"].as_str()?
            ),
            json!({"key": request["key"]}),
        ))
    });
    let follow = matches!(scenario, Scenario::Checkout | Scenario::Mixed).then_some(checkin);
    let fleet = fleet.clone();
    let leases = leases.clone();
    let make = move |connection| -> Step {
        let fleet = fleet.clone();
        let leases = leases.clone();
        let mut n = connection;
        Box::new(move |rng: &mut rand::rngs::StdRng| {
            n += 1;
            let checkout = |rng: &mut rand::rngs::StdRng| {
                let (_, key, _) = &fleet.licenses[rng.gen_range(0..fleet.licenses.len())];
                let machine = rng.gen_range(0..machines_per_license);
                (
                    reqwest::Method::POST,
                    "/v1/client/leases".to_string(),
                    Some(
                        json!({"key": key, "fingerprint": format!("m{machine}"), "os_user": "u", "instance": format!("c{connection}")}),
                    ),
                )
            };
            let validate = |rng: &mut rand::rngs::StdRng| {
                let (_, key, _) = &fleet.licenses[rng.gen_range(0..fleet.licenses.len())];
                (
                    reqwest::Method::POST,
                    "/v1/client/validate".to_string(),
                    Some(json!({"key": key})),
                )
            };
            let heartbeat = |rng: &mut rand::rngs::StdRng| {
                let (id, key, instance) = &leases[rng.gen_range(0..leases.len())];
                (
                    reqwest::Method::POST,
                    format!("/v1/client/leases/{id}/heartbeat"),
                    Some(json!({"key": key, "instance": instance})),
                )
            };
            match scenario {
                Scenario::Validate => validate(rng),
                Scenario::Checkout => checkout(rng),
                Scenario::Heartbeat => heartbeat(rng),
                Scenario::Mixed => match n % 10 {
                    0 => validate(rng),
                    1 => checkout(rng),
                    _ => heartbeat(rng),
                },
            }
        })
    };
    Load {
        bases: bases.to_vec(),
        make: Box::new(make),
        follow,
    }
}

/// The ceiling: the same load generator against the servers' own `/healthz`.
pub(crate) fn ceiling_load(bases: &[String]) -> Load {
    Load {
        bases: bases.to_vec(),
        make: Box::new(|_| Box::new(|_| (reqwest::Method::GET, "/healthz".to_string(), None))),
        follow: None,
    }
}
