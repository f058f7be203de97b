-- Legal holds belong to the subject, not to the request they were placed through: a
-- user who cancels a held request and asks again must find the hold still there. A
-- hold lasts until an operator releases it; released rows stay, the record of when
-- the subject was held and by whom. Ids, dates and the operator's reason only.
CREATE TABLE legal_holds (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id   uuid NOT NULL,
    reason       text NOT NULL,
    placed_by    uuid,
    placed_at    timestamptz NOT NULL,
    request_id   uuid NOT NULL REFERENCES deletion_requests,  -- placed through this one
    released_by  uuid,
    released_at  timestamptz
);
-- One hold in force per subject: placing another restates it.
CREATE UNIQUE INDEX legal_holds_in_force ON legal_holds (subject_id) WHERE released_at IS NULL;

-- Requests paused before holds were kept per subject: their subjects stay held.
INSERT INTO legal_holds (subject_id, reason, placed_by, placed_at, request_id)
SELECT DISTINCT ON (r.subject_id)
       r.subject_id, coalesce(r.reason, 'legal hold'), h.actor, r.stage_entered_at, r.request_id
FROM deletion_requests r
LEFT JOIN LATERAL (
    SELECT actor FROM stage_history
    WHERE request_id = r.request_id AND stage = 'paused' ORDER BY id DESC LIMIT 1
) h ON true
WHERE r.stage = 'paused'
ORDER BY r.subject_id, r.stage_entered_at DESC;
