//! `leasehold-bench`: starts its own server(s) on loopback (the `leasehold` binary), drives a fixed number of
//! connections at one scenario, and measures in the same run, with the same load
//! generator: the HTTP ceiling of this machine (the server's own `GET /healthz`) and, for
//! checkout and heartbeat, the usual alternative — a minimal axum service over Redis with
//! a Lua sorted-set semaphore, in its own process as the server is. Over-allocations are counted from the ledger afterwards.
//! With `--url` it drives running servers instead, through their API only.

use anyhow::{bail, Context};
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
use std::time::{Duration, Instant};

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
    scenario: Scenario,
    /// The store of the servers it starts (sqlite by default); with `--url`, only the
    /// label the summary gives the servers' store ("remote" without it).
    #[arg(long, value_enum)]
    store: Option<StoreKind>,
    /// Server processes it starts (PostgreSQL only for more than one).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Active leases seeded before the heartbeat scenario.
    #[arg(long, default_value_t = 10_000)]
    leases: usize,
    /// Licenses the load is spread over (1 = one hot license).
    #[arg(long, default_value_t = 100)]
    licenses: usize,
    /// Distinct machines checking out (checkout and mixed).
    #[arg(long, default_value_t = 10_000)]
    machines: usize,
    /// PostgreSQL server the bench makes (and drops) its database on.
    #[arg(
        long,
        env = "LEASEHOLD_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Redis for the baseline.
    #[arg(
        long,
        env = "LEASEHOLD_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Skip the Redis baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Drive running servers instead of starting them: their base URLs, comma-separated
    /// (connections are spread over them). Everything goes through their API; start them
    /// with `--client-rate-limit 0`, or the limiter's 429s are what gets measured.
    #[arg(long, value_delimiter = ',', value_parser = parse_base_url)]
    url: Vec<String>,
    /// With `--url`: an API token (license.manage) of the workspace the bench creates its
    /// application and licenses in; they are deleted after the run.
    #[arg(long, env = "LEASEHOLD_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The `leasehold` binary whose servers it starts (by default the one next to this
    /// binary).
    #[arg(long, env = "LEASEHOLD_BIN")]
    server_bin: Option<PathBuf>,
}

/// A server's base URL: http(s), no query, no trailing slash kept.
fn parse_base_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected http://HOST[:PORT] or https://…".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// What one measurement found.
#[derive(Debug, Default, Clone)]
struct Measured {
    requests: u64,
    errors: u64,
    /// Answers 429 (the server's client rate limit): answered, but not the work asked.
    throttled: u64,
    /// Other 4xx answers: a full license's refusal (expected in checkout), a heartbeat's
    /// lease gone (never expected: it would measure refusals, not heartbeats).
    refused: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
    /// What the first error was (the request, and the server's status and body or the
    /// transport's failure), so that a run that had one says which.
    first_error: Option<String>,
}

