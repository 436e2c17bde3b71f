-- Service tokens (SPEC §7.1): what the exchange's own services present to the verify API.
CREATE TABLE service_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    BLOB  NOT NULL UNIQUE,     -- SHA-256 of the token; the token is not stored
    hint          TEXT NOT NULL,             -- prefix and first 4 characters, for operators
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,                    -- approximate: recorded in batches per node
    revoked_at    INTEGER
);
-- A name is reused only once its token was revoked.
CREATE UNIQUE INDEX service_tokens_live_name ON service_tokens (name) WHERE revoked_at IS NULL;
