//! Delivering the outbox: signed webhooks and reminder emails. Every node runs the
//! delivery loop; each message is claimed by one node at a time (`claim_message`) and
//! sent by that node alone, one at a time, so a crash repeats at most the message that
//! was in flight, under the same id. Failures are retried with exponential backoff for
//! 24 hours.

use crate::egress::{self, Lookup, Rules};
use crate::AppState;
use hmac::{Hmac, Mac};
use leasehold_store::{Attempt, DueReminder, NewEmail, OutboxMessage};
use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How notifications go out; part of [`crate::Settings`].
#[derive(Clone)]
pub struct NotifySettings {
    /// `smtp://`, `smtps://` (TLS) or `smtp://…?tls=required` (STARTTLS), with
    /// `user:password@` for AUTH. Email is off without it.
    pub smtp_url: Option<String>,
    /// The From address of reminder emails.
    pub smtp_from: String,
    /// The console's address, for links in emails.
    pub public_url: String,
    /// Allow webhooks to loopback and link-local addresses and this host's own (tests,
    /// trusted setups).
    pub webhook_allow_local: bool,
    /// Allow webhooks to private networks (RFC 1918, CGNAT, ULA, local NAT64).
    pub webhook_allow_private: bool,
    /// Send webhooks through this HTTP proxy. The environment's `HTTP(S)_PROXY` is never
    /// used: a proxy would connect wherever a name points, past the address rules.
    pub webhook_proxy: Option<String>,
    /// How webhook hosts are resolved (the system's resolver; a seam for tests).
    pub lookup: Arc<dyn Lookup>,
    /// The first retry waits this long; each next one twice as long (up to an hour).
    pub retry_base: Duration,
    /// How long a node holds a message it is delivering before another may retry it.
    pub claim_hold: Duration,
    /// How often each node looks for messages due.
    pub poll_interval: Duration,
    /// How often each node turns due reminders into messages.
    pub reminder_interval: Duration,
    /// A webhook receiver's time to answer.
    pub webhook_timeout: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            smtp_url: None,
            smtp_from: "Leasehold <leasehold@localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            webhook_allow_local: false,
            webhook_allow_private: false,
            webhook_proxy: None,
            lookup: Arc::new(egress::SystemLookup),
            retry_base: Duration::from_secs(10),
            claim_hold: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            reminder_interval: Duration::from_secs(60),
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

impl NotifySettings {
    /// Which addresses webhooks may reach.
    pub fn webhook_rules(&self) -> Rules {
        Rules {
            allow_local: self.webhook_allow_local,
            allow_private: self.webhook_allow_private,
        }
    }

    /// [`check_webhook_url`] under these rules, with this host's addresses as the lookup
    /// seam reports them.
    pub fn check_webhook_url(&self, text: &str) -> Result<reqwest::Url, String> {
        check_webhook_url(text, self.webhook_rules(), &self.lookup.own_addresses())
    }
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(crate::setup::redact_url),
            )
            .field("smtp_from", &self.smtp_from)
            .field("public_url", &self.public_url)
            .field("webhook_allow_local", &self.webhook_allow_local)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field(
                "webhook_proxy",
                &self.webhook_proxy.as_deref().map(crate::setup::redact_url),
            )
            .finish()
    }
}

/// What the delivery loop sends with.
pub struct Notifier {
    pub settings: NotifySettings,
    /// Wakes this node's delivery loop before its next poll (a delivery queued again).
    wake: tokio::sync::Notify,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    http: reqwest::Client,
}

