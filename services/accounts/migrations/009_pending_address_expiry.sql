-- A pending address is kept only as long as the link that could confirm it: once that
-- has expired, the accounts worker clears it (and republishes the card without it).
ALTER TABLE users ADD COLUMN pending_email_until timestamptz;
CREATE INDEX users_pending_email_until ON users (pending_email_until)
    WHERE pending_email_until IS NOT NULL;
