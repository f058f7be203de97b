-- Password resets are mailed action links too; created_at lets a second request within
-- the interval be answered without a second email (no mail-bombing through our form).
ALTER TABLE action_tokens DROP CONSTRAINT action_tokens_purpose_check;
ALTER TABLE action_tokens ADD CONSTRAINT action_tokens_purpose_check
    CHECK (purpose IN ('verify_email', 'guardian_consent', 'password_reset'));
ALTER TABLE action_tokens ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
