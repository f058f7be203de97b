-- Erasures forwarded to the recipients (processors, partners) the subject's data was
-- disclosed to (P-19): one per recipient and subject, whichever command asked first.
-- Ids and dates only: proof kept with the disclosure log, released with it.
CREATE TABLE recipient_erasures (
    subject_id   uuid NOT NULL,
    recipient_id uuid NOT NULL,
    request_id   uuid NOT NULL,
    told_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, recipient_id)
);
