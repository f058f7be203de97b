-- An address change waits here until a link mailed to the new address confirms it. The
-- change is accepted the same way whether or not another account has the address (an
-- answer that differed would tell the caller who has an account); only the link's
-- holder, who controls that mailbox, learns it when confirming. Sealed like `email`
-- (its own vault purpose); the index lets a confirmation check the address is free.
ALTER TABLE users ADD COLUMN pending_email bytea;
ALTER TABLE users ADD COLUMN pending_email_index bytea;
