-- DESIGN §8: the optional monthly usage digest, per workspace (its notification settings).
ALTER TABLE workspaces ADD COLUMN usage_digest BOOLEAN NOT NULL DEFAULT FALSE;
