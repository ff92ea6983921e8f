//! The JSON shapes of Leasehold's API (DESIGN §3, §4), shared by the server and the SDK.
//! Requests refuse unknown fields; optional fields that can be cleared on `PATCH` are
//! `Option<Option<T>>`: absent leaves the value, `null` clears it.

use chrono::{DateTime, NaiveDate, Utc};
use leasehold_core::{
    AdminRelease, BucketSize, ContactStatus, DeploymentModel, EffectiveStatus, IdleReclaim,
    LeasePolicy, LicenseStatus, LicenseType, Money, QueueMode, ReleaseReason, ReminderKind,
    ReminderState, Role, SeatKind, SeatModel,
};
use serde::{Deserialize, Deserializer, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Deserializes a present field (even `null`) as `Some`, so `PATCH` can tell
/// "clear it" (`null`) from "leave it" (absent, via `#[serde(default)]`).
pub fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The one error shape of every endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// A stable code: `INVALID_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `SEAT_OVER_ALLOCATED`, `NO_SEATS`, `RATE_LIMITED`, `INTERNAL`, …
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

/// One page of a list; pass `next_cursor` as `?cursor=` for the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub status: String,
}

// ---- tokens ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new token: `token` is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenCreated {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub token: String,
    pub created_at: DateTime<Utc>,
}

// ---- applications ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    pub name: String,
    #[serde(default)]
    pub vendor: Option<String>,
    pub deployment_model: DeploymentModel,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateApplication {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub vendor: Option<Option<String>>,
    #[serde(default)]
    pub deployment_model: Option<DeploymentModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Application {
    pub id: String,
    pub name: String,
    pub vendor: Option<String>,
    pub deployment_model: DeploymentModel,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---- licenses ----

/// A lease policy given in part: what is absent keeps its default (or, on `PATCH`, its value).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub lease_ttl_s: Option<i64>,
    pub heartbeat_interval_s: Option<i64>,
    pub license_file_ttl_s: Option<i64>,
    pub self_service_releases_per_month: Option<i64>,
    pub admin_release: Option<AdminRelease>,
    pub release_cooldown_s: Option<i64>,
    pub max_instances_per_lease: Option<i64>,
    pub queue: Option<QueueMode>,
    pub queue_ttl_s: Option<i64>,
    /// Seconds every instance of a lease must be unused before it is idle; `null`: never.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub idle_timeout_s: Option<Option<i64>>,
    pub idle_reclaim: Option<IdleReclaim>,
    /// The most days a floating seat may be borrowed for offline use (0: off).
    pub max_borrow_days: Option<i64>,
    /// The most seats out on borrow at once; `null`: any number up to `seats_total`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub max_borrowed_seats: Option<Option<i64>>,
}

impl PolicyInput {
    pub fn apply_to(&self, mut policy: LeasePolicy) -> LeasePolicy {
        policy.lease_ttl_s = self.lease_ttl_s.unwrap_or(policy.lease_ttl_s);
        policy.heartbeat_interval_s = self
            .heartbeat_interval_s
            .unwrap_or(policy.heartbeat_interval_s);
        policy.license_file_ttl_s = self.license_file_ttl_s.unwrap_or(policy.license_file_ttl_s);
        policy.self_service_releases_per_month = self
            .self_service_releases_per_month
            .unwrap_or(policy.self_service_releases_per_month);
        policy.admin_release = self.admin_release.unwrap_or(policy.admin_release);
        policy.release_cooldown_s = self.release_cooldown_s.unwrap_or(policy.release_cooldown_s);
        policy.max_instances_per_lease = self
            .max_instances_per_lease
            .unwrap_or(policy.max_instances_per_lease);
        policy.queue = self.queue.unwrap_or(policy.queue);
        policy.queue_ttl_s = self.queue_ttl_s.unwrap_or(policy.queue_ttl_s);
        policy.idle_timeout_s = self.idle_timeout_s.unwrap_or(policy.idle_timeout_s);
        policy.idle_reclaim = self.idle_reclaim.unwrap_or(policy.idle_reclaim);
        policy.max_borrow_days = self.max_borrow_days.unwrap_or(policy.max_borrow_days);
        policy.max_borrowed_seats = self.max_borrowed_seats.unwrap_or(policy.max_borrowed_seats);
        policy
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLicense {
    pub application_id: String,
    /// The key as the vendor issued it; generated (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`) when absent.
    #[serde(default)]
    pub key: Option<String>,
    pub licensed_to: String,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(rename = "type")]
    pub license_type: LicenseType,
    #[serde(default)]
    pub status: Option<LicenseStatus>,
    /// `dedicated` when absent.
    #[serde(default)]
    pub seat_model: Option<SeatModel>,
    pub seats_total: i64,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub cost: Option<Money>,
    #[serde(default)]
    pub purchased_on: Option<NaiveDate>,
    #[serde(default)]
    pub expires_on: Option<NaiveDate>,
    #[serde(default)]
    pub maintenance_expires_on: Option<NaiveDate>,
    #[serde(default)]
    pub po_number: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub policy: Option<PolicyInput>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateLicense {
    #[serde(default)]
    pub licensed_to: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub vendor: Option<Option<String>>,
    #[serde(default, rename = "type")]
    pub license_type: Option<LicenseType>,
    #[serde(default)]
    pub status: Option<LicenseStatus>,
    #[serde(default)]
    pub seat_model: Option<SeatModel>,
    #[serde(default)]
    pub seats_total: Option<i64>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Money>))]
    pub cost: Option<Option<Money>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<NaiveDate>))]
    pub purchased_on: Option<Option<NaiveDate>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<NaiveDate>))]
    pub expires_on: Option<Option<NaiveDate>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<NaiveDate>))]
    pub maintenance_expires_on: Option<Option<NaiveDate>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub po_number: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub notes: Option<Option<String>>,
    #[serde(default)]
    pub policy: Option<PolicyInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct License {
    pub id: String,
    pub application_id: String,
    /// The full key: present only in the answer that created the license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub key_masked: String,
    pub licensed_to: String,
    pub vendor: Option<String>,
    #[serde(rename = "type")]
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    /// The status a client sees today: `expired` once `expires_on` has passed.
    pub effective_status: EffectiveStatus,
    pub seat_model: SeatModel,
    pub seats_total: i64,
    pub seats_used: i64,
    pub version: Option<String>,
    pub cost: Option<Money>,
    pub purchased_on: Option<NaiveDate>,
    pub expires_on: Option<NaiveDate>,
    pub maintenance_expires_on: Option<NaiveDate>,
    pub po_number: Option<String>,
    pub notes: Option<String>,
    pub policy: LeasePolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevealedKey {
    pub key: String,
}

// ---- seats ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignSeat {
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub assignee_name: Option<String>,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub seat_serial_key: Option<String>,
    #[serde(default)]
    pub activated_on: Option<NaiveDate>,
}

