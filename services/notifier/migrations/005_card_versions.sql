-- A notice may need the recipient's card at least as new as a given change (a link for
-- a just-changed address must reach that address): cards and commands travel on
-- different topics, so the email waits, like one whose card has not arrived at all.
ALTER TABLE contacts ADD COLUMN card_changed_at timestamptz;
ALTER TABLE notices ADD COLUMN card_changed_at timestamptz;
