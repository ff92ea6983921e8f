//! Webhooks, the outbox of webhook and email messages, and the reminders' settings.

use super::*;
use crate::outbox::*;
use crate::Notifications;

#[async_trait]
impl Notifications for This {
    async fn create_webhook(
        &self,
        actor: &Actor,
        workspace_id: &str,
        url: &str,
        events: &[String],
        secret_enc: Vec<u8>,
    ) -> Result<Webhook> {
        let id = new_id();
        let mut tx = self.begin_write().await?;
        let webhook = sqlx::query_as::<_, Webhook>(
            "INSERT INTO webhooks (id, workspace_id, url, events, secret_enc, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(url)
        .bind(serde_json::to_string(events).unwrap_or_default())
        .bind(secret_enc)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "webhook.created",
            ("webhook", &id),
            None,
            None,
            crate::sql::json(&webhook),
        )
        .await?;
        self.commit(tx).await?;
        Ok(webhook)
    }

    async fn webhook(&self, workspace_id: &str, id: &str) -> Result<Webhook> {
        self.one_in(
            "SELECT * FROM webhooks WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            workspace_id,
            id,
        )
        .await
    }

    async fn list_webhooks(&self, workspace_id: &str, page: &PageRequest) -> Result<Page<Webhook>> {
        self.page_in(
            "SELECT * FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL \
             AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
            workspace_id,
            page,
            |r: &Webhook| &r.id,
        )
        .await
    }

    async fn delete_webhook(&self, actor: &Actor, workspace_id: &str, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let deleted = sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 WHERE id = $2 AND workspace_id = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // What it had not delivered yet will not be: it is no longer wanted.
        sqlx::query(
            "UPDATE outbox SET state = 'failed', last_error = 'webhook deleted' \
             WHERE webhook_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "webhook.deleted",
            ("webhook", id),
            None,
            None,
            None,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        workspace_id: &str,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<OutboxMessage>> {
        self.webhook(workspace_id, webhook_id).await?;
        let rows = sqlx::query_as::<_, OutboxMessage>(
            "SELECT * FROM outbox WHERE webhook_id = $1 AND workspace_id = $2 \
             AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(webhook_id)
        .bind(workspace_id)
        .bind(page.cursor.as_deref().unwrap_or(crate::sql::TOP_CURSOR))
        .bind(page.fetch_limit())
        .fetch_all(self.reader())
        .await?;
        Ok(Page::from_fetched(rows, page, |m| m.id.clone()))
    }

    async fn resend_delivery(
        &self,
        actor: &Actor,
        workspace_id: &str,
        webhook_id: &str,
        id: &str,
    ) -> Result<OutboxMessage> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let live: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM webhooks WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
        )
        .bind(webhook_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            return Err(StoreError::NotFound);
        }
        let message = sqlx::query_as::<_, OutboxMessage>(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $1, retry_until = $2, \
             claimed_until = NULL WHERE id = $3 AND webhook_id = $4 AND workspace_id = $5 RETURNING *",
        )
        .bind(now)
        .bind(now + RETRY_WINDOW_MS)
        .bind(id)
        .bind(webhook_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "webhook.resent",
            ("webhook", webhook_id),
            None,
            None,
            Some(format!(
                "{{\"delivery\":{}}}",
                serde_json::Value::String(id.to_string())
            )),
        )
        .await?;
        self.commit(tx).await?;
        Ok(message)
    }

    async fn outbox_message(&self, id: &str) -> Result<OutboxMessage> {
        sqlx::query_as::<_, OutboxMessage>("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn notify_settings(&self, workspace_id: &str) -> Result<NotifySettings> {
        let (emails, digest, usage_digest): (String, bool, bool) = sqlx::query_as(
            "SELECT notify_emails, email_digest, usage_digest FROM workspaces WHERE id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(NotifySettings {
            emails: serde_json::from_str(&emails).unwrap_or_default(),
            digest,
            usage_digest,
        })
    }

    async fn update_notify_settings(
        &self,
        actor: &Actor,
        workspace_id: &str,
        settings: &NotifySettings,
    ) -> Result<NotifySettings> {
        let before = self.notify_settings(workspace_id).await?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE workspaces SET notify_emails = $1, email_digest = $2, usage_digest = $3 \
             WHERE id = $4",
        )
        .bind(serde_json::to_string(&settings.emails).unwrap_or_default())
        .bind(settings.digest)
        .bind(settings.usage_digest)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(
            &mut tx,
            workspace_id,
            actor,
            "workspace.notifications_updated",
            ("workspace", workspace_id),
            None,
            crate::sql::json(&before),
            crate::sql::json(settings),
        )
        .await?;
        self.commit(tx).await?;
        Ok(settings.clone())
    }

    async fn usage_digest_workspaces(&self) -> Result<Vec<DigestWorkspace>> {
        let mut tx = self.begin_write().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, name, notify_emails FROM workspaces WHERE usage_digest ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut workspaces = Vec::with_capacity(rows.len());
        for (workspace_id, name, extra) in rows {
            let recipients = Self::recipients_in(&mut tx, &workspace_id, &extra).await?;
            workspaces.push(DigestWorkspace {
                workspace_id,
                name,
                recipients,
            });
        }
        self.commit(tx).await?;
        Ok(workspaces)
    }

