-- Placing a hold on a subject already held used to overwrite the hold's row (reason,
-- operator, time and request of the first placement): the record of who held the
-- subject first, when and why, was lost. The hold's row now keeps its placement, and
-- each restatement is recorded here, beside it. Ids, dates and the operator's reason only.
CREATE TABLE legal_hold_restatements (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id     bigint NOT NULL REFERENCES legal_holds,
    reason      text NOT NULL,
    stated_by   uuid,
    stated_at   timestamptz NOT NULL,
    request_id  uuid NOT NULL REFERENCES deletion_requests  -- stated through this one
);
CREATE INDEX legal_hold_restatements_hold ON legal_hold_restatements (hold_id, id);
