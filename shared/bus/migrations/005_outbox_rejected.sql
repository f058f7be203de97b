-- Outbox rows Kafka refused for good (too large, say): moved here, with why, so that the
-- relay goes on with the rows behind them instead of failing on the first one for ever.
-- An operator is paged (OutboxRejected); the row may hold a sealed contact card, so it
-- is deleted once dealt with (docs/operations.md#outboxrejected).
CREATE TABLE bus_outbox_rejected (
    seq         bigint PRIMARY KEY,
    topic       text NOT NULL,
    key         bytea,
    value       bytea,
    headers     jsonb NOT NULL,
    event_id    uuid,
    created_at  timestamptz NOT NULL,
    reason      text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
