-- One operator alone cannot delete a user (P-15): a deletion needs a second operator.
-- An operator created by another starts with a password its creator chose, so the
-- creator could act as it; until its owner sets one of their own (POST
-- /operator/me/password), its sessions may do nothing else, and it neither requests nor
-- approves a deletion. password_set_at: when the owner last set their password (NULL
-- while it is still the creator's choice). The configured first admin, created by no
-- one, counts as having set theirs; every other identity, created before this, sets its
-- own at its next login.
ALTER TABLE operators ADD COLUMN password_set_at timestamptz;
UPDATE operators SET password_set_at = created_at WHERE created_by IS NULL;
