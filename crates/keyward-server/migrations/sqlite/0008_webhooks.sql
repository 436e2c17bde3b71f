-- Lifecycle webhooks (SPEC §9.3). An endpoint is one of the exchange's systems; its signing
-- secret is encrypted under the master key like the partners' secret keys.
CREATE TABLE webhook_endpoints (
    id                 TEXT PRIMARY KEY,
    url                TEXT NOT NULL,
    secret_ciphertext  BLOB NOT NULL,
    events             TEXT,                 -- comma-separated event types; NULL: every event
    created_at         INTEGER NOT NULL,
    disabled_at        INTEGER,              -- it answered 410 Gone
    disabled_reason    TEXT
);

-- One row per event and endpoint, written in the transaction of the change (the outbox of
-- SPEC §6): its id is the `webhook-id`, the same on every retry. The payload holds no secret.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    locked_by        TEXT,
    locked_until     INTEGER,
    delivered_at     INTEGER,
    dead_at          INTEGER,
    last_error       TEXT,
    -- A key.expired event waits for the pair's expiry, and is cancelled if the pair is
    -- revoked first.
    about_key_id     TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_deliveries_about_key ON webhook_deliveries (about_key_id)
    WHERE about_key_id IS NOT NULL;
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (dead_at) WHERE dead_at IS NOT NULL;
