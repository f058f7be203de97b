-- A verification link confirms the address it was mailed to, not whatever address the
-- account has when it is used: a link mailed for one address, opened after a change to
-- another, must not mark the other as verified. NULL: a token naming no address
-- (guardian consent, password reset, and verification links issued before this).
ALTER TABLE action_tokens ADD COLUMN email_index bytea;
