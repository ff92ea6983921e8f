//! The servers under test: started on loopback (or reached with `--url`), their
//! licenses and seeded leases, and the ledger checked afterwards.

use crate::baseline::now_ms;
use crate::bench::{BenchArgs, StoreKind};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Servers {
    /// The processes started (none with `--url`).
    pub(crate) children: Vec<Child>,
    pub(crate) bases: Vec<String>,
    pub(crate) token: String,
    pub(crate) _dir: Option<tempfile::TempDir>,
    pub(crate) pg_database: Option<(String, String)>,
    /// The store the servers share, for seeding it directly (`None` with `--url`: the
    /// bench then takes its leases through the API).
    pub(crate) database_url: Option<String>,
    /// What the summary calls the store.
    pub(crate) store: String,
}

impl Servers {
    /// Servers `--url` named: the bench reaches them through their API only.
    pub(crate) fn remote(&self) -> bool {
        self.database_url.is_none()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The running servers `--url` names, once each answers `/healthz`.
pub(crate) async fn connect_servers(args: &BenchArgs) -> anyhow::Result<Servers> {
    if args.nodes != 1 {
        bail!("--nodes is for the servers the bench starts; with --url, list every node's URL");
    }
    let Some(token) = args.token.clone().filter(|t| !t.trim().is_empty()) else {
        bail!("--url needs --token (or LEASEHOLD_BENCH_TOKEN): an API token with license.manage");
    };
    let client = reqwest::Client::new();
    for base in &args.url {
        let answer = client
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("{base} does not answer"))?;
        if !answer.status().is_success() {
            bail!("{base}/healthz answered {}", answer.status());
        }
    }
    Ok(Servers {
        children: Vec::new(),
        bases: args.url.clone(),
        token,
        _dir: None,
        pg_database: None,
        database_url: None,
        store: args
            .store
            .map_or("remote".to_string(), |s| format!("{s:?}").to_lowercase()),
    })
}

pub(crate) async fn start_servers(args: &BenchArgs) -> anyhow::Result<Servers> {
    let store = args.store.unwrap_or(StoreKind::Sqlite);
    let dir = tempfile::tempdir()?;
    let data_dir: PathBuf = dir.path().to_path_buf();
    let mut store_args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    let mut pg_database = None;
    if store == StoreKind::Postgres {
        use sqlx::Connection;
        let name = format!("lh_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&args.pg_url)
            .await
            .context("connecting to PostgreSQL (--pg-url)")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = args
            .pg_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&args.pg_url);
        let url = format!("{base}/{name}");
        store_args.extend(["--database-url".to_string(), url]);
        pg_database = Some((args.pg_url.clone(), name));
    } else if args.nodes > 1 {
        bail!("several nodes need --store postgres");
    }
    // Create the workspace in-process (this also makes the master key the nodes share).
    let settings = leasehold_server::Settings {
        database_url: store_args.get(3).cloned(),
        ..leasehold_server::Settings::new(data_dir.clone())
    };
    let database_url = settings.database_url();
    let state = leasehold_server::open_state(&settings).await?;
    let token = leasehold_server::create_workspace(
        &state,
        "Bench",
        "bench@example.com",
        "bench password",
        "USD",
    )
    .await?;
    drop(state);
    let exe = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("leasehold"),
    };
    if !exe.is_file() {
        bail!(
            "{} is not there: build it (cargo build --release --bin leasehold) or name it with --server-bin",
            exe.display()
        );
    }
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..args.nodes.max(1) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&exe)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--client-rate-limit",
                "0",
            ])
            .args(&store_args)
            .args(&args.server_args)
            .env("LEASEHOLD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        children.push(child);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let mut servers = Servers {
        children,
        bases,
        token,
        _dir: Some(dir),
        pg_database,
        database_url: Some(database_url),
        store: format!("{store:?}").to_lowercase(),
    };
    for (child, base) in servers.children.iter_mut().zip(&servers.bases) {
        wait_until_up(child, &format!("{base}/readyz"))
            .await
            .with_context(|| format!("the server at {base} did not start"))?;
    }
    Ok(servers)
}

/// Waits until the bench's `process` answers a success at `url`; an error if it exits
/// first or does not answer within about ten seconds.
pub(crate) async fn wait_until_up(process: &mut Child, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = process.try_wait()? {
            bail!("it exited ({status})");
        }
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("it did not answer within 10 s")
}

