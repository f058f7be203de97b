-- An operator's retry sends the erasure again under the same id (the stores recognise
-- it as the same erasure). The earlier pass's receipts must not answer for the retry,
-- yet they are proof of what the stores erased then: they are kept, marked superseded,
-- and only receipts not superseded count (one per store and erasure id).
ALTER TABLE store_receipts ADD COLUMN superseded_at timestamptz;
ALTER TABLE store_receipts DROP CONSTRAINT store_receipts_pkey;
CREATE UNIQUE INDEX store_receipts_current ON store_receipts (erase_id, store)
    WHERE superseded_at IS NULL;
