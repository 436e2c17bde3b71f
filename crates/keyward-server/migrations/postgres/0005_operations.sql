-- Operators (issue 12): who did what, when each key was last used, invited partners.

-- Who caused an audit event: "partner" (its keys), "anyone" (no keys: onboarding, lost keys),
-- "operator:NAME" (a keyward command), or "keyward" (the service itself).
ALTER TABLE audit_events ADD COLUMN actor TEXT;
-- `keyward audit --since` without a partner reads this index.
CREATE INDEX audit_events_by_time ON audit_events (created_at);

-- Approximate: recorded per node in batches every few seconds, never per request.
ALTER TABLE partner_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE partner_keys ADD COLUMN last_used_ip TEXT;

-- A pending partner created by `keyward partner invite` (KEYWARD_ONBOARDING=invite).
ALTER TABLE partners ADD COLUMN invited BIGINT NOT NULL DEFAULT 0;
CREATE INDEX partners_by_created ON partners (created_at);
