-- An address the user asked to change to, not confirmed yet (from the contact card). Only
-- the link that confirms it is mailed there (recipient 'pending'); no other notice.
ALTER TABLE contacts ADD COLUMN pending_index bytea;
ALTER TABLE contacts ADD COLUMN pending_email bytea;
