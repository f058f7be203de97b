-- The deletion service's own tables: the requests and their stages (the deletion
-- ledger), the stores' receipts, the backup snapshots, and the certificates.
-- Ids and dates only: no personal data is ever stored here.

CREATE TABLE deletion_requests (
    request_id          uuid PRIMARY KEY,
    subject_id          uuid NOT NULL,
    scope               text NOT NULL CHECK (scope IN ('account', 'device', 'request')),
    item_id             uuid,
    initiated_by        text NOT NULL,
    stage               text NOT NULL,
    stage_entered_at    timestamptz NOT NULL,
    requested_at        timestamptz NOT NULL,
    grace_ends_at       timestamptz NOT NULL,
    paused_from         text,
    reason              text,
    erasing_started_at  timestamptz,
    erased_at           timestamptz,
    expected_stores     text[] NOT NULL DEFAULT '{}',
    retain_categories   text[] NOT NULL DEFAULT '{}',
    erase_attempts      integer NOT NULL DEFAULT 0,
    next_erase_at       timestamptz,
    erase_deadline      timestamptz,
    -- When the worker looks at the request next (a lease while it verifies).
    next_check_at       timestamptz,
    CHECK (scope = 'account' OR item_id IS NOT NULL)
);
CREATE INDEX deletion_requests_due ON deletion_requests (next_check_at)
    WHERE next_check_at IS NOT NULL;
CREATE INDEX deletion_requests_subject ON deletion_requests (subject_id);
CREATE INDEX deletion_requests_stage ON deletion_requests (stage);

-- Every stage a request entered, once each time (the certificate's stage times).
CREATE TABLE stage_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES deletion_requests,
    stage       text NOT NULL,
    reason      text,
    actor       uuid,
    entered_at  timestamptz NOT NULL
);
CREATE INDEX stage_history_request ON stage_history (request_id, id);

-- The stores' answers; a duplicate receipt changes nothing.
CREATE TABLE store_receipts (
    erase_id            uuid NOT NULL,   -- the EraseSubject's request_id (a pass of a request)
    store               text NOT NULL,
    request_id          uuid NOT NULL,
    erased              jsonb NOT NULL,
    retained_anonymised jsonb NOT NULL,
    erased_at           timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (erase_id, store)
);
CREATE INDEX store_receipts_request ON store_receipts (request_id);

-- Categories kept anonymised after the erasure, erased by a second pass when due.
CREATE TABLE retention_releases (
    erase_id    uuid PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES deletion_requests,
    category    text NOT NULL,
    due_at      timestamptz NOT NULL,
    sent_at     timestamptz,
    UNIQUE (request_id, category)
);
CREATE INDEX retention_releases_due ON retention_releases (due_at) WHERE sent_at IS NULL;

-- Snapshots taken by `python -m services.deletion.backups take` (the manifest on disk is
-- the copy of record; this is the index the worker checks).
CREATE TABLE backup_snapshots (
    snapshot_id  text PRIMARY KEY,
    taken_at     timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    completed_at timestamptz,
    expired_at   timestamptz,
    databases    text[] NOT NULL,
    path         text NOT NULL
);
CREATE INDEX backup_snapshots_live ON backup_snapshots (taken_at) WHERE expired_at IS NULL;

CREATE TABLE certificates (
    request_id  uuid PRIMARY KEY REFERENCES deletion_requests,
    issued_at   timestamptz NOT NULL,
    body        jsonb NOT NULL,
    digest      text NOT NULL
);
