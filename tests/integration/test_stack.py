"""The local stack really serves: SMTP sink, gateway, Kafka topics (the ``stack``
fixture starts it, so these also run alone)."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage

import httpx
import pytest

from deploy.local import kafka
from deploy.local.layout import HOST, Layout
from deploy.local.tls import tls_files
from shared.events.topics import all_topics

pytestmark = [pytest.mark.infra, pytest.mark.usefixtures("stack")]

LAYOUT = Layout.from_env()
SINK = f"http://{HOST}:{LAYOUT.ports.smtp_web}"


def _message(subject: str, to: str = "someone@example.org") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "notifier@imt.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Hello from the stack tests.")
    return message


def _set_mode(mode: str) -> None:
    response = httpx.post(f"{SINK}/api/mode", json={"mode": mode}, timeout=5)
    response.raise_for_status()
    assert response.json() == {"mode": mode}


@pytest.fixture
def tempfail() -> Iterator[None]:
    _set_mode("tempfail")
    try:
        yield
    finally:
        _set_mode("accept")


def test_smtp_sink_keeps_what_it_receives() -> None:
    subject = f"stack test {uuid.uuid4()}"
    with smtplib.SMTP(HOST, LAYOUT.ports.smtp, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=tls_files(LAYOUT.tls).ca))
        client.send_message(_message(subject), to_addrs=["someone@example.org", "bcc@example.org"])

    listed = httpx.get(f"{SINK}/api/messages", timeout=5).json()
    mine = [m for m in listed if m["subject"] == subject]
    assert len(mine) == 1
    assert mine[0]["mail_from"] == "notifier@imt.example"
    assert mine[0]["rcpt_tos"] == ["someone@example.org", "bcc@example.org"]

    raw = httpx.get(f"{SINK}/api/messages/{mine[0]['id']}", timeout=5)
    assert raw.headers["content-type"] == "message/rfc822"
    assert subject.encode() in raw.content
    assert subject in httpx.get(f"{SINK}/", timeout=5).text


@pytest.mark.usefixtures("tempfail")
def test_smtp_sink_simulates_an_outage() -> None:
    with (
        smtplib.SMTP(HOST, LAYOUT.ports.smtp, timeout=10) as client,
        pytest.raises((smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused)) as refused,
    ):
        client.send_message(_message("never stored"))
    error = refused.value
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code = next(iter(error.recipients.values()))[0]
    else:
        assert isinstance(error, smtplib.SMTPDataError)
        code = error.smtp_code
    assert 400 <= code < 500
    assert httpx.get(f"{SINK}/api/mode", timeout=5).json() == {"mode": "tempfail"}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_gateway_health(scheme: str) -> None:
    port = LAYOUT.ports.gateway if scheme == "http" else LAYOUT.ports.gateway_tls
    verify = ssl.create_default_context(cafile=tls_files(LAYOUT.tls).ca)
    response = httpx.get(f"{scheme}://localhost:{port}/healthz", verify=verify, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    # The version of the configuration in force, which gateway.up waits for after a reload.
    assert re.fullmatch(r"[0-9a-f]{12}", body["config"])
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("suites", "accepted"),
    [
        # The local certificate's key is ECDSA: the suites it can serve.
        ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
        # CBC with SHA-1, which nginx's default list offers.
        ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA", False),
    ],
)
def test_gateway_speaks_tls_1_2_with_forward_secret_aead_suites_only(
    suites: str, accepted: bool
) -> None:
    context = ssl.create_default_context(cafile=tls_files(LAYOUT.tls).ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(suites)
    with socket.create_connection((HOST, LAYOUT.ports.gateway_tls), timeout=5) as raw:
        if not accepted:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="localhost").close()
            return
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            cipher = tls.cipher()
            assert cipher is not None
            assert cipher[0] in suites.split(":")


def test_gateway_unknown_api_path_is_a_404_problem() -> None:
    response = httpx.get(f"http://{HOST}:{LAYOUT.ports.gateway}/api/nope/x", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_every_registry_topic_exists_as_declared() -> None:
    on_broker = {t.name: t for t in asyncio.run(kafka.describe_topics(LAYOUT))}
    for topic in all_topics():
        assert topic.name in on_broker, topic.name
        assert on_broker[topic.name].partitions == topic.partitions, topic.name
        if topic.compacted:
            assert on_broker[topic.name].config.get("cleanup.policy") == "compact", topic.name