impl Notifier {
    pub fn new(settings: NotifySettings) -> anyhow::Result<Notifier> {
        use anyhow::Context;
        let smtp = match &settings.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("LEASEHOLD_SMTP_URL")?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            ),
            None => None,
        };
        let from: Mailbox = settings
            .smtp_from
            .parse()
            .context("LEASEHOLD_SMTP_FROM is not an email address")?;
        let mut http = reqwest::Client::builder()
            .timeout(settings.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Leasehold-Webhooks/", env!("CARGO_PKG_VERSION")));
        let mut proxy_host = None;
        if let Some(proxy) = &settings.webhook_proxy {
            let url = reqwest::Url::parse(proxy).context("LEASEHOLD_WEBHOOK_PROXY is not a URL")?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                anyhow::bail!(
                    "LEASEHOLD_WEBHOOK_PROXY must be an http:// or https:// URL with a host"
                );
            }
            proxy_host = url
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_string());
            http = http.proxy(reqwest::Proxy::all(url).context("LEASEHOLD_WEBHOOK_PROXY")?);
        }
        let http = http
            .dns_resolver(Arc::new(egress::GuardedResolver {
                lookup: settings.lookup.clone(),
                rules: settings.webhook_rules(),
                proxy_host,
            }))
            .build()?;
        Ok(Notifier {
            settings,
            wake: tokio::sync::Notify::new(),
            smtp,
            from,
            http,
        })
    }

    /// Has this node look for due messages now, not at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn email_enabled(&self) -> bool {
        self.smtp.is_some()
    }

    /// Sends one email now (the console's SMTP test).
    pub async fn send_email(
        &self,
        id: &str,
        to: &[String],
        subject: &str,
        text: &str,
    ) -> Result<(), String> {
        let smtp = self
            .smtp
            .as_ref()
            .ok_or("SMTP is not configured (LEASEHOLD_SMTP_URL)")?;
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{id}@leasehold>")))
            .header(ContentType::TEXT_PLAIN);
        let mut recipients = Vec::new();
        for address in to {
            match address.parse::<Mailbox>() {
                Ok(mailbox) => recipients.push(mailbox),
                Err(_) => tracing::warn!(%address, "skipping a recipient that is not an address"),
            }
        }
        // One recipient is addressed; several are blind copies, so that an outside
        // address never sees the members' (or each other's).
        match recipients.len() {
            0 => return Err("no recipients".into()),
            1 => message = message.to(recipients.remove(0)),
            _ => {
                for mailbox in recipients {
                    message = message.bcc(mailbox);
                }
            }
        }
        let message = message
            .body(text.to_string())
            .map_err(|e| format!("building the email: {e}"))?;
        smtp.send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// Checks a webhook URL as given: http(s), a host, no credentials, and not a literal
/// address (or `localhost`) the rules refuse. Names are checked when they resolve, at each
/// delivery.
pub fn check_webhook_url(text: &str, rules: Rules, own: &[IpAddr]) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; the signature authenticates deliveries".into());
    }
    let literal = match url.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if name == "localhost" || name.ends_with(".localhost") {
                Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            } else {
                None
            }
        }
    };
    if let Some(address) = literal {
        let host = url.host_str().unwrap_or_default();
        rules
            .check(host, address, own)
            .map_err(|refused| refused.to_string())?;
    }
    Ok(url)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        crate::secrets::hex(&mac.finalize().into_bytes())
    )
}

/// The delivered body of a webhook message: the same bytes on every attempt.
pub fn webhook_body(message: &OutboxMessage) -> String {
    let data: serde_json::Value =
        serde_json::from_str(&message.payload).unwrap_or(serde_json::Value::Null);
    let time = chrono::DateTime::from_timestamp_millis(message.created_at)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "id": message.id,
        "type": message.event_type,
        "time": time,
        "data": data,
    })
    .to_string()
}

pub fn spawn(state: AppState) -> Vec<JoinHandle<()>> {
    let deliveries = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let (_, next_retry) = deliver_due(&state).await;
                // Until the next poll, or the first retry this pass scheduled if that is
                // sooner (a retry base below the poll interval still doubles), or a wake.
                let mut pause = state.notifier.settings.poll_interval;
                if let Some(at) = next_retry {
                    let until = u64::try_from(at - leasehold_store::now_ms()).unwrap_or(0);
                    pause = pause.min(Duration::from_millis(until));
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = state.notifier.wake.notified() => {}
                }
            }
        })
    };
    let reminders = tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.notifier.settings.reminder_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            queue_reminders(&state).await;
            queue_usage_digests(&state).await;
        }
    });
    vec![deliveries, reminders]
}

