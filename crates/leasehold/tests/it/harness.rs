//! Starts the server in-process on port 0 against a fresh store, and talks to it
//! through `reqwest` as any client would.

use leasehold_server::{AppState, Settings};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests make their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("LEASEHOLD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A new PostgreSQL database and a data directory for nodes to share: their store
/// arguments, the database's name (for [`drop_pg_database`]) and the directory.
pub async fn shared_pg_store() -> (Vec<String>, String, tempfile::TempDir) {
    let (url, name) = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = vec![
        "--database-url".to_string(),
        url,
        "--data-dir".to_string(),
        dir.path().display().to_string(),
    ];
    (store, name, dir)
}

/// A new, uniquely named, empty PostgreSQL database; answers its URL.
pub async fn fresh_pg_database() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("lh_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL for tests");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    (format!("{base}/{name}"), name)
}

pub async fn drop_pg_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        conn.close().await.ok();
    }
}

pub struct TestServer {
    pub backend: Backend,
    pub base: String,
    pub state: AppState,
    pub database_url: String,
    pg_name: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the background sweeper parked, for tests that sweep by hand or need
    /// lapsed leases to stay until a checkout meets them.
    pub async fn without_sweeper(backend: Backend) -> TestServer {
        Self::start_with(backend, |settings| {
            settings.sweep_interval = std::time::Duration::from_secs(3600)
        })
        .await
    }

    /// Starts with the test defaults (no client rate limit), adjusted by `adjust`.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        // The server's warnings and errors go to the test's output, which nextest shows
        // when the test fails (LEASEHOLD_LOG overrides the filter).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg_name) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("leasehold.db").display()),
                None,
            ),
            Backend::Postgres => {
                let (url, name) = fresh_pg_database().await;
                (url, Some(name))
            }
        };
        let mut settings = Settings::new(dir.path().to_path_buf());
        settings.database_url = Some(database_url.clone());
        settings.client_rate_limit = 0;
        adjust(&mut settings);
        let state = leasehold_server::open_state(&settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(leasehold_server::serve(
            listener,
            state.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let server = TestServer {
            backend,
            base,
            state,
            database_url,
            pg_name,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server did not become healthy");
    }

    /// A new workspace with its owner; answers the owner's API.
    pub async fn workspace(&self, name: &str) -> Api {
        let token = leasehold_server::create_workspace(
            &self.state,
            name,
            "owner@example.com",
            "correct horse battery",
            "USD",
        )
        .await
        .unwrap();
        self.api(&token)
    }

    pub fn api(&self, token: &str) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(token.to_string()),
            client: reqwest::Client::new(),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: None,
            client: reqwest::Client::new(),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(name) = self.pg_name.take() {
            drop(self.state);
            drop_pg_database(&name).await;
        }
    }
}

/// A JSON client for one token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// POST expecting `expected`; answers the body.
    pub async fn ok_post(&self, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, value) = self.post(path, body).await;
        assert_eq!(status, expected, "POST {path}: {value}");
        value
    }

    pub async fn ok_get(&self, path: &str) -> Value {
        let (status, value) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {value}");
        value
    }

    /// Every page of `path` (a query, to which `&limit=` and `&cursor=` are added) read
    /// `limit` at a time.
    pub async fn all_pages(&self, path: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                Some(c) => {
                    self.ok_get(&format!("{path}&limit={limit}&cursor={c}"))
                        .await
                }
                None => self.ok_get(&format!("{path}&limit={limit}")).await,
            };
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return items,
            }
        }
    }

    /// The license's `seats_used`, as the admin API reads it.
    pub async fn seats_used(&self, license_id: &str) -> Value {
        self.ok_get(&format!("/v1/licenses/{license_id}")).await["seats_used"].clone()
    }

    /// The license's audit events of one action (the first 200, newest first).
    pub async fn events(&self, license_id: &str, action: &str) -> Vec<Value> {
        let page = self
            .ok_get(&format!(
                "/v1/events?license_id={license_id}&action={action}&limit=200"
            ))
            .await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn application(&self, name: &str) -> String {
        let app = self
            .ok_post(
                "/v1/applications",
                serde_json::json!({"name": name, "vendor": "Vendor", "deployment_model": "on_premise"}),
                StatusCode::CREATED,
            )
            .await;
        app["id"].as_str().unwrap().to_string()
    }

    /// A dedicated license with `seats` seats on a new application; answers the license.
    pub async fn license(&self, seats: i64) -> Value {
        let app = self.application("App").await;
        self.ok_post(
            "/v1/licenses",
            serde_json::json!({
                "application_id": app, "licensed_to": "Acme", "type": "subscription",
                "seat_model": "dedicated", "seats_total": seats
            }),
            StatusCode::CREATED,
        )
        .await
    }

    /// A license on a new application with these extra fields; answers the license.
    pub async fn license_with(&self, fields: Value) -> Value {
        let app = self.application("App").await;
        let mut body = serde_json::json!({
            "application_id": app, "licensed_to": "Acme", "type": "subscription", "seats_total": 1
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.ok_post("/v1/licenses", body, StatusCode::CREATED)
            .await
    }

    /// A token of `role` in this API's workspace.
    pub async fn token(&self, role: &str) -> Api {
        let created = self
            .ok_post(
                "/v1/tokens",
                serde_json::json!({"name": role, "role": role}),
                StatusCode::CREATED,
            )
            .await;
        Api {
            token: Some(created["token"].as_str().unwrap().to_string()),
            ..self.clone()
        }
    }
}

/// The one license row's `key_enc` and `key_hash`, read straight from the database.
pub async fn stored_key(s: &TestServer) -> (Vec<u8>, String) {
    let sql = "SELECT key_enc, key_hash FROM licenses";
    match s.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.database_url).await.unwrap();
            sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
            sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
        }
    }
}

