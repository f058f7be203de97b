-- One data key per subject, wrapped by the master key. Shredding drops the wrapped key
-- and keeps the row, so every later open or seal for the subject fails clearly.
-- This database is never in the regular backups: a restored backup cannot bring a
-- shredded key back.
CREATE TABLE subject_keys (
    subject_id  text PRIMARY KEY,
    wrapped_key bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    shredded_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);
