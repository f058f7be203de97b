-- Single-use tickets that open the live inbox stream from a browser's EventSource, which
-- cannot send an Authorization header. Only a hash is kept; each lives seconds.
CREATE TABLE stream_tickets (
    ticket_hash bytea PRIMARY KEY,
    user_id     uuid NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX stream_tickets_user ON stream_tickets (user_id);
