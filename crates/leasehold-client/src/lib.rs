//! The Leasehold SDK for licensed applications.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leasehold_client::Error> {
//! use leasehold_client::{Client, Holder};
//! let client = Client::new("https://licenses.example.com", "AB12C-DE34F-GH56J-KM78N-7K2QD")?
//!     .with_public_key("base64 public key from GET /v1/public-key")?;
//! let holder = Holder::this_machine("my-app-salt", Some("Ann's laptop"));
//! let lease = client.lease(&holder).await?; // heartbeats in the background
//! // … the application runs …
//! lease.release().await?; // or drop it; SIGINT/SIGTERM check it in too
//! # Ok(()) }
//! ```

pub mod blocking;
mod fingerprint;
mod license_file;

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use leasehold_proto::*;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use fingerprint::{machine_fingerprint, os_user};
pub use leasehold_proto::{
    Activation, BorrowReturned, Borrowed, ClientLicense, Deactivated, ErrorDetail, HeartbeatAnswer,
    Lease, LicenseFilePayload, ValidateAnswer,
};
pub use license_file::{verify_license_file, LicenseFileError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error (`NO_SEATS`, `LEASE_EXPIRED`, …).
    #[error("{status}: {} ({})", .error.message, .error.code)]
    Api { status: u16, error: ErrorDetail },
    /// The server could not be reached, after retries.
    #[error("the license server is unreachable: {0}")]
    Unreachable(String),
    /// An answer's signature does not verify against the embedded public key.
    #[error("the answer's signature does not verify: it did not come from your license server")]
    BadSignature,
    /// A signed answer that was not made for this request (DESIGN §11): its nonce, what
    /// was asked, the machine or the OS user differ from the request, or it is too old.
    /// A replayed answer, or one to a request altered on the way.
    #[error("the answer was not made for this request ({0}): it was replayed or tampered with")]
    Tampered(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The error code the server sent, if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    /// The caller's place in the license's queue (1: next), on a `NO_SEATS` it waits in.
    pub fn queue_position(&self) -> Option<i64> {
        match self {
            Error::Api { error, .. } => error.details.as_ref()?.get("queue_position")?.as_i64(),
            _ => None,
        }
    }

    /// Why a lease ended, on `LEASE_EXPIRED` (`details.reason`: `expired`, `idle`, …).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Api { error, .. } => error.details.as_ref()?.get("reason")?.as_str(),
            _ => None,
        }
    }

    /// The server's `retry_after_s` hint, for `NO_SEATS`, `RATE_LIMITED` and cooldowns.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Error::Api { error, .. } => error.details.as_ref()?.get("retry_after_s")?.as_u64(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who takes a seat: this machine and OS user, and how the user named the machine.
#[derive(Debug, Clone)]
pub struct Holder {
    pub fingerprint: String,
    pub os_user: String,
    pub identifier: Option<String>,
}

impl Holder {
    /// This machine (its id hashed with the application's salt) and the current OS user.
    pub fn this_machine(app_salt: &str, identifier: Option<&str>) -> Holder {
        Holder {
            fingerprint: machine_fingerprint(app_salt),
            os_user: os_user(),
            identifier: identifier.map(str::to_string),
        }
    }
}

/// What `validate_or_offline` could establish.
#[derive(Debug, Clone)]
pub enum Validity {
    Online(ValidateAnswer),
    /// The server was unreachable; a valid offline license file vouched instead.
    Offline(LicenseFilePayload),
}

/// A client of one license key on one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    public_key: Option<VerifyingKey>,
    attempts: u32,
    /// Certificate authorities trusted besides the system's (a private PKI).
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The HTTP client of calls, trusting `roots` besides the system's authorities.
fn http_client(roots: &[reqwest::Certificate]) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder.build().map_err(|e| Error::Invalid(e.to_string()))
}