impl Measured {
    /// Counts `other`'s requests and time in with these (percentiles need
    /// [`Measured::sorted`] after).
    fn add(&mut self, other: Measured) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.throttled += other.throttled;
        self.refused += other.refused;
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn sorted(mut self) -> Measured {
        self.latencies_us.sort_unstable();
        self
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// What to send after an answered request (a checkin after a checkout).
type Follow = Arc<dyn Fn(&Value, &Value) -> Option<(reqwest::Method, String, Value)> + Send + Sync>;

/// One request a connection makes next.
type Step =
    Box<dyn FnMut(&mut rand::rngs::StdRng) -> (reqwest::Method, String, Option<Value>) + Send>;

/// No request of the load waits longer than this past the end of the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Drives `connections` connections for `duration`, each looping over what `make` gives
/// it; a request counts as answered unless it failed in transport or answered 5xx.
/// The latencies come back unsorted ([`Measured::sorted`]).
async fn drive(
    bases: &[String],
    connections: usize,
    duration: Duration,
    make: impl Fn(usize) -> Step,
    follow: Option<Follow>,
) -> Measured {
    let deadline = Instant::now() + duration;
    let give_up = tokio::time::Instant::from_std(deadline + REQUEST_TIMEOUT);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut connection = Connection::new(&bases[c % bases.len()], give_up);
        let mut step = make(c);
        let follow = follow.clone();
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::default();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
            while Instant::now() < deadline {
                let (method, path, body) = step(&mut rng);
                let answer = connection
                    .timed(method, &path, body.as_ref(), &mut measured)
                    .await;
                let (Some(answer), Some(follow)) = (answer, &follow) else {
                    continue;
                };
                let answer = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                if let Some((method, path, body)) =
                    follow(body.as_ref().unwrap_or(&Value::Null), &answer)
                {
                    connection
                        .timed(method, &path, Some(&body), &mut measured)
                        .await;
                }
            }
            measured
        }));
    }
    let mut total = Measured::default();
    for task in tasks {
        if let Ok(m) = task.await {
            total.add(m);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// What one measurement drives: the servers, the request each connection makes next, and
/// what follows an answer.
struct Load {
    bases: Vec<String>,
    make: Box<dyn Fn(usize) -> Step + Send + Sync>,
    follow: Option<Follow>,
}

/// The longest one load is driven at a time.
const TURN: Duration = Duration::from_secs(2);
/// The pause after each turn, so that what a turn left to do in the background (the
/// checkpointer copying its writes) is done before the next load is measured.
const SETTLE: Duration = Duration::from_millis(250);

/// Drives each load for `duration` in all, in turns of at most `longest` (the first load,
/// the second, …, then the first again, with a [`SETTLE`] pause after each), so that the
/// machine's drift in speed (this VM's `/healthz` ranged from 35k to 80k/s within an
/// hour) falls on every load alike and their ratios hold. Answers one measurement per
/// load, in their order.
async fn measure_in_turns(
    loads: &[Load],
    connections: usize,
    duration: Duration,
    longest: Duration,
) -> Vec<Measured> {
    let turns = duration
        .as_millis()
        .div_ceil(longest.as_millis().max(1))
        .clamp(1, u128::from(u32::MAX));
    let turn = duration / u32::try_from(turns).unwrap_or(u32::MAX);
    let mut measured: Vec<Measured> = loads.iter().map(|_| Measured::default()).collect();
    for _ in 0..turns {
        for (load, total) in loads.iter().zip(&mut measured) {
            let this_turn = drive(
                &load.bases,
                connections,
                turn,
                &load.make,
                load.follow.clone(),
            )
            .await;
            total.add(this_turn);
            tokio::time::sleep(SETTLE).await;
        }
    }
    measured.into_iter().map(Measured::sorted).collect()
}

/// One connection of the load generator. To a plain `http://` server it is one kept-alive
/// HTTP/1.1 connection of hyper's own, polled by the task that sends on it and opened
/// again after a failure: the load shares the machine's cores with the server it
/// measures, and reqwest (a pool, a URL parsed, a timer and a second task per request)
/// cost about twice as much CPU per request, taken from the server. `https://` servers
/// are reached through reqwest.
struct Connection {
    /// No request waits past this.
    give_up: tokio::time::Instant,
    transport: Transport,
}

enum Transport {
    Plain {
        /// `host:port` to connect to.
        address: String,
        host: axum::http::HeaderValue,
        /// The base URL's path, before every request's (empty at the root).
        prefix: String,
        open: Option<PlainConnection>,
    },
    Tls {
        client: reqwest::Client,
        base: String,
    },
}

type PlainBody = http_body_util::Full<axum::body::Bytes>;

struct PlainConnection {
    sender: hyper::client::conn::http1::SendRequest<PlainBody>,
    /// Whether `driver` finished (the connection ended).
    ended: bool,
    /// Reads and writes the socket; it is polled alongside each request.
    driver: std::pin::Pin<
        Box<
            hyper::client::conn::http1::Connection<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                PlainBody,
            >,
        >,
    >,
}

/// Why a request of the load got no answer (counted as an error, not told apart).
struct NoAnswer;

impl Connection {
    fn new(base: &str, give_up: tokio::time::Instant) -> Connection {
        let plain = reqwest::Url::parse(base)
            .ok()
            .filter(|url| url.scheme() == "http")
            .and_then(|url| {
                let name = url.host_str()?;
                let port = url.port_or_known_default()?;
                let host = match url.port() {
                    Some(port) => format!("{name}:{port}"),
                    None => name.to_string(),
                };
                Some((
                    format!("{name}:{port}"),
                    axum::http::HeaderValue::from_str(&host).ok()?,
                    url.path().trim_end_matches('/').to_string(),
                ))
            });
        let transport = match plain {
            Some((address, host, prefix)) => Transport::Plain {
                address,
                host,
                prefix,
                open: None,
            },
            None => Transport::Tls {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap_or_default(),
                base: base.to_string(),
            },
        };
        Connection { give_up, transport }
    }

    /// Sends one request and records its latency and outcome in `measured`; answers the
    /// body of a success.
    async fn timed(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        measured: &mut Measured,
    ) -> Option<axum::body::Bytes> {
        let started = Instant::now();
        let body = body.and_then(|b| serde_json::to_vec(b).ok());
        let request = format!("{method} {path}");
        let result =
            tokio::time::timeout_at(self.give_up, self.transport.send(method, path, body)).await;
        measured.requests += 1;
        let answer = match result {
            Ok(Ok((status, answer))) if !status.is_server_error() => {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    measured.throttled += 1;
                } else if status.is_client_error() {
                    measured.refused += 1;
                }
                status.is_success().then_some(answer)
            }
            failed => {
                measured.errors += 1;
                if measured.first_error.is_none() {
                    measured.first_error = Some(match failed {
                        Ok(Ok((status, answer))) => format!(
                            "{request}: {status} {}",
                            String::from_utf8_lossy(&answer[..answer.len().min(300)])
                        ),
                        Ok(Err(NoAnswer)) => {
                            format!("{request}: no answer (the connection failed)")
                        }
                        Err(_) => format!("{request}: no answer before the run's end"),
                    });
                }
                // A connection that failed or timed out is opened anew.
                if let Transport::Plain { open, .. } = &mut self.transport {
                    *open = None;
                }
                None
            }
        };
        measured
            .latencies_us
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        answer
    }
}

impl Transport {
    async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, axum::body::Bytes), NoAnswer> {
        match self {
            Transport::Tls { client, base } => {
                let mut request = client.request(method, format!("{base}{path}"));
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request.send().await.map_err(|_| NoAnswer)?;
                let status = response.status();
                Ok((status, response.bytes().await.map_err(|_| NoAnswer)?))
            }
            Transport::Plain {
                address,
                host,
                prefix,
                open,
            } => {
                // A kept connection the server has closed since (it answered
                // `Connection: close`, or timed out an idle one) is opened again: nothing
                // was sent on it yet.
                let mut kept = open.take();
                if let Some(connection) = &mut kept {
                    if connection.ready().await.is_err() {
                        kept = None;
                    }
                }
                let connection = match kept {
                    Some(connection) => open.insert(connection),
                    None => {
                        let mut connection = PlainConnection::open(address).await?;
                        connection.ready().await?;
                        open.insert(connection)
                    }
                };
                let mut request = axum::http::Request::builder()
                    .method(method)
                    .uri(format!("{prefix}{path}"))
                    .header(axum::http::header::HOST, host.clone());
                if body.is_some() {
                    request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                }
                let request = request
                    .body(PlainBody::new(body.unwrap_or_default().into()))
                    .map_err(|_| NoAnswer)?;
                connection.answer(request).await
            }
        }
    }
}

