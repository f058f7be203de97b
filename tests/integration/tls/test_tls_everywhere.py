"""P-10: TLS on every hop, with certificates verified against the platform's CA.

The bus's production code (outbox, relay, idempotent consumer) runs against Kafka's SSL
listener and PostgreSQL with ``verify-full``; mail goes through SMTP STARTTLS and the
gateway answers over HTTPS. Each hop is also shown to refuse a client that does not
trust the CA, so the test cannot pass over plaintext or unverified TLS.
"""

import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from deploy.local.layout import Layout
from shared.bus import reliable_producer
from shared.bus.selftest import EFFECTS_DDL, probe_envelopes, queue_probes
from shared.config import PlatformSettings
from tests.support.bus import running_consumer
from tests.support.probes import (
    effects_exactly_once_in_order,
    probe_keys_and_seqs,
    wait_for_effects,
)


def _ca() -> Path:
    return Layout.from_env().tls / "ca.pem"


def _tls_settings() -> PlatformSettings:
    ports = Layout.from_env().ports
    return PlatformSettings(
        environment="test",
        kafka_bootstrap=f"127.0.0.1:{ports.kafka_tls}",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(_ca()),
        postgres_sslmode="verify-full",
        postgres_ssl_rootcert=str(_ca()),
    )


def _verified(dsn: str) -> str:
    return f"{dsn}?sslmode=verify-full&sslrootcert={_ca()}"


async def test_postgres_connections_are_encrypted_and_verified(scratch_dsn: str) -> None:
    conn = await asyncpg.connect(_verified(scratch_dsn))
    try:
        encrypted = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    assert encrypted is True


@pytest.mark.promise("P-10")
async def test_the_bus_runs_over_tls_on_every_hop(scratch_dsn: str, scratch_topic: str) -> None:
    settings, dsn = _tls_settings(), _verified(scratch_dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute(EFFECTS_DDL)
    try:
        group = f"{scratch_topic}.tls"
        async with running_consumer(settings, dsn, scratch_topic, group, with_relay=True):
            await queue_probes(conn, scratch_topic, probe_envelopes(*probe_keys_and_seqs(200, 5)))
            assert await wait_for_effects(conn, 200, timeout=60) == 200
            assert await effects_exactly_once_in_order(conn) == (200, 200, [])
            tls_sessions = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.datname = current_database() AND s.ssl"
            )
        assert tls_sessions >= 3  # this connection, the relay's, the consumer pool's
    finally:
        await conn.close()


def _cert_verify_failures(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    """The certificate verification failures aiokafka logged while it tried to connect
    (its KafkaConnectionError names the address only, not why)."""
    return [
        arg
        for record in caplog.records
        if record.name.startswith("aiokafka")
        for arg in (record.args if isinstance(record.args, tuple) else ())
        if isinstance(arg, BaseException) and _in_chain(arg, ssl.SSLCertVerificationError)
    ]


def _in_chain(error: BaseException, kind: type[BaseException]) -> bool:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        if isinstance(current, kind):
            return True
        seen.append(current)
        current = current.__cause__ or current.__context__
    return False


async def test_kafka_refuses_a_client_that_does_not_trust_the_ca(
    stack: None, caplog: pytest.LogCaptureFixture
) -> None:
    # The same listener answers a client that trusts the CA: the refusal below is the
    # certificate's, not a broker that is down.
    trusting = reliable_producer(_tls_settings(), request_timeout_ms=10_000)
    await trusting.start()
    await trusting.stop()

    ports = Layout.from_env().ports
    untrusting = PlatformSettings(
        kafka_bootstrap=f"127.0.0.1:{ports.kafka_tls}", kafka_security_protocol="SSL"
    )  # no CA: the system store does not know the local CA
    producer = reliable_producer(untrusting, request_timeout_ms=3000)
    caplog.clear()
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert _cert_verify_failures(caplog), [r.getMessage() for r in caplog.records]


@pytest.mark.promise("P-10")
async def test_mail_goes_over_starttls_and_the_gateway_over_https(stack: None) -> None:
    layout = Layout.from_env()
    trusting = ssl.create_default_context(cafile=str(_ca()))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "noreply@imt.example", "tls-check@example.org", "TLS check",
    )  # fmt: skip
    message.set_content("sent over STARTTLS")
    await aiosmtplib.send(message, hostname="127.0.0.1", port=layout.ports.smtp,
                          start_tls=True, tls_context=trusting)  # fmt: skip
    url = f"https://localhost:{layout.ports.gateway_tls}/healthz"
    async with httpx.AsyncClient(verify=trusting, timeout=30) as client:
        assert (await client.get(url)).status_code == 200
    # Refused for the certificate (both were just reached with the CA trusted).
    async with httpx.AsyncClient(timeout=30) as untrusting:
        with pytest.raises(httpx.ConnectError) as refused:
            await untrusting.get(url)
    assert _in_chain(refused.value, ssl.SSLCertVerificationError), repr(refused.value)
    with pytest.raises(ssl.SSLCertVerificationError):
        await aiosmtplib.send(message, hostname="127.0.0.1", port=layout.ports.smtp,
                              start_tls=True, tls_context=ssl.create_default_context())  # fmt: skip