pub(crate) struct Fleet {
    pub(crate) application_id: String,
    pub(crate) licenses: Vec<(String, String, i64)>,
}

pub(crate) async fn create_licenses(
    servers: &Servers,
    count: usize,
    seats: i64,
    concurrent: bool,
) -> anyhow::Result<Fleet> {
    let client = reqwest::Client::new();
    let base = &servers.bases[0];
    let app: Value = client
        .post(format!("{base}/v1/applications"))
        .bearer_auth(&servers.token)
        .json(&json!({"name": "Bench", "deployment_model": "on_premise"}))
        .send()
        .await?
        .json()
        .await?;
    let Some(application_id) = app["id"].as_str().map(str::to_string) else {
        bail!("creating the bench's application failed (is the token one with license.manage?): {app}");
    };
    let mut fleet = Fleet {
        application_id,
        licenses: Vec::new(),
    };
    for _ in 0..count {
        let created = async {
            let license: Value = client
                .post(format!("{base}/v1/licenses"))
                .bearer_auth(&servers.token)
                .json(&json!({
                    "application_id": fleet.application_id, "licensed_to": "Bench", "type": "subscription",
                    "seat_model": if concurrent { "concurrent" } else { "dedicated" }, "seats_total": seats,
                    "policy": {"lease_ttl_s": 3600}
                }))
                .send()
                .await?
                .json()
                .await?;
            let (Some(id), Some(key)) = (license["id"].as_str(), license["key"].as_str()) else {
                bail!("creating a license failed: {license}");
            };
            anyhow::Ok((id.to_string(), key.to_string(), seats))
        }
        .await;
        match created {
            Ok(license) => fleet.licenses.push(license),
            Err(error) => {
                // What was made before the failure goes, on servers the bench did not start.
                if servers.remote() {
                    if let Err(cleanup) = delete_fleet(servers, &fleet).await {
                        eprintln!("bench: {cleanup:#}");
                    }
                }
                return Err(error);
            }
        }
    }
    Ok(fleet)
}

/// Active ledger rows against `seats_used` and `seats_total`, for every license.
pub(crate) async fn over_allocations(servers: &Servers, fleet: &Fleet) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let base = &servers.bases[0];
    let mut over = 0;
    for (id, _, total) in &fleet.licenses {
        let license: Value = client
            .get(format!("{base}/v1/licenses/{id}"))
            .bearer_auth(&servers.token)
            .send()
            .await?
            .json()
            .await?;
        let used = license["seats_used"].as_i64().unwrap_or(-1);
        let mut active = 0i64;
        let mut cursor = String::new();
        loop {
            let page: Value = client
                .get(format!(
                    "{base}/v1/licenses/{id}/seats?active=true&limit=200&cursor={cursor}"
                ))
                .bearer_auth(&servers.token)
                .send()
                .await?
                .json()
                .await?;
            active += page["items"]
                .as_array()
                .map(|a| a.len() as i64)
                .unwrap_or(0);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        if active > *total || used > *total || active != used {
            over += 1;
        }
    }
    Ok(over)
}