/// Queues messages for every reminder due today or earlier; answers how many.
pub async fn queue_reminders(state: &AppState) -> u64 {
    let public_url = state.notifier.settings.public_url.clone();
    let render = move |due: &[DueReminder]| render_reminders(due, &public_url);
    match state
        .store
        .queue_due_reminders(leasehold_store::today(), &render)
        .await
    {
        Ok(n) => {
            if n > 0 {
                tracing::info!(reminders = n, "queued reminder messages");
            }
            n
        }
        Err(error) => {
            tracing::warn!(%error, "queuing reminders failed; retrying next tick");
            0
        }
    }
}

/// Queues this month's usage digest (DESIGN §8) for every workspace that asked for one
/// and has not had it yet: once a month, on the first tick of the month (or the first
/// after it was turned on), whichever node gets there first. Answers how many it queued.
pub async fn queue_usage_digests(state: &AppState) -> u64 {
    let workspaces = match state.store.usage_digest_workspaces().await {
        Ok(workspaces) => workspaces,
        Err(error) => {
            tracing::warn!(%error, "listing usage digests failed; retrying next tick");
            return 0;
        }
    };
    let now = leasehold_store::now_ms();
    let month = leasehold_store::today().format("%Y-%m").to_string();
    let mut queued = 0;
    for workspace in workspaces {
        let id = format!("usage-digest.{}.{month}", workspace.workspace_id);
        if state.store.outbox_message(&id).await.is_ok() {
            continue;
        }
        let items = match state
            .store
            .usage_summary(&workspace.workspace_id, USAGE_DIGEST_DAYS, now)
            .await
        {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(%error, workspace = %workspace.workspace_id, "usage digest failed");
                continue;
            }
        };
        let base = state.notifier.settings.public_url.trim_end_matches('/');
        let (subject, text) = render_usage_digest(&workspace.name, &month, &items, base);
        let email = NewEmail {
            id,
            workspace_id: workspace.workspace_id.clone(),
            event_type: "usage.digest".into(),
            payload:
                serde_json::json!({"to": workspace.recipients, "subject": subject, "text": text})
                    .to_string(),
            reminder_ids: Vec::new(),
        };
        match state.store.queue_email(&email).await {
            Ok(true) => queued += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "queuing a usage digest failed"),
        }
    }
    if queued > 0 {
        state.notifier.wake();
    }
    queued
}

/// The period a usage digest looks back on.
const USAGE_DIGEST_DAYS: i64 = 30;
/// The most licenses a usage digest names.
const USAGE_DIGEST_TOP: usize = 5;

/// A usage digest's subject and text: the licenses to change, the most money at stake
/// first, each with its advice, its reason and when it renews.
pub fn render_usage_digest(
    workspace: &str,
    month: &str,
    items: &[leasehold_store::UsageSummaryItem],
    base: &str,
) -> (String, String) {
    use leasehold_core::usage::AdviceAction;
    let changes: Vec<_> = items
        .iter()
        .filter(|i| i.advice.action != AdviceAction::Keep)
        .take(USAGE_DIGEST_TOP)
        .collect();
    let mut text =
        format!("License usage over the last {USAGE_DIGEST_DAYS} days, {workspace}.\n\n");
    if changes.is_empty() {
        text.push_str("Every license was used about as much as was bought: nothing to change.\n");
    }
    for item in &changes {
        let verb = match item.advice.action {
            AdviceAction::Increase => "increase",
            _ => "reduce",
        };
        let renews = item
            .expires_on
            .map(|d| format!("; renews {d}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "* {}: {verb} to {} seats{renews}\n  {}\n  {base}/licenses/{}#usage\n\n",
            item.licensed_to, item.advice.seats, item.advice.reason, item.license_id
        ));
    }
    text.push_str(&format!(
        "\nEvery license: {base}/usage\n\n-- \nLeasehold, workspace {workspace}\n"
    ));
    let subject = match changes.len() {
        0 => format!("Usage digest {month}: nothing to change"),
        1 => format!("Usage digest {month}: 1 license to change before renewal"),
        n => format!("Usage digest {month}: {n} licenses to change before renewal"),
    };
    (subject, text)
}

