-- Leaked keys (SPEC §9.2): a secret key reported as leaked is found by its SHA-256, like a
-- public key. The secret carries 178 random bits, so its hash reveals nothing usable. Pairs
-- made before this migration get theirs when `keyward serve` next starts (it holds the
-- master key that decrypts them).
ALTER TABLE partner_keys ADD COLUMN secret_key_hash BLOB;
CREATE UNIQUE INDEX partner_keys_by_secret_hash ON partner_keys (secret_key_hash)
    WHERE secret_key_hash IS NOT NULL;
-- What that start-up pass reads: only the live pairs still without a hash, so a store whose
-- pairs all have one costs an empty index scan, not a scan of every pair.
CREATE INDEX partner_keys_without_secret_hash ON partner_keys (id)
    WHERE secret_key_hash IS NULL AND revoked_at IS NULL;
