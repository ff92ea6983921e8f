-- Notifications: webhooks, and one outbox every outgoing message (webhook delivery or
-- email) is written to in the same transaction as the change it reports.
CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    url          TEXT NOT NULL,
    -- JSON array of event types, e.g. ["seat.taken","seat.released"].
    events       TEXT NOT NULL,
    secret_enc   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX webhooks_workspace ON webhooks (workspace_id, id) WHERE deleted_at IS NULL;

CREATE TABLE outbox (
    -- Stable: the webhook's id and Leasehold-Webhook-Id, the email's Message-ID.
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    channel         TEXT NOT NULL,          -- webhook | email
    webhook_id      TEXT REFERENCES webhooks(id),
    event_type      TEXT NOT NULL,
    -- webhook: the event's data (JSON); email: {to, subject, text}.
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,          -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    retry_until     BIGINT NOT NULL,
    -- A node delivering the message holds it until then; after, another node may retry.
    claimed_until   BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_webhook ON outbox (webhook_id, id);

ALTER TABLE workspaces ADD COLUMN notify_emails TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workspaces ADD COLUMN email_digest BOOLEAN NOT NULL DEFAULT FALSE;
-- The outbox message that announced the reminder (its delivery state).
ALTER TABLE reminders ADD COLUMN outbox_id TEXT;
