//! Notifications in the store: webhooks, the outbox, and turning due reminders into
//! messages. Every outgoing message is an outbox row written in the transaction of the
//! change it reports (see `enqueue_webhooks` in `engine/helpers.rs`), with a stable id, and is
//! claimed by one node at a time for delivery.

use crate::{Actor, Page, PageRequest, Result};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Serialize;

/// How long a message is retried after it was queued (or re-sent).
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The event types a webhook may subscribe to.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "seat.taken",
    "seat.released",
    "seat.denied",
    "seat.expired",
    "seat.queued",
    "seat.dequeued",
    "seat.borrowed",
    "seat.returned",
    "license.created",
    "license.updated",
    "license.deleted",
    "license.expiring",
    "contact.terminated",
];

/// The webhook event an audit action is announced as, if any.
pub fn webhook_event_of(action: &str) -> Option<&'static str> {
    Some(match action {
        "seat.taken" | "seat.activated" | "seat.assigned" => "seat.taken",
        "seat.released" | "seat.reclaimed" => "seat.released",
        "seat.expired" => "seat.expired",
        "seat.queued" => "seat.queued",
        "seat.dequeued" => "seat.dequeued",
        "seat.borrowed" => "seat.borrowed",
        "seat.returned" => "seat.returned",
        "license.created" => "license.created",
        "license.updated" => "license.updated",
        "license.deleted" => "license.deleted",
        "contact.terminated" => "contact.terminated",
        _ => return None,
    })
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Webhook {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    /// JSON array of event types.
    pub events: String,
    #[serde(skip)]
    pub secret_enc: Vec<u8>,
    #[serde(serialize_with = "crate::records::as_json::time")]
    pub created_at: i64,
    #[serde(serialize_with = "crate::records::as_json::optional_time")]
    pub deleted_at: Option<i64>,
}

impl Webhook {
    pub fn event_list(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

/// One outgoing message and its delivery state.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutboxMessage {
    pub id: String,
    pub workspace_id: String,
    /// `webhook` or `email`.
    pub channel: String,
    pub webhook_id: Option<String>,
    pub event_type: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub retry_until: i64,
    pub claimed_until: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// Who gets the workspace's reminder emails besides its managers, and how.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NotifySettings {
    pub emails: Vec<String>,
    /// One email a day with all of that day's reminders, instead of one each.
    pub digest: bool,
    /// A monthly email of what to reduce or increase before renewal (DESIGN §8).
    pub usage_digest: bool,
}

/// A workspace that asked for the monthly usage digest, and who gets it.
#[derive(Debug, Clone)]
pub struct DigestWorkspace {
    pub workspace_id: String,
    pub name: String,
    pub recipients: Vec<String>,
}

/// A reminder due now, with what its message names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueReminder {
    pub id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub license_id: String,
    pub kind: leasehold_core::ReminderKind,
    pub due_on: NaiveDate,
    pub application_name: String,
    pub licensed_to: String,
    pub expires_on: Option<NaiveDate>,
    pub maintenance_expires_on: Option<NaiveDate>,
    pub seats_used: i64,
    pub seats_total: i64,
    pub notify_emails: String,
    pub email_digest: bool,
    /// Filled by the store: members who may manage licenses, then the extra addresses.
    #[sqlx(skip)]
    pub recipients: Vec<String>,
}

/// An email to queue, announcing `reminder_ids`.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub id: String,
    pub workspace_id: String,
    pub event_type: String,
    /// `{"to": [...], "subject": ..., "text": ...}`.
    pub payload: String,
    pub reminder_ids: Vec<String>,
}

/// Renders due reminders into emails (the server knows the console's address).
pub type RenderReminders = dyn Fn(&[DueReminder]) -> Vec<NewEmail> + Send + Sync;

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: Option<i64>,
    },
    /// Failed; tried again at `retry_at`, or never if that is past the retry window.
    Failed {
        status: Option<i64>,
        error: String,
        retry_at: Option<i64>,
    },
}

#[async_trait]
pub trait Notifications: Send + Sync {
    async fn create_webhook(
        &self,
        actor: &Actor,
        workspace_id: &str,
        url: &str,
        events: &[String],
        secret_enc: Vec<u8>,
    ) -> Result<Webhook>;
    async fn webhook(&self, workspace_id: &str, id: &str) -> Result<Webhook>;
    async fn list_webhooks(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Webhook>>;
    async fn delete_webhook(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()>;
    /// A webhook's messages, newest first.
    async fn list_deliveries(
        &self,
        workspace_id: &str,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<OutboxMessage>>;
    /// Queues a message again (same id), retried for another window.
    async fn resend_delivery(
        &self,
        actor: &Actor,
        workspace_id: &str,
        webhook_id: &str,
        id: &str,
    ) -> Result<OutboxMessage>;
    async fn outbox_message(&self, id: &str) -> Result<OutboxMessage>;

    async fn notify_settings(&self, workspace_id: &str) -> Result<NotifySettings>;
    async fn update_notify_settings(
        &self,
        actor: &Actor,
        workspace_id: &str,
        settings: &NotifySettings,
    ) -> Result<NotifySettings>;

    /// The workspaces that asked for the monthly usage digest, with their recipients.
    async fn usage_digest_workspaces(&self) -> Result<Vec<DigestWorkspace>>;

    /// Queues an email once: answers `false` when one with its id is queued already
    /// (another node, an earlier tick).
    async fn queue_email(&self, email: &NewEmail) -> Result<bool>;

    /// Turns every reminder due by `today` into queued messages, in one transaction
    /// with marking it sent; one node at a time. Answers how many reminders it sent.
    async fn queue_due_reminders(&self, today: NaiveDate, render: &RenderReminders) -> Result<u64>;
    /// Claims the oldest due message for `hold_ms` (a crashed node's claim lapses);
    /// emails only when `with_email`.
    async fn claim_message(&self, with_email: bool, hold_ms: i64) -> Result<Option<OutboxMessage>>;
    async fn finish_message(&self, id: &str, attempt: &Attempt) -> Result<()>;
    /// The webhook a message goes to, deleted or not.
    async fn webhook_by_id(&self, id: &str) -> Result<Option<Webhook>>;
}
