-- A device or request the user deleted: out of every view at once, its rows kept here as
-- they were (sealed fields stay sealed) until the deletion service has it erased, which
-- is at once unless a legal hold on the user stops it (P-12, P-13). Then erased here.
CREATE TABLE erasing_items (
    item_id    uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('device', 'request')),
    rows       jsonb NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasing_items_user ON erasing_items (user_id);