impl PlainConnection {
    async fn open(address: &str) -> Result<PlainConnection, NoAnswer> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| NoAnswer)?;
        stream.set_nodelay(true).map_err(|_| NoAnswer)?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|_| NoAnswer)?;
        Ok(PlainConnection {
            sender,
            ended: false,
            driver: Box::pin(driver),
        })
    }

    /// Waits until the connection can take a request (the last answer's end read).
    async fn ready(&mut self) -> Result<(), NoAnswer> {
        let PlainConnection {
            sender,
            driver,
            ended,
        } = self;
        while_driven(driver, ended, sender.ready())
            .await?
            .map_err(|_| NoAnswer)
    }

    async fn answer(
        &mut self,
        request: axum::http::Request<PlainBody>,
    ) -> Result<(StatusCode, axum::body::Bytes), NoAnswer> {
        use http_body_util::BodyExt;
        let PlainConnection {
            sender,
            driver,
            ended,
        } = self;
        let response = while_driven(driver, ended, sender.send_request(request)).await?;
        let (parts, body) = response.map_err(|_| NoAnswer)?.into_parts();
        let body = while_driven(driver, ended, body.collect()).await?;
        Ok((parts.status, body.map_err(|_| NoAnswer)?.to_bytes()))
    }
}

/// Runs `work` while `driver` reads and writes its connection; `NoAnswer` should the
/// connection end before `work` can finish. `ended` records that it did: a finished
/// driver is not polled again.
async fn while_driven<D, F>(
    driver: &mut std::pin::Pin<Box<D>>,
    ended: &mut bool,
    work: F,
) -> Result<F::Output, NoAnswer>
where
    D: std::future::Future + ?Sized,
    F: std::future::Future,
{
    let mut work = std::pin::pin!(work);
    if !*ended {
        tokio::select! {
            biased;
            done = &mut work => return Ok(done),
            _ = driver.as_mut() => *ended = true,
        }
    }
    // What the connection delivered before it ended (an answer with `Connection:
    // close`) may still finish the work.
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match work.as_mut().poll(cx) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => Err(NoAnswer),
        })
    })
    .await
}

