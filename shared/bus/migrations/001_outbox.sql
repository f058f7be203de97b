-- Transactional outbox: a service writes its state change and its events in one
-- transaction; the relay publishes rows in seq order and deletes them once Kafka
-- acknowledged them (rows may hold a contact card, so nothing lingers once sent).
CREATE TABLE bus_outbox (
    seq        bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    value      bytea,                 -- NULL publishes a tombstone
    headers    jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_id   uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
