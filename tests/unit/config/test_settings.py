from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pydantic import ValidationError

from services.analytics.config import AnalyticsSettings
from shared.bus.relay import RelaySettings
from shared.config import (
    DEV_MASTER_KEY,
    DEV_SECRET,
    DEV_TOKEN_PRIVATE_KEY,
    DEV_TOKEN_PUBLIC_KEY,
    PlatformSettings,
)

_REAL_TOKEN_KEY = Ed25519PrivateKey.generate()
REAL_TOKEN_PRIVATE_KEY = _REAL_TOKEN_KEY.private_bytes(
    Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
).decode()
REAL_TOKEN_PUBLIC_KEY = (
    _REAL_TOKEN_KEY.public_key()
    .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def test_development_defaults_work_out_of_the_box() -> None:
    settings = PlatformSettings()
    assert settings.environment == "development"
    assert "sslmode=prefer" in settings.database_dsn("accounts")


def test_production_refuses_every_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMT_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="development defaults in production") as refused:
        PlatformSettings()
    for variable in ("IMT_VAULT_MASTER_KEY", "IMT_BLIND_INDEX_KEY", "IMT_POSTGRES_PASSWORD",
                     "IMT_TOKEN_PRIVATE_KEY", "IMT_TOKEN_PUBLIC_KEY"):  # fmt: skip
        assert variable in str(refused.value)


REAL_PLATFORM_SECRETS = {
    "IMT_ENVIRONMENT": "production",
    "IMT_VAULT_MASTER_KEY": "cHJvZHVjdGlvbi1tYXN0ZXIta2V5LTMyLWJ5dGVzISE=",
    "IMT_BLIND_INDEX_KEY": "a-real-index-key-of-32-characters",
    "IMT_POSTGRES_PASSWORD": "a-real-password",
    "IMT_TOKEN_PRIVATE_KEY": REAL_TOKEN_PRIVATE_KEY,
    "IMT_TOKEN_PUBLIC_KEY": REAL_TOKEN_PUBLIC_KEY,
    "IMT_POSTGRES_SSLMODE": "verify-full",
    "IMT_KAFKA_SECURITY_PROTOCOL": "SSL",
}


def test_production_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_POSTGRES_SSLMODE": "verify-full",
        "IMT_POSTGRES_SSL_ROOTCERT": "/etc/ssl/imt-ca.pem",
    }.items():
        monkeypatch.setenv(name, value)
    settings = PlatformSettings()
    assert settings.database_dsn("vault").endswith(
        "/vault?sslmode=verify-full&sslrootcert=/etc/ssl/imt-ca.pem"
    )


# The development values in another spelling: what "$(cat key.pem)", a PEM copied from
# docs/configuration.md (spaces for newlines), a Windows editor or a stray newline give.
DEV_VALUES_IN_DISGUISE = [
    ("IMT_TOKEN_PRIVATE_KEY", DEV_TOKEN_PRIVATE_KEY.rstrip("\n")),
    ("IMT_TOKEN_PRIVATE_KEY", DEV_TOKEN_PRIVATE_KEY.replace("\n", "\r\n")),
    ("IMT_TOKEN_PRIVATE_KEY", DEV_TOKEN_PRIVATE_KEY.replace("\n", " ")),
    ("IMT_TOKEN_PUBLIC_KEY", DEV_TOKEN_PUBLIC_KEY.rstrip("\n")),
    ("IMT_TOKEN_PUBLIC_KEY", DEV_TOKEN_PUBLIC_KEY.replace("\n", " ")),
    ("IMT_TOKEN_PUBLIC_KEY", DEV_TOKEN_PUBLIC_KEY.replace("\n", "\r\n")),
    ("IMT_VAULT_MASTER_KEY", DEV_MASTER_KEY + "\n"),
    ("IMT_VAULT_MASTER_KEY", f"  {DEV_MASTER_KEY[:22]}\n{DEV_MASTER_KEY[22:]}  "),
    ("IMT_BLIND_INDEX_KEY", f"  {DEV_SECRET}\n"),
    ("IMT_POSTGRES_PASSWORD", f" {DEV_SECRET} "),
    ("IMT_POSTGRES_PASSWORD", f"{DEV_SECRET}\r\n"),
]