    async fn queue_email(&self, email: &NewEmail) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let queued = Self::insert_email_in(&mut tx, email, now_ms()).await?;
        self.commit(tx).await?;
        Ok(queued)
    }

    async fn queue_due_reminders(
        &self,
        today: chrono::NaiveDate,
        render: &RenderReminders,
    ) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if matches!(BACKEND, Backend::Postgres) {
            // One node at a time turns reminders into messages; the next finds
            // them sent. (SQLite's one writer serialises this already.)
            sqlx::query("SELECT pg_advisory_xact_lock(4242017)")
                .execute(&mut *tx)
                .await?;
        }
        let mut due = sqlx::query_as::<_, DueReminder>(
            "SELECT r.id, r.workspace_id, w.name AS workspace_name, r.license_id, r.kind, r.due_on, \
             a.name AS application_name, l.licensed_to, l.expires_on, l.maintenance_expires_on, \
             l.seats_used, l.seats_total, w.notify_emails, w.email_digest \
             FROM reminders r JOIN licenses l ON l.id = r.license_id \
             JOIN applications a ON a.id = l.application_id JOIN workspaces w ON w.id = r.workspace_id \
             WHERE r.state = 'pending' AND r.due_on <= $1 AND l.deleted_at IS NULL \
             ORDER BY r.workspace_id, r.due_on, r.id LIMIT 1000",
        )
        .bind(today)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut recipients: std::collections::HashMap<String, Vec<String>> = Default::default();
        for reminder in &mut due {
            if !recipients.contains_key(&reminder.workspace_id) {
                let to =
                    Self::recipients_in(&mut tx, &reminder.workspace_id, &reminder.notify_emails)
                        .await?;
                recipients.insert(reminder.workspace_id.clone(), to);
            }
            reminder.recipients = recipients
                .get(&reminder.workspace_id)
                .cloned()
                .unwrap_or_default();
        }
        for email in render(&due) {
            Self::insert_email_in(&mut tx, &email, now).await?;
            for reminder_id in &email.reminder_ids {
                sqlx::query("UPDATE reminders SET outbox_id = $1 WHERE id = $2")
                    .bind(&email.id)
                    .bind(reminder_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for reminder in &due {
            sqlx::query("UPDATE reminders SET state = 'sent', sent_at = $1 WHERE id = $2 AND state = 'pending'")
                .bind(now)
                .bind(&reminder.id)
                .execute(&mut *tx)
                .await?;
            let data = serde_json::json!({
                "reminder_id": reminder.id,
                "license_id": reminder.license_id,
                "kind": reminder.kind,
                "due_on": reminder.due_on,
                "application": reminder.application_name,
                "licensed_to": reminder.licensed_to,
                "expires_on": reminder.expires_on,
                "maintenance_expires_on": reminder.maintenance_expires_on,
                "seats_used": reminder.seats_used,
                "seats_total": reminder.seats_total,
            });
            Self::enqueue_webhooks(
                &mut tx,
                &reminder.workspace_id,
                "license.expiring",
                &reminder.id,
                &data.to_string(),
                now,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(due.len() as u64)
    }

    async fn claim_message(&self, with_email: bool, hold_ms: i64) -> Result<Option<OutboxMessage>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query_as::<_, OutboxMessage>(concat!(
            "UPDATE outbox SET claimed_until = $1, attempts = attempts + 1 WHERE id = (\
             SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) AND ($3 = TRUE OR channel = 'webhook') \
             ORDER BY next_attempt_at, id LIMIT 1", skip_locked!(), ") RETURNING *"
        ))
        .bind(now + hold_ms)
        .bind(now)
        .bind(with_email)
        .fetch_optional(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(claimed)
    }

    async fn finish_message(&self, id: &str, attempt: &Attempt) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        match attempt {
            Attempt::Delivered { status } => {
                sqlx::query(
                    "UPDATE outbox SET state = 'delivered', delivered_at = $1, last_status = $2, \
                     last_error = NULL, claimed_until = NULL WHERE id = $3",
                )
                .bind(now)
                .bind(status)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Attempt::Failed {
                status,
                error,
                retry_at,
            } => {
                sqlx::query(
                    "UPDATE outbox SET state = $1, next_attempt_at = $2, last_status = $3, \
                     last_error = $4, claimed_until = NULL WHERE id = $5",
                )
                .bind(if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                })
                .bind(retry_at.unwrap_or(now))
                .bind(status)
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn webhook_by_id(&self, id: &str) -> Result<Option<Webhook>> {
        Ok(
            sqlx::query_as::<_, Webhook>("SELECT * FROM webhooks WHERE id = $1")
                .bind(id)
                .fetch_optional(self.reader())
                .await?,
        )
    }
}

impl This {
    /// Queues an email in the caller's transaction, once per id: answers whether it was
    /// new.
    async fn insert_email_in(tx: &mut Tx, email: &NewEmail, now: i64) -> Result<bool> {
        let queued = sqlx::query(
            "INSERT INTO outbox (id, workspace_id, channel, event_type, payload, state, attempts, \
             next_attempt_at, retry_until, created_at) VALUES ($1, $2, 'email', $3, $4, 'pending', 0, $5, $6, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&email.id)
        .bind(&email.workspace_id)
        .bind(&email.event_type)
        .bind(&email.payload)
        .bind(now)
        .bind(now + RETRY_WINDOW_MS)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(queued == 1)
    }

    /// Who gets a workspace's emails: the members who manage licenses, then its extra
    /// addresses (`extra`, a JSON array), each once.
    async fn recipients_in(tx: &mut Tx, workspace_id: &str, extra: &str) -> Result<Vec<String>> {
        let mut to: Vec<String> = sqlx::query_scalar(
            "SELECT email FROM members WHERE workspace_id = $1 AND role IN ('owner', 'manager') ORDER BY email",
        )
        .bind(workspace_id)
        .fetch_all(&mut **tx)
        .await?;
        let extra: Vec<String> = serde_json::from_str(extra).unwrap_or_default();
        for address in extra {
            if !to.contains(&address) {
                to.push(address);
            }
        }
        Ok(to)
    }
}
