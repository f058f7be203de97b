"""The gateway's logs keep neither a client's address nor an unsubscribe token, also
when an API is down: the real nginx, its real configuration, upstreams that refuse."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import gateway, procs
from deploy.local.tls import ensure_certificates

TOKEN = "tok3n-Zq8Xv2LmNp4Rs7Tu"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, held together while drawn: drawn one at a time, the
    same one came back twice (nginx then listened with and without TLS on one port)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@pytest.fixture
def down_gateway(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A gateway whose every upstream refuses connections; (port, error log, access log)."""
    tls = ensure_certificates(tmp_path / "tls")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "web").mkdir()
    nowhere, http_port, https_port = _free_ports(3)
    refused = f"127.0.0.1:{nowhere}"  # nothing listens there
    place = gateway.Placement(
        listen_host="127.0.0.1",
        http_port=http_port,
        https_port=https_port,
        upstreams={name: refused for name in gateway.upstreams()},
        rate_per_second=1000,
        web_root=str(tmp_path / "web"),
        conf_dir=str(tmp_path),
        pidfile=str(tmp_path / "nginx.pid"),
        error_log=str(tmp_path / "error.log"),
        access_log=str(tmp_path / "access.log"),
        temp_dir=str(tmp_path / "tmp"),
        cert=str(tls.cert),
        key=str(tls.key),
        user="user root root;\n" if procs.is_root() else "",
    )
    files, _ = gateway.render_files(place, origin="tests/integration/test_gateway_error_log.py")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    output = tmp_path / "nginx.out"
    with output.open("wb") as out:
        nginx = subprocess.Popen(
            [gateway.ensure_binary(), "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"),
             "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while _status(place.http_port, "/healthz") != 200:
            assert nginx.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        yield place.http_port, tmp_path / "error.log", tmp_path / "access.log"
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)


def _status(port: int, path: str, method: str = "GET") -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers={"X-Forwarded-For": "203.0.113.77"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def test_an_api_down_leaves_no_address_nor_token_in_the_logs(
    down_gateway: tuple[int, Path, Path],
) -> None:
    port, error_log, access_log = down_gateway
    paths = [f"/api/notifier/unsubscribe/{TOKEN}", "/api/accounts/me", "/api/analytics/beacon"]
    for path in paths:
        assert _status(port, path, "POST") == 503  # the problem body of an API down
    time.sleep(0.5)  # nginx writes its logs as it goes; let the last lines land
    errors = error_log.read_text() if error_log.exists() else ""
    assert TOKEN not in errors
    assert "client:" not in errors  # how nginx names the address in an error line
    logged = access_log.read_text()
    assert TOKEN not in logged
    assert logged.count('"status":503') == len(paths)  # each failure is still on record
    assert "/api/notifier/unsubscribe/{token}" in logged


@pytest.mark.parametrize("service", sorted(gateway.UPSTREAMS))
def test_a_service_down_is_a_503_problem(
    down_gateway: tuple[int, Path, Path], service: str
) -> None:
    """Every service's API, its upstream refusing connections: a JSON problem, not
    nginx's HTML error page (nor a 502)."""
    port, _, _ = down_gateway
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/api/{service}/anything?q=1")
        response = conn.getresponse()
        status, content_type, content = (
            response.status, response.getheader("content-type"), response.read()
        )  # fmt: skip
    finally:
        conn.close()
    assert status == 503
    assert content_type == "application/problem+json"
    body = json.loads(content)
    assert body["status"] == 503
    assert {"type", "title", "detail"} <= body.keys()


def _raw_get(port: int, target: bytes) -> bytes:
    """A request line sent byte for byte (http.client will not send a raw 0xff)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(64)


def test_every_access_log_line_is_json_whatever_bytes_a_path_decodes_to(
    down_gateway: tuple[int, Path, Path],
) -> None:
    """escape=json leaves bytes above 0x7f as they are: a path of %FF once wrote a byte
    no UTF-8 reader takes, and every later read of the log failed."""
    port, _, access_log = down_gateway
    for target in [b"/api/accounts/%FF", b"/assets/\xff\xfe", b"/api/x/%C3%A9t%C3%A9", b"/%C3"]:
        assert _raw_get(port, target).startswith(b"HTTP/1.1 ")
    time.sleep(0.5)
    lines = [json.loads(line) for line in access_log.read_bytes().decode().splitlines()]
    paths = [line["path"] for line in lines if line["path"] != "/healthz"]
    assert paths == [
        gateway.UNREADABLE_PATH, gateway.UNREADABLE_PATH, "/api/x/été", gateway.UNREADABLE_PATH,
    ]  # fmt: skip
