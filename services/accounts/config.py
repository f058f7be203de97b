"""Settings of the accounts service (the shared ones come from PlatformSettings)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, model_validator

from shared.config import (
    PlatformSettings,
    UnsafeConfiguration,
    is_development_secret,
    require_public_https,
    token_private_key_identity,
    token_public_key_identity,
)
from shared.email_links import DEFAULT_LINK_HOSTS
from shared.events.topics import DELETION_COMMANDS, DELETION_STAGES
from shared.vault.crypto import index_form

ERASURE_GROUP = "accounts-erasure"

DEV_ADMIN_PASSWORD = "development-only-admin-password"  # noqa: S105 - refused outside development
DEV_SECOND_ADMIN_PASSWORD = "development-only-second-admin-password"  # noqa: S105 - same


class AccountsSettings(PlatformSettings):
    service_name: str = "accounts"
    accounts_http_port: int = Field(8101, description="Port of the accounts API (loopback).")
    accounts_public_url: str = Field(
        "http://localhost:8080",
        description=(
            "Base URL of the privacy center, used in links sent by email (the pages"
            " verify-email, guardian-consent, reset-password, cancel-deletion); https in"
            " production, where the links carry one-time tokens. A host name, not an"
            " address: the pages count their views by site name."
        ),
    )
    accounts_link_hosts: tuple[str, ...] = Field(
        DEFAULT_LINK_HOSTS,
        validation_alias=AliasChoices("IMT_ACCOUNTS_LINK_HOSTS", "IMT_NOTIFIER_LINK_HOSTS"),
        description="Hosts an operator's announcement, incident or policy summary may link"
        " to: the notifier's (IMT_NOTIFIER_LINK_HOSTS) unless set. One linking elsewhere is"
        " refused as it is typed (422), not dead-lettered by the notifier's gate for every"
        " user (P-21).",
    )
    accounts_access_token_seconds: int = Field(
        300, description="Lifetime of an access token (short: revocation is also checked)."
    )
    accounts_refresh_token_days: int = Field(30, description="Lifetime of a refresh token.")
    accounts_refresh_reuse_grace_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "A refresh token sent again this soon after its use, while the token it was"
            " traded for is unused, gets that same token again (an answer lost, two tabs"
            " at once) instead of ending the session; 0: any reuse ends it."
        ),
    )
    accounts_link_hours: int = Field(
        48,
        description=(
            "Lifetime of email-verification and guardian-consent links; a new address"
            " waiting for its link is kept as long, then cleared."
        ),
    )
    accounts_account_counter_days: int = Field(
        180,
        ge=1,
        description=(
            "Days after its last failure an account's throttle counter (a keyed hash of the"
            " email, kept after the account's erasure) is deleted: the fraud_abuse period of"
            " the deletion service's retention rules. A locked one is kept until a password"
            " reset or change lifts the lock, for an email with an account or without alike."
        ),
    )
    accounts_retention_sweep_seconds: float = Field(
        3600.0,
        gt=0,
        description=(
            "How often the worker deletes what is kept only while it serves: spent client"
            " throttle counters, expired link tokens, sessions no token can resume."
        ),
    )
    accounts_signup_lapse_days: int = Field(
        30,
        ge=1,
        description=(
            "Days after sign-up an account never activated (address never verified or,"
            " under 13, no guardian's consent) is erased everywhere, once every"
            " verification and consent link mailed for it expired."
        ),
    )
    accounts_lapse_sweep_seconds: float = Field(
        3600.0, gt=0, description="How often the worker looks for lapsed sign-ups."
    )
    accounts_cancel_link_days: int = Field(
        30,
        ge=1,
        description=(
            "Lifetime of the link that cancels a deletion request, mailed when it is made"
            " (at least the deletion service's grace period: a cancel after it is refused"
            " anyway)."
        ),
    )
    accounts_pending_sweep_seconds: float = Field(
        300.0, gt=0, description="How often the worker clears new addresses whose link expired."
    )
    accounts_pending_reset_seconds: float = Field(
        2.0,
        gt=0,
        description=(
            "How often the worker mails the password-reset links asked for while the"
            " account's row was held (the answer could not wait for it): recorded, they"
            " survive a restart of the API."
        ),
    )
    accounts_reset_minutes: int = Field(
        60, gt=0, description="Lifetime of a password-reset link (single use)."
    )
    accounts_reset_interval_seconds: int = Field(
        300, ge=0, description="At most one password-reset email per account in this interval."
    )
    accounts_admin_email: str = Field(
        "admin@imt.example", description="Email of the first admin operator (created at start)."
    )
    accounts_admin_password: SecretStr = Field(
        SecretStr(DEV_ADMIN_PASSWORD), description="Password of the first admin operator."
    )
    accounts_second_admin_email: str = Field(
        "admin2@imt.example",
        description=(
            "Email of the second first admin (created at start), held by another person"
            " than the first: an operator's deletion request is approved only by an"
            " operator who shares no creator with its requester (P-15), so one side comes"
            " from each first admin's line."
        ),
    )
    accounts_second_admin_password: SecretStr = Field(
        SecretStr(DEV_SECOND_ADMIN_PASSWORD),
        description="Password of the second first admin (not the first's).",
    )
    accounts_account_free_failures: int = Field(
        5, description="Failed logins per account before back-off starts."
    )
    accounts_client_free_failures: int = Field(
        50, description="Failed logins per client address (in the window) before back-off."
    )
    accounts_client_window_seconds: int = Field(
        900, description="Window after which a client address's failure count restarts."
    )
    accounts_backoff_base_seconds: float = Field(
        1.0, description="First back-off delay; doubles with every further failure."
    )
    accounts_backoff_max_seconds: float = Field(900.0, description="Longest back-off delay.")
    accounts_lockout_failures: int = Field(
        100, description="Consecutive failures that lock an account (NIST SP 800-63B: <= 100)."
    )
    accounts_exports_per_hour: int = Field(3, description="Self-service exports per user per hour.")
    accounts_operator_deletion_approval_days: int = Field(
        7,
        ge=1,
        description=(
            "Days an operator's request to delete a user waits for a second operator's"
            " approval (P-15): an older one is expired (its approval answers 410"
            " deletion-request-expired) and the deletion may be requested again."
        ),
    )
    accounts_audit_full_check_seconds: float = Field(
        3600.0,
        gt=0,
        description="How often /metrics re-checks the whole audit chain (in between, only "
        "the rows added since the last check).",
    )

    @model_validator(mode="after")
    def _refuse_dev_admin_password(self) -> AccountsSettings:
        if self.environment == "production" and is_development_secret(
            self.accounts_admin_password.get_secret_value(), DEV_ADMIN_PASSWORD
        ):
            raise UnsafeConfiguration("IMT_ACCOUNTS_ADMIN_PASSWORD holds its development default")
        if self.environment == "production" and is_development_secret(
            self.accounts_second_admin_password.get_secret_value(), DEV_SECOND_ADMIN_PASSWORD
        ):
            raise UnsafeConfiguration(
                "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD holds its development default"
            )
        if self.environment == "production" and token_private_key_identity(
            self.token_private_key.get_secret_value()
        ) != token_public_key_identity(self.token_public_key):
            # Its tokens would be refused everywhere: every login would seem to fail.
            raise UnsafeConfiguration(
                "IMT_TOKEN_PRIVATE_KEY is not the private half of IMT_TOKEN_PUBLIC_KEY"
            )
        if self.environment == "production":
            require_public_https("IMT_ACCOUNTS_PUBLIC_URL", self.accounts_public_url)
        return self

    @model_validator(mode="after")
    def _two_first_admins(self) -> AccountsSettings:
        # One person holding both would approve their own requests through the two lines.
        # As the blind index compares them: two spellings of one address are one operator.
        if index_form(self.accounts_admin_email) == index_form(self.accounts_second_admin_email):
            raise ValueError("IMT_ACCOUNTS_SECOND_ADMIN_EMAIL is IMT_ACCOUNTS_ADMIN_EMAIL")
        if (
            self.accounts_admin_password.get_secret_value()
            == self.accounts_second_admin_password.get_secret_value()
        ):
            raise ValueError(
                "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD is IMT_ACCOUNTS_ADMIN_PASSWORD: the two"
                " first admins are two people"
            )
        return self

    @model_validator(mode="after")
    def _tokens_outlive_no_revocation(self) -> AccountsSettings:
        # The other APIs forget a revocation after token_max_seconds: a token living
        # longer would work again there.
        if self.accounts_access_token_seconds > self.token_max_seconds:
            raise ValueError("IMT_ACCOUNTS_ACCESS_TOKEN_SECONDS exceeds IMT_TOKEN_MAX_SECONDS")
        return self

    def consumer_groups(self) -> dict[str, tuple[str, ...]]:
        return {ERASURE_GROUP: (DELETION_COMMANDS.name, DELETION_STAGES.name)}
