-- The accounts schema. Every personal column is a bytea sealed with the subject's vault
-- key (purpose "accounts.<table>.<column>"); lookups by email use a keyed blind index.
-- Passwords are argon2id hashes only. 001's placeholder table is replaced (it never held
-- rows: nothing wrote to it).
DROP TABLE users;

CREATE TABLE users (
    id                 uuid PRIMARY KEY,
    email_index        bytea NOT NULL UNIQUE,
    email              bytea NOT NULL,
    name               bytea NOT NULL,
    password_hash      text NOT NULL,
    birth_date         bytea,
    age_band           text NOT NULL
        CHECK (age_band IN ('under_13', '13_to_17', 'adult', 'unknown')),
    guardian_email     bytea,
    email_verified     boolean NOT NULL DEFAULT false,
    guardian_consented boolean,                  -- NULL unless under 13
    active             boolean NOT NULL DEFAULT false,
    marketing_email    boolean NOT NULL DEFAULT false,
    personalisation    boolean NOT NULL DEFAULT true,
    tracking_opt_out   boolean NOT NULL DEFAULT false,
    locale             text NOT NULL DEFAULT 'en',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (age_band <> 'under_13' OR NOT marketing_email),
    CHECK (age_band <> 'under_13' OR guardian_email IS NOT NULL)
);

-- One-time links (email verification, guardian consent): only a hash of the token.
CREATE TABLE action_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'guardian_consent')),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX action_tokens_user ON action_tokens (user_id);

CREATE TABLE operators (
    id            uuid PRIMARY KEY,
    email_index   bytea NOT NULL UNIQUE,
    email         bytea NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL,
    created_by    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- A session is a refresh-token family; revoking it kills its access tokens at once.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    principal_id   uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('user', 'operator')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_principal ON sessions (principal_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Failed logins per account (blind index of the email, registered or not) and per
-- client (keyed hash of the address): no email nor address is stored.
CREATE TABLE login_throttle (
    key             bytea PRIMARY KEY,
    scope           text NOT NULL CHECK (scope IN ('account', 'client')),
    failures        integer NOT NULL DEFAULT 0,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz,
    locked          boolean NOT NULL DEFAULT false
);

CREATE TABLE devices (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    model        bytea NOT NULL,
    damage_state text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE requests (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    category   text NOT NULL,
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_user ON requests (user_id);

CREATE TABLE request_messages (
    id          uuid PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES requests ON DELETE CASCADE,
    author      text NOT NULL CHECK (author IN ('user', 'operator')),
    operator_id uuid,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_messages_request ON request_messages (request_id, created_at);

-- Who read or changed whose personal data, which fields, why: append-only.
CREATE TABLE audit_log (
    id                bigserial PRIMARY KEY,
    operator_id       uuid NOT NULL,
    subject_id        uuid NOT NULL,
    action            text NOT NULL CHECK (action IN ('read', 'change', 'disclose', 'delete')),
    fields            text[] NOT NULL,
    purpose           text NOT NULL,
    request_reference text,
    at                timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_subject ON audit_log (subject_id);
CREATE INDEX audit_log_operator ON audit_log (operator_id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE policy_versions (
    version      text PRIMARY KEY,
    summary      text NOT NULL,
    effective_at timestamptz NOT NULL,
    published_by uuid NOT NULL,
    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE policy_acceptances (
    user_id     uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    version     text NOT NULL REFERENCES policy_versions,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, version)
);

CREATE TABLE announcements (
    id          uuid PRIMARY KEY,
    title       text NOT NULL,
    message     text NOT NULL,
    send_at     timestamptz,
    announced_by uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE incidents (
    id          uuid PRIMARY KEY,
    title       text NOT NULL,
    message     text NOT NULL,
    audience    text NOT NULL,
    affected    integer NOT NULL,
    declared_by uuid NOT NULL,
    declared_at timestamptz NOT NULL DEFAULT now()
);

-- Third parties: processors (act for us) and partners; what they may receive.
CREATE TABLE recipients (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('processor', 'partner')),
    purpose        text NOT NULL,
    allowed_fields text[] NOT NULL,
    created_by     uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, purpose)
);

-- Consent history: one row per grant or revocation; the latest row is the state.
CREATE TABLE consents (
    id           bigserial PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    recipient_id uuid NOT NULL REFERENCES recipients,
    purpose      text NOT NULL,
    granted      boolean NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX consents_current ON consents (recipient_id, purpose, user_id, id DESC);
CREATE INDEX consents_user ON consents (user_id);

-- Every disclosure to a third party: who received which fields of whom.
CREATE TABLE disclosures (
    id           bigserial PRIMARY KEY,
    export_id    uuid NOT NULL,
    recipient_id uuid NOT NULL REFERENCES recipients,
    user_id      uuid NOT NULL,
    fields       text[] NOT NULL,
    operator_id  uuid NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disclosures_user ON disclosures (user_id);

-- Self-service exports, for their rate limit.
CREATE TABLE data_exports (
    id      bigserial PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_exports_user ON data_exports (user_id, at);

CREATE TABLE deletion_requests (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    initiated_by text NOT NULL CHECK (initiated_by IN ('user', 'operator')),
    requested_by uuid,                          -- the first operator
    approved_by  uuid,                          -- the second, different operator
    reason       text,
    status       text NOT NULL
        CHECK (status IN ('pending_approval', 'requested', 'cancelled', 'erased')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
);
CREATE INDEX deletion_requests_user ON deletion_requests (user_id);