/// One row of the seat ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Seat {
    pub id: String,
    pub license_id: String,
    pub kind: SeatKind,
    /// True while the seat is held (not released).
    pub active: bool,
    pub contact_id: Option<String>,
    pub contact_name: Option<String>,
    /// The holder contact was offboarded: reclaim this seat.
    pub contact_terminated: bool,
    pub assignee_name: Option<String>,
    pub device_name: Option<String>,
    pub seat_serial_key_masked: Option<String>,
    pub activated_on: Option<NaiveDate>,
    pub fingerprint: Option<String>,
    pub os_user: Option<String>,
    pub identifier: Option<String>,
    pub instances: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub released_at: Option<DateTime<Utc>>,
    pub release_reason: Option<ReleaseReason>,
    pub reclaimed_on: Option<NaiveDate>,
}

// ---- contacts ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateContact {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub status: ContactStatus,
    pub created_at: DateTime<Utc>,
    pub terminated_at: Option<DateTime<Utc>>,
    /// The seats the contact holds now (on single reads and after terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_seats: Option<Vec<Seat>>,
}

// ---- reminders and events ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Reminder {
    pub id: String,
    pub license_id: String,
    pub kind: ReminderKind,
    pub due_on: NaiveDate,
    pub state: ReminderState,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub dismissed_at: Option<DateTime<Utc>>,
    /// The reminder email's delivery: `pending`, `delivered` or `failed`; absent until sent.
    pub delivery: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventActor {
    /// `member`, `token`, `license_key` or `system`.
    pub kind: String,
    pub id: Option<String>,
    pub label: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Event {
    pub id: String,
    pub actor: EventActor,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub license_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<serde_json::Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub after: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

// ---- the client protocol (DESIGN §3) ----

/// The header every `/v1/client/*` answer carries: `ed25519=<base64 signature>` of
/// [`ANSWER_CONTEXT`] followed by the exact body bytes (DESIGN §11).
pub const SIGNATURE_HEADER: &str = "leasehold-signature";

/// The header a client may send its request's nonce in (any call; the JSON body's
/// `nonce` is read first).
pub const NONCE_HEADER: &str = "leasehold-nonce";

/// What an answer's signature covers before its body: an answer can never pass for a
/// license file's payload, nor one for the other.
pub const ANSWER_CONTEXT: &[u8] = b"leasehold-answer-v1\n";
/// What a license file's signature covers before its payload.
pub const FILE_CONTEXT: &[u8] = b"leasehold-file-v1\n";

/// The message a signature covers: the context, then the bytes.
pub fn signed_message(context: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + bytes.len());
    message.extend_from_slice(context);
    message.extend_from_slice(bytes);
    message
}

/// A request's nonce: 1 to 128 printable ASCII characters.
pub fn check_nonce(nonce: &str) -> Result<(), &'static str> {
    if nonce.is_empty() || nonce.len() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if !nonce.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("must be printable ASCII characters");
    }
    Ok(())
}