/// Parses a base64 Ed25519 public key.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| Error::Invalid("the public key is not base64".into()))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::Invalid("the public key must be 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| Error::Invalid("not an Ed25519 public key".into()))
}

impl Client {
    pub fn new(base_url: &str, key: &str) -> Result<Client> {
        Ok(Client {
            http: http_client(&[])?,
            base: base_url.trim_end_matches('/').to_string(),
            key: key.trim().to_string(),
            public_key: None,
            attempts: 5,
            roots: Vec::new(),
        })
    }

    /// Also trusts the certificate authorities of this PEM file (a server whose
    /// certificate a private PKI issued).
    pub fn with_ca_file(self, path: &std::path::Path) -> Result<Client> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Invalid(format!("reading the CA file {}: {e}", path.display())))?;
        self.with_ca_pem(&pem)
    }

    /// Also trusts the certificate authorities of this PEM text.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Client> {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Invalid(format!("the CA file is not PEM certificates: {e}")))?;
        if roots.is_empty() {
            return Err(Error::Invalid("the CA file holds no certificate".into()));
        }
        self.roots.extend(roots);
        self.http = http_client(&self.roots)?;
        Ok(self)
    }

    /// Verifies every answer against this key (base64, as `GET /v1/public-key` gives it).
    pub fn with_public_key(mut self, public_key: &str) -> Result<Client> {
        self.public_key = Some(parse_public_key(public_key)?);
        Ok(self)
    }

    /// A copy with its own connection pool (for use from another runtime).
    fn detached(&self, timeout: Duration) -> Client {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0);
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder.build().unwrap_or_else(|_| self.http.clone());
        Client {
            http,
            attempts: 2,
            ..self.clone()
        }
    }

    /// How many times a call is tried on network errors, 5xx and rate limits (default 5).
    pub fn with_attempts(mut self, attempts: u32) -> Client {
        self.attempts = attempts.max(1);
        self
    }

    /// Validates the key, for this machine when `fingerprint` is given. A dedicated
    /// (node-locked) license is valid only for a machine that is activated: asked without
    /// a fingerprint, the server speaks of the key alone, and this answers
    /// `valid: false` with the code `NOT_ACTIVATED`.
    pub async fn validate(
        &self,
        fingerprint: Option<&str>,
        os_user: Option<&str>,
    ) -> Result<ValidateAnswer> {
        let body = ValidateRequest {
            key: Some(self.key.clone()),
            nonce: None,
            fingerprint: fingerprint.map(str::to_string),
            os_user: os_user.map(str::to_string),
        };
        let ask = Ask::new("validate", fingerprint, os_user);
        let mut answer: ValidateAnswer = self
            .call(Method::POST, "/v1/client/validate", Some(&body), ask)
            .await?;
        let dedicated = answer
            .license
            .as_ref()
            .is_some_and(|l| l.seat_model == leasehold_core::SeatModel::Dedicated);
        if dedicated && fingerprint.is_none() && answer.valid {
            answer.valid = false;
            answer.code = "NOT_ACTIVATED".into();
        }
        Ok(answer)
    }

    /// Validates, and when the server is unreachable falls back to a cached license file.
    pub async fn validate_or_offline(
        &self,
        holder: &Holder,
        license_file: Option<&str>,
    ) -> Result<Validity> {
        match self
            .validate(Some(&holder.fingerprint), Some(&holder.os_user))
            .await
        {
            Ok(answer) => Ok(Validity::Online(answer)),
            Err(Error::Unreachable(reason)) => {
                let (Some(file), Some(public_key)) = (license_file, &self.public_key) else {
                    return Err(Error::Unreachable(reason));
                };
                verify_license_file(
                    file,
                    public_key,
                    Some(&holder.fingerprint),
                    chrono::Utc::now(),
                )
                .map(Validity::Offline)
                .map_err(|e| {
                    Error::Unreachable(format!("{reason}; and the offline license file: {e}"))
                })
            }
            Err(other) => Err(other),
        }
    }

    /// Takes (or confirms) this machine's dedicated seat.
    pub async fn activate(&self, holder: &Holder) -> Result<Activation> {
        let body = ActivateRequest {
            key: Some(self.key.clone()),
            nonce: None,
            fingerprint: holder.fingerprint.clone(),
            identifier: holder.identifier.clone(),
        };
        let ask = Ask::new("activate", Some(&holder.fingerprint), None);
        self.call(Method::POST, "/v1/client/activations", Some(&body), ask)
            .await
    }

    /// Releases this machine's dedicated seat, to move the license to another computer.
    pub async fn deactivate(&self, fingerprint: &str) -> Result<Deactivated> {
        let path = format!("/v1/client/activations/{}", path_segment(fingerprint));
        let ask = Ask::new("deactivate", Some(fingerprint), None);
        self.call(Method::DELETE, &path, Some(&self.key_only()), ask)
            .await
    }

    /// Borrows a floating seat for `days` days of offline use (DESIGN §7): no heartbeats
    /// until `borrowed_until`, and a signed license file (`license_file`: keep it on disk as
    /// its JSON) that [`Client::validate_or_offline`] and `leasehold verify-license-file`
    /// accept until then. Borrowing again before the end renews it; a lease the holder holds
    /// becomes the borrow.
    pub async fn borrow(&self, holder: &Holder, days: i64) -> Result<Borrowed> {
        let body = BorrowRequest {
            key: Some(self.key.clone()),
            nonce: None,
            fingerprint: holder.fingerprint.clone(),
            os_user: holder.os_user.clone(),
            identifier: holder.identifier.clone(),
            days,
        };
        let ask = Ask::new("borrow", Some(&holder.fingerprint), Some(&holder.os_user));
        self.call(Method::POST, "/v1/client/borrows", Some(&body), ask)
            .await
    }

    /// Returns a borrow before its end: its seat is free at once.
    pub async fn return_borrow(
        &self,
        borrow_id: &str,
        fingerprint: &str,
    ) -> Result<BorrowReturned> {
        let path = format!(
            "/v1/client/borrows/{}?fingerprint={}",
            path_segment(borrow_id),
            path_segment(fingerprint)
        );
        let ask = Ask::new("return_borrow", Some(fingerprint), None);
        self.call::<BorrowReturned, ()>(Method::DELETE, &path, None, ask)
            .await
    }

    /// The signed offline license file for this machine, as text to keep on disk.
    pub async fn license_file(&self, fingerprint: &str) -> Result<String> {
        let path = format!(
            "/v1/client/license-file?fingerprint={}",
            path_segment(fingerprint)
        );
        let ask = Ask::new("license_file", Some(fingerprint), None);
        let file: LicenseFile = self
            .call::<LicenseFile, ()>(Method::GET, &path, None, ask)
            .await?;
        serde_json::to_string_pretty(&file).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Takes a concurrent seat (or joins the one this machine and user hold) and keeps it
    /// alive until the guard is released or dropped. SIGINT/SIGTERM check it in and end
    /// the process, unless `exit_on_signal` is false.
    pub async fn lease(&self, holder: &Holder) -> Result<LeaseGuard> {
        self.lease_with(holder, true).await
    }

    pub async fn lease_with(&self, holder: &Holder, exit_on_signal: bool) -> Result<LeaseGuard> {
        self.take_lease(holder, None, exit_on_signal).await
    }

    /// Takes a floating seat, or waits in the license's queue (DESIGN §7) for up to
    /// `wait_s` seconds (at most 5 per request: the server answers as soon as the seat is
    /// the holder's). `NO_SEATS` when it is not yet: its details carry the holder's
    /// `queue_position`, and asking again within the license's `queue_ttl_s` keeps it.
    pub async fn lease_queued(
        &self,
        holder: &Holder,
        wait_s: u32,
        exit_on_signal: bool,
    ) -> Result<LeaseGuard> {
        self.take_lease(holder, Some(wait_s.min(5)), exit_on_signal)
            .await
    }

    /// Takes a floating seat, waiting in the license's queue for up to `wait`: a freed
    /// seat goes to the head of the queue, never to a newcomer. `NO_SEATS` (with
    /// `queue_position`) when `wait` runs out; call [`Client::leave_queue`] to give the
    /// place up at once.
    pub async fn lease_waiting(&self, holder: &Holder, wait: Duration) -> Result<LeaseGuard> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait_s = u32::try_from(left.as_secs()).unwrap_or(u32::MAX);
            match self.lease_queued(holder, wait_s, true).await {
                Err(error) if error.queue_position().is_some() && wait_s > 0 => {}
                other => return other,
            }
        }
    }

    /// Gives up the holder's place in the license's queue; answers whether it had one.
    pub async fn leave_queue(&self, holder: &Holder) -> Result<bool> {
        let body = leasehold_proto::LeaveQueueRequest {
            key: Some(self.key.clone()),
            nonce: None,
            fingerprint: holder.fingerprint.clone(),
            os_user: holder.os_user.clone(),
        };
        let ask = Ask::new(
            "leave_queue",
            Some(&holder.fingerprint),
            Some(&holder.os_user),
        );
        let left: leasehold_proto::LeftQueue = self
            .call(Method::POST, "/v1/client/queue/leave", Some(&body), ask)
            .await?;
        Ok(left.left)
    }

    async fn take_lease(
        &self,
        holder: &Holder,
        wait_s: Option<u32>,
        exit_on_signal: bool,
    ) -> Result<LeaseGuard> {
        let instance = uuid::Uuid::new_v4().to_string();
        let body = LeaseRequest {
            key: Some(self.key.clone()),
            nonce: None,
            fingerprint: holder.fingerprint.clone(),
            os_user: holder.os_user.clone(),
            identifier: holder.identifier.clone(),
            instance: instance.clone(),
            queue: wait_s.map(|_| true),
            wait_s: wait_s.filter(|s| *s > 0),
        };
        let ask = Ask::new("lease", Some(&holder.fingerprint), Some(&holder.os_user));
        let lease: Lease = self
            .call(Method::POST, "/v1/client/leases", Some(&body), ask)
            .await?;
        Ok(LeaseGuard::start(
            self.clone(),
            lease,
            instance,
            exit_on_signal,
        ))
    }

    /// Keeps a lease alive. `idle` is how long the app's user has been away from this
    /// instance (`None`: unknown, counted as in use), for the license's idle timeout.
    pub async fn heartbeat(
        &self,
        lease_id: &str,
        instance: &str,
        idle: Option<Duration>,
    ) -> Result<HeartbeatAnswer> {
        let body = HeartbeatRequest {
            key: Some(self.key.clone()),
            nonce: None,
            instance: instance.to_string(),
            idle_s: idle.map(|idle| i64::try_from(idle.as_secs()).unwrap_or(i64::MAX)),
        };
        let path = format!("/v1/client/leases/{}/heartbeat", path_segment(lease_id));
        let ask = Ask::new("heartbeat", None, None);
        self.call(Method::POST, &path, Some(&body), ask).await
    }

    pub async fn release_instance(&self, lease_id: &str, instance: &str) -> Result<bool> {
        let path = format!(
            "/v1/client/leases/{}/instances/{}",
            path_segment(lease_id),
            path_segment(instance)
        );
        let ask = Ask::new("checkin", None, None);
        let answer: InstanceReleased = self
            .call(Method::DELETE, &path, Some(&self.key_only()), ask)
            .await?;
        Ok(answer.released)
    }

    fn key_only(&self) -> KeyOnly {
        KeyOnly {
            key: Some(self.key.clone()),
            nonce: None,
        }
    }

    /// One call: retried with backoff on network errors, 5xx and 429; the answer's
    /// signature, and that it answers this very request (`ask`, and a fresh nonce per
    /// attempt), checked before it is believed.
    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        ask: Ask<'_>,
    ) -> Result<T> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("authorization", format!("License {}", self.key))
                .header(NONCE_HEADER, &nonce);
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, bytes, signature) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let signature = response
                        .headers()
                        .get(SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match response.bytes().await {
                        Ok(bytes) => (status, bytes, signature),
                        Err(e) if attempt < self.attempts => {
                            tracing::debug!(error = %e, "reading the answer failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        Err(e) => return Err(Error::Unreachable(e.to_string())),
                    }
                }
                Err(e) if attempt < self.attempts => {
                    tracing::debug!(error = %e, "license server unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(Error::Unreachable(e.to_string())),
            };
            let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            let believed = self
                .verify(&bytes, signature.as_deref())
                .and_then(|()| ask.check(&bytes, &nonce, chrono::Utc::now()));
            if let Err(refused) = believed {
                // An unsigned overload or server error (a proxy's 502, a limiter's 429) is
                // not a forgery worth failing on: retry, then report the server unreachable.
                if transient && attempt < self.attempts {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                if transient {
                    return Err(Error::Unreachable(format!("the server answered {status}")));
                }
                return Err(refused);
            }
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Invalid(format!("unexpected answer: {e}")));
            }
            let error = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| ErrorDetail {
                    code: "INTERNAL".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                    details: None,
                });
            if transient && attempt < self.attempts {
                let hinted = error
                    .details
                    .as_ref()
                    .and_then(|d| d.get("retry_after_s"))
                    .and_then(|v| v.as_u64())
                    .map(Duration::from_secs);
                tokio::time::sleep(hinted.unwrap_or(backoff).min(Duration::from_secs(5))).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            if status.is_server_error() {
                // A server that keeps failing is as good as unreachable: callers fall back.
                return Err(Error::Unreachable(format!("{status}: {}", error.message)));
            }
            return Err(Error::Api {
                status: status.as_u16(),
                error,
            });
        }
    }

    fn verify(&self, body: &[u8], header: Option<&str>) -> Result<()> {
        let Some(public_key) = &self.public_key else {
            return Ok(());
        };
        let signature = header
            .and_then(|h| h.strip_prefix("ed25519="))
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(Error::BadSignature)?;
        public_key
            .verify(&signed_message(ANSWER_CONTEXT, body), &signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// How far an answer's `at` may be from this computer's clock.
const MAX_ANSWER_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What a call asks, for checking that an answer answers it (DESIGN §11).
#[derive(Clone, Copy, Debug)]
struct Ask<'a> {
    op: &'static str,
    fingerprint: Option<&'a str>,
    os_user: Option<&'a str>,
}

impl<'a> Ask<'a> {
    fn new(op: &'static str, fingerprint: Option<&'a str>, os_user: Option<&'a str>) -> Self {
        Ask {
            op,
            fingerprint,
            os_user,
        }
    }

    /// Refuses an answer that does not echo this request: its nonce, what was asked, the
    /// machine and the OS user; or whose time is more than 5 minutes from `now`.
    fn check(&self, body: &[u8], nonce: &str, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let tampered = |what: String| Err(Error::Tampered(what));
        let Ok(binding) = serde_json::from_slice::<Binding>(body) else {
            return tampered("it names no request".into());
        };
        if binding.nonce.as_deref() != Some(nonce) {
            return tampered("its nonce is another request's".into());
        }
        if binding.op != self.op {
            return tampered(format!("it answers {:?}, not {:?}", binding.op, self.op));
        }
        if binding.fingerprint.as_deref() != self.fingerprint {
            return tampered("it names another machine's fingerprint".into());
        }
        if binding.os_user.as_deref() != self.os_user {
            return tampered("it names another OS user".into());
        }
        if (binding.at - now).abs() > MAX_ANSWER_AGE {
            return tampered(format!(
                "it was made at {}, more than 5 minutes from this computer's clock",
                binding.at
            ));
        }
        Ok(())
    }
}

/// Percent-encodes a path segment (fingerprints and ids are plain, but be safe).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Shared {
    released: AtomicBool,
    lost: AtomicBool,
    /// Since when the app's user has been away (`None`: in use, or never said).
    idle_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Why the server ended the lease (`details.reason`: `expired`, `idle`, …).
    lost_reason: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// How long the user has been away, as the next heartbeat reports it (whole seconds;
    /// `None` while in use or unknown).
    fn idle(&self) -> Option<Duration> {
        let since = (*self.idle_since.lock().ok()?)?;
        Some(since.elapsed())
    }
}

