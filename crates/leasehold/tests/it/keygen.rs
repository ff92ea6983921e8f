//! The Keygen-compatible API (DESIGN §9), proved with a client that is not ours: a small
//! program built on `keygen-rs` 0.14 (`tests/keygen-client`) runs its flows against a
//! real server on both stores, and what it does shows up in the native API and the
//! console. Raw HTTP tests check the signature of every kind of answer, the slug forms,
//! the public address setting, the refusals, and facade activations racing native ones.

use crate::concurrency::execute;
use crate::harness::{both_stores, id, Api, Backend, TestServer};
use base64::Engine;
use ed25519_dalek::Verifier;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

both_stores!(
    keygen_rs_activates_pings_checks_out_and_deactivates_a_machine,
    keygen_rs_takes_and_checks_in_a_floating_seat,
    keygen_rs_is_refused_past_the_seats,
    keygen_rs_refusals_are_keygens_and_signed,
    every_answer_under_keygen_is_signed,
    files_last_no_longer_than_the_seat,
    facade_and_native_activations_race_without_over_allocation,
);

/// The test client, built once per run (`scripts/test` builds it before the tests, so
/// this finds it built) into the tests' target directory.
fn client_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest_dir.join("../../target"))
                .join("keygen-client");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--locked", "--manifest-path"])
                .arg(manifest_dir.join("tests/keygen-client/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "building the keygen-rs test client failed"
            );
            target.join("debug/keygen-client")
        })
        .clone()
}

/// A license the client runs against, and what it is configured with.
struct Setup {
    license: Value,
    key: String,
    public_key_hex: String,
}

async fn setup(admin: &Api, fields: Value) -> Setup {
    let license = admin.license_with(fields).await;
    let key = license["key"].as_str().unwrap().to_string();
    let public = admin.ok_get(&format!("/v1/public-key?key={key}")).await;
    let public_key_hex = public["public_key_hex"].as_str().unwrap().to_string();
    assert_eq!(public_key_hex.len(), 64, "{public}");
    Setup {
        license,
        key,
        public_key_hex,
    }
}

/// One run of the test client.
struct Run {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Run {
    fn start(s: &TestServer, setup: &Setup, scenario: &str, env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(client_binary());
        command
            .env("FACADE_URL", format!("{}/keygen", s.base))
            .env("LICENSE_KEY", &setup.key)
            .env("PUBLIC_KEY_HEX", &setup.public_key_hex)
            .env(
                "APPLICATION_ID",
                setup.license["application_id"].as_str().unwrap(),
            )
            .env("SCENARIO", scenario)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the keygen client starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Run {
            child,
            stdin,
            lines,
        }
    }

    /// The client's next checkpoint, which must be `step`.
    async fn expect(&mut self, step: &str) -> Value {
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(120), self.lines.next_line())
                .await
                .expect("the keygen client answers within two minutes")
                .unwrap();
        let Some(line) = line else {
            let status = self.child.wait().await.unwrap();
            panic!("the keygen client ended ({status}) before step {step} (its stderr is above)");
        };
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["step"], step, "{value}");
        value
    }

    async fn go_on(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for `done` and a clean exit.
    async fn finish(mut self) {
        self.expect("done").await;
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "the keygen client failed: {status}");
    }
}

/// Runs a scenario that has no checkpoints of its own to completion.
async fn run(s: &TestServer, setup: &Setup, scenario: &str, env: &[(&str, &str)]) {
    Run::start(s, setup, scenario, env).finish().await;
}

