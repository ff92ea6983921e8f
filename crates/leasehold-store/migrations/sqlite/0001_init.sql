-- Leasehold schema, SQLite. Times are BIGINT milliseconds since the Unix epoch (UTC);
-- calendar days are TEXT YYYY-MM-DD. Ids are UUIDv7 text, so they sort by creation.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    slug               TEXT NOT NULL UNIQUE,
    currency           TEXT NOT NULL,
    reminder_lead_days TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, email)
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id, id);

CREATE TABLE applications (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id),
    name             TEXT NOT NULL,
    vendor           TEXT,
    deployment_model TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted_at       BIGINT
);
CREATE INDEX applications_workspace ON applications (workspace_id, id);

CREATE TABLE licenses (
    id                              TEXT PRIMARY KEY,
    workspace_id                    TEXT NOT NULL REFERENCES workspaces(id),
    application_id                  TEXT NOT NULL REFERENCES applications(id),
    key_enc                         BLOB NOT NULL,
    key_hash                        TEXT NOT NULL,
    key_masked                      TEXT NOT NULL,
    licensed_to                     TEXT NOT NULL,
    vendor                          TEXT,
    license_type                    TEXT NOT NULL,
    status                          TEXT NOT NULL,
    seat_model                      TEXT NOT NULL,
    seats_total                     BIGINT NOT NULL CHECK (seats_total > 0),
    seats_used                      BIGINT NOT NULL DEFAULT 0,
    version                         TEXT,
    cost_amount_minor               BIGINT,
    cost_currency                   TEXT,
    purchased_on                    TEXT,
    expires_on                      TEXT,
    maintenance_expires_on          TEXT,
    po_number                       TEXT,
    notes                           TEXT,
    lease_ttl_s                     BIGINT NOT NULL,
    heartbeat_interval_s            BIGINT NOT NULL,
    license_file_ttl_s              BIGINT NOT NULL,
    self_service_releases_per_month BIGINT NOT NULL,
    admin_release                   TEXT NOT NULL,
    release_cooldown_s              BIGINT NOT NULL,
    created_at                      BIGINT NOT NULL,
    updated_at                      BIGINT NOT NULL,
    deleted_at                      BIGINT,
    CHECK (seats_used >= 0 AND seats_used <= seats_total)
);
CREATE UNIQUE INDEX licenses_key_hash ON licenses (key_hash) WHERE deleted_at IS NULL;
CREATE INDEX licenses_workspace ON licenses (workspace_id, id);
CREATE INDEX licenses_application ON licenses (application_id);

CREATE TABLE contacts (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    email         TEXT,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    terminated_at BIGINT
);
CREATE INDEX contacts_workspace ON contacts (workspace_id, id);

CREATE TABLE seats (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    license_id        TEXT NOT NULL REFERENCES licenses(id),
    kind              TEXT NOT NULL,
    contact_id        TEXT REFERENCES contacts(id),
    assignee_name     TEXT,
    device_name       TEXT,
    serial_key_enc    BLOB,
    serial_key_masked TEXT,
    activated_on      TEXT,
    fingerprint       TEXT,
    os_user           TEXT,
    identifier        TEXT,
    instances         TEXT,
    created_at        BIGINT NOT NULL,
    last_seen_at      BIGINT,
    expires_at        BIGINT,
    released_at       BIGINT,
    release_reason    TEXT,
    reclaimed_on      TEXT
);
CREATE INDEX seats_license ON seats (license_id, id);
CREATE INDEX seats_contact_active ON seats (contact_id) WHERE released_at IS NULL;
CREATE UNIQUE INDEX seats_active_lease ON seats (license_id, fingerprint, os_user)
    WHERE released_at IS NULL AND kind = 'lease';
CREATE UNIQUE INDEX seats_active_activation ON seats (license_id, fingerprint)
    WHERE released_at IS NULL AND kind = 'activation';
CREATE INDEX seats_lease_expiry ON seats (expires_at) WHERE released_at IS NULL AND kind = 'lease';

CREATE TABLE reminders (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    license_id   TEXT NOT NULL REFERENCES licenses(id),
    kind         TEXT NOT NULL,
    due_on       TEXT NOT NULL,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    sent_at      BIGINT,
    dismissed_at BIGINT,
    UNIQUE (license_id, kind, due_on)
);
CREATE INDEX reminders_due ON reminders (workspace_id, due_on, id);
CREATE INDEX reminders_pending ON reminders (due_on) WHERE state = 'pending';

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    actor_kind   TEXT NOT NULL,
    actor_id     TEXT,
    actor_label  TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    license_id   TEXT,
    before_json  TEXT,
    after_json   TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX events_workspace ON events (workspace_id, id);
CREATE INDEX events_license ON events (license_id, id);