/// A held concurrent seat. Heartbeats run in the background at the license's
/// `heartbeat_interval_s`; the seat is checked in by [`LeaseGuard::release`], on drop, and
/// (by default) on SIGINT/SIGTERM.
pub struct LeaseGuard {
    client: Client,
    lease: Lease,
    instance: String,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    registration: Option<u64>,
}

impl LeaseGuard {
    fn start(client: Client, lease: Lease, instance: String, exit_on_signal: bool) -> LeaseGuard {
        let shared = Arc::new(Shared {
            released: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            idle_since: Default::default(),
            lost_reason: Default::default(),
        });
        let interval = Duration::from_secs(lease.heartbeat_interval_s.max(1) as u64);
        let tasks = vec![tokio::spawn(heartbeats(
            client.clone(),
            lease.id.clone(),
            instance.clone(),
            interval,
            shared.clone(),
        ))];
        let registration =
            exit_on_signal.then(|| signals::register(&client, &lease.id, &instance, &shared));
        LeaseGuard {
            client,
            lease,
            instance,
            shared,
            tasks,
            registration,
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// True once the server said the lease expired (the app should take a new one).
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Why the server ended the lease, once [`LeaseGuard::is_lost`]: `"expired"`, or
    /// `"idle"` when its seat went to someone who needed it while the app was idle
    /// (DESIGN §7), or the admin's reason.
    pub fn lost_reason(&self) -> Option<String> {
        self.shared.lost_reason.lock().ok()?.clone()
    }

    /// Tells the server, from the next heartbeat on, since when the app's user has been
    /// away (`Some(last_input)`), or that it is in use again (`None`). A license with an
    /// `idle_timeout_s` may give the seat of a lease idle that long to someone who needs
    /// it; an app that never calls this counts as in use.
    pub fn set_idle_since(&self, since: Option<std::time::Instant>) {
        if let Ok(mut idle_since) = self.shared.idle_since.lock() {
            *idle_since = since;
        }
    }

    /// Checks this instance in; answers whether that freed the seat.
    pub async fn release(mut self) -> Result<bool> {
        self.stop_tasks();
        if self.shared.released.swap(true, Ordering::SeqCst) {
            return Ok(true);
        }
        self.client
            .release_instance(&self.lease.id, &self.instance)
            .await
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(id) = self.registration.take() {
            signals::unregister(id);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_tasks();
        if self.shared.released.swap(true, Ordering::SeqCst) {
            return;
        }
        // Drop cannot await: check in from a short-lived thread with its own runtime,
        // and wait for it, so the seat is free when drop returns.
        let client = self.client.detached(Duration::from_secs(3));
        let (lease_id, instance) = (self.lease.id.clone(), self.instance.clone());
        let checkin = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = runtime.block_on(client.release_instance(&lease_id, &instance));
            }
        });
        let _ = checkin.join();
    }
}

