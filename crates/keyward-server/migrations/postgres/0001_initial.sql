-- keyward's schema. Timestamps are milliseconds since the Unix epoch (UTC); ids are UUIDv7 text.
-- Applied migrations are never edited: add a new file instead.

CREATE TABLE partners (
    id           TEXT PRIMARY KEY,
    code         TEXT NOT NULL,
    code_folded  TEXT NOT NULL UNIQUE,          -- codes are unique case-insensitively
    email        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'active', 'suspended')),
    allowed_ips  TEXT,                          -- comma-separated CIDRs; NULL: any address
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE partner_keys (
    id                 TEXT PRIMARY KEY,
    partner_id         TEXT NOT NULL REFERENCES partners (id),
    public_key_hash    BYTEA NOT NULL UNIQUE,    -- SHA-256 of the public key; the key is not stored
    public_key_hint    TEXT NOT NULL,           -- prefix and first 4 characters, for operators
    secret_ciphertext  BYTEA NOT NULL,           -- AES-256-GCM, bound to partner and key ids
    created_at         BIGINT NOT NULL,
    revoked_at         BIGINT
);
-- The invariant "a partner has at most one active key pair", enforced by the database.
CREATE UNIQUE INDEX partner_keys_one_active ON partner_keys (partner_id) WHERE revoked_at IS NULL;

CREATE TABLE links (
    id             TEXT PRIMARY KEY,
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    purpose        TEXT NOT NULL CHECK (purpose IN ('onboarding', 'regeneration')),
    token_hash     BYTEA NOT NULL UNIQUE,        -- SHA-256 of the token; the token is not stored
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    superseded_at  BIGINT,
    requested_ip   TEXT
);
CREATE INDEX links_by_partner ON links (partner_id, purpose, created_at);

CREATE TABLE outbox (
    id                TEXT PRIMARY KEY,
    recipient         TEXT NOT NULL,
    kind              TEXT NOT NULL,
    body_ciphertext   BYTEA,                     -- erased (NULL) once sent
    created_at        BIGINT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    locked_until      BIGINT,
    sent_at           BIGINT,
    dead_at           BIGINT,
    last_error        TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND dead_at IS NULL;

-- Signed state-changing requests already acted on, for the replay window.
CREATE TABLE replays (
    digest      BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    partner_id  TEXT,
    event       TEXT NOT NULL,
    ip          TEXT,
    detail      TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_events_by_partner ON audit_events (partner_id, created_at);

CREATE TABLE meta (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);
