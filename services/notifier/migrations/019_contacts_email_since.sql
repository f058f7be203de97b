-- Since when the account holds its current address: an operator suppression of that
-- address follows the account to its next one only if recorded since (the account's
-- own request, not an earlier holder's). known_since cannot tell: an account may take
-- an address long after it was first known. Rows already here get '-infinity', as
-- nobody knows when they took their address: every request recorded for it so far
-- keeps following its person, as it was meant to.
ALTER TABLE contacts ADD COLUMN email_since timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE contacts ALTER COLUMN email_since SET DEFAULT now();

-- A suppression carried to a person's new address is recorded for that address too,
-- so that it follows them again from there; carried_from names the row it came from
-- (NULL: recorded by the operator), and keeps carried rows out of the operators' list.
ALTER TABLE operator_suppressions ADD COLUMN carried_from bigint;
-- Looked up by address at each card that moves an account with a suppressed address.
CREATE INDEX operator_suppressions_address ON operator_suppressions (email_index, created_at);

-- The notices for all users a late card may have missed (late_contacts.py, _MISSED):
-- looked for at every card, among few notices, which a scan of all notices would not be.
CREATE INDEX notices_all_fanned_out ON notices (fanned_out_at)
    WHERE audience = 'all' AND status = 'fanned_out' AND recipient = 'user';
