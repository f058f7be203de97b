-- The trace id of the work that asked for a deletion (shared/tracing.py): the ticker
-- takes each later step under it, so the commands, receipts and emails of one request
-- share the id of the click that started it. A random id, never personal data.
ALTER TABLE deletion_requests
    ADD COLUMN trace_id text CHECK (trace_id ~ '^[0-9a-f]{32}$');
