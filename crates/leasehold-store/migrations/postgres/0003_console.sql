-- Console and portal sign-in sessions. The cookie holds a random token; only its hash is stored.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,            -- 'member' or 'portal'
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    member_id    TEXT REFERENCES members(id),
    license_id   TEXT REFERENCES licenses(id),
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX members_email ON members (email);
