-- DESIGN §11: a member can be disabled (kept, listed, unable to sign in) or removed.
ALTER TABLE members ADD COLUMN disabled_at BIGINT;
