//! Black-box test client for Leasehold's Keygen-compatible facade.
//!
//! It drives the real third-party `keygen-rs` 0.14.0 crate against the facade
//! and reports progress on stdout, one JSON object per line (the protocol the
//! integration tests rely on). Diagnostics go to stderr. Exit code 0 means
//! every expectation of the selected scenario held, 1 means one did not.
//!
//! Common env: `FACADE_URL` (no trailing slash), `LICENSE_KEY`,
//! `PUBLIC_KEY_HEX`, `APPLICATION_ID`, `SCENARIO`. Scenario-specific env is
//! documented on each scenario function.

use std::fmt::{Debug, Display};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use keygen_rs::config::{self, KeygenConfig};
use keygen_rs::errors::{ApiErrorKind, Error};
use keygen_rs::license::{
    License, LicenseCheckoutOpts, LicenseFileAlgorithm, LicenseValidationRequest,
    LicenseValidationResult,
};
use keygen_rs::license_file::LicenseFile;
use keygen_rs::machine::{Machine, MachineCheckoutOpts};
use keygen_rs::machine_file::MachineFile;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// How long to wait for a single heartbeat result from `Machine::monitor`.
const MONITOR_RESULT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the monitor task to stop after cancellation.
const MONITOR_JOIN_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// Failure helpers: every failed expectation ends up here, exit code 1.
// ---------------------------------------------------------------------------

fn fail(step: &str, msg: impl Display) -> ! {
    eprintln!("keygen-client: FAILED at step `{step}`: {msg}");
    std::process::exit(1)
}

fn check(cond: bool, step: &str, msg: impl FnOnce() -> String) {
    if !cond {
        fail(step, msg());
    }
}

fn progress(step: &str, msg: impl Display) {
    eprintln!("keygen-client: ok `{step}`: {msg}");
}

/// Unwraps an `Ok`, or fails naming the step, what was expected and the error.
fn ok<T>(result: Result<T, Error>, step: &str, expected: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => fail(step, format!("expected {expected}, got error: {err:?}")),
    }
}

/// Unwraps an `Err`, or fails naming the step, what was expected and the value.
fn err<T: Debug>(result: Result<T, Error>, step: &str, expected: &str) -> Error {
    match result {
        Ok(value) => fail(step, format!("expected {expected}, got Ok: {value:?}")),
        Err(err) => err,
    }
}

/// Asserts that `e` is a JSON:API error document (`Error::Api`) carrying
/// `code`, and (when given) that the HTTP status is `status`.
fn expect_api_error(e: &Error, step: &str, status: Option<u16>, code: &str) {
    let expected = match status {
        Some(s) => format!("API error {s} with code {code}"),
        None => format!("API error with code {code}"),
    };
    let Some(doc) = e.api_error() else {
        fail(
            step,
            format!("expected {expected}, got non-API error: {e:?}"),
        );
    };
    let got_status = doc.status().as_u16();
    if let Some(s) = status {
        check(got_status == s, step, || {
            format!("expected {expected}, got status {got_status}: {e:?}")
        });
    }
    check(e.is_api_code(code), step, || {
        format!("expected {expected}, got status {got_status} with other code(s): {e:?}")
    });
}

/// Reason keygen-rs gives when all signature headers are present and
/// well-formed and the body digest matches, but the Ed25519 signature does not
/// verify under the configured public key.
const SIGNATURE_MISMATCH: &str = "Signature verification failed";

/// Asserts that `e` is `Error::KeygenSignatureInvalid` caused by a signature
/// that does not verify (not by missing/malformed headers or a bad digest,
/// which would mean the server signed badly rather than with another key).
fn expect_signature_invalid(e: &Error, step: &str) -> String {
    match e {
        Error::KeygenSignatureInvalid { reason } if reason == SIGNATURE_MISMATCH => reason.clone(),
        other => fail(
            step,
            format!(
                "expected Error::KeygenSignatureInvalid {{ reason: {SIGNATURE_MISMATCH:?} }}, got: {other:?}"
            ),
        ),
    }
}

// ---------------------------------------------------------------------------
// Protocol helpers: stdout checkpoints and stdin pauses.
// ---------------------------------------------------------------------------

fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        fail(
            "emit",
            format!("could not write checkpoint {line} to stdout: {e:?}"),
        );
    }
}

/// Prints a pause checkpoint and waits for one line on stdin.
async fn pause(line: Value) {
    let step = line["step"].as_str().unwrap_or("pause").to_string();
    emit(line);
    let mut buf = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    match stdin.read_line(&mut buf).await {
        Ok(0) => fail(
            &step,
            "expected a line on stdin to continue after the pause checkpoint, got EOF",
        ),
        Ok(_) => {}
        Err(e) => fail(
            &step,
            format!("expected a line on stdin after the pause checkpoint, got I/O error: {e:?}"),
        ),
    }
}

// ---------------------------------------------------------------------------
// Environment.
// ---------------------------------------------------------------------------

fn env_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => fail("config", format!("env var {name} is empty")),
        Err(e) => fail("config", format!("env var {name} is required: {e}")),
    }
}

fn env_parse<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: Debug,
{
    let raw = env_var(name);
    match raw.parse() {
        Ok(v) => v,
        Err(e) => fail(
            "config",
            format!("env var {name}={raw:?} is invalid: {e:?}"),
        ),
    }
}

struct Ctx {
    key: String,
    pk_hex: String,
}

fn configure() -> Ctx {
    let api_url = env_var("FACADE_URL");
    check(!api_url.ends_with('/'), "config", || {
        format!("FACADE_URL must not end with '/' (keygen-rs would request `//v1/...`): {api_url}")
    });
    let key = env_var("LICENSE_KEY");
    let pk_hex = env_var("PUBLIC_KEY_HEX");
    let product = env_var("APPLICATION_ID");
    // The global config is required: MachineFile::verify / LicenseFile::verify
    // read the public key from it, and License::from_id uses it.
    ok(
        config::set_config(KeygenConfig {
            api_url,
            account: "ignored".to_string(),
            product,
            license_key: Some(key.clone()),
            public_key: Some(pk_hex.clone()),
            verify_keygen_signature: Some(true),
            ..KeygenConfig::default()
        }),
        "config",
        "set_config to succeed",
    );
    Ctx { key, pk_hex }
}

// ---------------------------------------------------------------------------
// Shared steps.
// ---------------------------------------------------------------------------

async fn validate_fp(fp: &str, step: &str) -> LicenseValidationResult {
    let req = LicenseValidationRequest::for_fingerprint(fp.to_string());
    let v = ok(
        keygen_rs::validate(&req).await,
        step,
        "validate-key to return a validation result",
    );
    progress(
        step,
        format!(
            "valid={} code={} detail={:?}",
            v.meta.valid, v.meta.code, v.meta.detail
        ),
    );
    v
}

fn expect_valid(v: &LicenseValidationResult, step: &str) {
    check(v.meta.valid && v.meta.code == "VALID", step, || {
        format!(
            "expected valid=true code=VALID, got valid={} code={} detail={:?}",
            v.meta.valid, v.meta.code, v.meta.detail
        )
    });
}

fn expect_invalid(v: &LicenseValidationResult, step: &str, codes: &[&str]) {
    check(
        !v.meta.valid && (codes.is_empty() || codes.contains(&v.meta.code.as_str())),
        step,
        || {
            format!(
                "expected valid=false with code in {codes:?} (empty = any), got valid={} code={} detail={:?}",
                v.meta.valid, v.meta.code, v.meta.detail
            )
        },
    );
}

/// The license resource from a validation, which must be present.
fn license_of(v: &LicenseValidationResult, step: &str) -> License {
    match &v.license {
        Some(l) => l.clone(),
        None => fail(
            step,
            format!(
                "expected validation `data` to contain the license, got null (code={} detail={:?})",
                v.meta.code, v.meta.detail
            ),
        ),
    }
}

async fn activate(license: &License, fp: &str, step: &str) -> Machine {
    let m = ok(
        license.activate(fp, &[]).await,
        step,
        &format!("activation of fingerprint {fp:?} to succeed"),
    );
    check(m.fingerprint == fp, step, || {
        format!(
            "expected machine fingerprint {fp:?}, got {:?}",
            m.fingerprint
        )
    });
    progress(
        step,
        format!("machine id={} fingerprint={}", m.id, m.fingerprint),
    );
    m
}

