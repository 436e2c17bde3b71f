-- Links requested with the partner's keys (signed = 1) and those anyone could request
-- (onboarding, lost keys) have separate budgets, and an unauthenticated request never
-- supersedes a signed link.
ALTER TABLE links ADD COLUMN signed INTEGER NOT NULL DEFAULT 0;

-- Emails anyone could cause (onboarding and lost-keys links) are limited per recipient
-- address, whatever the partner code, on every node: counted here.
ALTER TABLE outbox ADD COLUMN recipient_folded TEXT;
ALTER TABLE outbox ADD COLUMN unauthenticated INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_unauthenticated_by_recipient ON outbox (recipient_folded, created_at)
    WHERE unauthenticated = 1;
-- /metrics counts dead emails from this index, not the whole outbox.
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
-- Sent emails are pruned after a retention period.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
