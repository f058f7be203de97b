-- Idempotent consumers: the id of every event whose effect was applied, written in the
-- same transaction as the effect, so a redelivered event is recognised and skipped.
CREATE TABLE bus_processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX bus_processed_events_age ON bus_processed_events (processed_at);
