-- An erased request is recorded by the digest of its id, not the id: the deletion
-- service's verifier looks for the id in every column, and the record that the request
-- was erased must not be the one place it is still found. sha256 of the id's text:
-- the notifier checks a reply's request against it (store.request_erased).
ALTER TABLE erasures ADD COLUMN item_digest bytea;
UPDATE erasures SET item_digest = sha256(convert_to(item_id::text, 'UTF8'))
    WHERE item_id IS NOT NULL;
DROP INDEX erasures_item;
DROP INDEX erasures_item_done;
ALTER TABLE erasures DROP COLUMN item_id;
CREATE INDEX erasures_item ON erasures (item_digest) WHERE item_digest IS NOT NULL;
CREATE INDEX erasures_item_done ON erasures (erased_at) WHERE item_digest IS NOT NULL;