/// Seeds `count` live leases spread over the licenses, straight into the ledger through
/// the store's `import_leases` (through the client API a million would take many
/// minutes). Answers (lease id, key, instance).
pub(crate) async fn seed_leases(
    servers: &Servers,
    fleet: &Fleet,
    count: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let Some(database_url) = servers.database_url.as_deref() else {
        return take_leases(servers, fleet, count).await;
    };
    let started = Instant::now();
    let now = now_ms();
    let expires_at = now + 3_600_000;
    let per_license = count.div_ceil(fleet.licenses.len()) as i64;
    let store = leasehold_store::open(database_url, &leasehold_store::StoreOptions::default())
        .await
        .context("opening the servers' store to seed it")?;
    for (id, _, _) in &fleet.licenses {
        store
            .import_leases(id, per_license, now, expires_at)
            .await
            .with_context(|| format!("seeding license {id}"))?;
    }
    drop(store);
    let mut leases = Vec::with_capacity(fleet.licenses.len() * per_license as usize);
    for (id, key, _) in &fleet.licenses {
        for i in 1..=per_license {
            leases.push((format!("{id}-{i}"), key.clone(), "i".to_string()));
        }
    }
    eprintln!(
        "bench: seeded {} leases in {:.1} s",
        leases.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(leases)
}

/// Takes `count` leases spread over the licenses through the client API, 64 at a time
/// (servers the bench did not start: it cannot reach their store). Answers (lease id,
/// key, instance).
pub(crate) async fn take_leases(
    servers: &Servers,
    fleet: &Fleet,
    count: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    const AT_ONCE: usize = 64;
    let started = Instant::now();
    let per_license = count.div_ceil(fleet.licenses.len());
    let wanted: Vec<(String, usize)> = fleet
        .licenses
        .iter()
        .flat_map(|(_, key, _)| (1..=per_license).map(move |i| (key.clone(), i)))
        .collect();
    let wanted = Arc::new(wanted);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // When one task fails, the others take no more leases; they finish the request they
    // have in flight, so none is still taking when the caller cleans up.
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..AT_ONCE {
        let (wanted, next, failed) = (wanted.clone(), next.clone(), failed.clone());
        let base = servers.bases[t % servers.bases.len()].clone();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut taken = Vec::new();
            let outcome = loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    break Ok(());
                }
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, i)) = wanted.get(n) else {
                    break Ok(());
                };
                let answer = match client
                    .post(format!("{base}/v1/client/leases"))
                    .json(&json!({"key": key, "fingerprint": format!("seed-{i}"), "os_user": "u", "instance": "i"}))
                    .send()
                    .await
                {
                    Ok(answer) => answer,
                    Err(error) => break Err(anyhow::Error::from(error)),
                };
                let status = answer.status();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                match body["id"].as_str() {
                    Some(id) if status.is_success() => {
                        taken.push((id.to_string(), key.clone(), "i".to_string()))
                    }
                    _ if status == reqwest::StatusCode::TOO_MANY_REQUESTS => break Err(anyhow::anyhow!(
                        "taking a lease to seed answered 429: start the server with --client-rate-limit 0"
                    )),
                    _ => break Err(anyhow::anyhow!("taking a lease to seed answered {status}: {body}")),
                }
            };
            if outcome.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            outcome.map(|()| taken)
        });
    }
    // Every task is waited for; the first failure is the answer.
    let mut leases = Vec::with_capacity(wanted.len());
    let mut first_failure = None;
    while let Some(task) = tasks.join_next().await {
        match task
            .context("a seeding task failed")
            .and_then(|taken| taken)
        {
            Ok(taken) => leases.extend(taken),
            Err(error) => {
                first_failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_failure {
        return Err(error);
    }
    eprintln!(
        "bench: took {} leases through the API in {:.1} s",
        leases.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(leases)
}

/// Deletes what the bench made on servers it did not start: its licenses (their leases
/// end with them), then its application.
pub(crate) async fn delete_fleet(servers: &Servers, fleet: &Fleet) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = &servers.bases[0];
    let paths = fleet
        .licenses
        .iter()
        .map(|(id, _, _)| format!("/v1/licenses/{id}"))
        .chain([format!("/v1/applications/{}", fleet.application_id)]);
    let mut failures = Vec::new();
    for path in paths {
        match client
            .delete(format!("{base}{path}"))
            .bearer_auth(&servers.token)
            .send()
            .await
        {
            Ok(answer) if answer.status().is_success() => {}
            Ok(answer) => failures.push(format!("{path} answered {}", answer.status())),
            Err(error) => failures.push(format!("{path}: {error}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "deleting the bench's records failed: {}",
            failures.join("; ")
        );
    }
    Ok(())
}

/// The largest peak resident set of the server processes, in MiB (Linux; `None` when no
/// process's could be read).
pub(crate) fn peak_rss_mib(servers: &Servers) -> Option<f64> {
    rss_mib(servers, "VmHWM:")
}

/// The largest of the server processes' `field` of `/proc/PID/status` (`VmRSS:` now,
/// `VmHWM:` at its peak), in MiB.
pub(crate) fn rss_mib(servers: &Servers, field: &str) -> Option<f64> {
    servers
        .children
        .iter()
        .filter_map(|child| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
            let kib: f64 = status
                .lines()
                .find_map(|line| line.strip_prefix(field))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        })
        .reduce(f64::max)
}
