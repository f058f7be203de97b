-- The address a user's card named before an email change, kept only to tell that
-- address of the change (the notice's one email), and deleted with the delivery's
-- outcome (or the subject's erasure). Sealed under the subject's key like
-- contacts.email (same purpose), so a shredded subject's copy is unreadable too.
CREATE TABLE previous_addresses (
    notice_id   uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    email_index bytea NOT NULL,
    email       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX previous_addresses_user ON previous_addresses (user_id);
