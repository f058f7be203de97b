import pytest
from pydantic import ValidationError

from services.analytics.config import AnalyticsSettings
from shared.bus.relay import RelaySettings
from shared.config import PlatformSettings


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
    "IMT_TOKEN_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nreal\n-----END PRIVATE KEY-----\n",
    "IMT_TOKEN_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nreal\n-----END PUBLIC KEY-----\n",
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


@pytest.mark.parametrize("weak", ["", "short-but-not-the-dev-secret"])
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
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_NOTIFIER_INBOUND_SECRET"):
        NotifierSettings()
    monkeypatch.setenv("IMT_NOTIFIER_INBOUND_SECRET", "a-real-inbound-secret")
    assert NotifierSettings().notifier_inbound_secret.get_secret_value() == "a-real-inbound-secret"


@pytest.mark.promise("P-10")
def test_accounts_mails_links_with_tokens_over_https_only_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.accounts.config import AccountsSettings

    for name, value in {
        **REAL_PLATFORM_SECRETS,
        "IMT_ACCOUNTS_ADMIN_PASSWORD": "a-real-admin-password",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="IMT_ACCOUNTS_PUBLIC_URL"):
        AccountsSettings()  # the default, http://localhost:8080
    monkeypatch.setenv("IMT_ACCOUNTS_PUBLIC_URL", "https://privacy.imt.example")
    assert AccountsSettings().accounts_public_url == "https://privacy.imt.example"


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
