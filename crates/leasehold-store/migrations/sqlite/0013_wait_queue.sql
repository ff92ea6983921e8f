-- DESIGN §7: the wait queue of a full floating license.
ALTER TABLE licenses ADD COLUMN queue TEXT NOT NULL DEFAULT 'fifo' CHECK (queue IN ('fifo', 'off'));
ALTER TABLE licenses ADD COLUMN queue_ttl_s BIGINT NOT NULL DEFAULT 60;

-- One place per holder (license, machine, OS user), in order of `since`; a waiter whose
-- `last_seen_at` is older than the license's queue_ttl_s has lost its place.
CREATE TABLE waiters (
    license_id TEXT NOT NULL REFERENCES licenses(id),
    fingerprint TEXT NOT NULL,
    os_user TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    identifier TEXT,
    since BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    PRIMARY KEY (license_id, fingerprint, os_user)
);
CREATE INDEX waiters_order ON waiters (license_id, since, fingerprint, os_user);
