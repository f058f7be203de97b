"""Schemathesis over the notifier, deletion and analytics OpenAPI documents, through the
gateway: no input makes a 5xx, and every 4xx is a problem body (tests/support/openapi_fuzz.py;
accounts has its own file, tests/e2e/accounts/test_openapi_fuzz.py).

Each document is the whole one (operators' endpoints too), served to operators' networks
only. Operators' endpoints are called by a real operator who is a privacy officer (the
notifier's and deletion's) and an analyst (analytics' trends and dropped visits); the
others by a real, verified and logged-in user.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import strategies as st

from services.notifier.config import NotifierSettings
from services.notifier.domain import unsubscribe
from services.notifier.routes.inbound import INBOUND_HEADER
from shared.config import PlatformSettings
from tests.e2e.accounts.support import active_user, admin, new_operator, start_tail
from tests.e2e.deletion.support import needs_every_service
from tests.support.openapi_fuzz import (
    TEXT,
    RawBody,
    Route,
    fuzz_all,
    fuzz_raw_all,
    json_documents,
    json_values,
    raw_bodies,
)

SERVICES = ("notifier", "deletion", "analytics")
# Operators' endpoints outside /operator and /ops (the gateway's ANALYST_PATHS).
ANALYSTS = ("/api/analytics/trends", "/api/analytics/trends/partner", "/api/analytics/suppressed")

EXCLUDED: set[Route] = {
    # With no notice_id nor delivery_ids (a body schemathesis sends: `{}`), it puts every
    # dead letter of the shared stack back in the queue: emails other tests let die would
    # go out after all, to mailboxes those tests count.
    ("POST", "/api/notifier/ops/dead-letters/replay"),
}
# The unsubscribe link's page answers a person's browser: a link cut short or mangled
# gets an HTML page (its 4xx status kept), not a problem body, by design
# (services/notifier/routes/unsubscribe.py). The POST (a mail client's one-click) does.
PAGES: set[Route] = {("GET", "/api/notifier/unsubscribe/{token}")}


@pytest.fixture(scope="module")
async def tokens(platform: str, settings: PlatformSettings) -> dict[str, dict[str, str]]:
    needs_every_service()
    tail = await start_tail(settings)
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            user = await active_user(client, tail)
            operator = await new_operator(client, await admin(client), "privacy_officer", "analyst")
    finally:
        assert tail.task is not None
        tail.task.cancel()
        await tail.consumer.stop()
    return {"user": user.headers, "operator": operator.headers}


def _who(route: Route) -> str:
    _, path = route
    service = path.split("/")[2]
    operators = (f"/api/{service}/operator/", f"/api/{service}/ops/")
    return "operator" if path.startswith(operators) or path in ANALYSTS else "user"


@pytest.mark.parametrize("service", SERVICES)
def test_no_input_makes_a_server_error_nor_an_error_without_a_problem_body(
    service: str, platform: str, tokens: dict[str, dict[str, str]]
) -> None:
    tested = fuzz_all(
        f"{platform}/api/{service}/operator/openapi.json",
        platform,
        lambda route: tokens[_who(route)],
        excluded=EXCLUDED.__contains__,
        pages=PAGES,
    )
    # Every operation but the excluded: a document that lost routes fails here.
    assert len(tested) >= {"notifier": 17, "deletion": 9, "analytics": 7}[service], tested


# -- bodies the documents leave open ------------------------------------------------------

NOTIFIER = NotifierSettings(environment="test")
# What pages send beacons as (navigator.sendBeacon: text/plain), most of the time.
JSON = ("application/json", "text/plain", "text/plain;charset=UTF-8")
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"}
# Beacons name a site of this test's own (under *.example, which the collector counts in
# test): the visits they add are counted under no site another test reads. No digits: a
# site with seven in a row is refused as a phone number's.
SITE = "fuzz-" + uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop")) + ".example"
ANY = json_values()


def _beacon(junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Valid beacons (but for the text of their views), or with ``junk`` beacons whose
    members may hold any JSON value."""

    def member(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(valid, ANY) if junk else valid

    view = st.one_of(
        st.fixed_dictionaries({"page": member(st.one_of(TEXT.map("/".__add__), TEXT))}),
        st.fixed_dictionaries({"screen": member(TEXT)}),
    )
    if junk:
        view = st.one_of(view, st.fixed_dictionaries({}, optional={"page": ANY, "screen": ANY}))
    fields = st.fixed_dictionaries(
        {
            "beacon_id": member(st.uuids(version=4).map(str)),
            "site": member(st.just(SITE)),
        },
        optional={
            "referrer": member(st.one_of(TEXT.map("https://".__add__), TEXT)),
            "device_class": member(st.sampled_from(["desktop", "mobile", "tablet", "other"])),
            "load_time_ms": member(st.integers(min_value=0, max_value=600_000)),
        },
    )
    return st.builds(lambda a, b: {**a, **b}, fields, view)


BEACON = st.one_of(_beacon(junk=False), _beacon(junk=True), ANY)
BATCH = st.one_of(
    st.lists(_beacon(junk=False), min_size=1, max_size=30), st.lists(BEACON, max_size=30), ANY
)


def _mail(subject: str, body: bytes) -> bytes:
    return (
        b"From: someone@example.com\r\nSubject: "
        + subject.encode("utf-8", "surrogatepass")
        + b"\r\n\r\n"
        + body
    )


_TOKENISH = st.from_regex(r"[A-Za-z0-9_-]{20,80}", fullmatch=True)
MAIL = st.builds(
    _mail,
    st.one_of(
        TEXT,
        st.builds("unsubscribe {}".format, _TOKENISH),
        st.builds("Re: unsubscribe all {}".format, _TOKENISH),
        st.builds("=?utf-8?q?{}?=".format, TEXT),
        st.builds("=?{}?b?{}?=".format, TEXT, TEXT),
    ),
    st.binary(max_size=100),
)


def _utf8(text: str) -> bytes:
    """As UTF-8, lone surrogates too (bytes no decoder takes)."""
    return text.encode("utf-8", "surrogatepass")


def _form(fields: list[tuple[str, str]], multipart: bool) -> bytes:
    if not multipart:
        return "&".join(f"{quote(_utf8(n))}={quote(_utf8(v))}" for n, v in fields).encode()
    parts = b"".join(
        b'--fuzz\r\nContent-Disposition: form-data; name="'
        + _utf8(n)
        + b'"\r\n\r\n'
        + _utf8(v)
        + b"\r\n"
        for n, v in fields
    )
    return parts + b"--fuzz--\r\n"


FORM_FIELDS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["List-Unsubscribe", "scope"]), TEXT),
        st.one_of(st.sampled_from(["One-Click", "One-Click\r\n", "all", ""]), TEXT),
    ),
    max_size=12,
)
FORMS = st.builds(_form, FORM_FIELDS, st.booleans())