async fn ping_alive(machine: &Machine, step: &str) -> Machine {
    let m = ok(machine.ping().await, step, "heartbeat ping to succeed");
    check(m.heartbeat_status == "ALIVE", step, || {
        format!(
            "expected heartbeat_status ALIVE, got {:?}",
            m.heartbeat_status
        )
    });
    check(m.id == machine.id, step, || {
        format!("expected pinged machine id {}, got {}", machine.id, m.id)
    });
    progress(step, "ALIVE");
    m
}

/// Machine file check-out with ttl 3600, then offline verify + decrypt.
async fn machine_file_roundtrip(ctx: &Ctx, machine: &Machine, license: &License, step: &str) {
    let mf = ok(
        machine.checkout(&MachineCheckoutOpts::with_ttl(3600)).await,
        step,
        "machine file check-out (ttl=3600) to succeed",
    );
    ok(mf.verify(), step, "machine file signature to verify");
    let secret = format!("{}{}", ctx.key, machine.fingerprint);
    let ds = ok(
        mf.decrypt(&secret),
        step,
        "machine file to decrypt with key+fingerprint",
    );
    check(ds.machine.fingerprint == machine.fingerprint, step, || {
        format!(
            "expected machine file fingerprint {:?}, got {:?}",
            machine.fingerprint, ds.machine.fingerprint
        )
    });
    check(ds.machine.id == machine.id, step, || {
        format!(
            "expected machine file machine id {}, got {}",
            machine.id, ds.machine.id
        )
    });
    check(ds.license.id == license.id, step, || {
        format!(
            "expected machine file license id {}, got {}",
            license.id, ds.license.id
        )
    });
    let reloaded = ok(
        MachineFile::from_cert(&secret, &mf.certificate),
        step,
        "MachineFile::from_cert on the certificate to succeed",
    );
    check(reloaded.id == machine.id, step, || {
        format!(
            "expected from_cert machine id {}, got {}",
            machine.id, reloaded.id
        )
    });
    progress(
        step,
        format!("machine file ttl={} expiry={}", mf.ttl, mf.expiry),
    );
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

/// Dedicated (node-locked) license with >= 2 seats. Env: `FINGERPRINT`.
async fn dedicated(ctx: &Ctx) {
    let fp = env_var("FINGERPRINT");

    // a. validate before activation
    let step = "a.validate-unactivated";
    let v = validate_fp(&fp, step).await;
    expect_invalid(
        &v,
        step,
        &["NO_MACHINE", "NO_MACHINES", "FINGERPRINT_SCOPE_MISMATCH"],
    );
    let license = license_of(&v, step);

    // b. activate
    let step = "b.activate";
    let machine = activate(&license, &fp, step).await;
    pause(json!({"step": "activated", "machine_id": machine.id, "license_id": license.id})).await;

    // c. validate -> VALID
    let step = "c.validate-activated";
    let v = validate_fp(&fp, step).await;
    expect_valid(&v, step);
    let license = license_of(&v, step);

    // d. duplicate activation
    let step = "d.activate-duplicate";
    let e = err(
        license.activate(&fp, &[]).await,
        step,
        "duplicate activation to fail with FINGERPRINT_TAKEN",
    );
    expect_api_error(&e, step, None, "FINGERPRINT_TAKEN");
    progress(step, "FINGERPRINT_TAKEN");

    // e. ping
    ping_alive(&machine, "e.ping").await;

    // f. monitor: two heartbeat results, then cancel
    let step = "f.monitor";
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Machine, Error>>(8);
    let (cancel_tx, cancel_rx) = tokio::sync::mpsc::channel::<()>(1);
    let monitor = tokio::spawn(Arc::new(machine.clone()).monitor(
        Duration::from_secs(1),
        Some(tx),
        Some(cancel_rx),
    ));
    for i in 1..=2 {
        let res = match tokio::time::timeout(MONITOR_RESULT_TIMEOUT, rx.recv()).await {
            Ok(Some(res)) => res,
            Ok(None) => fail(
                step,
                format!("expected heartbeat result #{i}, monitor channel closed"),
            ),
            Err(_) => fail(
                step,
                format!(
                    "expected heartbeat result #{i} within {MONITOR_RESULT_TIMEOUT:?}, got none"
                ),
            ),
        };
        let m = ok(res, step, &format!("monitor heartbeat #{i} to succeed"));
        check(m.heartbeat_status == "ALIVE", step, || {
            format!(
                "expected monitor heartbeat #{i} status ALIVE, got {:?}",
                m.heartbeat_status
            )
        });
    }
    if cancel_tx.send(()).await.is_err() {
        fail(
            step,
            "expected monitor to accept cancellation, cancel channel closed",
        );
    }
    drop(rx);
    match tokio::time::timeout(MONITOR_JOIN_TIMEOUT, monitor).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(
            step,
            format!("expected monitor task to end cleanly, got {e:?}"),
        ),
        Err(_) => fail(
            step,
            format!("expected monitor task to stop within {MONITOR_JOIN_TIMEOUT:?} after cancel"),
        ),
    }
    progress(step, "2 heartbeats, cancelled");

    // g. lookup by fingerprint alias
    let step = "g.machine-by-fingerprint";
    let m = ok(
        license.machine(&fp).await,
        step,
        "GET machines/{fingerprint} to return the machine",
    );
    check(m.id == machine.id, step, || {
        format!("expected machine id {}, got {}", machine.id, m.id)
    });
    progress(step, &m.id);

    // h. list machines / entitlements
    let step = "h.list-machines";
    let page = ok(
        license.machines(None).await,
        step,
        "listing the license's machines to succeed",
    );
    check(page.data.iter().any(|x| x.id == machine.id), step, || {
        let ids: Vec<&str> = page.data.iter().map(|x| x.id.as_str()).collect();
        format!("expected machine {} in the list, got {ids:?}", machine.id)
    });
    progress(step, format!("{} machine(s)", page.data.len()));
    let step = "h.list-entitlements";
    let ents = ok(
        license.entitlements(None).await,
        step,
        "listing the license's entitlements to succeed",
    );
    check(ents.data.is_empty(), step, || {
        format!("expected no entitlements, got {:?}", ents.data)
    });
    progress(step, "empty");

    // i. machine file
    machine_file_roundtrip(ctx, &m, &license, "i.machine-file").await;

    // j. license files: encrypted, then default (base64+ed25519)
    let step = "j.license-file-encrypted";
    let lf = ok(
        license
            .checkout(&LicenseCheckoutOpts::with_ttl(3600).with_encrypt(true))
            .await,
        step,
        "encrypted license file check-out to succeed",
    );
    let lds = ok(
        lf.verify_and_decrypt(
            &ctx.pk_hex,
            &ctx.key,
            LicenseFileAlgorithm::Aes256GcmEd25519,
        ),
        step,
        "aes-256-gcm+ed25519 license file to verify and decrypt",
    );
    check(lds.license.id == license.id, step, || {
        format!(
            "expected license file license id {}, got {}",
            license.id, lds.license.id
        )
    });
    ok(
        lf.verify(),
        step,
        "license file to verify with the global key",
    );
    let reloaded = ok(
        LicenseFile::from_cert(&ctx.key, &lf.certificate),
        step,
        "LicenseFile::from_cert on the encrypted certificate to succeed",
    );
    check(reloaded.id == license.id, step, || {
        format!(
            "expected from_cert license id {}, got {}",
            license.id, reloaded.id
        )
    });
    progress(step, format!("ttl={} expiry={}", lf.ttl, lf.expiry));

    let step = "j.license-file-default";
    let lf = ok(
        license.checkout(&LicenseCheckoutOpts::with_ttl(3600)).await,
        step,
        "default license file check-out to succeed",
    );
    let lds = ok(
        lf.verify_and_decode(&ctx.pk_hex, LicenseFileAlgorithm::Base64Ed25519),
        step,
        "base64+ed25519 license file to verify and decode",
    );
    check(lds.license.id == license.id, step, || {
        format!(
            "expected license file license id {}, got {}",
            license.id, lds.license.id
        )
    });
    progress(step, format!("ttl={} expiry={}", lf.ttl, lf.expiry));

    // k. check-in
    let step = "k.check-in";
    let checked_in = ok(
        license.check_in().await,
        step,
        "license check-in to succeed",
    );
    check(checked_in.id == license.id, step, || {
        format!(
            "expected checked-in license id {}, got {}",
            license.id, checked_in.id
        )
    });
    progress(step, "ok");

    // l. deactivate, then the lookup is 404
    let step = "l.deactivate";
    ok(
        machine.deactivate().await,
        step,
        "machine deactivation to succeed",
    );
    progress(step, "ok");
    let step = "l.machine-after-deactivate";
    let e = err(
        license.machine(&fp).await,
        step,
        "machine lookup after deactivation to fail with NOT_FOUND",
    );
    check(e.api_error_kind() == ApiErrorKind::NotFound, step, || {
        format!("expected API error kind NotFound, got {e:?}")
    });
    expect_api_error(&e, step, Some(404), "NOT_FOUND");
    emit(json!({"step": "deactivated"}));

    // m. validate -> not valid
    let step = "m.validate-deactivated";
    let v = validate_fp(&fp, step).await;
    expect_invalid(&v, step, &[]);
}

