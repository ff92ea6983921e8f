//! What the store reads and writes. Rows decode straight into these; encrypted
//! columns are never serialized (the audit log stores rows through `Serialize`).

use chrono::NaiveDate;
use leasehold_core::lease::{HeldLease, Instances, LicenseSeats};
use leasehold_core::*;
use serde::Serialize;

/// A new time-sortable id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, in milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Today's date in UTC.
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Who made a change, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `member`, `token`, `license_key` or `system`.
    pub kind: &'static str,
    pub id: Option<String>,
    pub label: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            kind: "system",
            id: None,
            label: "system".into(),
        }
    }
}

/// `?cursor=&limit=` of a list.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 200;

    pub fn first(limit: u32) -> PageRequest {
        PageRequest {
            cursor: None,
            limit,
        }
    }

    /// The limit to query: one past the page, to learn whether another page follows.
    pub(crate) fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT)) + 1
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts a fetched list (`fetch_limit` long at most) into a page and its cursor.
    pub(crate) fn from_fetched(
        mut rows: Vec<T>,
        page: &PageRequest,
        cursor_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        let limit = page.limit.clamp(1, PageRequest::MAX_LIMIT) as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub currency: String,
    /// JSON array of lead days.
    pub reminder_lead_days: String,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(skip)]
    pub signing_key_enc: Option<Vec<u8>>,
}