@pytest.mark.parametrize(
    ("variable", "disguised"),
    DEV_VALUES_IN_DISGUISE,
    ids=[
        "private-key-stripped-newline", "private-key-crlf", "private-key-spaces",
        "public-key-stripped-newline", "public-key-spaces", "public-key-crlf",
        "master-key-trailing-newline", "master-key-wrapped-and-padded",
        "blind-index-key-padded", "password-padded", "password-crlf",
    ],
)  # fmt: skip
def test_production_refuses_a_development_secret_in_another_spelling(
    monkeypatch: pytest.MonkeyPatch, variable: str, disguised: str
) -> None:
    for name, value in {**REAL_PLATFORM_SECRETS, variable: disguised}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="development defaults in production") as refused:
        PlatformSettings()
    assert variable in str(refused.value)


def test_production_refuses_the_development_public_key_as_printed_in_the_docs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    row = next(
        line
        for line in docs.read_text().splitlines()
        if line.startswith("| `IMT_TOKEN_PUBLIC_KEY`")
    )
    printed = row.split("`")[3]  # the default column, newlines printed as spaces
    assert "BEGIN PUBLIC KEY" in printed
    for name, value in {**REAL_PLATFORM_SECRETS, "IMT_TOKEN_PUBLIC_KEY": printed}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_TOKEN_PUBLIC_KEY still hold development"):
        PlatformSettings()


def test_production_accepts_real_keys_in_another_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_TOKEN_PRIVATE_KEY": REAL_TOKEN_PRIVATE_KEY.rstrip("\n"),
        "IMT_TOKEN_PUBLIC_KEY": REAL_TOKEN_PUBLIC_KEY.replace("\n", " "),
        "IMT_VAULT_MASTER_KEY": REAL_PLATFORM_SECRETS["IMT_VAULT_MASTER_KEY"] + "\n",
    }.items():
        monkeypatch.setenv(name, value)
    assert PlatformSettings().environment == "production"


@pytest.mark.parametrize(
    ("variable", "unreadable", "message"),
    [
        ("IMT_TOKEN_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nreal\n-----END PRIVATE KEY-----\n",
         "IMT_TOKEN_PRIVATE_KEY must be a PEM Ed25519 private key"),
        ("IMT_TOKEN_PRIVATE_KEY", REAL_TOKEN_PUBLIC_KEY,
         "IMT_TOKEN_PRIVATE_KEY must be a PEM Ed25519 private key"),
        ("IMT_TOKEN_PUBLIC_KEY", "not a key",
         "IMT_TOKEN_PUBLIC_KEY must be a PEM Ed25519 public key"),
        ("IMT_TOKEN_PUBLIC_KEY", REAL_TOKEN_PRIVATE_KEY,
         "IMT_TOKEN_PUBLIC_KEY must be a PEM Ed25519 public key"),
        ("IMT_VAULT_MASTER_KEY", "not-base64!", "IMT_VAULT_MASTER_KEY must be base64 of 32 bytes"),
        ("IMT_VAULT_MASTER_KEY", "c2hvcnQ=", "IMT_VAULT_MASTER_KEY must be base64 of 32 bytes"),
    ],
    ids=["private-key-garbage", "private-key-given-a-public-key", "public-key-garbage",
         "public-key-given-a-private-key", "master-key-not-base64", "master-key-too-short"],
)  # fmt: skip
def test_production_refuses_a_key_it_cannot_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, unreadable: str, message: str
) -> None:
    for name, value in {**REAL_PLATFORM_SECRETS, variable: unreadable}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        PlatformSettings()


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_do_not_read_the_keys(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    for name, value in {
        "IMT_ENVIRONMENT": environment,
        "IMT_TOKEN_PRIVATE_KEY": "unused",
        "IMT_TOKEN_PUBLIC_KEY": "unused",
        "IMT_VAULT_MASTER_KEY": "unused",
        "IMT_BLIND_INDEX_KEY": "",
    }.items():
        monkeypatch.setenv(name, value)
    assert PlatformSettings().environment == environment


@pytest.mark.promise("P-10")
@pytest.mark.parametrize(
    ("variable", "weak"),
    [("IMT_POSTGRES_SSLMODE", "prefer"), ("IMT_POSTGRES_SSLMODE", "require"),
     ("IMT_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")],
)  # fmt: skip
def test_production_refuses_a_hop_without_verified_tls(
    monkeypatch: pytest.MonkeyPatch, variable: str, weak: str
) -> None:
    for name, value in {**REAL_PLATFORM_SECRETS, variable: weak}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=variable):
        PlatformSettings()