struct Servers {
    /// The processes started (none with `--url`).
    children: Vec<Child>,
    bases: Vec<String>,
    token: String,
    _dir: Option<tempfile::TempDir>,
    pg_database: Option<(String, String)>,
    /// The store the servers share, for seeding it directly (`None` with `--url`: the
    /// bench then takes its leases through the API).
    database_url: Option<String>,
    /// What the summary calls the store.
    store: String,
}

impl Servers {
    /// Servers `--url` named: the bench reaches them through their API only.
    fn remote(&self) -> bool {
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
async fn connect_servers(args: &BenchArgs) -> anyhow::Result<Servers> {
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

async fn start_servers(args: &BenchArgs) -> anyhow::Result<Servers> {
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
async fn wait_until_up(process: &mut Child, url: &str) -> anyhow::Result<()> {
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

struct Fleet {
    application_id: String,
    licenses: Vec<(String, String, i64)>,
}

async fn create_licenses(
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
async fn over_allocations(servers: &Servers, fleet: &Fleet) -> anyhow::Result<u64> {
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
        anyhow::Ok((leasehold, ceiling, measured.next(), over))
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
    let (measured, ceiling, baseline, over) = outcome?;
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
    });
    println!("{summary}");
    Ok(())
}

/// The scenario's load on Leasehold's servers.
fn scenario_load(
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
fn ceiling_load(bases: &[String]) -> Load {
    Load {
        bases: bases.to_vec(),
        make: Box::new(|_| Box::new(|_| (reqwest::Method::GET, "/healthz".to_string(), None))),
        follow: None,
    }
}

/// Seeds `count` live leases spread over the licenses, straight into the ledger through
/// the store's `import_leases` (through the client API a million would take many
/// minutes). Answers (lease id, key, instance).
async fn seed_leases(
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
async fn take_leases(
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
async fn delete_fleet(servers: &Servers, fleet: &Fleet) -> anyhow::Result<()> {
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
fn peak_rss_mib(servers: &Servers) -> Option<f64> {
    servers
        .children
        .iter()
        .filter_map(|child| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
            let kib: f64 = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        })
        .reduce(f64::max)
}

// ---- the baseline: a minimal axum service over Redis ----

/// Takes a seat: drop expired holders, refresh a holder's own seat, or add one if free.
const TAKE: &str = r"
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
const HEARTBEAT: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) >= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0";

#[derive(Clone)]
struct Baseline {
    redis: redis::aio::ConnectionManager,
    seats: Arc<HashMap<String, i64>>,
    prefix: String,
}

#[derive(Deserialize, Serialize)]
struct SeatRequest {
    license: String,
    holder: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn baseline_take(State(b): State<Baseline>, Json(r): Json<SeatRequest>) -> StatusCode {
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

async fn baseline_release(State(b): State<Baseline>, Json(r): Json<SeatRequest>) -> StatusCode {
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

async fn baseline_heartbeat(State(b): State<Baseline>, Json(r): Json<SeatRequest>) -> StatusCode {
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
    listen: std::net::SocketAddr,
    /// Redis it keeps its seats in (from the environment, so that a password in it is
    /// not on a command line).
    #[arg(long, env = "LEASEHOLD_BENCH_REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// The prefix of its Redis keys.
    #[arg(long)]
    prefix: String,
    /// A JSON file of each license's seats total, `{"license id": seats}`.
    #[arg(long)]
    seats: PathBuf,
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
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis baseline's service, started in its own process, its holders seeded.
struct BaselineService {
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
    base: String,
    redis: redis::aio::ConnectionManager,
    /// Of every key the bench writes in Redis.
    prefix: String,
    /// The licenses' ids.
    ids: Arc<Vec<String>>,
    /// How many holders were seeded for heartbeats (the heartbeat scenario), if any.
    seeded: Option<usize>,
}

impl BaselineService {
    async fn start(args: &BenchArgs, fleet: &Fleet) -> anyhow::Result<BaselineService> {
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
    fn load(&self, machines_per_license: usize) -> Load {
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
    async fn clean_up(mut self) {
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
async fn seed_baseline_holders(
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each request `{}` and closes the connection after it.
    async fn closing_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{address}")
    }

    /// A server that answers `{}` and notes, as `name`, each request in the order they come.
    async fn noting_server(name: usize, log: Arc<std::sync::Mutex<Vec<usize>>>) -> String {
        let note = move || {
            log.lock().expect("the log").push(name);
            async { "{}" }
        };
        let app = Router::new().route("/", axum::routing::get(note));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn loads_are_measured_in_turns_that_add_up_to_the_duration() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut loads = Vec::new();
        for name in 0..2 {
            loads.push(Load {
                bases: vec![noting_server(name, log.clone()).await],
                make: Box::new(|_| Box::new(|_| (reqwest::Method::GET, "/".to_string(), None))),
                follow: None,
            });
        }
        let measured = measure_in_turns(
            &loads,
            2,
            Duration::from_secs(1),
            Duration::from_millis(400),
        )
        .await;
        // 1 s in turns of at most 400 ms: three turns of 333 ms each, the loads in order.
        let log = log.lock().expect("the log").clone();
        let mut turns = log.clone();
        turns.dedup();
        assert_eq!(turns, [0, 1, 0, 1, 0, 1]);
        assert_eq!(measured.len(), 2);
        for (name, m) in measured.iter().enumerate() {
            let answered = log.iter().filter(|n| **n == name).count() as u64;
            assert!(answered > 0);
            assert_eq!((m.requests, m.errors), (answered, 0));
            assert_eq!(m.latencies_us.len() as u64, answered);
            assert!(m.latencies_us.is_sorted(), "percentiles need them sorted");
            assert!(m.seconds >= 0.99, "{} s", m.seconds);
        }
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        let mut connection = Connection::new(&closing_server().await, soon());
        let mut measured = Measured::default();
        for _ in 0..3 {
            let answer = connection
                .timed(reqwest::Method::GET, "/healthz", None, &mut measured)
                .await;
            assert_eq!(answer.as_deref(), Some(&b"{}"[..]));
        }
        assert_eq!((measured.requests, measured.errors), (3, 0));
        assert_eq!(measured.latencies_us.len(), 3);
    }

    #[test]
    fn a_base_url_gives_the_address_host_and_path() {
        let soon = tokio::time::Instant::now();
        let parts = |base: &str| match Connection::new(base, soon).transport {
            Transport::Plain {
                address,
                host,
                prefix,
                ..
            } => Some((
                address,
                host.to_str().unwrap_or_default().to_string(),
                prefix,
            )),
            Transport::Tls { .. } => None,
        };
        let owned = |a: &str, h: &str, p: &str| Some((a.into(), h.into(), p.into()));
        assert_eq!(
            parts("http://127.0.0.1:8080"),
            owned("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        assert_eq!(
            parts("http://licenses.example.com"),
            owned("licenses.example.com:80", "licenses.example.com", "")
        );
        assert_eq!(
            parts("http://[::1]:9000/leasehold"),
            owned("[::1]:9000", "[::1]:9000", "/leasehold")
        );
        assert_eq!(parts("https://licenses.example.com"), None);
    }

    #[tokio::test]
    async fn a_server_that_is_gone_counts_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut connection = Connection::new(&format!("http://127.0.0.1:{port}"), soon());
        let mut measured = Measured::default();
        for _ in 0..2 {
            let body = json!({"key": "k"});
            let answer = connection
                .timed(
                    reqwest::Method::POST,
                    "/v1/client/validate",
                    Some(&body),
                    &mut measured,
                )
                .await;
            assert!(answer.is_none());
        }
        assert_eq!((measured.requests, measured.errors), (2, 2));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_as_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        // Accepts, reads, and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let give_up = tokio::time::Instant::now() + Duration::from_millis(300);
        let mut connection = Connection::new(&format!("http://{address}"), give_up);
        let mut measured = Measured::default();
        let answer = connection
            .timed(reqwest::Method::GET, "/healthz", None, &mut measured)
            .await;
        assert!(answer.is_none());
        assert_eq!((measured.requests, measured.errors), (1, 1));
    }
}
