-- The trace id of the erase command (shared/tracing.py): the receipt is sent after the
-- final email, by the sender, long after the command was handled, and still carries it.
-- A random id, never personal data.
ALTER TABLE erasures ADD COLUMN trace_id text CHECK (trace_id ~ '^[0-9a-f]{32}$');
