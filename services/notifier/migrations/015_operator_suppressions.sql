-- Who recorded a "remove me from ALL correspondence" request, when, and under which
-- reference of the person's email. Keyed by the address's blind index, as the
-- suppression itself, never by the person's id: it stays after their erasure (the
-- suppression does too) and holds nothing that reads back to them.
CREATE TABLE operator_suppressions (
    id                bigserial PRIMARY KEY,
    email_index       bytea NOT NULL,
    operator_id       text NOT NULL,
    request_reference text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_suppressions_created ON operator_suppressions (created_at);
