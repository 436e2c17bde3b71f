-- Rotation with an overlap (SPEC §3.2): when a regeneration link that asked for one is used,
-- the old pair is not revoked but retires: it keeps working until expires_at.
ALTER TABLE partner_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE links ADD COLUMN overlap_seconds INTEGER NOT NULL DEFAULT 0;

-- "At most one current and one retiring pair per partner", enforced by the database: the
-- current pair has no expiry, the retiring one has. An expired pair stays retiring (and is
-- refused with expired_key) until the next regeneration revokes it.
DROP INDEX partner_keys_one_active;
CREATE UNIQUE INDEX partner_keys_one_current ON partner_keys (partner_id)
    WHERE revoked_at IS NULL AND expires_at IS NULL;
CREATE UNIQUE INDEX partner_keys_one_retiring ON partner_keys (partner_id)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;

-- An email about a key (the reminder before a retiring pair expires) is cancelled when the
-- key is revoked before it is sent.
ALTER TABLE outbox ADD COLUMN about_key_id TEXT;
CREATE INDEX outbox_about_key ON outbox (about_key_id) WHERE about_key_id IS NOT NULL;
