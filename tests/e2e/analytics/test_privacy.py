"""Personal data in beacons, one at a time or in a batch, reaches no topic, no table and
no API (P-04, P-09). A beacon whose site holds it is refused, and leaves no trace either."""

import re
import string
import unicodedata
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples_of
from hypothesis import strategies as st

from shared.config import PlatformSettings
from shared.events import dlq_of
from shared.events.topics import ANALYTICS_VISITS
from tests.e2e.analytics.support import (
    BEACON,
    BEACONS,
    analyst,
    beacon,
    browser,
    dump_tables,
    topic_records,
    trend_records,
    unique_site,
    wait_for_visits,
)
from tests.unit.pii.strategies import (
    BEACON_CARD_SEPARATORS,
    card_numbers,
    emails,
    phones,
)

EXAMPLES = 25
# Referrer hosts naming a machine or a number: an IP address, one written with dashes in
# a host name (cloud and wildcard-DNS names), and a phone number's digits as a label.
REFERRER_HOSTS = (
    "{ipv4}",
    "ec2-{dashed}.compute-1.amazonaws.com",
    "{dashed}.sslip.io",
    "{phone}.example.org",
)


def _referrer_host(p: dict[str, str], form: str) -> str:
    phone = "".join(ch for ch in p["phone"] if ch in string.digits)
    return form.format(ipv4=p["ipv4"], dashed=p["ipv4"].replace(".", "-"), phone=phone)


@st.composite
def planted(draw: st.DrawFn) -> dict[str, str]:
    """One value of each kind, as a person would write it."""
    where = draw(st.sampled_from(["path", "query", "fragment", "screen", "referrer", "site"]))
    digits, written = draw(card_numbers(BEACON_CARD_SEPARATORS))
    ipv4 = ".".join(str(draw(st.integers(11, 254))) for _ in range(4))
    ipv6 = str(draw(st.ip_addresses(v=6).filter(lambda ip: len(str(ip)) >= 12)))
    p = {
        "email": draw(emails()),
        "phone": draw(phones()),
        "card": written,
        "card_digits": digits,
        "ipv4": ipv4,
        "ipv6": ipv6,
        "where": where,
        "noise": draw(st.text(string.ascii_lowercase, min_size=1, max_size=8)),
    }
    return {**p, "referrer_host": _referrer_host(p, draw(st.sampled_from(REFERRER_HOSTS)))}


def _refused_site(site: str, p: dict[str, str]) -> str:
    """A host name under ``site`` holding the card, grouped by four as a host name can."""
    digits = p["card_digits"]
    return f"{p['noise']}-{'-'.join(digits[i : i + 4] for i in range(0, len(digits), 4))}.{site}"


def _beacon(site: str, p: dict[str, str]) -> dict[str, object]:
    secrets = f"{p['email']}/{p['card']}/{p['phone']}/{p['ipv4']}/{p['ipv6']}"
    fields: dict[str, Any] = {"email": p["email"], "card": p["card"], "note": secrets}
    if p["where"] == "site":
        return beacon(_refused_site(site, p), f"/{p['noise']}/{secrets}", **fields)
    if p["where"] == "path":
        return beacon(site, f"/{p['noise']}/{secrets}", **fields)
    if p["where"] == "query":
        q = f"utm_term={p['email']}&utm_source={p['card']}&ref={p['phone']}&ip={p['ipv4']}"
        return beacon(site, f"https://{site}/{p['noise']}?{q}", **fields)
    if p["where"] == "fragment":
        return beacon(site, f"/{p['noise']}#{secrets}", **fields)
    if p["where"] == "screen":
        return {**beacon(site, **fields), "page": None, "screen": secrets[:200]}
    return beacon(site, "/r", referrer=f"https://{p['referrer_host']}/{secrets}", **fields)


# JSON may escape what sits between a card's digits (a no-break space as six characters).
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\[bfnrt/]")