/// Dedicated license: fill all seats. Env: `SEATS`, `FINGERPRINT_PREFIX`.
async fn limit() {
    let seats: usize = env_parse("SEATS");
    let prefix = env_var("FINGERPRINT_PREFIX");

    let step = "validate";
    let v = validate_fp(&format!("{prefix}-1"), step).await;
    let license = license_of(&v, step);

    let mut ids = Vec::with_capacity(seats);
    for i in 1..=seats {
        let m = activate(&license, &format!("{prefix}-{i}"), &format!("activate-{i}")).await;
        ids.push(m.id);
    }

    let over = seats + 1;
    let step = format!("activate-{over}");
    let e = err(
        license.activate(&format!("{prefix}-{over}"), &[]).await,
        &step,
        "activation beyond the seat count to fail with MACHINE_LIMIT_EXCEEDED",
    );
    expect_api_error(&e, &step, None, "MACHINE_LIMIT_EXCEEDED");
    progress(&step, "MACHINE_LIMIT_EXCEEDED");
    emit(json!({"step": "full", "machine_ids": ids}));
}

/// Concurrent (floating) license. Env: `FINGERPRINT`, `LEASE_TTL_S`.
async fn floating(ctx: &Ctx) {
    let fp = env_var("FINGERPRINT");
    let ttl: i32 = env_parse("LEASE_TTL_S");

    let step = "validate-unactivated";
    let v = validate_fp(&fp, step).await;
    expect_invalid(&v, step, &[]);
    let license = license_of(&v, step);

    let step = "activate";
    let machine = activate(&license, &fp, step).await;
    check(machine.require_heartbeat, step, || {
        "expected require_heartbeat == true, got false".to_string()
    });
    check(machine.heartbeat_duration == Some(ttl), step, || {
        format!(
            "expected heartbeat_duration == Some({ttl}), got {:?}",
            machine.heartbeat_duration
        )
    });

    ping_alive(&machine, "ping").await;

    let step = "validate-activated";
    let v = validate_fp(&fp, step).await;
    expect_valid(&v, step);
    let license = license_of(&v, step);

    machine_file_roundtrip(ctx, &machine, &license, "machine-file").await;

    pause(json!({"step": "activated", "machine_id": machine.id, "license_id": license.id})).await;

    let step = "deactivate";
    ok(
        machine.deactivate().await,
        step,
        "machine deactivation to succeed",
    );

    let step = "validate-deactivated";
    let v = validate_fp(&fp, step).await;
    expect_invalid(&v, step, &[]);
    emit(json!({"step": "deactivated"}));
}