/// What every signed client answer (errors included) says of the request it answers, at
/// the top level of its JSON body (DESIGN §11). The SDK refuses an answer whose binding
/// differs from its request: a replayed answer, or one to a request that was altered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Binding {
    /// The request's nonce, echoed (null when none was sent).
    pub nonce: Option<String>,
    /// What was asked: `validate`, `activate`, `deactivate`, `lease`, `heartbeat`,
    /// `checkin`, `license_file`.
    pub op: String,
    /// The machine the request named (null when none).
    pub fingerprint: Option<String>,
    /// The OS user the request named (null when none).
    pub os_user: Option<String>,
    /// The server's time when it answered (whole seconds).
    pub at: DateTime<Utc>,
}

/// `POST /v1/client/validate`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

/// What a client learns of its license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClientLicense {
    pub id: String,
    #[serde(rename = "type")]
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    pub seat_model: SeatModel,
    pub seats_total: i64,
    pub seats_used: i64,
    pub expires_on: Option<NaiveDate>,
    pub maintenance_expires_on: Option<NaiveDate>,
    pub version: Option<String>,
    pub licensed_to: String,
    pub lease_ttl_s: i64,
    pub heartbeat_interval_s: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ValidateAnswer {
    pub valid: bool,
    /// `VALID`, `NOT_FOUND`, `SUSPENDED`, `REVOKED`, `EXPIRED` or `NOT_ACTIVATED`.
    pub code: String,
    pub license: Option<ClientLicense>,
    pub checked_at: DateTime<Utc>,
}

/// `POST /v1/client/activations`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

/// An activation. Its `fingerprint` is the one the request named, as every answer's
/// [`Binding`] echoes it (the server writes it once, there).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Activation {
    pub id: String,
    pub fingerprint: String,
    pub identifier: Option<String>,
    pub activated_at: DateTime<Utc>,
}

/// The body of the client's `DELETE`s; the key may come as `Authorization: License …` instead.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyOnly {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Deactivated {
    pub id: String,
    pub released_at: DateTime<Utc>,
}

/// `POST /v1/client/leases`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub fingerprint: String,
    pub os_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    pub instance: String,
    /// When the license is full, wait in its queue (DESIGN §7): `NO_SEATS` then says
    /// the caller's `queue_position`, and a freed seat goes to the head of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<bool>,
    /// With `queue`, how long (0–60 s) the request waits for the caller's turn before it
    /// answers `NO_SEATS` (a long poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<u32>,
}

/// `POST /v1/client/queue/leave`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaveQueueRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub fingerprint: String,
    pub os_user: String,
}

/// `POST /v1/client/borrows`: a floating seat lent for `days` days of offline use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BorrowRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub fingerprint: String,
    pub os_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// 1 to the policy's `max_borrow_days`.
    pub days: i64,
}

/// A borrowed seat, and the offline license file that vouches for it to its end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Borrowed {
    pub id: String,
    pub borrowed_until: DateTime<Utc>,
    pub license_file: LicenseFile,
}

/// `DELETE /v1/client/borrows/{id}`: the borrow returned early.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BorrowReturned {
    pub id: String,
    pub returned_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeftQueue {
    /// Whether the holder had a place.
    pub left: bool,
}

