-- The notifier's own tables. Personal data (address, name, guardian address) lives only
-- in `contacts`, sealed with the subject's vault key; lookups go by keyed blind index.

-- The contact-card projection of the compacted accounts.contacts topic.
CREATE TABLE contacts (
    user_id          uuid PRIMARY KEY,
    email_index      bytea NOT NULL,
    email            bytea NOT NULL,
    name             bytea NOT NULL,
    guardian_index   bytea,
    guardian_email   bytea,
    locale           text NOT NULL DEFAULT 'en',
    age_band         text NOT NULL,
    marketing_email  boolean NOT NULL DEFAULT false,
    tracking_opt_out boolean NOT NULL DEFAULT false,
    active           boolean NOT NULL DEFAULT true,
    -- A tombstone arrived while the final "your data was deleted" email was pending:
    -- the row is kept until that email went, then erased with the rest.
    erase_pending    boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_email_index ON contacts (email_index);

-- One row per notice (event or SendNotice command). Wording and ids only, no personal data.
CREATE TABLE notices (
    notice_id      uuid PRIMARY KEY,
    template       text NOT NULL,
    category       text NOT NULL,
    audience       text NOT NULL,          -- all | listed
    listed         uuid[],                 -- listed audience of a scheduled notice
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    channels       text[] NOT NULL,
    recipient      text NOT NULL DEFAULT 'user',
    pinned         boolean NOT NULL DEFAULT false,
    source         text NOT NULL,
    send_at        timestamptz,
    status         text NOT NULL,          -- scheduled | fanned_out
    recipients     integer NOT NULL DEFAULT 0,
    -- Email deliveries of notices with both channels are planned from the inbox rows,
    -- in chunks after the (fast) in-site fan-out: email_cursor is the last user planned.
    email_planned  boolean NOT NULL DEFAULT true,
    email_cursor   uuid,
    -- Inbox outcomes (NoticeDelivered) are queued on the outbox after the fan-out.
    inbox_outcomes_pending boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    fanned_out_at  timestamptz
);
CREATE INDEX notices_scheduled ON notices (send_at) WHERE status = 'scheduled';
CREATE INDEX notices_email_unplanned ON notices (created_at) WHERE NOT email_planned;
CREATE INDEX notices_inbox_outcomes ON notices (created_at) WHERE inbox_outcomes_pending;

-- The in-site inbox: (notice, user) is the inbox channel's idempotency key.
CREATE TABLE inbox_items (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL,
    notice_id       uuid NOT NULL,
    pinned          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    acknowledged_at timestamptz,
    CONSTRAINT inbox_items_idempotency_key UNIQUE (notice_id, user_id)
);
CREATE INDEX inbox_items_user ON inbox_items (user_id, id DESC);

-- Email deliveries; (notice, user, channel) is the idempotency key: a redelivered event
-- or command can never plan a second email, and the row's state says whether it went.
CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notice_id       uuid NOT NULL,
    user_id         uuid NOT NULL,
    channel         text NOT NULL DEFAULT 'email',
    status          text NOT NULL DEFAULT 'pending',  -- pending | sending | done | dead
    outcome         text,                             -- sent | suppressed | refused | failed
    reason          text,                             -- why (never personal data)
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- while sending: the lease
    waiting_since   timestamptz,                      -- waiting for a contact card
    erasure_request uuid,                             -- the final email of an erasure
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT deliveries_idempotency_key UNIQUE (notice_id, user_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX deliveries_user ON deliveries (user_id);
CREATE INDEX deliveries_dead ON deliveries (finished_at) WHERE status = 'dead';

-- Opt-outs by address (blind index), per category or 'all'. Kept after erasure: it is
-- the record that the address must not be mailed, and holds no readable address.
CREATE TABLE suppressions (
    email_index bytea NOT NULL,
    category    text NOT NULL,
    source      text NOT NULL,          -- one_click | page | operator
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (email_index, category)
);

-- Which privacy-policy version each user was notified of (P-23), and when they saw it.
CREATE TABLE policy_notices (
    user_id        uuid NOT NULL,
    policy_version text NOT NULL,
    notice_id      uuid NOT NULL,
    notified_at    timestamptz NOT NULL DEFAULT now(),
    emailed_at     timestamptz,
    seen_at        timestamptz,
    PRIMARY KEY (user_id, policy_version)
);

-- Erasure requests: the final email goes first, then the subject's rows, then a receipt.
CREATE TABLE erasures (
    request_id   uuid PRIMARY KEY,
    subject_id   uuid NOT NULL,
    state        text NOT NULL,         -- confirming | done
    erased       jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    erased_at    timestamptz
);
