-- What a key may do (SPEC §8). A partner holds its primary pair (the pair of §3, and during an
-- overlap the retiring one) and up to 9 restricted pairs, each with a name, scopes, a mode and
-- an optional expiry of its own. Pairs made before this migration are primary and live.
ALTER TABLE partner_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'primary'
    CHECK (kind IN ('primary', 'restricted'));
ALTER TABLE partner_keys ADD COLUMN mode TEXT NOT NULL DEFAULT 'live'
    CHECK (mode IN ('live', 'test'));
ALTER TABLE partner_keys ADD COLUMN name TEXT
    CHECK (name IS NULL OR length(name) BETWEEN 1 AND 64);
-- Space-separated scope names, sorted; '' for none.
ALTER TABLE partner_keys ADD COLUMN scopes TEXT;
-- A restricted pair's own expiry (`expires_in_days`); `expires_at` stays the retiring
-- primary pair's end of overlap.
ALTER TABLE partner_keys ADD COLUMN valid_until BIGINT;
-- Each live restricted pair holds one of 9 places: the limit of 10 pairs, enforced by the
-- unique index below. The shape of each kind is checked on every row.
ALTER TABLE partner_keys ADD COLUMN slot BIGINT;
ALTER TABLE partner_keys ADD CONSTRAINT partner_keys_shape CHECK (
    (kind = 'primary' AND mode = 'live' AND name IS NULL AND scopes IS NULL
        AND valid_until IS NULL AND slot IS NULL)
    OR (kind = 'restricted' AND name IS NOT NULL AND scopes IS NOT NULL
        AND expires_at IS NULL AND slot BETWEEN 1 AND 9)
);

DROP INDEX partner_keys_one_current;
DROP INDEX partner_keys_one_retiring;
CREATE UNIQUE INDEX partner_keys_one_current ON partner_keys (partner_id)
    WHERE revoked_at IS NULL AND expires_at IS NULL AND kind = 'primary';
CREATE UNIQUE INDEX partner_keys_one_retiring ON partner_keys (partner_id)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND kind = 'primary';
CREATE UNIQUE INDEX partner_keys_restricted_slot ON partner_keys (partner_id, slot)
    WHERE revoked_at IS NULL AND slot IS NOT NULL;
-- ListKeys and `partner show` read a partner's pairs.
CREATE INDEX partner_keys_by_partner ON partner_keys (partner_id, created_at);

-- A new link purpose: a restricted (or test) pair asked for with CreateKey; the key asked
-- for travels with its link.
ALTER TABLE links DROP CONSTRAINT links_purpose_check;
ALTER TABLE links ADD CONSTRAINT links_purpose_check
    CHECK (purpose IN ('onboarding', 'regeneration', 'restricted_key'));
ALTER TABLE links ADD COLUMN key_name TEXT;
ALTER TABLE links ADD COLUMN key_scopes TEXT;
ALTER TABLE links ADD COLUMN key_mode TEXT CHECK (key_mode IS NULL OR key_mode IN ('live', 'test'));
ALTER TABLE links ADD COLUMN key_valid_days BIGINT
    CHECK (key_valid_days IS NULL OR key_valid_days BETWEEN 1 AND 366);
ALTER TABLE links ADD CONSTRAINT links_key_request CHECK (
    (purpose = 'restricted_key') = (key_name IS NOT NULL AND key_scopes IS NOT NULL AND key_mode IS NOT NULL)
);

-- Reminders before a pair expires under the expiry policy (SPEC §8.4): one row per pair and
-- reminder, with its due time stored. Whichever node claims a due row sends it (through the
-- outbox, in the same transaction), so each is sent exactly once. A pair used since (the idle
-- limit) or whose partner set an allow-list meanwhile is re-checked when the row falls due.
CREATE TABLE key_reminders (
    key_id       TEXT NOT NULL REFERENCES partner_keys (id),
    before_secs  BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    sent_at      BIGINT,
    PRIMARY KEY (key_id, before_secs)
);
CREATE INDEX key_reminders_due ON key_reminders (due_at) WHERE sent_at IS NULL;
