-- Since when the notifier knows the account existed: the date on its first card (as
-- accounts wrote it), kept across later cards. A notice for all users fanned out after
-- it, that the card arrived too late for, is delivered when the card comes
-- (services/notifier/late_contacts.py).
ALTER TABLE contacts ADD COLUMN known_since timestamptz;
UPDATE contacts SET known_since = LEAST(coalesce(card_changed_at, updated_at), updated_at);
ALTER TABLE contacts ALTER COLUMN known_since SET DEFAULT now();
ALTER TABLE contacts ALTER COLUMN known_since SET NOT NULL;
