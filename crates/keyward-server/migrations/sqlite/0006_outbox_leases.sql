-- Outbox claims say who holds them and until when (issue 18, item 5). A sender renews its
-- lease while it sends; a claim is taken over only once its lease has run out, never because
-- another process started (an overlapping restart, a second node by mistake).
ALTER TABLE outbox ADD COLUMN locked_by TEXT;