@pytest.mark.parametrize("weak", ["", "short-but-not-the-dev-secret", " " * 40])
def test_production_refuses_a_blind_index_key_anyone_could_guess(
    monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    for name, value in {**REAL_PLATFORM_SECRETS, "IMT_BLIND_INDEX_KEY": weak}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_BLIND_INDEX_KEY must hold at least 32"):
        PlatformSettings()


def test_secrets_never_show_in_a_repr() -> None:
    text = repr(PlatformSettings())
    assert "development-only-secret" not in text
    assert "BEGIN PRIVATE KEY" not in text


def test_the_notifier_refuses_its_development_secrets_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.notifier.config import NotifierSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_NOTIFIER_UNSUBSCRIBE_SECRET": "a-real-unsubscribe-key",
        "IMT_NOTIFIER_PUBLIC_BASE_URL": "https://phonedoctorbiz.com",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_NOTIFIER_INBOUND_SECRET"):
        NotifierSettings()
    monkeypatch.setenv("IMT_NOTIFIER_INBOUND_SECRET", "a-real-inbound-secret")
    assert NotifierSettings().notifier_inbound_secret.get_secret_value() == "a-real-inbound-secret"
    # A replaced unsubscribe key still verifies: the development one would let anyone
    # unsubscribe anyone.
    monkeypatch.setenv("IMT_NOTIFIER_UNSUBSCRIBE_PREVIOUS_SECRETS", f"an-old-key, {DEV_SECRET}")
    with pytest.raises(ValidationError, match="IMT_NOTIFIER_UNSUBSCRIBE_PREVIOUS_SECRETS"):
        NotifierSettings()
    monkeypatch.setenv("IMT_NOTIFIER_UNSUBSCRIBE_PREVIOUS_SECRETS", "an-old-key")
    assert NotifierSettings().unsubscribe_keys()[1:] == (b"an-old-key",)


@pytest.mark.promise("P-10")
def test_accounts_mails_links_with_tokens_over_https_only_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.accounts.config import AccountsSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_ACCOUNTS_ADMIN_PASSWORD": "a-real-admin-password",
        "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD": "another-real-admin-password",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_ACCOUNTS_PUBLIC_URL"):
        AccountsSettings()  # the default, http://localhost:8080
    for unusable in ("https://localhost:8443", "https://127.0.0.1", "https://"):
        monkeypatch.setenv("IMT_ACCOUNTS_PUBLIC_URL", unusable)
        with pytest.raises(ValidationError, match="IMT_ACCOUNTS_PUBLIC_URL"):
            AccountsSettings()
    monkeypatch.setenv("IMT_ACCOUNTS_PUBLIC_URL", "https://privacy.imt.example")
    assert AccountsSettings().accounts_public_url == "https://privacy.imt.example"


@pytest.mark.promise("P-10")
def test_the_notifier_refuses_smtp_in_the_clear_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.notifier.config import NotifierSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_NOTIFIER_UNSUBSCRIBE_SECRET": "a-real-unsubscribe-key",
        "IMT_NOTIFIER_INBOUND_SECRET": "a-real-inbound-secret",
        "IMT_NOTIFIER_PUBLIC_BASE_URL": "https://phonedoctorbiz.com",
        "IMT_NOTIFIER_SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_NOTIFIER_SMTP_SECURITY"):
        NotifierSettings()
    for verified in ("starttls", "tls"):
        monkeypatch.setenv("IMT_NOTIFIER_SMTP_SECURITY", verified)
        assert NotifierSettings().notifier_smtp_security == verified


