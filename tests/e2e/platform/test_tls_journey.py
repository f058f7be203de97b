"""P-10 end to end: the services themselves keep TLS on every hop.

Every process of every service (APIs, relays, workers, the Faust aggregator, the
analytics eraser) is restarted with the settings a deployment sets: Kafka through its
SSL listener, PostgreSQL with ``verify-full``, SMTP with STARTTLS, each verified
against the platform's CA. A user then signs up over the gateway's HTTPS and verifies
the address from the email that arrived, and a page view sent to the collector is
counted by the aggregator. Every TCP connection each process holds is checked: none
reaches Kafka's plaintext listener, every PostgreSQL session is encrypted, and the SMTP
sink saw the email over TLS.

Not covered, by design: the gateway-to-API hop, which stays on loopback (TLS ends at
the gateway).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.local import services
from deploy.local.layout import Layout
from deploy.local.postgres import socket_dir
from tests.e2e.analytics.support import beacon, browser, unique_site, wait_for_visits
from tests.e2e.platform.journeys import API, needs, signed_up_and_verified
from tests.support.mailbox import Mailbox

PROCESSES = tuple(services.procfile_entries())
# An API reads Kafka only when scraped (its gauges), or sends to it only when called;
# every other process holds its consumer's or producer's connection all along.
LAZY_KAFKA = {"accounts-api", "notifier-api", "deletion-api", "analytics-api"}
ESTABLISHED = "01"


def _tls_settings(layout: Layout) -> dict[str, str]:
    ca = str(layout.tls / "ca.pem")
    return {
        "IMT_KAFKA_BOOTSTRAP": f"127.0.0.1:{layout.ports.kafka_tls}",
        "IMT_KAFKA_SECURITY_PROTOCOL": "SSL",
        "IMT_KAFKA_SSL_CAFILE": ca,
        "IMT_POSTGRES_SSLMODE": "verify-full",
        "IMT_POSTGRES_SSL_ROOTCERT": ca,
        "IMT_NOTIFIER_SMTP_SECURITY": "starttls",
        "IMT_NOTIFIER_SMTP_CAFILE": ca,
    }


APIS = ["accounts", "notifier", "deletion", "analytics"]


@pytest.fixture
def over_tls(platform: str) -> Iterator[Layout]:
    """Every service process restarted with TLS settings, and back as they were after."""
    needs(*APIS)
    layout = Layout.from_env()
    if services.make_run_active(layout):
        pytest.skip("make run owns the processes")  # stopping one, honcho ends them all
    if any(services.running(layout, name) is None for name in PROCESSES):
        pytest.skip("the services are not run by this test session")
    services.stop_processes(PROCESSES, layout)
    try:
        services.ensure_processes(PROCESSES, layout, env=_tls_settings(layout))
        services.wait_for_apis(APIS, layout)
        yield layout
    finally:
        services.stop_processes(PROCESSES, layout)
        services.ensure_processes(PROCESSES, layout)
        services.wait_for_apis(APIS, layout)


def _environ(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")


def _connections(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of the process's established IPv4 TCP connections."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode in inodes and state == ESTABLISHED:
            found.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16)))
    return found


async def _unencrypted_sessions(layout: Layout, client_ports: list[int]) -> int:
    """How many of these PostgreSQL client ports have a session without TLS."""
    conn = await asyncpg.connect(
        host=str(socket_dir(layout)), port=layout.ports.postgres, user="postgres",
        database="postgres",
    )  # fmt: skip
    try:
        rows = await conn.fetch(
            "SELECT a.client_port, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
            " WHERE a.client_port = ANY($1::int[])",
            client_ports,
        )
    finally:
        await conn.close()
    assert {r["client_port"] for r in rows} == set(client_ports)  # every one is a session
    return sum(1 for r in rows if not r["ssl"])


@pytest.mark.promise("P-10")
@pytest.mark.timeout(900)  # every process stopped and started twice, on 2 cores
async def test_a_sign_up_keeps_tls_on_every_hop_of_the_services(over_tls: Layout) -> None:
    layout = over_tls
    ports = layout.ports
    address = f"tls-{uuid.uuid4().hex[:12]}@example.org"
    trusting = ssl.create_default_context(cafile=str(layout.tls / "ca.pem"))
    gateway = f"https://localhost:{ports.gateway_tls}"
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=gateway, verify=trusting, timeout=30) as client:
            headers = await signed_up_and_verified(
                client, mailbox, "Tls User", address, f"pw-{uuid.uuid4().hex}"
            )
            profile = await client.get(f"{API}/me", headers=headers)
            assert profile.json()["email_verified"] is True
            site = unique_site()
            sent = await client.post(
                "/api/analytics/beacon", json=beacon(site, "/tls"), headers=browser(1)
            )
            assert sent.status_code == 204, sent.text
            assert await wait_for_visits(client, site, 1) == 1  # the Faust worker counted it
        listing = await mailbox.listing()
    finally:
        await mailbox.close()
    [mail] = [m for m in listing if address in m["rcpt_tos"]]
    assert mail["tls"] is True  # the notifier sent it after STARTTLS

    await asyncio.sleep(1.0)  # let the relay and the worker settle their connections
    for name in PROCESSES:
        pid = services.running(layout, name)
        assert pid is not None, name
        environ, held = _environ(pid), _connections(pid)
        assert "IMT_KAFKA_SECURITY_PROTOCOL=SSL" in environ, name
        remote_ports = {port for _, port in held}
        assert ports.kafka not in remote_ports, (name, held)  # never the plaintext listener
        if name not in LAZY_KAFKA:
            assert ports.kafka_tls in remote_ports, (name, held)
        to_postgres = [local for local, port in held if port == ports.postgres]
        assert to_postgres, (name, held)
        assert await _unencrypted_sessions(layout, to_postgres) == 0, name
