-- The operators' console (SPEC §10.1). Any node serves any login and any session: both live
-- here, never in a node's memory.

-- A login under way: the state sent to the identity provider (stored hashed), and the nonce
-- and PKCE verifier its answer is checked with. Used once, by the callback; dropped after 10
-- minutes.
CREATE TABLE console_logins (
    state_hash     BYTEA PRIMARY KEY,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
-- Logins never finished are dropped by age as new ones begin.
CREATE INDEX console_logins_by_age ON console_logins (created_at);

-- A signed-in person. The cookie holds the session's token; only its SHA-256 is stored.
CREATE TABLE console_sessions (
    token_hash    BYTEA PRIMARY KEY,
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- Every form carries it; a POST without it changes nothing.
    csrf_token    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_age ON console_sessions (created_at);
