"""The test run waits for each API's readiness on the API's own port: the gateway hides it."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploy.local import services


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/accounts/readyz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def api_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_readiness_is_asked_of_the_api_itself(
    api_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "UPSTREAMS", {"accounts": f"127.0.0.1:{api_port}"})
    assert services.api_ready("accounts")


def test_an_api_that_does_not_answer_is_not_ready(
    api_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "UPSTREAMS", {"accounts": "127.0.0.1:9"})  # discard port
    assert not services.api_ready("accounts")