/// Concurrent license whose lease the harness lets lapse. Env: `FINGERPRINT`.
async fn dead() {
    let fp = env_var("FINGERPRINT");

    let step = "validate";
    let v = validate_fp(&fp, step).await;
    let license = license_of(&v, step);

    let machine = activate(&license, &fp, "activate").await;
    pause(json!({"step": "activated", "machine_id": machine.id, "license_id": license.id})).await;

    let step = "validate-dead";
    let v = validate_fp(&fp, step).await;
    expect_invalid(&v, step, &["HEARTBEAT_DEAD"]);

    let step = "ping-dead";
    let e = err(
        machine.ping().await,
        step,
        "ping of a lapsed lease to fail with MACHINE_HEARTBEAT_DEAD",
    );
    expect_api_error(&e, step, None, "MACHINE_HEARTBEAT_DEAD");
    progress(step, "MACHINE_HEARTBEAT_DEAD");
}

/// LICENSE_KEY is unknown to the server: signed 401 LICENSE_INVALID.
async fn unknown_key() {
    let step = "validate-unknown-key";
    let req = LicenseValidationRequest::for_fingerprint("x".to_string());
    let e = err(
        keygen_rs::validate(&req).await,
        step,
        "validate-key to fail with API error 401 LICENSE_INVALID",
    );
    expect_api_error(&e, step, Some(401), "LICENSE_INVALID");
    progress(step, "401 LICENSE_INVALID");
}