/// One bucket of `GET /v1/licenses/{id}/usage` (DESIGN §8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageItem {
    /// The hour's or day's start (UTC).
    pub start: DateTime<Utc>,
    /// The most seats held at once.
    pub peak_in_use: i64,
    /// Seats held on average (time-weighted; over the elapsed part of the bucket in
    /// progress).
    pub avg_in_use: f64,
    /// `NO_SEATS` answers (and holders joining the queue); `null` before counting began.
    pub denials: Option<i64>,
    /// Distinct holders refused.
    pub denied_holders: Option<i64>,
    pub peak_queued: i64,
    /// Distinct holders that held a seat.
    pub holders: i64,
}

/// `GET /v1/licenses/{id}/usage`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseUsage {
    pub license_id: String,
    pub seats_total: i64,
    pub bucket: BucketSize,
    /// Refusals were counted from this time on; earlier buckets say `null`.
    pub denials_counted_since: DateTime<Utc>,
    pub items: Vec<UsageItem>,
}

pub use leasehold_core::usage::UsageSummaryItem;

/// `GET /v1/usage/summary`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageSummary {
    pub days: i64,
    pub items: Vec<UsageSummaryItem>,
}

/// One waiter of `GET /v1/licenses/{id}/queue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueItem {
    /// 1: the next to get a seat.
    pub position: i64,
    pub fingerprint: String,
    pub os_user: String,
    pub identifier: Option<String>,
    pub since: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueList {
    /// The waiters that still hold their place, head first.
    pub items: Vec<QueueItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Lease {
    pub id: String,
    pub expires_at: DateTime<Utc>,
    pub heartbeat_interval_s: i64,
    pub instances: Vec<String>,
}

/// `POST /v1/client/leases/{id}/heartbeat`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A fresh value per request, echoed in the signed answer (DESIGN §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub instance: String,
    /// Seconds since the user last used this instance (0: in use; absent: unknown, counted
    /// as in use). A lease whose every instance is idle past the policy's
    /// `idle_timeout_s` may lose its seat (DESIGN §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeartbeatAnswer {
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InstanceReleased {
    /// True when this was the lease's last instance and the seat is free.
    pub released: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PublicKey {
    pub algorithm: String,
    /// The Ed25519 public key, base64 (32 bytes).
    pub public_key: String,
    /// The same key in hex (64 characters), as Keygen clients are configured with it
    /// (the Keygen-compatible API at `/keygen` signs with it).
    #[serde(default)]
    pub public_key_hex: String,
}

/// What an offline license file vouches for; `payload` of [`LicenseFile`] is this, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseFilePayload {
    pub license: ClientLicense,
    pub fingerprint: String,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// `"borrow"` for a borrowed floating seat (DESIGN §7); absent for a seat held online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The borrow's id (to return it early), and the OS user it was lent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

/// A signed offline license file: the exact payload bytes (base64) and their signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LicenseFile {
    pub format: String,
    pub algorithm: String,
    /// Base64 of the JSON [`LicenseFilePayload`]; the signature is over these bytes.
    pub payload: String,
    pub signature: String,
}

pub const LICENSE_FILE_FORMAT: &str = "leasehold-license-file/v1";

// ---- notifications ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Event types: `seat.taken`, `seat.released`, `seat.denied`, `seat.expired`,
    /// `license.created`, `license.updated`, `license.deleted`, `license.expiring`,
    /// `contact.terminated`.
    pub events: Vec<String>,
    /// The signing secret; generated (and shown once) when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Only in the answer that created the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One message to a webhook and how its delivery went.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Delivery {
    /// The message id: the body's `id` and the `Leasehold-Webhook-Id` header.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The JSON body delivered (the same on every attempt).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NotificationSettings {
    /// Addresses that get reminder emails besides the members who manage licenses.
    pub emails: Vec<String>,
    /// One email a day with all of that day's reminders, instead of one each.
    pub digest: bool,
    /// A monthly email naming the licenses to reduce or increase before renewal.
    #[serde(default)]
    pub usage_digest: bool,
    /// Whether this server has SMTP configured (read-only).
    #[serde(default)]
    pub smtp_configured: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateNotificationSettings {
    #[serde(default)]
    pub emails: Option<Vec<String>>,
    #[serde(default)]
    pub digest: Option<bool>,
    #[serde(default)]
    pub usage_digest: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TestEmail {
    /// Where to send it; the caller's own address when absent.
    #[serde(default)]
    pub to: Option<String>,
}