/// Delivers every message due now, one at a time; answers how many were attempted, and
/// when the first retry it scheduled is due.
pub async fn deliver_due(state: &AppState) -> (usize, Option<i64>) {
    let hold = state.notifier.settings.claim_hold.as_millis() as i64;
    let mut attempted = 0;
    let mut next_retry: Option<i64> = None;
    loop {
        let message = match state
            .store
            .claim_message(state.notifier.email_enabled(), hold)
            .await
        {
            Ok(Some(message)) => message,
            Ok(None) => return (attempted, next_retry),
            Err(error) => {
                tracing::warn!(%error, "claiming a message failed");
                return (attempted, next_retry);
            }
        };
        attempted += 1;
        let outcome = deliver(state, &message).await;
        let attempt = match outcome {
            Ok(status) => Attempt::Delivered { status },
            Err((status, error)) => {
                let retry_at = next_attempt(
                    &message,
                    state.notifier.settings.retry_base,
                    leasehold_store::now_ms(),
                );
                tracing::info!(id = %message.id, attempts = message.attempts, %error, retry = retry_at.is_some(), "delivery failed");
                if let Some(at) = retry_at {
                    next_retry = Some(next_retry.map_or(at, |next| next.min(at)));
                }
                Attempt::Failed {
                    status,
                    error,
                    retry_at,
                }
            }
        };
        if let Err(error) = state.store.finish_message(&message.id, &attempt).await {
            tracing::warn!(%error, id = %message.id, "recording a delivery failed; it will be retried");
        }
    }
}