def _traces(text: str, p: dict[str, str]) -> list[str]:
    """The planted values found in ``text``, as written, percent-encoded or as digits."""
    found = []
    for kind in ("email", "phone", "card", "ipv4", "ipv6", "referrer_host"):
        value = p[kind]
        if value in text or quote(value, safe="") in text or quote(value) in text:
            found.append(kind)
    # Unescaped, decoded and NFKC-normalised: full-width digits count as theirs.
    unescaped = _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else " ", text)
    plain = unicodedata.normalize("NFKC", unquote(unescaped))
    if p["card_digits"] in "".join(ch for ch in plain if ch in string.digits or ch == "\n"):
        found.append("card_digits")
    return found


@pytest.mark.promise("P-04")
@pytest.mark.promise("P-09")
async def test_personal_data_in_beacons_reaches_no_topic_table_or_api(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    examples: list[dict[str, str]] = []

    @examples_of(max_examples=EXAMPLES, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(planted())
    def collect(p: dict[str, str]) -> None:
        examples.append(p)

    collect()
    # Every form of referrer host at least once, whatever was drawn.
    examples += [
        {**p, "where": "referrer", "referrer_host": _referrer_host(p, form)}
        for p, form in zip(examples, REFERRER_HOSTS, strict=False)
    ]
    # The first ten go in one batch (POST /beacons), the others one at a time; those with
    # personal data in their site are refused, so they go alone (one would refuse a batch).
    accepted = [p for p in examples if p["where"] != "site"]
    refused = [p for p in examples if p["where"] == "site"]
    batched, single = accepted[:10], accepted[10:]
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        if batched:
            batch = [_beacon(site, p) for p in batched]
            response = await client.post(BEACONS, json=batch, headers=browser("batch"))
            assert response.status_code == 204, response.text
        for i, p in enumerate(single):
            response = await client.post(BEACON, json=_beacon(site, p), headers=browser(i))
            assert response.status_code == 204, response.text
        refusals = []
        for i, p in enumerate(refused):
            response = await client.post(
                BEACON, json=_beacon(site, p), headers=browser(f"refused{i}")
            )
            assert response.status_code == 400, response.text
            assert response.json()["detail"] == "invalid fields: site"
            refusals.append(response)
        assert await wait_for_visits(client, site, len(accepted)) == len(accepted)
        answers = [
            await client.get(path, params={"site": site, "grain": grain}, headers=analyst())
            for grain in ("minute", "hour", "day")
            for path in (
                "/api/analytics/trends",
                "/api/analytics/trends/partner",
                "/api/analytics/trends/public",
            )
        ]
    # Minute windows are released to operators only; the others answer with a reason.
    minute_refused = [
        a for a in answers if "grain=minute" in str(a.url) and "/trends/p" in str(a.url)
    ]
    assert [a.status_code for a in minute_refused] == [422, 422]
    assert all(a.status_code == 200 for a in answers if a not in minute_refused)
    # Every visit naming the site, a refused one's too (its site ends with this one).
    kafka = "\n".join(
        v.decode()
        for _, v in await topic_records(settings, ANALYTICS_VISITS.name)
        if site.encode() in v
    )
    dead_letters = "\n".join(
        v.decode("utf-8", "replace")
        for _, v in await topic_records(settings, dlq_of(ANALYTICS_VISITS.name))
    )
    # Once the windows holding these visits were published, not before (else: nothing).
    published = await trend_records(settings, site, len(accepted))
    trends = "\n".join(v.decode() for _, v in published)
    stores = {
        "analytics.visits": kafka,
        "analytics.visits.dlq": dead_letters,
        "analytics.trends": trends,
        "postgres": await dump_tables(settings, site),
        "postgres, refused sites": "\n".join(
            [await dump_tables(settings, _refused_site(site, p)) for p in refused]
        ),
        "apis": "\n".join(a.text for a in answers),
        "refusals": "\n".join(r.text for r in refusals),
    }
    assert kafka.count(site) >= len(accepted)
    leaks = {
        (where, kind, p["where"])
        for where, text in stores.items()
        for p in examples
        for kind in _traces(text, p)
    }
    assert leaks == set()
