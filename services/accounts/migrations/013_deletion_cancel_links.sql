-- The link in the "we received your deletion request" email cancels the request with a
-- one-time token (P-15), without signing in: cancelling only keeps an account.
ALTER TABLE action_tokens DROP CONSTRAINT action_tokens_purpose_check;
ALTER TABLE action_tokens ADD CONSTRAINT action_tokens_purpose_check
    CHECK (purpose IN ('verify_email', 'guardian_consent', 'password_reset', 'deletion_cancel'));