async fn heartbeats(
    client: Client,
    lease_id: String,
    instance: String,
    interval: Duration,
    shared: Arc<Shared>,
) {
    loop {
        tokio::time::sleep(interval).await;
        match client.heartbeat(&lease_id, &instance, shared.idle()).await {
            Ok(_) => {}
            Err(error) if error.code() == Some("LEASE_EXPIRED") => {
                let reason = error.reason().unwrap_or("expired").to_string();
                tracing::warn!(%reason, "the server ended the lease");
                if let Ok(mut lost_reason) = shared.lost_reason.lock() {
                    *lost_reason = Some(reason);
                }
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed; will retry"),
        }
    }
}

/// One process-wide SIGINT/SIGTERM handler for every live guard: it checks them all in,
/// then ends the process (130 / 143), as the default handler would have.
mod signals {
    use super::{Client, Shared};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    type Live = HashMap<u64, (Client, String, String, Arc<Shared>)>;

    static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static WATCHING: OnceLock<()> = OnceLock::new();

    fn live() -> &'static Mutex<Live> {
        LIVE.get_or_init(Default::default)
    }

    pub fn register(client: &Client, lease_id: &str, instance: &str, shared: &Arc<Shared>) -> u64 {
        WATCHING.get_or_init(|| {
            tokio::spawn(watch());
        });
        let id = NEXT.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut map) = live().lock() {
            map.insert(
                id,
                (
                    client.clone(),
                    lease_id.to_string(),
                    instance.to_string(),
                    shared.clone(),
                ),
            );
        }
        id
    }

    pub fn unregister(id: u64) {
        if let Ok(mut map) = live().lock() {
            map.remove(&id);
        }
    }

    async fn watch() {
        let code = wait().await;
        let guards: Vec<_> = live()
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let checkins = guards
            .into_iter()
            .filter_map(|(client, lease_id, instance, shared)| {
                (!shared.released.swap(true, Ordering::SeqCst)).then(|| {
                    tokio::spawn(async move {
                        client
                            .with_attempts(2)
                            .release_instance(&lease_id, &instance)
                            .await
                    })
                })
            });
        for checkin in checkins.collect::<Vec<_>>() {
            let _ = checkin.await;
        }
        std::process::exit(code);
    }

    #[cfg(unix)]
    async fn wait() -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            },
            _ => std::future::pending().await,
        }
    }

    #[cfg(not(unix))]
    async fn wait() -> i32 {
        let _ = tokio::signal::ctrl_c().await;
        130
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        nonce: &str,
        op: &str,
        fingerprint: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "valid": true, "nonce": nonce, "op": op, "fingerprint": fingerprint,
            "os_user": "ann", "at": at,
        }))
        .unwrap()
    }

    #[test]
    fn an_answer_must_echo_its_request_and_be_recent() {
        let now = chrono::Utc::now();
        let ask = Ask::new("validate", Some("m1"), Some("ann"));
        assert!(ask
            .check(&answer("n1", "validate", Some("m1"), now), "n1", now)
            .is_ok());
        let refused = |body: Vec<u8>| match ask.check(&body, "n1", now) {
            Err(Error::Tampered(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(answer("n0", "validate", Some("m1"), now)).contains("nonce"));
        assert!(refused(answer("n1", "lease", Some("m1"), now)).contains("answers"));
        assert!(refused(answer("n1", "validate", Some("m2"), now)).contains("fingerprint"));
        assert!(refused(answer("n1", "validate", None, now)).contains("fingerprint"));
        let old = now - chrono::TimeDelta::minutes(6);
        assert!(refused(answer("n1", "validate", Some("m1"), old)).contains("5 minutes"));
        let ahead = now + chrono::TimeDelta::minutes(6);
        assert!(refused(answer("n1", "validate", Some("m1"), ahead)).contains("5 minutes"));
        assert!(refused(br#"{"valid":true}"#.to_vec()).contains("names no request"));
        let other_user = Ask::new("validate", Some("m1"), Some("bob"));
        assert!(other_user
            .check(&answer("n1", "validate", Some("m1"), now), "n1", now)
            .is_err());
    }
}
