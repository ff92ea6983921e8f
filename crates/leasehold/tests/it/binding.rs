//! Answers bound to their request (DESIGN §11): every signed answer echoes the request's
//! nonce, op, fingerprint and OS user and the server's time; signatures are
//! domain-separated; the SDK and `leasehold run` refuse a replayed answer and one to a
//! request a proxy altered; a floating license's offline file lasts no longer than its
//! lease.

use crate::harness::{both_stores, id, Api, TestServer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ed25519_dalek::Verifier;
use leasehold_proto::{signed_message, ANSWER_CONTEXT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

both_stores!(
    every_answer_echoes_its_request_and_is_signed_over_the_answer_context,
    a_malformed_nonce_is_refused_before_anything_is_done,
    a_floating_licenses_file_lasts_no_longer_than_its_lease,
    a_replayed_answer_never_starts_a_program,
    a_proxy_that_rewrites_the_fingerprint_is_caught,
);

/// A raw client call with an optional nonce header: the status, the body as JSON, and
/// whether its signature verifies (over the answer context) with `public`.
async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    nonce: Option<&str>,
    body: Option<Value>,
    public: &ed25519_dalek::VerifyingKey,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", s.base));
    if let Some(nonce) = nonce {
        request = request.header("leasehold-nonce", nonce);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let header = response.headers()["leasehold-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = response.bytes().await.unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("ed25519=").unwrap())
        .unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&raw).unwrap();
    assert!(
        public
            .verify(&signed_message(ANSWER_CONTEXT, &bytes), &signature)
            .is_ok(),
        "{path}: signed over the answer context"
    );
    assert!(
        public.verify(&bytes, &signature).is_err(),
        "{path}: not over the bare body"
    );
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn workspace_key(admin: &Api, key: &str) -> ed25519_dalek::VerifyingKey {
    let public = admin.ok_get(&format!("/v1/public-key?key={key}")).await;
    leasehold_client::parse_public_key(public["public_key"].as_str().unwrap()).unwrap()
}

fn assert_bound(
    answer: &Value,
    nonce: Option<&str>,
    op: &str,
    fp: Option<&str>,
    user: Option<&str>,
) {
    assert_eq!(answer["nonce"], json!(nonce), "{answer}");
    assert_eq!(answer["op"], op, "{answer}");
    assert_eq!(answer["fingerprint"], json!(fp), "{answer}");
    assert_eq!(answer["os_user"], json!(user), "{answer}");
    let at = chrono::DateTime::parse_from_rfc3339(answer["at"].as_str().unwrap()).unwrap();
    let skew = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds();
    assert!(skew.abs() < 60, "`at` is the server's time: {answer}");
}

async fn every_answer_echoes_its_request_and_is_signed_over_the_answer_context(s: &TestServer) {
    use reqwest::Method;
    let admin = s.workspace("Acme").await;
    let dedicated = admin.license(1).await;
    let dkey = dedicated["key"].as_str().unwrap();
    let floating = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let fkey = floating["key"].as_str().unwrap();
    let public = workspace_key(&admin, dkey).await;

    // validate: the nonce in the body, then in the header.
    let (status, answer) = call(
        s,
        Method::POST,
        "/v1/client/validate",
        None,
        Some(json!({"key": dkey, "nonce": "n-body", "fingerprint": "m1", "os_user": "ann"})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["code"], "NOT_ACTIVATED");
    assert_bound(&answer, Some("n-body"), "validate", Some("m1"), Some("ann"));
    let (_, answer) = call(
        s,
        Method::POST,
        "/v1/client/validate",
        Some("n-head"),
        Some(json!({"key": dkey})),
        &public,
    )
    .await;
    assert_bound(&answer, Some("n-head"), "validate", None, None);

    // activate: the activation's fingerprint is the echoed one, written once.
    let (status, answer) = call(
        s,
        Method::POST,
        "/v1/client/activations",
        Some("n-1"),
        Some(json!({"key": dkey, "fingerprint": "m1"})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_bound(&answer, Some("n-1"), "activate", Some("m1"), None);
    let activation: leasehold_client::Activation = serde_json::from_value(answer.clone()).unwrap();
    assert_eq!(activation.fingerprint, "m1");
    // An error is bound too: the license is full.
    let (status, answer) = call(
        s,
        Method::POST,
        "/v1/client/activations",
        Some("n-2"),
        Some(json!({"key": dkey, "fingerprint": "m2"})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["code"], "NO_SEATS");
    assert_bound(&answer, Some("n-2"), "activate", Some("m2"), None);
    let (status, answer) = call(
        s,
        Method::GET,
        &format!("/v1/client/license-file?key={dkey}&fingerprint=m1&nonce=n-3"),
        None,
        None,
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_bound(&answer, Some("n-3"), "license_file", Some("m1"), None);
    let (status, answer) = call(
        s,
        Method::DELETE,
        "/v1/client/activations/m1",
        Some("n-4"),
        Some(json!({"key": dkey})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_bound(&answer, Some("n-4"), "deactivate", Some("m1"), None);

    // lease, heartbeat, checkin.
    let (status, lease) = call(
        s,
        Method::POST,
        "/v1/client/leases",
        Some("n-5"),
        Some(json!({"key": fkey, "fingerprint": "m1", "os_user": "ann", "instance": "i1"})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_bound(&lease, Some("n-5"), "lease", Some("m1"), Some("ann"));
    let lease_id = id(&lease);
    let (status, answer) = call(
        s,
        Method::POST,
        &format!("/v1/client/leases/{lease_id}/heartbeat"),
        Some("n-6"),
        Some(json!({"key": fkey, "instance": "i1"})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_bound(&answer, Some("n-6"), "heartbeat", None, None);
    let (status, answer) = call(
        s,
        Method::DELETE,
        &format!("/v1/client/leases/{lease_id}/instances/i1"),
        Some("n-7"),
        Some(json!({"key": fkey})),
        &public,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["released"], true);
    assert_bound(&answer, Some("n-7"), "checkin", None, None);

    // Answers made before a handler runs: a malformed body, an unknown key (the server's
    // own key signs those; its public half is not the workspace's, so check the shape).
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/client/leases", s.base))
        .header("leasehold-nonce", "n-8")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert!(raw.headers().contains_key("leasehold-signature"));
    let answer: Value = raw.json().await.unwrap();
    assert_bound(&answer, Some("n-8"), "lease", None, None);
    let (status, answer) = s
        .anonymous()
        .post(
            "/v1/client/validate",
            json!({"key": "NO-SUCH-KEY", "nonce": "n-9", "fingerprint": "m9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["code"], "NOT_FOUND");
    assert_bound(&answer, Some("n-9"), "validate", Some("m9"), None);

    // Without a nonce a license's validation stays one body all through a second, its
    // signature remembered (the benchmark's validate path); with one it is not kept.
    let bodies: Vec<Bytes> = {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let response = reqwest::Client::new()
                .post(format!("{}/v1/client/validate", s.base))
                .json(&json!({"key": fkey}))
                .send()
                .await
                .unwrap();
            bodies.push(response.bytes().await.unwrap());
        }
        bodies
    };
    let answer: Value = serde_json::from_slice(&bodies[1]).unwrap();
    assert_bound(&answer, None, "validate", None, None);
    assert!(s.state.signers.remembers(&bodies[1]));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/client/validate", s.base))
        .header("leasehold-nonce", "unique-1")
        .json(&json!({"key": fkey}))
        .send()
        .await
        .unwrap();
    let body = response.bytes().await.unwrap();
    assert!(
        !s.state.signers.remembers(&body),
        "a nonce'd answer is not kept"
    );
}

async fn a_malformed_nonce_is_refused_before_anything_is_done(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let floating = admin
        .license_with(json!({"seat_model": "concurrent", "seats_total": 1}))
        .await;
    let (key, lid) = (floating["key"].as_str().unwrap(), id(&floating));
    let long = "n".repeat(129);
    for nonce in ["", "tab\there", long.as_str()] {
        let (status, answer) = s
            .anonymous()
            .post(
                "/v1/client/leases",
                json!({"key": key, "nonce": nonce, "fingerprint": "m1", "os_user": "u", "instance": "i"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{nonce:?}: {answer}");
        assert_eq!(answer["error"]["details"]["field"], "nonce");
        assert_eq!(answer["op"], "lease");
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/client/leases", s.base))
        .header("leasehold-nonce", "")
        .json(&json!({"key": key, "fingerprint": "m1", "os_user": "u", "instance": "i"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(admin.seats_used(&lid).await, 0, "no seat was taken");
}

async fn a_floating_licenses_file_lasts_no_longer_than_its_lease(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let floating = admin
        .license_with(
            json!({"seat_model": "concurrent", "seats_total": 1, "policy": {"lease_ttl_s": 120}}),
        )
        .await;
    let (key, lid) = (floating["key"].as_str().unwrap(), id(&floating));
    let public = workspace_key(&admin, key).await;
    let c = s.anonymous();
    // The attack of the review: take a lease, fetch its file, check in, again with
    // another machine. Each file ends with its lease; none comes without one.
    for machine in ["m1", "m2", "m3"] {
        let lease = c
            .ok_post(
                "/v1/client/leases",
                json!({"key": key, "fingerprint": machine, "os_user": "u", "instance": "i"}),
                StatusCode::CREATED,
            )
            .await;
        let expires_at =
            chrono::DateTime::parse_from_rfc3339(lease["expires_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
        let file = c
            .ok_get(&format!(
                "/v1/client/license-file?key={key}&fingerprint={machine}"
            ))
            .await;
        let payload = leasehold_client::verify_license_file(
            &file.to_string(),
            &public,
            Some(machine),
            chrono::Utc::now(),
        )
        .unwrap();
        assert!(
            payload.valid_until <= expires_at,
            "{machine}: the file ends with its lease ({} > {expires_at})",
            payload.valid_until
        );
        assert!(payload.valid_until > chrono::Utc::now());
        let (status, answer) = c
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/client/leases/{}/instances/i", id(&lease)),
                Some(json!({"key": key})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (status, answer) = c
            .get(&format!(
                "/v1/client/license-file?key={key}&fingerprint={machine}"
            ))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "checked in: {answer}");
        assert_eq!(answer["error"]["code"], "NOT_ACTIVATED");
    }
    assert_eq!(admin.seats_used(&lid).await, 0);
}

/// What an [`Interposer`] does with the requests it is sent.
#[derive(Clone)]
enum Mode {
    /// Forwards each request and remembers the last answer per path.
    Record,
    /// Answers each path with the answer it remembered, without asking the server.
    Replay,
    /// Forwards each request with its JSON body's `fingerprint` replaced.
    Rewrite(String),
}

/// A hostile HTTP server between an application and the license server, on loopback: it
/// records and replays genuine signed answers, or rewrites the machine named in requests.
struct Interposer {
    base: String,
    mode: Arc<Mutex<Mode>>,
}

struct Inner {
    upstream: String,
    mode: Arc<Mutex<Mode>>,
    recorded: Mutex<HashMap<String, (u16, HeaderMap, Bytes)>>,
    http: reqwest::Client,
}

impl Interposer {
    async fn start(upstream: &str) -> Interposer {
        let mode = Arc::new(Mutex::new(Mode::Record));
        let inner = Arc::new(Inner {
            upstream: upstream.to_string(),
            mode: mode.clone(),
            recorded: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(interpose).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Interposer { base, mode }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

async fn interpose(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = inner.mode.lock().unwrap().clone();
    let path = uri.path().to_string();
    if let Mode::Replay = mode {
        let recorded = inner.recorded.lock().unwrap().get(&path).cloned();
        return match recorded {
            Some((status, headers, body)) => {
                (AxumStatus::from_u16(status).unwrap(), headers, body).into_response()
            }
            None => AxumStatus::BAD_GATEWAY.into_response(),
        };
    }
    let body = match &mode {
        Mode::Rewrite(fingerprint) => match serde_json::from_slice::<Value>(&body) {
            Ok(mut json) if json.get("fingerprint").is_some() => {
                json["fingerprint"] = json!(fingerprint);
                Bytes::from(serde_json::to_vec(&json).unwrap())
            }
            _ => body,
        },
        _ => body,
    };
    let target = format!(
        "{}{}",
        inner.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = inner
        .http
        .request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            target,
        )
        .body(body);
    for name in ["authorization", "content-type", "leasehold-nonce"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.to_str().unwrap());
        }
    }
    let Ok(answer) = request.send().await else {
        return AxumStatus::BAD_GATEWAY.into_response();
    };
    let status = answer.status().as_u16();
    let mut kept = HeaderMap::new();
    for name in ["content-type", "leasehold-signature"] {
        if let Some(value) = answer.headers().get(name) {
            kept.insert(
                axum::http::HeaderName::from_static(name),
                value.to_str().unwrap().parse().unwrap(),
            );
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    if let Mode::Record = mode {
        inner
            .recorded
            .lock()
            .unwrap()
            .insert(path, (status, kept.clone(), bytes.clone()));
    }
    (AxumStatus::from_u16(status).unwrap(), kept, bytes).into_response()
}

fn run_through(base: &str, key: &str, public_key: &str, salt: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args([
            "run",
            "--server",
            base,
            "--key",
            key,
            "--public-key",
            public_key,
        ])
        .args(["--app-salt", salt, "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// The review's replay attack: a local server that serves answers captured once lets
/// `leasehold run` start the program with any key, or a revoked one. Refused now (77),
/// naming the tampering.
async fn a_replayed_answer_never_starts_a_program(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license(2).await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let public = admin.ok_get(&format!("/v1/public-key?key={key}")).await;
    let public = public["public_key"].as_str().unwrap();
    let interposer = Interposer::start(&s.base).await;
    let recorded = run_through(&interposer.base, key, public, "replay-test");
    assert_eq!(
        recorded.status.code(),
        Some(0),
        "through an honest relay: {}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    interposer.set(Mode::Replay);
    let (status, body) = admin
        .patch(&format!("/v1/licenses/{lid}"), json!({"status": "revoked"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for key in [key, "TOTALLY-BOGUS-KEY"] {
        let replayed = run_through(&interposer.base, key, public, "replay-test");
        let stderr = String::from_utf8_lossy(&replayed.stderr);
        assert_eq!(replayed.status.code(), Some(77), "{key}: {stderr}");
        assert!(
            stderr.contains("replayed or tampered") && stderr.contains("nonce"),
            "{key}: {stderr}"
        );
    }
    // The SDK alike.
    let sdk = leasehold_client::Client::new(&interposer.base, key)
        .unwrap()
        .with_public_key(public)
        .unwrap();
    let refused = sdk.validate(Some("any"), Some("u")).await.unwrap_err();
    assert!(
        matches!(refused, leasehold_client::Error::Tampered(_)),
        "{refused}"
    );
}

/// The review's steering attack: a proxy that rewrites the fingerprint to a machine that
/// holds a seat gets genuinely signed VALID answers; the answer names that machine, so
/// the SDK and `leasehold run` refuse it.
async fn a_proxy_that_rewrites_the_fingerprint_is_caught(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license(1).await;
    let (key, lid) = (license["key"].as_str().unwrap(), id(&license));
    let public = admin.ok_get(&format!("/v1/public-key?key={key}")).await;
    let public = public["public_key"].as_str().unwrap();
    s.anonymous()
        .ok_post(
            "/v1/client/activations",
            json!({"key": key, "fingerprint": "HOLDER"}),
            StatusCode::CREATED,
        )
        .await;
    let interposer = Interposer::start(&s.base).await;
    interposer.set(Mode::Rewrite("HOLDER".into()));
    let steered = run_through(&interposer.base, key, public, "steer-test");
    let stderr = String::from_utf8_lossy(&steered.stderr);
    assert_eq!(steered.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("another machine's fingerprint"), "{stderr}");
    let sdk = leasehold_client::Client::new(&interposer.base, key)
        .unwrap()
        .with_public_key(public)
        .unwrap();
    let refused = sdk.validate(Some("NOT-HOLDER"), None).await.unwrap_err();
    assert!(
        matches!(refused, leasehold_client::Error::Tampered(_)),
        "{refused}"
    );
    // Straight to the server, the same machine is told it holds no seat; asked of the key
    // alone, the SDK does not count a node-locked license as valid for this machine.
    let direct = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(public)
        .unwrap();
    let answer = direct.validate(Some("NOT-HOLDER"), None).await.unwrap();
    assert_eq!(
        (answer.valid, answer.code.as_str()),
        (false, "NOT_ACTIVATED")
    );
    let answer = direct.validate(None, None).await.unwrap();
    assert_eq!(
        (answer.valid, answer.code.as_str()),
        (false, "NOT_ACTIVATED")
    );
    let answer = direct.validate(Some("HOLDER"), None).await.unwrap();
    assert!(answer.valid);
    assert_eq!(admin.seats_used(&lid).await, 1);
}

both_stores!(answers_are_signed_and_tampering_shows,);

async fn answers_are_signed_and_tampering_shows(s: &TestServer) {
    let admin = s.workspace("Acme").await;
    let license = admin.license(1).await;
    let key = license["key"].as_str().unwrap();
    let public = admin.ok_get(&format!("/v1/public-key?key={key}")).await;
    assert_eq!(public["algorithm"], "ed25519");
    let by_token = admin.ok_get("/v1/public-key").await;
    assert_eq!(
        by_token["public_key"], public["public_key"],
        "the same key by token"
    );
    let public_key =
        leasehold_client::parse_public_key(public["public_key"].as_str().unwrap()).unwrap();

    let response = reqwest::Client::new()
        .post(format!("{}/v1/client/activations", s.base))
        .json(&json!({"key": key, "fingerprint": "m1"}))
        .send()
        .await
        .unwrap();
    let header = response.headers()["leasehold-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.bytes().await.unwrap().to_vec();
    assert!(
        !s.state.signers.remembers(&body),
        "an activation's answer is signed, not remembered: it is not answered twice"
    );
    let signature = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("ed25519=").unwrap())
        .unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    let answer_context =
        |bytes: &[u8]| leasehold_proto::signed_message(leasehold_proto::ANSWER_CONTEXT, bytes);
    assert!(
        public_key
            .verify(&answer_context(&body), &signature)
            .is_ok(),
        "the exact body verifies, after the answer context"
    );
    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'm').unwrap();
    tampered[at] = b'n';
    assert!(
        public_key
            .verify(&answer_context(&tampered), &signature)
            .is_err(),
        "a changed body does not"
    );

    // Errors are signed too, and the SDK checks every answer.
    let sdk = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(public["public_key"].as_str().unwrap())
        .unwrap();
    let holder = leasehold_client::Holder {
        fingerprint: "m2".into(),
        os_user: "ann".into(),
        identifier: None,
    };
    let full = sdk.activate(&holder).await.unwrap_err();
    assert_eq!(full.code(), Some("NO_SEATS"));

    // A validation is checked to the whole second, so one license's answer is the same
    // body all through a second and its signature is signed once and remembered. Each
    // answer still verifies (the SDK checks) and shows the license as it is now: a freed
    // seat shows at once (the body changes, so its signature is a new one).
    let taken = sdk.validate(None, None).await.unwrap();
    assert_eq!(taken.checked_at.timestamp_subsec_nanos(), 0);
    let again = sdk.validate(None, None).await.unwrap();
    assert_eq!(taken.license.as_ref().unwrap().seats_used, 1);
    assert_eq!(again.license.as_ref().unwrap().seats_used, 1);
    sdk.deactivate("m1").await.unwrap();
    let freed = sdk.validate(None, None).await.unwrap();
    assert_eq!(freed.license.as_ref().unwrap().seats_used, 0);
    assert_eq!(freed.checked_at.timestamp_subsec_nanos(), 0);
    let validation = reqwest::Client::new()
        .post(format!("{}/v1/client/validate", s.base))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        validation.len() > 64,
        "larger than the small bodies remembered anyway"
    );
    assert!(s.state.signers.remembers(&validation));
    let other_key = leasehold_client::Client::new(&s.base, key)
        .unwrap()
        .with_public_key(
            &base64::engine::general_purpose::STANDARD.encode(
                ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
                    .verifying_key()
                    .to_bytes(),
            ),
        )
        .unwrap();
    assert!(matches!(
        other_key.validate(None, None).await,
        Err(leasehold_client::Error::BadSignature)
    ));
}
