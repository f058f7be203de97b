"""The Faust app's Kafka options follow the platform's, TLS included (P-10)."""

import ssl
from pathlib import Path

import faust
import pytest

from shared.bus.faust_app import create_faust_app
from shared.config import PlatformSettings


@pytest.mark.promise("P-10")
def test_a_faust_app_speaks_tls_to_kafka_when_the_platform_does(tmp_path: Path) -> None:
    plain = create_faust_app("plain", PlatformSettings(state_dir=str(tmp_path)))
    assert plain.conf.broker_credentials is None
    settings = PlatformSettings(state_dir=str(tmp_path), kafka_security_protocol="SSL")
    secured = create_faust_app("secured", settings)
    credentials = secured.conf.broker_credentials
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert isinstance(credentials.context, ssl.SSLContext)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED
