-- Outbox claims say who holds them and until when (issue 18, item 5). A sender renews its
-- lease while it sends; a claim is taken over only once its lease has run out, never because
-- another process started (an overlapping restart, a second node by mistake).
ALTER TABLE outbox ADD COLUMN locked_by TEXT;

-- Allow-list notices are spaced per recipient (at most one every few minutes, the latest list):
-- the last one queued is found through this index.
CREATE INDEX outbox_by_recipient_kind ON outbox (recipient_folded, kind, next_attempt_at);