impl Workspace {
    pub fn lead_days(&self) -> Result<Vec<u32>, crate::StoreError> {
        serde_json::from_str(&self.reminder_lead_days)
            .map_err(|e| crate::StoreError::Corrupt(format!("workspace lead days: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub name: String,
    pub slug: String,
    pub currency: String,
    pub reminder_lead_days: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct NewMember {
    pub email: String,
    pub password_hash: String,
    pub role: Role,
}

/// What `PATCH /v1/members/{id}` changes; `None` keeps the field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberChange {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub token_hash: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub token_hash: String,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "as_json::optional_time")]
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Application {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub vendor: Option<String>,
    pub deployment_model: DeploymentModel,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "as_json::time")]
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewApplication {
    pub name: String,
    pub vendor: Option<String>,
    pub deployment_model: DeploymentModel,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ApplicationChange {
    pub name: Option<String>,
    pub vendor: Option<Option<String>>,
    pub deployment_model: Option<DeploymentModel>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct License {
    pub id: String,
    pub workspace_id: String,
    pub application_id: String,
    #[serde(skip)]
    pub key_enc: Vec<u8>,
    #[serde(skip)]
    pub key_hash: String,
    pub key_masked: String,
    pub licensed_to: String,
    pub vendor: Option<String>,
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    pub seat_model: SeatModel,
    pub seats_total: i64,
    pub seats_used: i64,
    pub version: Option<String>,
    pub cost_amount_minor: Option<i64>,
    pub cost_currency: Option<String>,
    pub purchased_on: Option<NaiveDate>,
    pub expires_on: Option<NaiveDate>,
    pub maintenance_expires_on: Option<NaiveDate>,
    pub po_number: Option<String>,
    pub notes: Option<String>,
    pub lease_ttl_s: i64,
    pub heartbeat_interval_s: i64,
    pub license_file_ttl_s: i64,
    pub self_service_releases_per_month: i64,
    pub admin_release: AdminRelease,
    pub release_cooldown_s: i64,
    pub max_instances_per_lease: i64,
    pub queue: QueueMode,
    pub queue_ttl_s: i64,
    pub idle_timeout_s: Option<i64>,
    pub idle_reclaim: IdleReclaim,
    /// How many days a floating seat may be borrowed for (0: borrowing is off).
    pub max_borrow_days: i64,
    /// How many seats may be borrowed at once (`None`: any up to `seats_total`).
    pub max_borrowed_seats: Option<i64>,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "as_json::time")]
    pub updated_at: i64,
}

impl License {
    /// Its seats, as the seat decision sees them on `today`.
    pub fn seats(&self, today: NaiveDate) -> LicenseSeats {
        LicenseSeats {
            model: self.seat_model,
            standing: effective_status(self.status, self.expires_on, today),
            seats_total: self.seats_total,
            seats_used: self.seats_used,
        }
    }

    pub fn policy(&self) -> LeasePolicy {
        LeasePolicy {
            lease_ttl_s: self.lease_ttl_s,
            heartbeat_interval_s: self.heartbeat_interval_s,
            license_file_ttl_s: self.license_file_ttl_s,
            self_service_releases_per_month: self.self_service_releases_per_month,
            admin_release: self.admin_release,
            release_cooldown_s: self.release_cooldown_s,
            max_instances_per_lease: self.max_instances_per_lease,
            queue: self.queue,
            queue_ttl_s: self.queue_ttl_s,
            idle_timeout_s: self.idle_timeout_s,
            idle_reclaim: self.idle_reclaim,
            max_borrow_days: self.max_borrow_days,
            max_borrowed_seats: self.max_borrowed_seats,
        }
    }

    pub fn cost(&self) -> Option<Money> {
        match (self.cost_amount_minor, &self.cost_currency) {
            (Some(amount_minor), Some(currency)) => Some(Money {
                amount_minor,
                currency: currency.clone(),
            }),
            _ => None,
        }
    }

    /// The license's editable fields, as a starting point for a change.
    pub fn to_change(&self) -> LicenseChange {
        LicenseChange {
            licensed_to: self.licensed_to.clone(),
            vendor: self.vendor.clone(),
            license_type: self.license_type,
            status: self.status,
            seat_model: self.seat_model,
            seats_total: self.seats_total,
            version: self.version.clone(),
            cost: self.cost(),
            purchased_on: self.purchased_on,
            expires_on: self.expires_on,
            maintenance_expires_on: self.maintenance_expires_on,
            po_number: self.po_number.clone(),
            notes: self.notes.clone(),
            policy: self.policy(),
        }
    }
}

/// A license's editable fields.
#[derive(Debug, Clone)]
pub struct LicenseChange {
    pub licensed_to: String,
    pub vendor: Option<String>,
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    pub seat_model: SeatModel,
    pub seats_total: i64,
    pub version: Option<String>,
    pub cost: Option<Money>,
    pub purchased_on: Option<NaiveDate>,
    pub expires_on: Option<NaiveDate>,
    pub maintenance_expires_on: Option<NaiveDate>,
    pub po_number: Option<String>,
    pub notes: Option<String>,
    pub policy: LeasePolicy,
}

#[derive(Debug, Clone)]
pub struct NewLicense {
    pub application_id: String,
    pub key_enc: Vec<u8>,
    pub key_hash: String,
    pub key_masked: String,
    pub fields: LicenseChange,
}

#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    pub application_id: Option<String>,
    pub status: Option<LicenseStatus>,
}

/// A seat as the audit log and webhooks carry it (its before and after): fields without a
/// value are left out rather than written as `null`. A seat event is written at every
/// checkout and checkin; with every field spelled out a checkin's row (before and after)
/// took a whole 2 KiB page of the audit log, and each event its own page write.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Seat {
    pub id: String,
    pub workspace_id: String,
    pub license_id: String,
    pub kind: SeatKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    pub contact_terminated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(skip)]
    pub serial_key_enc: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_key_masked: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_on: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// JSON array of instance ids, for leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "as_json::instances")]
    pub instances: Option<String>,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "as_json::optional_time")]
    pub last_seen_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "as_json::optional_time")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "as_json::optional_time")]
    pub released_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<ReleaseReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaimed_on: Option<NaiveDate>,
    /// Since when every instance of the lease has been unused (DESIGN §7), as they
    /// reported it; `None`: in use, or never reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "as_json::optional_time")]
    pub idle_since: Option<i64>,
    /// What each instance last said of its idleness (`IdleReports`' stored form).
    #[serde(skip)]
    pub idle_reports: Option<String>,
}