/// The license's active seats, as the native admin API lists them.
async fn active_seats(admin: &Api, license_id: &str) -> Vec<Value> {
    admin
        .ok_get(&format!(
            "/v1/licenses/{license_id}/seats?active=true&limit=200"
        ))
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// A console page, as the workspace's owner sees it.
async fn console_page(s: &TestServer, path: &str) -> String {
    let session = s
        .console_session("owner@example.com", "correct horse battery")
        .await;
    session
        .client
        .get(format!("{}{path}", s.base))
        .header(reqwest::header::COOKIE, &session.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn keygen_rs_activates_pings_checks_out_and_deactivates_a_machine(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated", "seats_total": 2})).await;
    let lid = id(&setup.license);
    let mut run = Run::start(s, &setup, "dedicated", &[("FINGERPRINT", "kg-laptop-1")]);
    let activated = run.expect("activated").await;
    assert_eq!(activated["license_id"], lid.as_str());
    // The machine is an activation like any other: in the ledger, the audit log, the
    // native protocol and the console.
    let seats = active_seats(&admin, &lid).await;
    assert_eq!(seats.len(), 1, "{seats:?}");
    assert_eq!(seats[0]["id"], activated["machine_id"]);
    assert_eq!(seats[0]["kind"], "activation");
    assert_eq!(seats[0]["fingerprint"], "kg-laptop-1");
    assert_eq!(admin.seats_used(&lid).await, 1);
    assert_eq!(admin.events(&lid, "seat.activated").await.len(), 1);
    let (status, native) = s
        .anonymous()
        .post(
            "/v1/client/validate",
            json!({"key": setup.key, "fingerprint": "kg-laptop-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(native["code"], "VALID", "{native}");
    assert!(
        seats[0]["identifier"].is_string(),
        "the hostname names it: {seats:?}"
    );
    let page = console_page(s, &format!("/licenses/{lid}")).await;
    assert!(page.contains(activated["machine_id"].as_str().unwrap()));
    run.go_on().await;
    run.expect("deactivated").await;
    run.finish().await;
    assert_eq!(admin.seats_used(&lid).await, 0);
    assert!(active_seats(&admin, &lid).await.is_empty());
    let released = admin.events(&lid, "seat.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
}

async fn keygen_rs_takes_and_checks_in_a_floating_seat(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let setup = setup(
        &admin,
        json!({"seat_model": "concurrent", "seats_total": 1}),
    )
    .await;
    let lid = id(&setup.license);
    let ttl = setup.license["policy"]["lease_ttl_s"]
        .as_i64()
        .unwrap()
        .to_string();
    let mut run = Run::start(
        s,
        &setup,
        "floating",
        &[("FINGERPRINT", "kg-desk-1"), ("LEASE_TTL_S", &ttl)],
    );
    let activated = run.expect("activated").await;
    // A lease of no OS user with the one instance `keygen`, holding the only seat.
    let seats = active_seats(&admin, &lid).await;
    assert_eq!(seats.len(), 1, "{seats:?}");
    assert_eq!(seats[0]["id"], activated["machine_id"]);
    assert_eq!(seats[0]["kind"], "lease");
    assert_eq!(seats[0]["instances"], json!(["keygen"]));
    let (status, refused) = s
        .anonymous()
        .post(
            "/v1/client/leases",
            json!({"key": setup.key, "fingerprint": "other", "os_user": "u", "instance": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "NO_SEATS");
    let page = console_page(s, &format!("/licenses/{lid}")).await;
    assert!(page.contains(activated["machine_id"].as_str().unwrap()));
    run.go_on().await;
    run.expect("deactivated").await;
    run.finish().await;
    assert_eq!(admin.seats_used(&lid).await, 0);
    let released = admin.events(&lid, "seat.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["after"]["release_reason"], "checkin");
}

async fn keygen_rs_is_refused_past_the_seats(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated", "seats_total": 2})).await;
    let lid = id(&setup.license);
    let mut run = Run::start(
        s,
        &setup,
        "limit",
        &[("SEATS", "2"), ("FINGERPRINT_PREFIX", "kg-full")],
    );
    let full = run.expect("full").await;
    run.finish().await;
    let mut ids: Vec<Value> = active_seats(&admin, &lid)
        .await
        .iter()
        .map(|seat| seat["id"].clone())
        .collect();
    let mut granted = full["machine_ids"].as_array().unwrap().clone();
    let key = |v: &Value| v.as_str().unwrap().to_string();
    ids.sort_by_key(key);
    granted.sort_by_key(key);
    assert_eq!(ids, granted);
    assert_eq!(admin.seats_used(&lid).await, 2);
}

async fn keygen_rs_refusals_are_keygens_and_signed(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated", "seats_total": 2})).await;
    run(s, &setup, "service-ping", &[]).await;
    // The key the client is configured with is the one the console shows.
    assert!(console_page(s, "/applications")
        .await
        .contains(&setup.public_key_hex));
    // An unknown key: 401 LICENSE_INVALID, signed by the only workspace.
    let unknown = Setup {
        key: "NOT-A-KEY-ANYONE-HAS".into(),
        license: setup.license.clone(),
        public_key_hex: setup.public_key_hex.clone(),
    };
    run(s, &unknown, "unknown-key", &[]).await;
    // Another key than the workspace's: every answer fails its check.
    let other = s.workspace("Other").await;
    let other = self::setup(&other, json!({"seat_model": "dedicated"})).await;
    let wrong = Setup {
        key: setup.key.clone(),
        license: setup.license.clone(),
        public_key_hex: other.public_key_hex.clone(),
    };
    run(s, &wrong, "wrong-key", &[]).await;
    // A suspended license: 403 LICENSE_SUSPENDED.
    let lid = id(&setup.license);
    let (status, body) = admin
        .patch(
            &format!("/v1/licenses/{lid}"),
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    run(s, &setup, "suspended", &[]).await;
    assert_eq!(admin.seats_used(&lid).await, 0);
}

/// A client's check of a Keygen signature: over the method, the path and query, the
/// host it asked for, and the answer's date and digest.
fn keygen_signed(
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    target: (&str, &str, &str),
    public_key_hex: &str,
) -> bool {
    let (method, path_and_query, host) = target;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(signature), Some(date), Some(digest)) = (
        header("keygen-signature"),
        header("keygen-date"),
        header("keygen-digest"),
    ) else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    if digest != format!("sha-256={}", b64.encode(sha2::Sha256::digest(body))) {
        return false;
    }
    let Some(value) = signature
        .split("signature=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
    else {
        return false;
    };
    let signed = format!(
        "(request-target): {method} {path_and_query}\nhost: {host}\ndate: {date}\ndigest: {digest}"
    );
    let key: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&public_key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let Ok(raw) = b64.decode(value) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&raw) else {
        return false;
    };
    key.verify(signed.as_bytes(), &signature).is_ok()
}

/// What the facade answered.
struct Answer {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
    /// Signed for the key the request was checked against, over what the client asked.
    signed: bool,
}

/// Sends a request to the facade; the answer's signature is checked against
/// `public_key_hex` for the request as sent (`host` overrides the `Host` header).
async fn facade(
    s: &TestServer,
    method: reqwest::Method,
    path_and_query: &str,
    license_key: Option<&str>,
    body: Option<&str>,
    public_key_hex: &str,
) -> Answer {
    let host = s.base.trim_start_matches("http://").to_string();
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("{}{path_and_query}", s.base));
    if let Some(key) = license_key {
        request = request.header("authorization", format!("License {key}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/vnd.api+json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let method = method.as_str().to_ascii_lowercase();
    let signed = keygen_signed(
        &headers,
        &bytes,
        (&method, path_and_query, &host),
        public_key_hex,
    );
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
        signed,
    }
}

fn new_machine(license_id: &str, fingerprint: &str) -> String {
    json!({"data": {"type": "machines", "attributes": {"fingerprint": fingerprint, "hostname": "host"},
        "relationships": {"license": {"data": {"type": "licenses", "id": license_id}}}}})
    .to_string()
}

fn validate_key(key: &str, fingerprint: &str) -> String {
    json!({"meta": {"key": key, "scope": {"fingerprint": fingerprint}}}).to_string()
}

async fn every_answer_under_keygen_is_signed(s: &TestServer) {
    use reqwest::Method;
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated", "seats_total": 1, "policy": {"self_service_releases_per_month": 1}})).await;
    let (key, hex, lid) = (
        setup.key.as_str(),
        setup.public_key_hex.as_str(),
        id(&setup.license),
    );
    let slug = s.state.store.only_workspace().await.unwrap().unwrap().slug;
    // The service, unknown routes and methods, a malformed body, a NUL in the path.
    let ping = facade(s, Method::GET, "/keygen/v1/ping", None, None, hex).await;
    assert_eq!(ping.status, StatusCode::OK);
    assert!(ping.signed);
    assert_eq!(ping.headers["keygen-version"], "1.8");
    let unknown = facade(
        s,
        Method::GET,
        "/keygen/v1/nothing-here?x=1",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body["errors"][0]["code"], "NOT_FOUND",
        "{}",
        unknown.body
    );
    assert!(unknown.signed);
    let method = facade(s, Method::PUT, "/keygen/v1/machines", Some(key), None, hex).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(method.signed);
    let malformed = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some("{nope"),
        hex,
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.signed);
    let nul = facade(
        s,
        Method::GET,
        "/keygen/v1/machines/a%00b",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(nul.status, StatusCode::NOT_FOUND);
    assert!(nul.signed);
    // Validation on all three path forms, signed over the path as sent.
    for path in [
        "/keygen/v1/licenses/actions/validate-key".to_string(),
        format!("/keygen/{slug}/v1/licenses/actions/validate-key"),
        format!("/keygen/v1/accounts/{slug}/licenses/actions/validate-key"),
    ] {
        let answer = facade(
            s,
            Method::POST,
            &path,
            Some(key),
            Some(&validate_key(key, "fp-a")),
            hex,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert_eq!(answer.body["meta"]["code"], "NO_MACHINE", "{}", answer.body);
        assert_eq!(answer.body["data"]["id"], lid.as_str());
        assert_eq!(answer.body["data"]["attributes"]["maxMachines"], 1);
        assert!(answer.signed, "{path}");
    }
    // An unknown key: 401 with the header Keygen clients send, 200 NOT_FOUND without it.
    let unknown_key = "UNKNOWN-KEY-0000";
    let refused = facade(
        s,
        Method::POST,
        "/keygen/v1/licenses/actions/validate-key",
        Some(unknown_key),
        Some(&validate_key(unknown_key, "fp-a")),
        hex,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["errors"][0]["code"], "LICENSE_INVALID");
    assert!(refused.signed);
    let not_found = facade(
        s,
        Method::POST,
        "/keygen/v1/licenses/actions/validate-key",
        None,
        Some(&validate_key(unknown_key, "fp-a")),
        hex,
    )
    .await;
    assert_eq!(not_found.status, StatusCode::OK);
    assert_eq!(not_found.body["meta"]["code"], "NOT_FOUND");
    assert!(not_found.body["data"].is_null());
    assert!(not_found.signed);
    // A machine: activated (201), the same again (422 FINGERPRINT_TAKEN), another past
    // the seats (422 MACHINE_LIMIT_EXCEEDED), deleted (204, signed over no body).
    let created = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine(&lid, "fp-a")),
        hex,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.signed);
    assert_eq!(
        created.body["data"]["attributes"]["requireHeartbeat"],
        false
    );
    let taken = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine(&lid, "fp-a")),
        hex,
    )
    .await;
    assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(taken.body["errors"][0]["code"], "FINGERPRINT_TAKEN");
    let full = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine(&lid, "fp-b")),
        hex,
    )
    .await;
    assert_eq!(full.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(full.body["errors"][0]["code"], "MACHINE_LIMIT_EXCEEDED");
    assert_eq!(
        full.body["errors"][0]["detail"],
        "machine count has exceeded maximum allowed for license (1)"
    );
    assert!(full.signed);
    let other_license = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine("someone-elses", "fp-c")),
        hex,
    )
    .await;
    assert_eq!(other_license.status, StatusCode::FORBIDDEN);
    let deleted = facade(
        s,
        Method::DELETE,
        "/keygen/v1/machines/fp-a",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.signed);
    let gone = facade(
        s,
        Method::GET,
        "/keygen/v1/machines/fp-a",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // The month's one release is used: the next is 422 DEACTIVATIONS_LIMIT_EXCEEDED, never 429.
    let again = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine(&lid, "fp-b")),
        hex,
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    let limited = facade(
        s,
        Method::DELETE,
        &format!(
            "/keygen/v1/machines/{}",
            again.body["data"]["id"].as_str().unwrap()
        ),
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(
        limited.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        limited.body
    );
    assert_eq!(
        limited.body["errors"][0]["code"],
        "DEACTIVATIONS_LIMIT_EXCEEDED"
    );
    assert_eq!(
        limited.body["errors"][0]["meta"]["leaseholdCode"],
        "RELEASE_LIMIT"
    );
    assert!(limited.signed);
    // A scope the store could not hold is the client's mistake, not the server's.
    let nul = json!({"meta": {"key": key, "scope": {"fingerprint": "a\u{0}b"}}}).to_string();
    let refused = facade(
        s,
        Method::POST,
        "/keygen/v1/licenses/actions/validate-key",
        Some(key),
        Some(&nul),
        hex,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.signed);
    // The header's key authenticates: it validates only its own license.
    let other_key = facade(
        s,
        Method::POST,
        "/keygen/v1/licenses/actions/validate-key",
        Some(key),
        Some(&validate_key("SOME-OTHER-KEY", "fp-a")),
        hex,
    )
    .await;
    assert_eq!(
        other_key.status,
        StatusCode::FORBIDDEN,
        "{}",
        other_key.body
    );
    // Another OS user's lease on a machine is not that machine's Keygen seat.
    let floating = self::setup(
        &admin,
        json!({"seat_model": "concurrent", "seats_total": 2}),
    )
    .await;
    let (status, native) = s
        .anonymous()
        .post("/v1/client/leases", json!({"key": floating.key, "fingerprint": "shared-vm", "os_user": "alice", "instance": "1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{native}");
    let by_fingerprint = facade(
        s,
        Method::GET,
        "/keygen/v1/machines/shared-vm",
        Some(&floating.key),
        None,
        hex,
    )
    .await;
    assert_eq!(
        by_fingerprint.status,
        StatusCode::NOT_FOUND,
        "{}",
        by_fingerprint.body
    );
    let by_id = facade(
        s,
        Method::GET,
        &format!("/keygen/v1/machines/{}", id(&native)),
        Some(&floating.key),
        None,
        hex,
    )
    .await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
    assert_eq!(
        by_id.body["data"]["attributes"]["metadata"]["osUser"],
        "alice"
    );
    // Another workspace's slug signs with that workspace's key.
    let other = s.workspace("Other").await;
    let other = self::setup(&other, json!({"seat_model": "dedicated"})).await;
    let other_slug = "other";
    assert!(s
        .state
        .store
        .workspace_by_slug(other_slug)
        .await
        .unwrap()
        .is_some());
    let theirs = facade(
        s,
        Method::GET,
        &format!("/keygen/{other_slug}/v1/nothing"),
        None,
        None,
        &other.public_key_hex,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert!(theirs.signed);
    // With two workspaces, a refusal before the key's license is read is still signed by
    // the key's workspace: a suspended license's 403 here.
    let suspended = self::setup(&admin, json!({"seat_model": "dedicated"})).await;
    let (status, body) = admin
        .patch(
            &format!("/v1/licenses/{}", id(&suspended.license)),
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(&suspended.key),
        Some(&new_machine(&id(&suspended.license), "fp-s")),
        hex,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["errors"][0]["code"], "LICENSE_SUSPENDED");
    assert!(refused.signed);
    // The account form takes the workspace's id as well as its slug.
    let workspace_id = s
        .state
        .store
        .workspace_by_slug(&slug)
        .await
        .unwrap()
        .unwrap()
        .id;
    let by_id = facade(
        s,
        Method::POST,
        &format!("/keygen/v1/accounts/{workspace_id}/licenses/actions/validate-key"),
        Some(key),
        Some(&validate_key(key, "fp-b")),
        hex,
    )
    .await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
    assert!(by_id.signed);
    // A key of one workspace under another's slug is an unknown key there.
    let crossed = facade(
        s,
        Method::GET,
        &format!("/keygen/{other_slug}/v1/licenses/{lid}/machines"),
        Some(key),
        None,
        &other.public_key_hex,
    )
    .await;
    assert_eq!(crossed.status, StatusCode::UNAUTHORIZED);
    assert!(crossed.signed);
}

async fn files_last_no_longer_than_the_seat(s: &TestServer) {
    use reqwest::Method;
    let admin = s.workspace("Acme").await;
    let setup = setup(
        &admin,
        json!({"seat_model": "concurrent", "seats_total": 2}),
    )
    .await;
    let (key, hex, lid) = (
        setup.key.as_str(),
        setup.public_key_hex.as_str(),
        id(&setup.license),
    );
    let lease_ttl = setup.license["policy"]["lease_ttl_s"].as_i64().unwrap();
    let created = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(key),
        Some(&new_machine(&lid, "fp-a")),
        hex,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let attributes = &created.body["data"]["attributes"];
    assert_eq!(attributes["requireHeartbeat"], true);
    assert_eq!(attributes["heartbeatDuration"], lease_ttl);
    assert_eq!(attributes["heartbeatStatus"], "ALIVE");
    // A machine file of a lease lasts as long as the lease.
    let file = facade(
        s,
        Method::POST,
        "/keygen/v1/machines/fp-a/actions/check-out?encrypt=1&ttl=86400",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    assert!(file.signed);
    let ttl = file.body["data"]["attributes"]["ttl"].as_i64().unwrap();
    assert!(ttl > 0 && ttl <= lease_ttl, "{}", file.body);
    assert_eq!(
        file.body["data"]["attributes"]["algorithm"],
        "aes-256-gcm+ed25519"
    );
    assert!(file.body["data"]["attributes"]["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN MACHINE FILE-----\n"));
    // A license file would vouch for a floating seat no one holds: refused.
    let file = facade(
        s,
        Method::POST,
        &format!("/keygen/v1/licenses/{lid}/actions/check-out?ttl=86400"),
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(
        file.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        file.body
    );
    assert_eq!(file.body["errors"][0]["code"], "CHECKOUT_NOT_ALLOWED");
    assert!(file.signed);
    // A dedicated license's file: its policy's time at most; asked for as a download,
    // the certificate itself.
    let dedicated = self::setup(
        &admin,
        json!({"seat_model": "dedicated", "policy": {"license_file_ttl_s": 7200}}),
    )
    .await;
    let did = id(&dedicated.license);
    let file = facade(
        s,
        Method::POST,
        &format!("/keygen/v1/licenses/{did}/actions/check-out?ttl=86400"),
        Some(&dedicated.key),
        None,
        hex,
    )
    .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    assert_eq!(
        file.body["data"]["attributes"]["algorithm"],
        "base64+ed25519"
    );
    assert_eq!(file.body["data"]["attributes"]["ttl"], 7200);
    let download = reqwest::Client::new()
        .get(format!(
            "{}/keygen/v1/licenses/{did}/actions/check-out?ttl=null",
            s.base
        ))
        .header("authorization", format!("License {}", dedicated.key))
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(download
        .text()
        .await
        .unwrap()
        .starts_with("-----BEGIN LICENSE FILE-----\n"));
    // Another license's file is not this key's to take.
    let theirs = facade(
        s,
        Method::POST,
        &format!("/keygen/v1/licenses/{lid}/actions/check-out"),
        Some(&dedicated.key),
        None,
        hex,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    // Keygen's bounds and Leasehold's one algorithm.
    let short = facade(
        s,
        Method::POST,
        "/keygen/v1/machines/fp-a/actions/check-out?ttl=60",
        Some(key),
        None,
        hex,
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.body["errors"][0]["code"], "CHECKOUT_TTL_INVALID");
    let rsa = facade(
        s,
        Method::POST,
        &format!("/keygen/v1/licenses/{did}/actions/check-out?algorithm=rsa-2048-pkcs1%2Bsign"),
        Some(&dedicated.key),
        None,
        hex,
    )
    .await;
    assert_eq!(rsa.status, StatusCode::BAD_REQUEST);
    assert_eq!(rsa.body["errors"][0]["code"], "CHECKOUT_ALGORITHM_INVALID");
    assert!(rsa.signed);
    // Where the license lends seats, a machine file borrows the seat for its time.
    let lending = self::setup(
        &admin,
        json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"max_borrow_days": 3}}),
    )
    .await;
    let lending_id = id(&lending.license);
    let created = facade(
        s,
        Method::POST,
        "/keygen/v1/machines",
        Some(&lending.key),
        Some(&new_machine(&lending_id, "fp-l")),
        hex,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let file = facade(
        s,
        Method::POST,
        "/keygen/v1/machines/fp-l/actions/check-out?encrypt=1&ttl=86400",
        Some(&lending.key),
        None,
        hex,
    )
    .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let ttl = file.body["data"]["attributes"]["ttl"].as_i64().unwrap();
    assert!(ttl > lease_ttl && ttl <= 86400, "{}", file.body);
    let seats = active_seats(&admin, &lending_id).await;
    assert_eq!(seats.len(), 1, "{seats:?}");
    assert_eq!(seats[0]["kind"], "borrow");
    assert_eq!(admin.events(&lending_id, "seat.borrowed").await.len(), 1);
    // Deleting the machine returns the borrow.
    let deleted = facade(
        s,
        Method::DELETE,
        "/keygen/v1/machines/fp-l",
        Some(&lending.key),
        None,
        hex,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(admin.seats_used(&lending_id).await, 0);
}

/// Facade activations racing native ones for 4 seats: 4 granted, the rest refused in
/// each protocol's words, and the counter equals the active ledger rows.
async fn facade_and_native_activations_race_without_over_allocation(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated", "seats_total": 4})).await;
    let lid = id(&setup.license);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let base = s.base.clone();
            let key = setup.key.clone();
            let lid = lid.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                if i % 2 == 0 {
                    let response = client
                        .post(format!("{base}/keygen/v1/machines"))
                        .header("authorization", format!("License {key}"))
                        .header("content-type", "application/vnd.api+json")
                        .body(new_machine(&lid, &format!("kg-{i}")))
                        .send()
                        .await
                        .unwrap();
                    match response.status() {
                        StatusCode::CREATED => true,
                        StatusCode::UNPROCESSABLE_ENTITY => {
                            let body: Value = response.json().await.unwrap();
                            assert_eq!(body["errors"][0]["code"], "MACHINE_LIMIT_EXCEEDED");
                            false
                        }
                        other => panic!("facade activation answered {other}"),
                    }
                } else {
                    let response = client
                        .post(format!("{base}/v1/client/activations"))
                        .json(&json!({"key": key, "fingerprint": format!("n-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    match response.status() {
                        StatusCode::CREATED => true,
                        StatusCode::CONFLICT => false,
                        other => panic!("native activation answered {other}"),
                    }
                }
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        if task.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 4);
    assert_eq!(admin.seats_used(&lid).await, 4);
    assert_eq!(active_seats(&admin, &lid).await.len(), 4);
}

/// A lease that lapsed: its ping is 422 MACHINE_HEARTBEAT_DEAD and its validation
/// HEARTBEAT_DEAD until the sweeper ends it (parked here).
async fn keygen_rs_sees_a_dead_heartbeat(backend: Backend) {
    let s = TestServer::without_sweeper(backend).await;
    let admin = s.workspace("Acme").await;
    let setup = setup(
        &admin,
        json!({"seat_model": "concurrent", "seats_total": 1}),
    )
    .await;
    let mut run = Run::start(&s, &setup, "dead", &[("FINGERPRINT", "kg-dead-1")]);
    let activated = run.expect("activated").await;
    let ago = chrono::Utc::now().timestamp_millis() - 1000;
    execute(
        &s,
        "UPDATE seats SET expires_at = $1, sweep_at = $2 WHERE id = $3",
        ago,
        ago,
        activated["machine_id"].as_str().unwrap(),
    )
    .await;
    run.go_on().await;
    run.finish().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_rs_sees_a_dead_heartbeat_sqlite() {
    keygen_rs_sees_a_dead_heartbeat(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_rs_sees_a_dead_heartbeat_postgres() {
    keygen_rs_sees_a_dead_heartbeat(Backend::Postgres).await;
}

/// Behind a proxy that rewrites the host and the path, the configured public address
/// is what answers are signed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_answers_are_signed_for_the_public_address() {
    let s = TestServer::start_with(Backend::Sqlite, |settings| {
        settings.keygen_public_url = Some("https://licenses.example.com/kg/".parse().unwrap());
    })
    .await;
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated"})).await;
    let response = reqwest::get(format!("{}/keygen/v1/ping", s.base))
        .await
        .unwrap();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let public = ("get", "/kg/v1/ping", "licenses.example.com");
    assert!(keygen_signed(
        &headers,
        &bytes,
        public,
        &setup.public_key_hex
    ));
    let host = s.base.trim_start_matches("http://").to_string();
    let direct = ("get", "/keygen/v1/ping", host.as_str());
    assert!(!keygen_signed(
        &headers,
        &bytes,
        direct,
        &setup.public_key_hex
    ));
    s.stop().await;
}

/// Past the rate limit: 429 with `Retry-After` and the `X-RateLimit-*` headers Keygen
/// clients read, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rate_limit_the_answer_carries_keygens_headers() {
    let s =
        TestServer::start_with(Backend::Sqlite, |settings| settings.client_rate_limit = 1).await;
    let admin = s.workspace("Acme").await;
    let setup = setup(&admin, json!({"seat_model": "dedicated"})).await;
    let body = validate_key(&setup.key, "fp");
    let mut limited = None;
    for _ in 0..500 {
        let answer = facade(
            &s,
            reqwest::Method::POST,
            "/keygen/v1/licenses/actions/validate-key",
            Some(&setup.key),
            Some(&body),
            &setup.public_key_hex,
        )
        .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the rate limit answered 429");
    assert!(limited.signed);
    for header in [
        "retry-after",
        "x-ratelimit-window",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(
            limited.headers.contains_key(header),
            "{header}: {:?}",
            limited.headers
        );
    }
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    s.stop().await;
}
