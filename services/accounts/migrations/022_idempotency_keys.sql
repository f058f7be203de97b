-- Idempotency-Key on operators' POSTs that mail people (announcements, incidents,
-- replies): a double click or a retry after a lost answer replays the first answer
-- instead of mailing twice (shared/service/idempotency.py). The request is kept as a
-- hash; the answer holds ids only. The retention round deletes keys after 24 hours.
CREATE TABLE idempotency_keys (
    principal   uuid NOT NULL,
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      integer,
    answer      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
