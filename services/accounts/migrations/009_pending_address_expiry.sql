-- A pending address is kept only as long as the link that could confirm it: once that
-- has expired, the accounts worker clears it (and republishes the card without it).
ALTER TABLE users ADD COLUMN pending_email_until timestamptz;
CREATE INDEX users_pending_email_until ON users (pending_email_until)
    WHERE pending_email_until IS NOT NULL;
-- Which change the pending address is (random, not personal): on the card and in the
-- notice of its link, so the notifier mails a link only to the address it confirms,
-- never to one that replaced it meanwhile.
ALTER TABLE users ADD COLUMN pending_change uuid;
