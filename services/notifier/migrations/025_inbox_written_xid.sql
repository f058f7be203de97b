-- The transaction that wrote each inbox item (its top-level id): an API process whose
-- listener was lost pushes, when it listens again, the items of the transactions that
-- had not ended when it last knew it had heard everything (stream.py), however long they
-- stayed open before committing. Items written before this migration keep NULL: never
-- caught up.
-- Two steps: a column added without a default writes nothing into the existing rows (a
-- volatile default given with ADD COLUMN would rewrite the table); the default set then
-- applies to new rows only: every INSERT and COPY of the fan-out and of late cards.
ALTER TABLE inbox_items ADD COLUMN written_xid xid8;
ALTER TABLE inbox_items ALTER COLUMN written_xid SET DEFAULT pg_current_xact_id();
