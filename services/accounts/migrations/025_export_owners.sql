-- Whose an export is (P-07, P-18). A cursor is the export's id and a user id in plain
-- base64, so anyone may make one naming an export id never used. Its owner was read
-- from the disclosures log, outside the page's transaction: two first pages at once
-- under one such id, to two recipients (or by two operators), both found nothing logged
-- and went ahead, and the log (one row per export and user, migration 019) kept only
-- one of them for each shared user: the other's disclosures had no row and no audit
-- row. Now each page claims its export here, in its own transaction: the first page to
-- claim an id owns it, a page of another recipient or operator is refused (422
-- invalid-cursor), and the pages of one export wait for each other on its row.
-- Ids only (no one's personal data): kept with the recipient.
CREATE TABLE exports (
    id           uuid PRIMARY KEY,
    recipient_id uuid NOT NULL REFERENCES recipients,
    operator_id  uuid NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now()
);

-- Every exported record names its user (user_id), whatever fields a recipient was
-- registered for: the erasures forwarded to recipients name the subject by that id
-- alone, and a recipient holding records without it could match none (P-19). What a
-- user is shown before consenting says so too.
UPDATE recipients SET allowed_fields = ARRAY['user_id'] || allowed_fields
WHERE NOT 'user_id' = ANY(allowed_fields);