def test_the_notifier_verifies_smtp_with_the_systems_cas_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A production host has no local stack's CA file: by default, the system's CAs."""
    import ssl

    from services.notifier.config import NotifierSettings
    from services.notifier.mailer import tls_context

    for unset in (None, ""):
        if unset is None:
            monkeypatch.delenv("IMT_NOTIFIER_SMTP_CAFILE", raising=False)
        else:
            monkeypatch.setenv("IMT_NOTIFIER_SMTP_CAFILE", unset)
        context = tls_context(NotifierSettings())
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.cert_store_stats() == ssl.create_default_context().cert_store_stats()


def test_the_notifier_links_to_its_public_https_origin_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unsubscribe links (P-32) built on the default would point at localhost."""
    from services.notifier.config import NotifierSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_NOTIFIER_UNSUBSCRIBE_SECRET": "a-real-unsubscribe-key",
        "IMT_NOTIFIER_INBOUND_SECRET": "a-real-inbound-secret",
    }.items():
        monkeypatch.setenv(name, value)
    for unusable in ("https://localhost:8443", "http://phonedoctorbiz.com"):
        monkeypatch.setenv("IMT_NOTIFIER_PUBLIC_BASE_URL", unusable)
        with pytest.raises(ValidationError, match="IMT_NOTIFIER_PUBLIC_BASE_URL"):
            NotifierSettings()
    monkeypatch.setenv("IMT_NOTIFIER_PUBLIC_BASE_URL", "https://phonedoctorbiz.com")
    assert NotifierSettings().notifier_public_base_url == "https://phonedoctorbiz.com"


def test_the_relay_poll_interval_is_bounded_and_the_relays_default() -> None:
    assert PlatformSettings().outbox_idle_poll_seconds == RelaySettings().idle_poll_seconds
    for bad in (0, -1, 60):
        with pytest.raises(ValidationError):
            PlatformSettings(outbox_idle_poll_seconds=bad)


def test_analytics_refuses_a_public_k_under_the_partners(monkeypatch: pytest.MonkeyPatch) -> None:
    # The public release hides all the partners' does: it must be the stricter one.
    monkeypatch.setenv("IMT_ANALYTICS_PUBLIC_K", "4")
    with pytest.raises(ValidationError, match="IMT_ANALYTICS_PUBLIC_K"):
        AnalyticsSettings()
    monkeypatch.setenv("IMT_ANALYTICS_PARTNER_K", "4")
    assert AnalyticsSettings().analytics_public_k == 4


def test_analytics_refuses_the_development_noise_key_once_noise_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in REAL_PLATFORM_SECRETS.items():
        monkeypatch.setenv(name, value)
    assert AnalyticsSettings().analytics_public_epsilon is None  # no noise: no key needed
    monkeypatch.setenv("IMT_ANALYTICS_PUBLIC_EPSILON", "1.0")
    with pytest.raises(ValidationError, match="IMT_ANALYTICS_NOISE_KEY"):
        AnalyticsSettings()
    monkeypatch.setenv("IMT_ANALYTICS_NOISE_KEY", "a-real-noise-key")
    assert AnalyticsSettings().analytics_public_epsilon == 1.0


def test_a_process_that_signs_nothing_may_leave_the_private_key_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**REAL_PLATFORM_SECRETS, "IMT_TOKEN_PRIVATE_KEY": ""}.items():
        monkeypatch.setenv(name, value)
    assert PlatformSettings().token_private_key.get_secret_value() == ""


@pytest.mark.parametrize("private_key", ["", "other"], ids=["empty", "another-key"])
def test_accounts_refuses_a_private_key_that_does_not_match_the_public_one(
    monkeypatch: pytest.MonkeyPatch, private_key: str
) -> None:
    from services.accounts.config import AccountsSettings

    other = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_ACCOUNTS_ADMIN_PASSWORD": "a-real-admin-password",
        "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD": "another-real-admin-password",
        "IMT_ACCOUNTS_PUBLIC_URL": "https://privacy.imt.example",
        "IMT_TOKEN_PRIVATE_KEY": other.decode() if private_key == "other" else "",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="not the private half of IMT_TOKEN_PUBLIC_KEY"):
        AccountsSettings()