def _unsubscribe_link() -> str:
    """A link of ours for an address nobody has (a random blind index): a one-click
    taken suppresses that address alone, which no test mails."""
    secret = NOTIFIER.notifier_unsubscribe_secret.get_secret_value().encode()
    token = unsubscribe.issue(secret, os.urandom(unsubscribe.INDEX_BYTES), "marketing")
    return f"/api/notifier/unsubscribe/{token}"


# The JSON bodies operators send, as bytes schemathesis never writes (not UTF-8, nested
# past the parser's depth, any content type). The suppression names a user nobody has
# and the hold a request nobody made (404): they change nothing.
SUPPRESSION = st.fixed_dictionaries(
    {"user_id": st.one_of(st.uuids().map(str), ANY), "request_reference": st.one_of(TEXT, ANY)}
)
HOLD = st.fixed_dictionaries({"reason": st.one_of(TEXT, ANY)})


def test_no_body_makes_a_server_error_nor_an_error_without_a_problem_body(
    platform: str, tokens: dict[str, dict[str, str]]
) -> None:
    """The routes reading a body their document leaves open: the beacons (JSON sent as
    text/plain too), the mail provider's inbound webhook (a raw email) and the
    unsubscribe link's one-click (a form); and the operators' JSON bodies as raw bytes."""
    beacons: st.SearchStrategy[RawBody] = raw_bodies(json_documents(BEACON), JSON)
    batches = raw_bodies(json_documents(BATCH), JSON)
    inbound = {INBOUND_HEADER: NOTIFIER.notifier_inbound_secret.get_secret_value()}
    operator = tokens["operator"]
    hold = f"{platform}/api/deletion/operator/requests/{uuid.uuid4()}/hold"
    fuzz_raw_all(
        [
            (f"{platform}/api/analytics/beacon", "POST", BROWSER, beacons),
            (f"{platform}/api/analytics/beacons", "POST", BROWSER, batches),
            (f"{platform}/api/analytics/beacon", "POST", {**BROWSER, **tokens["user"]}, beacons),
            (f"{platform}/api/notifier/inbound/mail", "POST", inbound, raw_bodies(MAIL)),
            (f"{platform}{_unsubscribe_link()}", "POST", BROWSER, raw_bodies(FORMS)),
            (
                f"{platform}/api/notifier/ops/suppressions",
                "POST",
                operator,
                raw_bodies(json_documents(SUPPRESSION), JSON[:1]),
            ),
            (hold, "POST", operator, raw_bodies(json_documents(HOLD), JSON[:1])),
        ]
    )
