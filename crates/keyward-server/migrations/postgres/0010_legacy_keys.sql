-- Keys moved in from an exchange's previous system (SPEC §10.2): `keyward partner import`
-- stores them as they are. A pair whose keys are not of §1's format is legacy: only a primary,
-- live pair can be (imported pairs are primary and live; regeneration replaces them with §1 keys).
ALTER TABLE partner_keys ADD COLUMN legacy BIGINT NOT NULL DEFAULT 0;
ALTER TABLE partner_keys ADD CONSTRAINT partner_keys_legacy_shape
    CHECK (legacy = 0 OR (legacy = 1 AND kind = 'primary' AND mode = 'live'));
-- "Is any legacy key held?" is asked at most once per key-cache bound per node, and must not
-- scan: the usable legacy pairs, indexed on their own.
CREATE INDEX partner_keys_legacy ON partner_keys (partner_id) WHERE legacy = 1 AND revoked_at IS NULL;