/// LICENSE_KEY belongs to a suspended license: signed 403 LICENSE_SUSPENDED.
async fn suspended() {
    let step = "validate-suspended";
    let req = LicenseValidationRequest::for_fingerprint("x".to_string());
    let e = err(
        keygen_rs::validate(&req).await,
        step,
        "validate-key to fail with API error 403 LICENSE_SUSPENDED",
    );
    expect_api_error(&e, step, Some(403), "LICENSE_SUSPENDED");
    progress(step, "403 LICENSE_SUSPENDED");
}

/// PUBLIC_KEY_HEX is a valid key that is not the workspace's: every response
/// must be rejected with KeygenSignatureInvalid. Optional env: `LICENSE_ID`
/// (default: a nil UUID, which the server answers with an error) and
/// `FINGERPRINT` (default `wrong-key-fp`), used for an activation and a
/// machine lookup.
async fn wrong_key() {
    let step = "validate-wrong-key";
    let req = LicenseValidationRequest::for_fingerprint("x".to_string());
    let e = err(
        keygen_rs::validate(&req).await,
        step,
        "validate-key to fail with KeygenSignatureInvalid",
    );
    let reason = expect_signature_invalid(&e, step);
    progress(step, reason);

    let step = "service-ping-wrong-key";
    let e = err(
        keygen_rs::service::ping().await,
        step,
        "service ping to fail with KeygenSignatureInvalid",
    );
    let reason = expect_signature_invalid(&e, step);
    progress(step, reason);

    let license_id = std::env::var("LICENSE_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_string());
    let fp = std::env::var("FINGERPRINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wrong-key-fp".to_string());
    let cfg = ok(config::get_config(), "config", "get_config to succeed");
    let license = License::from_id(&license_id).with_config(cfg);

    let step = "activate-wrong-key";
    let e = err(
        license.activate(&fp, &[]).await,
        step,
        "activation to fail with KeygenSignatureInvalid",
    );
    let reason = expect_signature_invalid(&e, step);
    progress(step, reason);

    let step = "machine-wrong-key";
    let e = err(
        license.machine(&fp).await,
        step,
        "machine lookup to fail with KeygenSignatureInvalid",
    );
    let reason = expect_signature_invalid(&e, step);
    progress(step, reason);
}

/// Signed `GET /v1/ping` with the right key.
async fn service_ping() {
    let step = "service-ping";
    let pong = ok(
        keygen_rs::service::ping().await,
        step,
        "service ping to succeed with a valid signature",
    );
    progress(
        step,
        format!("message={:?} version={:?}", pong.message, pong.version),
    );
}

#[tokio::main]
async fn main() {
    let scenario = env_var("SCENARIO");
    let ctx = configure();
    eprintln!("keygen-client: scenario `{scenario}`");
    match scenario.as_str() {
        "dedicated" => dedicated(&ctx).await,
        "limit" => limit().await,
        "floating" => floating(&ctx).await,
        "dead" => dead().await,
        "unknown-key" => unknown_key().await,
        "suspended" => suspended().await,
        "wrong-key" => wrong_key().await,
        "service-ping" => service_ping().await,
        other => fail(
            "config",
            format!(
                "unknown SCENARIO {other:?}; expected one of dedicated, limit, floating, dead, \
                 unknown-key, suspended, wrong-key, service-ping"
            ),
        ),
    }
    emit(json!({"step": "done"}));
}
