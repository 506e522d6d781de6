-- keygate: the key table (PostgreSQL). Digests only, never keys. Timestamps are UTC
-- (timestamptz); workspaces and scopes are JSON arrays of strings.
CREATE TABLE IF NOT EXISTS keygate_keys (
    key_id       TEXT        NOT NULL PRIMARY KEY,
    digest       BYTEA       NOT NULL,
    principal_id TEXT        NOT NULL,
    label        TEXT        NOT NULL DEFAULT '',
    workspaces   TEXT        NOT NULL DEFAULT '[]',
    scopes       TEXT        NOT NULL DEFAULT '[]',
    tier         TEXT        NOT NULL,
    prefix       TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
-- Lookups by key id use the primary key; opaque keys are looked up by digest.
CREATE UNIQUE INDEX IF NOT EXISTS keygate_keys_digest ON keygate_keys (digest);
CREATE INDEX IF NOT EXISTS keygate_keys_principal ON keygate_keys (principal_id);
