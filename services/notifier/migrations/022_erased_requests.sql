-- Which request an erasure of one request took (scope "request"): a reply to it that
-- comes later (the notices consumer behind the deletion one) must write nothing, and
-- rows a reply's fan-out committed alongside the erasure are swept (store.sweep_erased).
ALTER TABLE erasures ADD COLUMN item_id uuid;
CREATE INDEX erasures_item ON erasures (item_id) WHERE item_id IS NOT NULL;
CREATE INDEX erasures_item_done ON erasures (erased_at) WHERE item_id IS NOT NULL;