@pytest.mark.parametrize(
    ("settings", "variable", "dev"),
    [("notifier", "IMT_NOTIFIER_INBOUND_SECRET", DEV_SECRET),
     ("accounts", "IMT_ACCOUNTS_ADMIN_PASSWORD", "development-only-admin-password"),
     ("accounts", "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD",
      "development-only-second-admin-password")],
)  # fmt: skip
def test_services_refuse_their_development_secrets_padded_with_whitespace(
    monkeypatch: pytest.MonkeyPatch, settings: str, variable: str, dev: str
) -> None:
    from services.accounts.config import AccountsSettings
    from services.notifier.config import NotifierSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_NOTIFIER_UNSUBSCRIBE_SECRET": "a-real-unsubscribe-key",
        "IMT_NOTIFIER_INBOUND_SECRET": "a-real-inbound-secret",
        "IMT_ACCOUNTS_ADMIN_PASSWORD": "a-real-admin-password",
        "IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD": "another-real-admin-password",
        "IMT_ACCOUNTS_PUBLIC_URL": "https://privacy.imt.example",
        "IMT_NOTIFIER_PUBLIC_BASE_URL": "https://phonedoctorbiz.com",
        variable: f"{dev}\n",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=variable):
        {"notifier": NotifierSettings, "accounts": AccountsSettings}[settings]()


@pytest.mark.promise("P-15")
@pytest.mark.parametrize(
    ("variable", "value", "refused"),
    [("IMT_ACCOUNTS_SECOND_ADMIN_EMAIL", " Admin@IMT.example", "SECOND_ADMIN_EMAIL is"),
     ("IMT_ACCOUNTS_SECOND_ADMIN_PASSWORD", "development-only-admin-password",
      "two first admins are two people")],
)  # fmt: skip
def test_accounts_refuses_one_person_as_both_first_admins(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, refused: str
) -> None:
    """Approvals pass only between the two first admins' lines: one person holding both
    would approve their own deletions."""
    from services.accounts.config import AccountsSettings

    assert AccountsSettings().accounts_second_admin_email == "admin2@imt.example"
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=refused):
        AccountsSettings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMT_KAFKA_BOOTSTRAP", "127.0.0.1:19092,kafka-1.internal:9092"),
        ("IMT_POSTGRES_HOST", "db.internal"),
    ],
)
def test_a_forgotten_environment_off_this_machine_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A deployment without IMT_ENVIRONMENT would run on the repository's secrets."""
    monkeypatch.delenv("IMT_ENVIRONMENT", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=f"IMT_ENVIRONMENT is not set and {variable}="):
        PlatformSettings()
    monkeypatch.setenv("IMT_ENVIRONMENT", "development")  # said explicitly: a choice
    assert PlatformSettings().environment == "development"


def test_loopback_servers_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMT_ENVIRONMENT", raising=False)
    monkeypatch.setenv("IMT_KAFKA_BOOTSTRAP", "localhost:19092,[::1]:19093,127.0.0.2:1")
    monkeypatch.setenv("IMT_POSTGRES_HOST", "::1")
    assert PlatformSettings().environment == "development"


def test_accounts_checks_operators_links_against_the_notifiers_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One list: the notifier's gate and accounts' check when an operator types a notice
    (P-21) must agree, or a notice accepted here is dead-lettered for every user there."""
    from services.accounts.config import AccountsSettings
    from services.notifier.config import NotifierSettings

    assert AccountsSettings().accounts_link_hosts == NotifierSettings().notifier_link_hosts
    monkeypatch.setenv("IMT_NOTIFIER_LINK_HOSTS", '["imt.example", "www.imt.example"]')
    assert AccountsSettings().accounts_link_hosts == ("imt.example", "www.imt.example")
    monkeypatch.setenv("IMT_ACCOUNTS_LINK_HOSTS", '["accounts.example"]')
    assert AccountsSettings().accounts_link_hosts == ("accounts.example",)