impl Seat {
    /// A new lease of `holder` on `license`, as `INSERT_LEASE` writes it: built here
    /// rather than read back.
    pub(crate) fn new_lease(
        license: &License,
        holder: &LeaseHolder,
        id: String,
        now: i64,
        expires_at: i64,
    ) -> Seat {
        Seat {
            id,
            workspace_id: license.workspace_id.clone(),
            license_id: license.id.clone(),
            kind: SeatKind::Lease,
            contact_id: None,
            contact_name: None,
            contact_terminated: false,
            assignee_name: None,
            device_name: None,
            serial_key_enc: None,
            serial_key_masked: None,
            activated_on: None,
            fingerprint: Some(holder.fingerprint.clone()),
            os_user: Some(holder.os_user.clone()),
            identifier: holder.identifier.clone(),
            instances: Some(Instances::first(&holder.instance).to_stored()),
            created_at: now,
            last_seen_at: Some(now),
            expires_at: Some(expires_at),
            released_at: None,
            release_reason: None,
            reclaimed_on: None,
            idle_since: None,
            idle_reports: None,
        }
    }

    /// The lease's instance set.
    pub fn instance_set(&self) -> Instances {
        Instances::from_stored(self.instances.as_deref())
    }

    /// This lease as the seat decision sees it.
    pub(crate) fn held_lease(&self) -> HeldLease {
        HeldLease {
            expires_at: self.expires_at.unwrap_or(0),
            instances: self.instance_set(),
        }
    }

    /// How the audit log records this seat ending with `reason` at `now`: who ended it,
    /// the action, and the seat after. A lapse (`seat.expired`), idleness and a borrow's
    /// end are the system's; a check-in or an early return (`seat.returned`) its holder's.
    pub(crate) fn end_event(
        &self,
        license: &License,
        reason: ReleaseReason,
        now: i64,
    ) -> (Actor, &'static str, Option<String>) {
        let after = || crate::sql::json(&self.ended(now, reason));
        match reason {
            ReleaseReason::Expired => (Actor::system(), "seat.expired", None),
            ReleaseReason::Idle | ReleaseReason::BorrowEnded => {
                (Actor::system(), "seat.released", after())
            }
            ReleaseReason::Returned => (
                key_actor(license, self.identifier.as_deref()),
                "seat.returned",
                after(),
            ),
            _ => (
                key_actor(license, self.identifier.as_deref()),
                "seat.released",
                after(),
            ),
        }
    }

    /// A heartbeat on a borrow (an app running on it, or a lease turned into it): its end
    /// while it lasts, then `410` with why it ended.
    pub(crate) fn borrow_beat(&self, now: i64) -> Result<i64, crate::StoreError> {
        match (self.release_reason, self.expires_at) {
            (Some(reason), _) => Err(crate::StoreError::LeaseEnded(reason)),
            (None, Some(until)) if until >= now => Ok(until),
            (None, _) => Err(crate::StoreError::LeaseEnded(ReleaseReason::BorrowEnded)),
        }
    }