/// When to try again after `message.attempts` failures, or None past the retry window.
fn next_attempt(message: &OutboxMessage, base: Duration, now: i64) -> Option<i64> {
    let exponent = u32::try_from(message.attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let delay = (base.as_millis() as i64)
        .saturating_mul(1i64 << exponent)
        .min(3_600_000);
    let at = now.saturating_add(delay);
    (at <= message.retry_until).then_some(at)
}

async fn deliver(
    state: &AppState,
    message: &OutboxMessage,
) -> Result<Option<i64>, (Option<i64>, String)> {
    match message.channel.as_str() {
        "webhook" => deliver_webhook(state, message).await,
        "email" => {
            #[derive(serde::Deserialize)]
            struct Email {
                to: Vec<String>,
                subject: String,
                text: String,
            }
            let email: Email = serde_json::from_str(&message.payload)
                .map_err(|e| (None, format!("unreadable email payload: {e}")))?;
            state
                .notifier
                .send_email(&message.id, &email.to, &email.subject, &email.text)
                .await
                .map(|_| None)
                .map_err(|e| (None, e))
        }
        other => Err((None, format!("unknown channel {other}"))),
    }
}

async fn deliver_webhook(
    state: &AppState,
    message: &OutboxMessage,
) -> Result<Option<i64>, (Option<i64>, String)> {
    let webhook_id = message.webhook_id.as_deref().unwrap_or_default();
    let webhook = match state.store.webhook_by_id(webhook_id).await {
        Ok(Some(webhook)) if webhook.deleted_at.is_none() => webhook,
        Ok(_) => return Err((None, "webhook deleted".into())),
        Err(e) => return Err((None, e.to_string())),
    };
    let settings = &state.notifier.settings;
    let url = settings
        .check_webhook_url(&webhook.url)
        .map_err(|e| (None, e))?;
    if settings.webhook_proxy.is_some() {
        // The proxy resolves the name and connects; the rules are applied to the name
        // here first, as they would be without it.
        if let Some(url::Host::Domain(name)) = url.host() {
            egress::resolve(settings.lookup.as_ref(), settings.webhook_rules(), name)
                .await
                .map_err(|e| match egress::refusal(e.as_ref()) {
                    Some(refused) => (None, refused.to_string()),
                    None => (None, format!("resolving {name}: {e}")),
                })?;
        }
    }
    let secret = state
        .master
        .decrypt(&webhook.secret_enc)
        .map_err(|e| (None, format!("the webhook secret does not decrypt: {e}")))?;
    let body = webhook_body(message);
    let timestamp = chrono::Utc::now().timestamp();
    let response = state
        .notifier
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("Leasehold-Webhook-Id", &message.id)
        .header("Leasehold-Webhook-Event", &message.event_type)
        .header(
            "Leasehold-Webhook-Signature",
            signature(&secret, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| (None, describe(&e)))?;
    let status = i64::from(response.status().as_u16());
    if response.status().is_success() {
        Ok(Some(status))
    } else {
        Err((
            Some(status),
            format!("the receiver answered {}", response.status()),
        ))
    }
}

/// A reqwest error with its causes (the top one alone says little); an address the
/// rules refused reads `refused: …`, not as a connection error.
fn describe(error: &reqwest::Error) -> String {
    if let Some(refused) = egress::refusal(error) {
        return refused.to_string();
    }
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One email per reminder, or one per workspace and day where it asked for a digest.
/// Ids are stable (`reminder.<id>`, `digest.<workspace>.<day>.<first reminder>`), so
/// queuing the same reminders twice queues nothing more.
pub fn render_reminders(due: &[DueReminder], public_url: &str) -> Vec<NewEmail> {
    let base = public_url.trim_end_matches('/');
    let mut emails = Vec::new();
    let mut digests: std::collections::BTreeMap<&str, Vec<&DueReminder>> = Default::default();
    for reminder in due {
        if reminder.email_digest {
            digests
                .entry(reminder.workspace_id.as_str())
                .or_default()
                .push(reminder);
            continue;
        }
        let text = format!(
            "{}\n\nManage it: {base}/licenses/{}\n\n-- \nLeasehold, workspace {}\n",
            describe_reminder(reminder),
            reminder.license_id,
            reminder.workspace_name
        );
        emails.push(NewEmail {
            id: format!("reminder.{}", reminder.id),
            workspace_id: reminder.workspace_id.clone(),
            event_type: "reminder".into(),
            payload: serde_json::json!({
                "to": reminder.recipients,
                "subject": subject(reminder),
                "text": text,
            })
            .to_string(),
            reminder_ids: vec![reminder.id.clone()],
        });
    }
    for (workspace_id, reminders) in digests {
        let Some(first) = reminders.first() else {
            continue;
        };
        let mut text = format!("{} license reminder(s) today:\n\n", reminders.len());
        for reminder in &reminders {
            text.push_str(&format!(
                "* {}\n  {base}/licenses/{}\n\n",
                describe_reminder(reminder),
                reminder.license_id
            ));
        }
        text.push_str(&format!(
            "-- \nLeasehold, workspace {}\n",
            first.workspace_name
        ));
        emails.push(NewEmail {
            id: format!(
                "digest.{workspace_id}.{}.{}",
                leasehold_store::today(),
                first.id
            ),
            workspace_id: workspace_id.to_string(),
            event_type: "reminder.digest".into(),
            payload: serde_json::json!({
                "to": first.recipients,
                "subject": format!("{} license reminder(s) for {}", reminders.len(), first.workspace_name),
                "text": text,
            })
            .to_string(),
            reminder_ids: reminders.iter().map(|r| r.id.clone()).collect(),
        });
    }
    emails
}

fn what_expires(reminder: &DueReminder) -> (&'static str, Option<chrono::NaiveDate>) {
    match reminder.kind {
        leasehold_core::ReminderKind::MaintenanceExpiry => {
            ("maintenance", reminder.maintenance_expires_on)
        }
        _ => ("license", reminder.expires_on),
    }
}

fn subject(reminder: &DueReminder) -> String {
    let (what, on) = what_expires(reminder);
    format!(
        "{} ({}): {what} expires {}",
        reminder.application_name,
        reminder.licensed_to,
        on.map(|d| d.to_string()).unwrap_or_else(|| "soon".into())
    )
}

fn describe_reminder(reminder: &DueReminder) -> String {
    let (what, on) = what_expires(reminder);
    format!(
        "{application}, licensed to {licensed_to}: the {what} expires on {on}. \
         Seats in use: {used} of {total}.",
        application = reminder.application_name,
        licensed_to = reminder.licensed_to,
        on = on
            .map(|d| d.to_string())
            .unwrap_or_else(|| "(no date)".into()),
        used = reminder.seats_used,
        total = reminder.seats_total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_store::RETRY_WINDOW_MS;

    #[test]
    fn webhook_urls_to_this_machine_or_metadata_are_refused() {
        let strict = Rules::default();
        let local = Rules {
            allow_local: true,
            allow_private: false,
        };
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://localhost./hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[fe80::1]/hook",
            "http://0.0.0.0/hook",
        ] {
            let refused = check_webhook_url(url, strict, &[]).unwrap_err();
            assert!(refused.starts_with("refused: "), "{url}: {refused}");
            assert!(
                check_webhook_url(url, local, &[]).is_ok(),
                "{url} when allowed"
            );
        }
        for url in [
            "ftp://example.com/x",
            "not a url",
            "http://user:pw@example.com/",
        ] {
            assert!(check_webhook_url(url, local, &[]).is_err(), "{url}");
        }
        assert!(check_webhook_url("https://hooks.example.com/leasehold", strict, &[]).is_ok());
        assert!(check_webhook_url("http://10.1.2.3/hook", local, &[]).is_err());
        let private = Rules {
            allow_private: true,
            ..strict
        };
        assert!(check_webhook_url("http://10.1.2.3/hook", private, &[]).is_ok());
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 shape: key "Jefe"; the message here is "1.{}".
        let signed = signature(b"Jefe", 1, b"{}");
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        mac.update(b"1.{}");
        let expected = crate::secrets::hex(&mac.finalize().into_bytes());
        assert_eq!(signed, format!("t=1,v1={expected}"));
        assert_ne!(signature(b"other", 1, b"{}"), signed);
    }

    #[test]
    fn retries_back_off_exponentially_within_the_window() {
        let message = |attempts, retry_until| OutboxMessage {
            id: "m".into(),
            workspace_id: "w".into(),
            channel: "webhook".into(),
            webhook_id: None,
            event_type: "seat.taken".into(),
            payload: "{}".into(),
            state: "pending".into(),
            attempts,
            next_attempt_at: 0,
            retry_until,
            claimed_until: None,
            last_status: None,
            last_error: None,
            created_at: 0,
            delivered_at: None,
        };
        let base = Duration::from_secs(10);
        let window = RETRY_WINDOW_MS;
        assert_eq!(next_attempt(&message(1, window), base, 0), Some(10_000));
        assert_eq!(next_attempt(&message(2, window), base, 0), Some(20_000));
        assert_eq!(next_attempt(&message(4, window), base, 0), Some(80_000));
        assert_eq!(next_attempt(&message(30, window), base, 0), Some(3_600_000));
        assert_eq!(next_attempt(&message(1, window), base, window), None);
    }
}
