"""Settings of the notifier (the shared ones come from PlatformSettings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from shared.config import (
    DEV_SECRET,
    PlatformSettings,
    UnsafeConfiguration,
    is_development_secret,
    require_public_https,
)
from shared.email_links import DEFAULT_LINK_HOSTS
from shared.events.topics import (
    ACCOUNTS_CONTACTS,
    ACCOUNTS_REQUESTS,
    DELETION_COMMANDS,
    NOTIFIER_COMMANDS,
    POLICY_VERSIONS,
    SECURITY_INCIDENTS,
)

#: One consumer group per kind of work, so a backlog of one never delays another.
GROUPS: dict[str, tuple[str, ...]] = {
    "notifier.contacts": (ACCOUNTS_CONTACTS.name,),
    "notifier.notices": (
        ACCOUNTS_REQUESTS.name,
        POLICY_VERSIONS.name,
        SECURITY_INCIDENTS.name,
        NOTIFIER_COMMANDS.name,
    ),
    "notifier.deletion": (DELETION_COMMANDS.name,),
}


class NotifierSettings(PlatformSettings):
    service_name: str = "notifier"
    notifier_http_port: int = Field(
        8103,
        description="Port of the notifier API (loopback). The local stack's gateway and "
        "Prometheus expect the default: another is for deployments that route to it.",
    )
    # -- SMTP transport
    notifier_smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    notifier_smtp_port: int = Field(2525, description="SMTP server port.")
    notifier_smtp_security: Literal["none", "starttls", "tls"] = Field(
        "starttls",
        description="none, starttls (upgrade, required) or tls (implicit TLS); the server's "
        "certificate is verified. Production refuses none.",
    )
    notifier_smtp_cafile: str | None = Field(
        None,
        description="CA bundle verifying the SMTP server's certificate; unset or empty: the "
        "system's CAs (the local stack sets its own CA's).",
    )
    notifier_smtp_username: str | None = Field(None, description="SMTP login (optional).")
    notifier_smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    notifier_smtp_timeout_seconds: float = Field(15.0, description="SMTP command timeout.")
    notifier_smtp_connections: int = Field(
        4, ge=1, le=64, description="SMTP connections in parallel (aiosmtplib has no pipelining)."
    )
    notifier_send_rate_per_second: float = Field(
        500.0,
        gt=0,
        description="Most emails per second to one SMTP server, all workers together.",
    )
    notifier_lease_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a sender holds the deliveries it leased; a crashed sender's "
        "are leased again after it (and those it had handed to SMTP are left in doubt).",
    )
    # -- retries
    notifier_retry_base_seconds: float = Field(
        1.0, gt=0, description="First back-off after an SMTP 4xx or connection error."
    )
    notifier_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest back-off between two attempts (jitter applies)."
    )
    notifier_max_attempts: int = Field(
        15, ge=1, description="Attempts before a temporarily failing email is dead-lettered."
    )
    notifier_marketing_settle_seconds: float = Field(
        10.0,
        ge=1.0,
        description="How long a campaign (a marketing notice) waits before its emails are "
        "decided, so an opt-out made in the account just before it, on its way over the bus "
        "as a contact card (~0.1 s), counts (P-32). A campaign is never urgent.",
    )
    notifier_contact_wait_seconds: float = Field(
        86_400.0, description="How long an email waits for its recipient's contact card."
    )
    # -- the compliance gate (CAN-SPAM)
    notifier_from_transactional: str = Field(
        "iMT <service@phonedoctorbiz.com>", description="From of non-marketing email."
    )
    notifier_from_marketing: str = Field(
        "iMT news <news@phonedoctorbiz.com>", description="From of marketing email."
    )
    notifier_reply_to: str = Field(
        "service@phonedoctorbiz.com", description="Reply-To of every email (a real mailbox)."
    )
    notifier_unsubscribe_mailto: str = Field(
        "service@phonedoctorbiz.com", description="mailto: target of List-Unsubscribe."
    )
    # Never blank (CAN-SPAM, P-29, P-30): blank text is found in any email, so the gate
    # would pass marketing without a label or an address.
    notifier_postal_address: str = Field(
        "iMT (Phone Doctor), 100 Main Street, Springfield, IL 62701, USA",
        pattern=r"\S",
        description="The business's physical address, printed in every marketing email.",
    )
    notifier_ad_label: str = Field(
        "Advertisement",
        pattern=r"\S",
        description="Label identifying marketing email as an advertisement.",
    )
    notifier_list_id: str = Field(
        "iMT notices <notices.phonedoctorbiz.com>", description="List-Id header value."
    )
    notifier_public_base_url: str = Field(
        "https://localhost:8443",
        description="Public https origin of the gateway (unsubscribe links, site links).",
    )
    notifier_link_hosts: tuple[str, ...] = Field(
        DEFAULT_LINK_HOSTS,
        description="Hosts an email may link to (no third-party links, P-21).",
    )
    notifier_unsubscribe_secret: SecretStr = Field(
        SecretStr(DEV_SECRET), description="HMAC key of unsubscribe tokens (they never expire)."
    )
    notifier_unsubscribe_previous_secrets: SecretStr = Field(
        SecretStr(""),
        description="Earlier HMAC keys of unsubscribe tokens, comma separated: tokens they "
        "signed still work. Keep a replaced key here at least 30 days (CAN-SPAM: a link "
        "works that long after its email); ours never expire, so longer is kinder.",
    )
    notifier_inbound_secret: SecretStr = Field(
        SecretStr(DEV_SECRET),
        description="Secret the mail provider's inbound webhook sends (X-IMT-Inbound-Secret) "
        "with each reply to the List-Unsubscribe mailto.",
    )

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> NotifierSettings:
        if self.environment != "production":
            return self
        for variable, secret in (
            ("IMT_NOTIFIER_UNSUBSCRIBE_SECRET", self.notifier_unsubscribe_secret),
            ("IMT_NOTIFIER_INBOUND_SECRET", self.notifier_inbound_secret),
        ):
            if is_development_secret(secret.get_secret_value(), DEV_SECRET):
                raise UnsafeConfiguration(f"{variable} holds the development default")
        # The development key still verifying would let anyone unsubscribe anyone.
        if any(is_development_secret(k.decode(), DEV_SECRET) for k in self.unsubscribe_keys()):
            raise UnsafeConfiguration(
                "IMT_NOTIFIER_UNSUBSCRIBE_PREVIOUS_SECRETS holds the development default"
            )
        # Unsubscribe links (P-32) and site links are built on it.
        require_public_https("IMT_NOTIFIER_PUBLIC_BASE_URL", self.notifier_public_base_url)
        # Every email carries its recipient's address, and password-reset and deletion
        # links carry one-time tokens: no hop of theirs goes in the clear (P-10).
        if self.notifier_smtp_security == "none":
            raise UnsafeConfiguration(
                "IMT_NOTIFIER_SMTP_SECURITY must be starttls or tls in production"
            )
        return self

    def unsubscribe_keys(self) -> tuple[bytes, ...]:
        """The key tokens are signed with, then those it replaced (verified in order)."""
        previous = self.notifier_unsubscribe_previous_secrets.get_secret_value().split(",")
        current = self.notifier_unsubscribe_secret.get_secret_value()
        return tuple(k.encode() for k in (current, *(p.strip() for p in previous)) if k)

    def consumer_groups(self) -> dict[str, tuple[str, ...]]:
        return dict(GROUPS)
