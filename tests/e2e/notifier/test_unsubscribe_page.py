"""A broken unsubscribe link opened in a browser: a page saying so, with the other way
to stop the emails, not a JSON problem. A mail client's one-click POST keeps its JSON
problems (RFC 8058: machine to machine)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.notifier.support import (
    emailed_announcement,
    unsubscribe_https,
    unsubscribe_mailto,
)
from tests.support.mailbox import Mailbox

PROBLEM = "application/problem+json"
ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


@pytest.mark.promise("P-33")
async def test_a_broken_unsubscribe_link_opens_a_page_with_the_other_way_out(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    message = await emailed_announcement(producer, mailbox)
    path = urlsplit(unsubscribe_https(message)).path
    token = path.rsplit("/", 1)[1]
    support, _ = unsubscribe_mailto(message)
    base = path[: -len(token)]
    broken = {
        "cut short": (base + token[:12], 422),  # under the token's shortest form
        "cut mid-way": (base + token[:-6], 404),  # well formed, not one of ours
        "a mail client's trailing dot": (path + ".", 422),
    }

    whole = await api.get(path)
    assert whole.status_code == 200  # the control: the link itself is the choices page
    assert "Stop all email from iMT" in whole.text
    for what, (url, status) in broken.items():
        page = await api.get(url, headers={"Accept": "text/html"})
        assert page.status_code == status, what
        assert page.headers["content-type"].startswith("text/html"), (what, page.text)
        assert "This unsubscribe link is not valid" in page.text, what
        assert f"href='mailto:{support}'" in page.text, what  # the policy's "email us"
        assert "default-src 'none'" in page.headers["content-security-policy"], what
        assert page.headers["cache-control"] == "no-store", what
        assert "<form" not in page.text, what  # nothing to unsubscribe from here


async def test_a_mail_clients_one_click_post_still_gets_json_problems(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    message = await emailed_announcement(producer, mailbox)
    path = urlsplit(unsubscribe_https(message)).path
    token = path.rsplit("/", 1)[1]
    base = path[: -len(token)]

    for url, body, status in [
        (base + token[:12], ONE_CLICK, 422),
        (base + token[:-6], ONE_CLICK, 404),
        (path, {"content": b"", "headers": ONE_CLICK["headers"]}, 400),  # no one-click field
    ]:
        response = await api.post(url, **body)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == status
