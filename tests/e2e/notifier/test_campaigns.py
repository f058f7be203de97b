"""CAN-SPAM on real received mail: labels, address, unsubscribe, suppression, the gate."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.notifier.config import NotifierSettings
from services.notifier.sender import message_id
from shared.config import PlatformSettings
from shared.events.catalogue.accounts import IncidentDeclared, RequestReplied
from shared.events.catalogue.notifier import NoticeCategory, SendNotice
from tests.e2e.notifier.support import (
    CA_FILE,
    notice_progress,
    operator_token,
    parts,
    publish,
    publish_contact,
    unsubscribe_https,
    unsubscribe_mailto,
    user_token,
    wait_contacts,
    wait_notice_settled,
    watch_topic,
)
from tests.support.mailbox import Mailbox, eventually

CONFIG = NotifierSettings(environment="test")
# The recipients of the mail tests send by hand to check the SMTP server itself
# (tests/integration/test_stack.py, tests/integration/tls): the only mail not the
# platform's.
SMTP_PROBES = {"someone@example.org", "bcc@example.org", "tls-check@example.org"}
SESSION_STARTED = datetime.now(UTC)  # collected (imported) as the test session starts
CATEGORIES = {
    "transactional",
    "account_security",
    "service_announcement",
    "policy_change",
    "marketing",
}


def campaign(
    *user_ids: uuid.UUID,
    subject: str = "Spring tune-up week",
    channels: tuple[Literal["email", "inbox"], ...] = ("email",),
) -> SendNotice:
    return SendNotice(
        notice_id=uuid.uuid4(),
        template="marketing_newsletter",
        category="marketing",
        audience="listed",
        user_ids=user_ids,
        channels=channels,
        params={
            "subject": subject,
            "headline": "Tune-up week",
            "message": "Bring your phone in for a check-up.",
        },
    )


def announcement(*user_ids: uuid.UUID, subject: str) -> SendNotice:
    return SendNotice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=user_ids,
        params={"subject": subject, "message": "Our shops open at 9 from Monday."},
    )


async def send(producer: AIOKafkaProducer, command: SendNotice) -> SendNotice:
    await publish(producer, command, subject=str(command.notice_id), source="accounts")
    return command


# Where a link or a resource can hide in a message: the attributes that name a URL, CSS
# url(...), and any URL (absolute, protocol-relative or www.) written out in the text.
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "background", "poster", "cite",
                  "data", "longdesc", "lowsrc", "dynsrc", "xlink:href", "srcset"}  # fmt: skip
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""", re.I)
WRITTEN_URL = re.compile(r"(?<![\w.+-])(?:[a-z][a-z0-9+.-]*:)?//[^\s\"'<>()]+", re.I)
WWW_HOST = re.compile(r"(?<![\w.-])www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.I)


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "srcset":
                self.found += [c.split()[0] for c in value.split(",") if c.strip()]
            elif name in URL_ATTRIBUTES:
                self.found.append(value.strip())
            elif name == "style":
                self.found += CSS_URL.findall(value)


def written_urls(part: str) -> list[str]:
    """The URLs written out in a body part (and in its markup, for the HTML one)."""
    written = [u.rstrip(".,;:!?") for u in WRITTEN_URL.findall(part)]
    return [*written, *(f"//{host}" for host in WWW_HOST.findall(part)), *CSS_URL.findall(part)]


def foreign_host(url: str, ours: set[str]) -> str | None:
    """Where ``url`` leads if that is not one of ``ours`` (None: ours, or this page)."""
    parsed = urlsplit(url)
    scheme = parsed.scheme.casefold()
    if scheme == "mailto":
        host = parsed.path.rpartition("@")[2].casefold()
    elif scheme in ("http", "https") or (not scheme and url.startswith("//")):
        host = (parsed.hostname or "").casefold()
    elif not scheme and url.startswith("#"):
        return None  # an anchor in the message itself
    else:
        # Another scheme, or a relative link (a webmail resolves it against its own host).
        return f"<not an absolute link: {url[:40]!r}>"
    return None if host in ours else host or "<no host>"


def assert_links_stay_on_our_hosts(message: EmailMessage) -> None:
    """No third-party link or resource (P-21): every URL of both parts, linked or only
    written out, is on a host the notifier is configured to link to."""
    text, html = parts(message)
    parser = _Urls()
    parser.feed(html)
    parser.close()
    in_text, in_html = written_urls(text), written_urls(html)
    # The search does see links: the unsubscribe link, written in the text, linked in HTML.
    assert unsubscribe_https(message) in in_text, in_text
    assert unsubscribe_https(message) in parser.found, parser.found
    ours = {h.casefold() for h in CONFIG.notifier_link_hosts}
    found = [*parser.found, *in_text, *in_html]
    foreign = {(host, url) for url in found if (host := foreign_host(url, ours))}
    assert not foreign, sorted(foreign)


def assert_compliant(message: EmailMessage, category: str, campaign: bool = False) -> None:
    """What every received email must carry (P-21, P-28, P-29, P-30, P-33).

    ``category`` is what the email says it is (its X-IMT-Category). ``campaign``: it is
    known to be a campaign otherwise (its notice's template or category, its From): it
    must then say so, and carry the ad label and the postal address all the same.
    """
    assert_links_stay_on_our_hosts(message)
    text, html = parts(message)
    url = unsubscribe_https(message)
    assert url in text[-400:], "unsubscribe link at the bottom of the text part"
    assert url in html[-1500:], "unsubscribe link at the bottom of the HTML part"
    assert str(message["List-Unsubscribe"]).endswith(">")
    assert "<mailto:" in str(message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == CONFIG.notifier_list_id
    assert message["Reply-To"] == CONFIG.notifier_reply_to
    assert message["X-IMT-Category"] == category
    assert category in CATEGORIES
    expected_from = (
        CONFIG.notifier_from_marketing
        if category == "marketing"
        else CONFIG.notifier_from_transactional
    )
    assert message["From"] == expected_from
    if campaign or category == "marketing":
        assert category == "marketing", f"a campaign sent as {category!r}"
        assert CONFIG.notifier_ad_label.upper() in text
        assert CONFIG.notifier_ad_label.upper() in html.upper()
        assert CONFIG.notifier_postal_address in text
        assert CONFIG.notifier_postal_address in html


@pytest.mark.promise("P-29")
@pytest.mark.promise("P-30")
@pytest.mark.promise("P-26")
@pytest.mark.promise("P-25")
async def test_marketing_is_labelled_addressed_and_skips_children_and_opted_out(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    adults = [await publish_contact(producer, marketing_email=True) for _ in range(3)]
    child = await publish_contact(producer, age_band="under_13", marketing_email=True)
    tracking = await publish_contact(producer, marketing_email=True, tracking_opt_out=True)
    no_consent = await publish_contact(producer, marketing_email=False)
    everyone = [*adults, child, tracking, no_consent]
    command = await send(producer, campaign(*(u for u, _ in everyone)))

    progress = await wait_notice_settled(api, command.notice_id, emails=len(everyone))
    assert progress["email"] == {"done/sent": 3, "done/suppressed": 3}
    received = await mailbox.to(*(a for _, a in everyone))
    assert sorted(str(m["To"]) for m in received) == sorted(a for _, a in adults)
    for message in received:
        assert_compliant(message, "marketing")


@pytest.mark.promise("P-26")
@pytest.mark.promise("P-25")
async def test_in_site_marketing_reaches_only_the_consenting_adult(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    """Marketing in the site's inbox follows the same rule as by email: of a listed
    audience, the under-13, the tracking opt-out and the adult who never consented get
    nothing; the consenting adult gets it in both."""
    adult = await publish_contact(producer, marketing_email=True)
    child = await publish_contact(producer, age_band="under_13", marketing_email=True)
    tracking = await publish_contact(producer, marketing_email=True, tracking_opt_out=True)
    no_consent = await publish_contact(producer, marketing_email=False)
    everyone = [adult, child, tracking, no_consent]
    # In-site items are written from the notifier's cards at fan-out: they come first.
    await wait_contacts(settings, [u for u, _ in everyone])
    command = await send(producer, campaign(*(u for u, _ in everyone), channels=("email", "inbox")))

    # Email goes to whoever got the in-site item: one, the adult.
    progress = await wait_notice_settled(api, command.notice_id, emails=1)
    assert progress["email"] == {"done/sent": 1}
    inboxes: dict[uuid.UUID, list[str]] = {}
    for uid, _ in everyone:
        response = await api.get("/api/notifier/inbox", headers=user_token(uid))
        assert response.status_code == 200, response.text
        inboxes[uid] = [item["notice_id"] for item in response.json()["items"]]
    assert inboxes == {
        adult[0]: [str(command.notice_id)],  # it does reach a consenting adult's inbox
        child[0]: [],
        tracking[0]: [],
        no_consent[0]: [],
    }
    received = await mailbox.to(*(a for _, a in everyone))
    assert [str(m["To"]) for m in received] == [adult[1]]
    assert_compliant(received[0], "marketing")


# RFC 8058 section 3.1: senders SHOULD post multipart/form-data and MAY post urlencoded.
ONE_CLICK_BODIES: dict[str, dict[str, Any]] = {
    "multipart": {"files": {"List-Unsubscribe": (None, "One-Click")}},
    "urlencoded": {
        "content": b"List-Unsubscribe=One-Click",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    },
}


@pytest.mark.promise("P-32")
@pytest.mark.promise("P-33")
@pytest.mark.parametrize("encoding", sorted(ONE_CLICK_BODIES))
async def test_one_click_unsubscribe_without_login_then_a_campaign_sends_nothing(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox, encoding: str
) -> None:
    uid, address = await publish_contact(producer, marketing_email=True)
    control, control_address = await publish_contact(producer, marketing_email=True)
    await send(producer, campaign(uid))
    [message] = await mailbox.wait_for([address], 1)
    assert_compliant(message, "marketing")
    url = unsubscribe_https(message)

    tls = ssl.create_default_context(cafile=CA_FILE)
    async with httpx.AsyncClient(verify=tls, timeout=30) as web:  # no token, no cookie
        page = await web.get(url)  # a GET (a scanner's prefetch) changes nothing
        assert page.status_code == 200
        assert "Unsubscribe" in page.text
        again = await send(producer, campaign(uid, subject="Second tune-up week"))
        await wait_notice_settled(api, again.notice_id, emails=1)
        assert len(await mailbox.to(address)) == 2

        response = await web.post(url, **ONE_CLICK_BODIES[encoding])
    assert response.status_code == 200  # no redirect, no login
    assert "set-cookie" not in response.headers
    assert "You will get no more newsletters and offers" in response.text

    after = await send(producer, campaign(uid, control))
    progress = await wait_notice_settled(api, after.notice_id, emails=2)
    assert progress["email"] == {"done/sent": 1, "done/suppressed": 1}
    assert len(await mailbox.to(address)) == 2  # nothing new
    assert len(await mailbox.to(control_address)) == 1
    # Only marketing was stopped: an account email still goes.
    await publish(
        producer,
        RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4()),
        subject=str(uid),
    )
    replies = await mailbox.wait_for([address], 3)
    assert replies[-1]["Subject"] == "You have a reply to your request"


@pytest.mark.promise("P-32")
async def test_a_reply_to_the_unsubscribe_mailto_opts_out_through_the_inbound_webhook(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    uid, address = await publish_contact(producer, marketing_email=True)
    await send(producer, campaign(uid))
    [message] = await mailbox.wait_for([address], 1)
    target, subject = unsubscribe_mailto(message)
    assert subject.startswith("unsubscribe ")

    def reply(subject: str) -> bytes:  # what the provider forwards: the raw message
        return f"From: {address}\r\nTo: {target}\r\nSubject: {subject}\r\n\r\n".encode()

    async def post(body: bytes, secret: str) -> httpx.Response:
        return await api.post(
            "/api/notifier/inbound/mail",
            content=body,
            headers={"Content-Type": "message/rfc822", "X-IMT-Inbound-Secret": secret},
        )

    secret = CONFIG.notifier_inbound_secret.get_secret_value()
    assert (await post(reply(subject), "not-the-secret")).status_code == 401
    forged = await post(reply(subject[:-6] + "AAAAAA"), secret)
    assert (forged.status_code, forged.json()["action"]) == (202, "ignored")
    still = await send(producer, campaign(uid, subject="Still subscribed"))
    await wait_notice_settled(api, still.notice_id, emails=1)
    assert len(await mailbox.to(address)) == 2

    done = await post(reply(f"Re: {subject}"), secret)
    assert (done.status_code, done.json()) == (
        202,
        {"action": "unsubscribed", "scope": "marketing", "reason": None},
    )
    after = await send(producer, campaign(uid, subject="After the reply"))
    progress = await wait_notice_settled(api, after.notice_id, emails=1)
    assert progress["email"] == {"done/suppressed": 1}
    assert len(await mailbox.to(address)) == 2  # nothing new


@pytest.mark.promise("P-34")
@pytest.mark.parametrize("by", ["the user's unsubscribe page", "an operator, as emailed"])
async def test_after_global_suppression_no_email_of_any_category_only_inbox(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
    by: str,
) -> None:
    uid, address = await publish_contact(producer, marketing_email=True)
    await send(producer, announcement(uid, subject="New opening hours"))
    [message] = await mailbox.wait_for([address], 1)
    if by == "an operator, as emailed":  # "email us ... remove you from ALL correspondence"
        reference = f"ZD-{uuid.uuid4().int % 10**8}"
        support = operator_token("support")
        response = await api.post(
            "/api/notifier/ops/suppressions",
            json={"user_id": str(uid), "request_reference": reference},
            headers=support,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "suppressed"}
        trail = await api.get("/api/notifier/ops/suppressions", headers=operator_token("admin"))
        assert trail.status_code == 200, trail.text
        [recorded] = [r for r in trail.json() if r["request_reference"] == reference]
        payload = support["Authorization"].split(".")[1]
        sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
        assert recorded["operator_id"] == sub
    else:
        url = unsubscribe_https(message)
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=CA_FILE), timeout=30
        ) as web:
            response = await web.post(
                url,
                content=b"scope=all",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 200
        assert "You will get no more all email" in response.text

    notices: list[tuple[uuid.UUID, NoticeCategory]] = []
    for command in (
        campaign(uid),
        announcement(uid, subject="More opening hours"),
        SendNotice(
            notice_id=uuid.uuid4(),
            template="request_reply",
            category="transactional",
            audience="listed",
            user_ids=(uid,),
            params={"request_id": "r-9"},
        ),
        SendNotice(
            notice_id=uuid.uuid4(),
            template="policy_change",
            category="policy_change",
            audience="listed",
            user_ids=(uid,),
            params={"policy_version": "x", "summary": "s", "effective_at": "2030-01-01"},
        ),
    ):
        await send(producer, command)
        notices.append((command.notice_id, command.category))
    incident = IncidentDeclared(
        incident_id=uuid.uuid4(),
        title="Stolen laptop",
        message="Reset your password.",
        audience="listed",
        user_ids=(uid,),
    )
    await publish(producer, incident, subject=str(incident.incident_id), source="accounts")
    notices.append((incident.incident_id, "account_security"))

    for notice_id, _category in notices:
        progress = await wait_notice_settled(api, notice_id, emails=1)
        assert progress["email"] == {"done/suppressed": 1}
    assert len(await mailbox.to(address)) == 1  # only the mail before the opt-out
    inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
    assert str(incident.incident_id) in {i["notice_id"] for i in inbox["pinned"]}

    # The account moves to a new address. A click on one address's page opted that
    # address out; a request to us to stop ALL correspondence is the person's, and
    # follows them (the page's case is the control: the new address is mailed).
    held = await _address_index(settings, uid)
    _, moved_to = await publish_contact(producer, user_id=uid, marketing_email=True)
    await eventually(lambda: _address_index(settings, uid), lambda index: index != held)
    moved = announcement(uid, subject="Opening hours after the move")
    await send(producer, moved)
    progress = await wait_notice_settled(api, moved.notice_id, emails=1)
    if by == "an operator, as emailed":
        assert progress["email"] == {"done/suppressed": 1}
        assert await mailbox.to(moved_to) == []
    else:
        assert progress["email"] == {"done/sent": 1}
        assert len(await mailbox.wait_for([moved_to], 1)) == 1


async def _address_index(settings: PlatformSettings, uid: uuid.UUID) -> bytes | None:
    """The blind index of the address the notifier's card for ``uid`` holds."""
    conn = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        index: bytes | None = await conn.fetchval(
            "SELECT email_index FROM contacts WHERE user_id = $1", uid
        )
        return index
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("reference", "why"),
    [(None, "missing"), ("x", "string_too_short"), ("from jo@example.org", "value_error")],
)
async def test_an_operator_suppression_needs_a_reference_free_of_personal_data(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, reference: str | None, why: str
) -> None:
    uid, _ = await publish_contact(producer)
    body: dict[str, Any] = {"user_id": str(uid)}
    if reference is not None:
        body["request_reference"] = reference
    response = await api.post(
        "/api/notifier/ops/suppressions", json=body, headers=operator_token("support")
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert why in response.text
    assert "jo@example.org" not in response.text


@pytest.mark.promise("P-28")
@pytest.mark.promise("P-31")
async def test_a_fake_re_subject_is_refused_at_the_gate_and_dead_lettered(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    uid, address = await publish_contact(producer, marketing_email=True)
    async with watch_topic(settings, "notifier.deliveries") as deliveries:
        fake = await send(producer, announcement(uid, subject="RE: your repair"))
        prize = await send(producer, campaign(uid, subject="You have won a free phone"))
        fine = await send(producer, announcement(uid, subject="New opening hours"))
        outcomes = await deliveries.wait_for(
            lambda e: (
                e.data["notice_id"] in {str(fake.notice_id), str(fine.notice_id)}
                and e.data["channel"] == "email"
            ),
            count=2,
        )
    by_notice = {e.data["notice_id"]: e.data for e in outcomes}
    assert by_notice[str(fake.notice_id)]["outcome"] == "refused"
    assert "fake reply or forward prefix" in by_notice[str(fake.notice_id)]["reason"]
    assert by_notice[str(fine.notice_id)]["outcome"] == "sent"
    await wait_notice_settled(api, prize.notice_id, emails=1)

    received = await mailbox.wait_for([address], 1)
    await asyncio.sleep(1)
    assert [m["Subject"] for m in await mailbox.to(address)] == ["New opening hours"]
    assert_compliant(received[0], "service_announcement")
    dead = (
        await api.get("/api/notifier/ops/dead-letters", headers=operator_token("support"))
    ).json()
    reasons = {d["notice_id"]: d["reason"] for d in dead}
    assert not [d for d in dead if "user_id" in d]  # what failed, not for whom
    assert "misleading subject: fake reply or forward prefix" in reasons[str(fake.notice_id)]
    assert "misleading subject: prize or winnings claim" in reasons[str(prize.notice_id)]


@pytest.mark.promise("P-27")
async def test_commands_outside_the_notifier_categories_send_nothing(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    uid, address = await publish_contact(producer, marketing_email=True)
    # A transactional template used for marketing, and an unknown template: refused
    # before anything is planned (dead-lettered on the command topic's DLQ).
    wrong = SendNotice(
        notice_id=uuid.uuid4(),
        template="request_reply",
        category="marketing",
        audience="listed",
        user_ids=(uid,),
        params={"request_id": "r"},
    )
    unknown = SendNotice(
        notice_id=uuid.uuid4(),
        template="crypto_offer",
        category="marketing",
        audience="listed",
        user_ids=(uid,),
    )
    async with watch_topic(settings, "notifier.commands.dlq") as dlq:
        await send(producer, wrong)
        await send(producer, unknown)
        letters = await dlq.wait_for(
            lambda e: e.data.get("notice_id") in {str(wrong.notice_id), str(unknown.notice_id)},
            count=2,
        )
    assert len(letters) == 2
    control = await send(producer, announcement(uid, subject="Opening hours"))
    await wait_notice_settled(api, control.notice_id, emails=1)
    messages = await mailbox.to(address)
    assert [m["Subject"] for m in messages] == ["Opening hours"]
    for message in messages:
        assert_compliant(message, "service_announcement")
    assert await notice_progress(api, wrong.notice_id) == {}


async def campaign_message_ids(settings: PlatformSettings) -> set[str]:
    """The Message-ID of every email the notifier planned for a campaign this session:
    a notice of the marketing template or category (the notifier's own record, not what
    the email says of itself)."""
    conn = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        rows = await conn.fetch(
            "SELECT d.notice_id, d.user_id FROM deliveries d JOIN notices n USING (notice_id)"
            " WHERE d.channel = 'email' AND n.created_at >= $1"
            " AND (n.template = 'marketing_newsletter' OR n.category = 'marketing')",
            SESSION_STARTED,
        )
    finally:
        await conn.close()
    return {message_id(r) for r in rows}


@pytest.mark.promise("P-21")
@pytest.mark.promise("P-27")
@pytest.mark.promise("P-30")
@pytest.mark.promise("P-33")
@pytest.mark.sweep  # last: every email of the session, other suites' included
async def test_every_email_the_platform_sent_so_far_is_categorised_and_compliant(
    mailbox: Mailbox,
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    settings: PlatformSettings,
) -> None:
    # At least one of each kind first, so the sweep below never checks an empty box.
    uid, _ = await publish_contact(producer, marketing_email=True)
    sent_campaign = await send(producer, campaign(uid))
    await wait_notice_settled(api, sent_campaign.notice_id, emails=1)
    sent = await send(producer, announcement(uid, subject="Holiday hours"))
    await wait_notice_settled(api, sent.notice_id, emails=1)
    reply = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    await publish(producer, reply, subject=str(uid))
    await wait_notice_settled(api, reply.reply_id, emails=1)
    ours = {CONFIG.notifier_from_transactional, CONFIG.notifier_from_marketing}
    # Campaigns are known by the notifier's record of their notices, not only by what
    # their emails say: one labelled otherwise is held to the marketing rules too.
    campaigns = await campaign_message_ids(settings)
    assert message_id({"notice_id": sent_campaign.notice_id, "user_id": uid}) in campaigns
    checked: dict[str, int] = {}
    known_campaigns = 0
    for meta in await mailbox.listing():
        if datetime.fromisoformat(meta["received_at"]) < SESSION_STARTED:
            continue  # the sink keeps earlier runs' mail; this run answers for its own
        if meta["rcpt_tos"] and set(meta["rcpt_tos"]) <= SMTP_PROBES:
            continue  # a stack test's own hand-sent probe of the SMTP server
        message = await mailbox.message(meta["id"])
        # Anything else was sent by the platform: only by the notifier (its Message-ID),
        # from our addresses, in a category. Mail sent around it would fail here.
        assert str(message["From"]) in ours, meta
        assert str(message["Message-ID"]).endswith("@notifier.imt>"), meta
        category = str(message["X-IMT-Category"])
        assert category in CATEGORIES, meta
        is_campaign = (
            str(message["Message-ID"]) in campaigns
            or str(message["From"]) == CONFIG.notifier_from_marketing
        )
        assert_compliant(message, category, campaign=is_campaign)
        checked[category] = checked.get(category, 0) + 1
        known_campaigns += str(message["Message-ID"]) in campaigns
    assert {"marketing", "service_announcement", "transactional"} <= set(checked), checked
    assert known_campaigns >= 1  # the notifier's record did name received campaigns
