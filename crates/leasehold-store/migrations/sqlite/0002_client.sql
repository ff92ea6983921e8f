-- The client protocol: per-workspace signing keys, and the lookups a checkout makes.
ALTER TABLE workspaces ADD COLUMN signing_key_enc BLOB;
CREATE INDEX seats_holder ON seats (license_id, fingerprint, os_user, released_at);
CREATE INDEX seats_released ON seats (license_id, release_reason, released_at);