/// A member signed in to the console over HTTP, as a browser would be.
pub struct ConsoleSession {
    /// Follows no redirects, so that a form's answer (303) can be checked.
    pub client: reqwest::Client,
    /// `lh_session=…`, for the `Cookie` header.
    pub cookie: String,
    /// The session's token for its forms (`_csrf`).
    pub csrf: String,
}

impl TestServer {
    /// Signs `email` in to the console, and reads the session's form token off a page.
    pub async fn console_session(&self, email: &str, password: &str) -> ConsoleSession {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = client
            .post(format!("{}/login", self.base))
            .header(reqwest::header::COOKIE, "lh_login_csrf=t")
            .form(&[("_csrf", "t"), ("email", email), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let cookie = signed_in
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("lh_session="))
            .and_then(|v| v.split(';').next())
            .map(|session| format!("lh_session={session}"))
            .expect("a session cookie");
        let page = client
            .get(format!("{}/", self.base))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = page
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page carries the session's CSRF token")
            .to_string();
        ConsoleSession {
            client,
            cookie,
            csrf,
        }
    }
}

/// The day `days` from today (UTC; negative: before).
pub fn in_days(days: i64) -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() + chrono::TimeDelta::days(days)
}

pub fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

/// Generates a SQLite and a PostgreSQL test for each `async fn name(&TestServer)`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::harness::{Backend, TestServer};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = TestServer::start(Backend::Sqlite).await;
                super::$name(&server).await;
                server.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let server = TestServer::start(Backend::Postgres).await;
                super::$name(&server).await;
                server.stop().await;
            }
        }
    )*};
}
pub(crate) use both_stores;

/// Generates a SQLite and a PostgreSQL test for each `async fn name(store_args:
/// Vec<String>)` that runs `leasehold` processes: the arguments of a fresh store (a data
/// directory and, for PostgreSQL, a new database, dropped afterwards).
macro_rules! process_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(vec!["--data-dir".into(), dir.path().display().to_string()]).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let dir = tempfile::tempdir().unwrap();
                let (url, name) = $crate::harness::fresh_pg_database().await;
                super::$name(vec![
                    "--data-dir".into(),
                    dir.path().display().to_string(),
                    "--database-url".into(),
                    url,
                ])
                .await;
                $crate::harness::drop_pg_database(&name).await;
            }
        }
    )*};
}
pub(crate) use process_stores;

/// `leasehold serve` as a real process, for tests that kill it.
pub struct ServerProcess {
    pub base: String,
    pub child: std::process::Child,
}

impl ServerProcess {
    pub async fn start(store_args: &[String]) -> ServerProcess {
        let server = Self::spawn(store_args);
        server.ready().await;
        server
    }

    /// Starts `leasehold serve` without waiting for it (to start several at once).
    pub fn spawn(store_args: &[String]) -> ServerProcess {
        Self::spawn_logging(store_args, None)
    }

    /// Starts `leasehold serve`, its log (stdout and stderr) going to `log` if given.
    // The child is waited for in `kill_9` and in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn spawn_logging(store_args: &[String], log: Option<&std::path::Path>) -> ServerProcess {
        let output = || match log {
            Some(path) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => std::process::Stdio::null(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--client-rate-limit",
                "0",
            ])
            .args(store_args)
            .env_remove("LEASEHOLD_MASTER_KEY")
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap();
        ServerProcess {
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    pub async fn ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("leasehold serve did not come up at {}", self.base);
    }

    pub fn api(&self, token: &str) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(token.to_string()),
            client: reqwest::Client::new(),
        }
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `leasehold init` on a store; answers the owner token.
pub fn init_store(store_args: &[String], workspace: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args([
            "init",
            "--workspace",
            workspace,
            "--email",
            "owner@example.com",
        ])
        .args(store_args)
        .env_remove("LEASEHOLD_MASTER_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "correct horse battery").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

/// Polls `condition` every 50 ms for up to `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