    /// This lease as `END_SEAT` leaves it.
    pub(crate) fn ended(&self, now: i64, reason: ReleaseReason) -> Seat {
        Seat {
            released_at: Some(now),
            release_reason: Some(reason),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewAssignment {
    pub contact_id: Option<String>,
    pub assignee_name: Option<String>,
    pub device_name: Option<String>,
    pub serial_key_enc: Option<Vec<u8>>,
    pub serial_key_masked: Option<String>,
    pub activated_on: Option<NaiveDate>,
}

/// Who asks for a lease: one seat per (fingerprint, os_user), shared by its instances.
#[derive(Debug, Clone)]
pub struct LeaseHolder {
    pub fingerprint: String,
    pub os_user: String,
    pub identifier: Option<String>,
    pub instance: String,
    /// Wait in the license's queue when no seat is the holder's (DESIGN §7).
    pub queue: bool,
}

/// A holder waiting in a license's queue (DESIGN §7), head first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub position: i64,
    pub fingerprint: String,
    pub os_user: String,
    pub identifier: Option<String>,
    pub since: i64,
    pub last_seen_at: i64,
}

/// The actor for what a license key's holder does.
pub fn key_actor(license: &License, identifier: Option<&str>) -> Actor {
    key_actor_of(&license.id, &license.key_masked, identifier)
}

/// [`key_actor`] from the license's id and masked key.
pub(crate) fn key_actor_of(license_id: &str, key_masked: &str, identifier: Option<&str>) -> Actor {
    Actor {
        kind: "license_key",
        id: Some(license_id.to_string()),
        label: identifier.unwrap_or(key_masked).to_string(),
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Contact {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub email: Option<String>,
    pub status: ContactStatus,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "as_json::optional_time")]
    pub terminated_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewContact {
    pub name: String,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Reminder {
    pub id: String,
    pub workspace_id: String,
    pub license_id: String,
    pub kind: ReminderKind,
    pub due_on: NaiveDate,
    pub state: ReminderState,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "as_json::optional_time")]
    pub sent_at: Option<i64>,
    #[serde(serialize_with = "as_json::optional_time")]
    pub dismissed_at: Option<i64>,
    /// The message that announced it, once sent.
    pub outbox_id: Option<String>,
    /// That message's delivery state: `pending`, `delivered` or `failed`.
    #[sqlx(default)]
    pub delivery: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReminderFilter {
    pub license_id: Option<String>,
    pub due_before: Option<NaiveDate>,
    pub state: Option<ReminderState>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Event {
    pub id: String,
    pub workspace_id: String,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub actor_label: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub license_id: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub license_id: Option<String>,
    pub action: Option<String>,
    /// The events the reader's role may read (DESIGN §11).
    pub scope: leasehold_core::AuditScope,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Member {
    pub id: String,
    pub workspace_id: String,
    pub email: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: Role,
    #[serde(serialize_with = "as_json::time")]
    pub created_at: i64,
    /// When the member was disabled: they keep their place and can't sign in.
    #[serde(serialize_with = "as_json::optional_time")]
    pub disabled_at: Option<i64>,
}

impl Member {
    pub fn standing(&self) -> leasehold_core::perm::Standing {
        leasehold_core::perm::Standing {
            role: self.role,
            disabled: self.disabled_at.is_some(),
        }
    }
}

/// A signed-in browser: a member of a workspace, or a license holder on the portal.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub token_hash: String,
    /// `member` or `portal`.
    pub kind: String,
    pub workspace_id: String,
    pub member_id: Option<String>,
    pub license_id: Option<String>,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// How the records read in the audit log's before/after and in webhook payloads: as the
/// rest of the API reads — times in RFC 3339 (UTC, milliseconds), a lease's instances an
/// array — not as they are stored (epoch milliseconds, JSON text).
pub(crate) mod as_json {
    use serde::Serializer;

    fn text(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    pub fn time<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&text(*ms))
    }

    pub fn optional_time<S: Serializer>(
        ms: &Option<i64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => serializer.serialize_some(&text(*ms)),
            None => serializer.serialize_none(),
        }
    }

    pub fn instances<S: Serializer>(
        stored: &Option<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match stored {
            Some(text) => {
                let list: Vec<String> = serde_json::from_str(text).unwrap_or_default();
                serializer.serialize_some(&list)
            }
            None => serializer.serialize_none(),
        }
    }
}

/// One bucket of a license's usage (DESIGN §8), the hour or day starting at `start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageBucket {
    pub start: i64,
    pub peak_in_use: i64,
    /// Seats held on average over the bucket (over its elapsed part, for the one in
    /// progress).
    pub avg_in_use: f64,
    /// `None` before refusals were counted (DESIGN §8: they are unknown).
    pub denials: Option<i64>,
    pub denied_holders: Option<i64>,
    pub peak_queued: i64,
    pub holders: i64,
    /// Seats held, summed over the bucket (ms).
    #[serde(skip)]
    pub seat_ms: i64,
}

/// A license's usage over a range of days, bucket by bucket, up to now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub license_id: String,
    pub seats_total: i64,
    pub bucket: BucketSize,
    /// Refusals are counted from here on (ms); earlier buckets say `null`.
    pub denials_counted_since: i64,
    pub items: Vec<UsageBucket>,
}

pub use leasehold_core::usage::UsageSummaryItem;
