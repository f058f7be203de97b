"""Beacons are cut down to anonymous visits: scrubbing, bots, signals, visitor hashes."""

import json
import uuid
from datetime import date
from ipaddress import IPv4Address
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.domain import beacon as beacon_module
from services.analytics.domain.beacon import (
    SCREEN_WITHHELD,
    MalformedBeacon,
    ScrubMemo,
    device_class_of,
    is_bot,
    parse_beacon,
    parse_beacons,
    scrub,
    scrub_page,
    scrub_referrer,
    scrub_screen,
)
from services.analytics.domain.signals import (
    Suppression,
    claims_suppression,
    header_suppression,
)
from services.analytics.domain.visitor import DailySalt, truncate_ip, visitor_hash
from shared.auth import Claims
from shared.pii import DEFAULT_ALLOWED_QUERY_KEYS, contains_pii
from tests.unit.pii.strategies import (
    BEACON_CARD_SEPARATORS,
    card_numbers,
    digits_of,
    emails,
    phones,
)

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1"


def _body(**fields: object) -> bytes:
    import json

    return json.dumps({"beacon_id": str(uuid.uuid4()), "site": "imt.example", **fields}).encode()


def test_page_loses_fragment_query_keys_and_personal_data() -> None:
    page = (
        "https://imt.example/u/jane.doe@example.com/card/4111111111111111?utm_source=x&email=a#top"
    )
    assert scrub_page(page, DEFAULT_ALLOWED_QUERY_KEYS) == "/u/:email/card/:card?utm_source=x"


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    ("page", "scrubbed"),
    [
        # A path starting with "//" is a path, not a host kept as sent.
        ("//4111-1111-1111-1111/x", "/:card/x"),
        ("//+15551234567/x", "/:phone/x"),
        ("//jane%40example.com/x", "/:email/x"),
        ("///a//b", "/a//b"),
        # "+" in a query value is a space to parse_qsl; the value as sent is looked at too.
        ("/p?ref=+12125550123", "/p?ref=:phone"),
        ("/p?ref=hello+world", "/p?ref=hello%20world"),
        # What urlsplit takes for a scheme ("letters:" first) is path unless http(s):
        # kept as sent before, a card or a phone went on to Kafka.
        ("card4111111111111111:/checkout", "/card:card:/checkout"),
        ("tel+14155552671:/call", "/tel:phone:/call"),
        ("a4111.1111.1111.1111:x", "/a:card:x"),
        ("mailto:jane@example.com", "/mailto::email"),
        ("HTTPS://imt.example/p", "/p"),
        # An input method's full stops between a card's groups.
        (
            "/pay/\uff14\uff11\uff11\uff11\u3002\uff11\uff11\uff11\uff11\u3002"
            "\uff11\uff11\uff11\uff11\u3002\uff11\uff11\uff11\uff11",
            "/pay/:card",
        ),
    ],
)
def test_pages_that_look_like_hosts_or_hide_a_plus_are_scrubbed(page: str, scrubbed: str) -> None:
    assert scrub_page(page, DEFAULT_ALLOWED_QUERY_KEYS) == scrubbed


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    ("screen", "scrubbed"),
    [
        ("reset/5f0c3a2e1b2c4d3e9a8b7c6d", "screen:reset/:id"),
        ("Order 5f0c3a2e1b2c4d3e", "screen:Order :id"),
        ("Order 5F0C3A2E1B2C4D3E9A8B (paid)", "screen:Order :id (paid)"),
        ("session=5f0c3a2e1b2c4d3e9a8b7c6d;", "screen:session=:id;"),
        # Words stay: hex-looking ones shorter than 16, or without a digit.
        ("Order 5f0c3a2e1b2c4d3", "screen:Order 5f0c3a2e1b2c4d3"),
        ("Feed deadbeefcafebabe", "screen:Feed deadbeefcafebabe"),
        ("Settings", "screen:Settings"),
    ],
)
def test_opaque_ids_in_screen_names_are_replaced(screen: str, scrubbed: str) -> None:
    assert scrub_screen(screen) == scrubbed


@pytest.mark.promise("P-04")
@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    ("screen", "scrubbed"),
    [
        # Only the percent-decoded reading finds it: that reading is kept, scrubbed.
        ("Pay 4111%201111%201111%201111", "screen:Pay [REDACTED:card]"),
        ("Pay 4111%2D1111%2D1111%2D1111", "screen:Pay [REDACTED:card]"),
        ("Pay 4111%25201111%25201111%25201111", "screen:Pay [REDACTED:card]"),  # twice
        ("Call %2B14155552671", "screen:Call [REDACTED:phone]"),
        # Both readings agree: the name as sent.
        ("Mail jane%40example.com", "screen:Mail [REDACTED:email]"),
        ("Caf%C3%A9 menu", "screen:Caf%C3%A9 menu"),
        ("50% off", "screen:50% off"),
        # They disagree otherwise, or decoding leaves a control character or more
        # encoding behind: the name is withheld whole.
        ("jane@example.com or %2B14155552671", SCREEN_WITHHELD),
        ("Reset %2F5f0c3a2e1b2c4d3e9a8b7c6d", SCREEN_WITHHELD),  # "2F5f0c..." as sent
        ("Pay%004111%201111%201111%201111", SCREEN_WITHHELD),
        ("Pay 4111%252525201111%252525201111%252525201111", SCREEN_WITHHELD),
    ],
)
def test_percent_encoded_personal_data_in_screen_names_is_redacted(
    screen: str, scrubbed: str
) -> None:
    assert scrub_screen(screen) == scrubbed
    visit = scrub(parse_beacon(_body(screen=screen)), IPHONE, DEFAULT_ALLOWED_QUERY_KEYS)
    assert visit.page == scrubbed


@pytest.mark.promise("P-09")
@settings(max_examples=60)
@given(card=card_numbers(BEACON_CARD_SEPARATORS), safe=st.sampled_from(["", " ", "-"]))
def test_a_percent_encoded_card_in_a_screen_name_leaves_no_digits(
    card: tuple[str, str], safe: str
) -> None:
    digits, written = card
    scrubbed = scrub_screen(f"Pay {quote(written, safe=safe)} now")
    assert digits not in digits_of(scrubbed)
    assert not contains_pii(scrubbed)


@pytest.mark.promise("P-04")
@settings(max_examples=80)
@given(phone=phones())
def test_a_phone_number_leaves_no_digit_in_a_page_or_screen_name_however_spaced(
    phone: str,
) -> None:
    # The only digits sent are the phone's: every one of them must go, whether its groups
    # are spaced with ASCII, no-break, thin or narrow spaces, or joined by Unicode dashes.
    for page in (f"/c/{quote(phone)}", f"/c/{quote(phone, safe='+() ')}"):
        visit = scrub(parse_beacon(_body(page=page)), FIREFOX, DEFAULT_ALLOWED_QUERY_KEYS)
        assert digits_of(visit.page) == "", page
    screen = scrub(parse_beacon(_body(screen=f"Call {phone}")), IPHONE, DEFAULT_ALLOWED_QUERY_KEYS)
    assert digits_of(screen.page) == ""


def test_a_long_screen_name_is_cut_after_its_ids_are_replaced() -> None:
    # Cut first, an id at the end could be left too short to be recognised as one.
    name = "x" * 498 + " 5f0c3a2e1b2c4d3e9a8b7c6d"
    assert scrub_screen(name) == "screen:" + "x" * 498 + " :id"
    assert "5f0c3a2e1b2c" not in scrub_screen("x" * 490 + " 5f0c3a2e1b2c4d3e9a8b7c6d")


def _encoded(text: str, times: int) -> str:
    for _ in range(times):
        text = quote(text, safe="")
    return text


def _fully_decoded(text: str) -> str:
    # As far as anyone reading the stored page could take it, not just the three rounds
    # the scrubber takes.
    while (once := unquote(text)) != text:
        text = once
    return text


CARD = "4111 1111 1111 1111"


@pytest.mark.promise("P-04")
@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    ("page", "scrubbed"),
    [
        # Still encoded after the three rounds the scrubber decodes: never looked at by
        # the detectors, so withheld rather than kept as sent.
        (f"/p/{_encoded(CARD, 4)}/x", "/p/:redacted/x"),
        (f"/p/{_encoded(CARD, 6)}", "/p/:redacted"),
        (f"/u/{_encoded('jane@example.com', 5)}", "/u/:redacted"),
        (f"/c/{_encoded('+33 6 12 34 56 78', 4)}", "/c/:redacted"),
        # A query value is decoded once more (by the query parser) than a segment.
        (f"/p?utm_term={_encoded(CARD, 5)}&page=2", "/p?utm_term=:redacted&page=2"),
        (f"/p?utm_term={_encoded(CARD, 6)}", "/p?utm_term=:redacted"),
        # What was found is replaced and the rest re-encoded once: a rest still encoded
        # must not be kept either, two decodings away from a card.
        (f"/u/jane@example.com-{_encoded(CARD, 4)}", "/u/:redacted"),
        (f"/p?utm_term=jane@example.com%20{_encoded(CARD, 5)}", "/p?utm_term=:redacted"),
        # Encoded up to three times (four for a query value): decoded and scrubbed.
        (f"/p/{_encoded(CARD, 3)}", "/p/:card"),
        (f"/p?utm_term={_encoded(CARD, 4)}", "/p?utm_term=:card"),
        # Clean segments and values keep their encoding, however many rounds it took.
        (f"/s/{_encoded('café', 3)}/x", f"/s/{_encoded('café', 3)}/x"),
        ("/s/50%25off?utm_term=100%25", "/s/50%25off?utm_term=100%25"),
    ],
)
def test_what_is_still_encoded_after_the_decoding_limit_is_withheld(
    page: str, scrubbed: str
) -> None:
    assert scrub_page(page, DEFAULT_ALLOWED_QUERY_KEYS) == scrubbed
    assert ScrubMemo(DEFAULT_ALLOWED_QUERY_KEYS).page(page) == scrubbed


@pytest.mark.promise("P-09")
@settings(max_examples=80)
@given(
    card=card_numbers(BEACON_CARD_SEPARATORS),
    times=st.integers(1, 7),
    where=st.sampled_from(["path", "query", "after an email"]),
)
def test_a_card_encoded_any_number_of_times_leaves_no_digits_in_a_page(
    card: tuple[str, str], times: int, where: str
) -> None:
    digits, written = card
    encoded = _encoded(written, times)
    page = {
        "path": f"/p/{encoded}/x",
        "query": f"/p?utm_term={encoded}",
        "after an email": f"/u/jane@example.com-{encoded}",
    }[where]
    visit = scrub(parse_beacon(_body(page=page)), FIREFOX, DEFAULT_ALLOWED_QUERY_KEYS)
    assert digits not in digits_of(_fully_decoded(visit.page))


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    ("page", "scrubbed"),
    [
        # IPv4 addresses with dashes (as refused in sites and referrer hosts) or as one
        # integer, in a path segment or a kept query value.
        ("/x/192-168-1-20/status", "/x/:ipv4/status"),
        ("/x?ref=2130706433", "/x?ref=:ipv4"),
        ("/x/2130706433", "/x/:ipv4"),
        ("/x?ref=10-0-0-1", "/x?ref=:ipv4"),
        ("/hosts/ip-10-0-0-1.ec2.internal", "/hosts/ip-:ipv4.ec2.internal"),
        # Ordinary numbers stay: below 1.0.0.0 (16777216), with a leading zero, or not
        # standing alone.
        ("/orders/12345", "/orders/12345"),
        ("/orders/16777215?ref=12345", "/orders/16777215?ref=12345"),
        ("/orders/0012345678", "/orders/0012345678"),
        ("/orders/n2130706433", "/orders/n2130706433"),
        ("/x/release-2024-12-01", "/x/release-2024-12-01"),
    ],
)
def test_ipv4_addresses_with_dashes_or_as_integers_leave_pages(page: str, scrubbed: str) -> None:
    assert scrub_page(page, DEFAULT_ALLOWED_QUERY_KEYS) == scrubbed
    assert ScrubMemo(DEFAULT_ALLOWED_QUERY_KEYS).page(page) == scrubbed


@pytest.mark.promise("P-04")
@settings(max_examples=60)
@given(
    ip=st.ip_addresses(v=4).filter(lambda ip: int(ip) >= 1 << 24),
    where=st.sampled_from(["path", "query"]),
    dashed=st.booleans(),
)
def test_no_ipv4_address_with_dashes_or_as_an_integer_survives_in_a_page(
    ip: IPv4Address, where: str, dashed: bool
) -> None:
    written = str(ip).replace(".", "-") if dashed else str(int(ip))
    page = f"/p/{written}/q" if where == "path" else f"/p?utm_term={written}"
    visit = scrub(parse_beacon(_body(page=page)), FIREFOX, DEFAULT_ALLOWED_QUERY_KEYS)
    assert written not in visit.page
    assert ":ipv4" in visit.page


def test_referrer_becomes_a_host_and_ip_referrers_vanish() -> None:
    assert scrub_referrer("https://www.google.com/search?q=jane@example.com") == "www.google.com"
    assert scrub_referrer("http://192.168.1.20/admin") is None
    assert scrub_referrer("not a url") is None
    assert scrub_referrer(None) is None


# Hosts naming someone's machine or number: an IP address written with dashes (cloud
# and wildcard-DNS names), or a number of seven digits or more, in any digits.
PERSONAL_HOSTS = [
    "ec2-203-0-113-7.compute-1.amazonaws.com",
    "ec2-3-8-1-9.eu-west-2.compute.amazonaws.com",
    "ip-10-0-0-1.ec2.internal",
    "192-168-100-200.sslip.io",
    "10-0-0-1.sslip.io",
    "2a01-4f8-c17-b8f--2.sslip.io",
    "447911123456.example.org",
    "call-555-123-4567.example.org",
    "\uff14\uff14\uff17\uff19\uff11\uff11\uff11\uff12\uff13\uff14\uff15\uff16.example",
    # nip.io's and sslip.io's hexadecimal form: the address as one label of 8 hex digits,
    # alone or after a prefix and a dash (c0a80114 is 192.168.1.20).
    "c0a80114.nip.io",
    "app-c0a80114.nip.io",
    "app.c0a80114.nip.io",
    "customer-2-app-7f000001.nip.io",
    "0a000001.sslip.io",
    "deadbeef.nip.io",  # 222.173.190.239: no digit, an address all the same
    "\uff43\uff10\uff41\uff18\uff10\uff11\uff11\uff14.nip.io",  # full-width: read as ASCII
]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize("host", PERSONAL_HOSTS)
def test_a_referrer_host_holding_an_address_or_a_number_is_dropped(host: str) -> None:
    # Dropped as an IP referrer is: no host at all (the visit counts as direct).
    assert scrub_referrer(f"https://{host}/some/page") is None
    assert ScrubMemo(DEFAULT_ALLOWED_QUERY_KEYS).referrer(f"https://{host}/") is None
    visit = scrub(
        parse_beacon(_body(page="/a", referrer=f"http://{host}:8080/x")),
        FIREFOX,
        DEFAULT_ALLOWED_QUERY_KEYS,
    )
    assert visit.referrer_host is None


@pytest.mark.parametrize(
    "host",
    ["www.google.com", "m.163.com", "shop24.example", "app-2026.imt.example",
     "bench123456.example", "cdn-1-2-3.example", "xn--bcher-kva.example",
     "dead--beef.shop24.example",
     # Hex-looking labels that are not the 8-hex-digit form: fewer or more hex digits,
     # a letter beyond f, glued to a prefix without a dash, or followed by more.
     "a1b2c3.example", "c0a8011.nip.io", "c0a801145.nip.io", "c0a8011g.example",
     "appc0a80114.nip.io", "app_c0a80114.example", "c0a80114-app.example",
     "facade.example", "acceded.example", "cafe-babe.example"],
)  # fmt: skip
def test_referrer_hosts_with_a_few_digits_are_kept(host: str) -> None:
    assert scrub_referrer(f"https://{host}/p") == host


@pytest.mark.promise("P-04")
@settings(max_examples=60)
@given(
    ip=st.ip_addresses(v=4),
    prefix=st.sampled_from(["", "app-", "app.", "my-app-", "a1-"]),
    service=st.sampled_from(["nip.io", "sslip.io"]),
)
def test_an_ipv4_address_as_8_hex_digits_leaves_no_referrer_host(
    ip: IPv4Address, prefix: str, service: str
) -> None:
    host = f"{prefix}{int(ip):08x}.{service}"
    assert scrub_referrer(f"https://{host}/") is None
    assert ScrubMemo(DEFAULT_ALLOWED_QUERY_KEYS).referrer(f"http://{host.upper()}:8080/x") is None


def test_screen_names_are_redacted() -> None:
    beacon = parse_beacon(_body(screen="Profile of +1 415 555 0134"))
    visit = scrub(beacon, IPHONE, DEFAULT_ALLOWED_QUERY_KEYS)
    assert visit.page.startswith("screen:")
    assert "555" not in visit.page
    assert visit.device_class == "mobile"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        _body(),  # neither page nor screen
        _body(page="/a", screen="b"),  # both
        _body(page="/a", load_time_ms=-1),
        _body(page="/a", device_class="toaster"),
        b'{"site": "imt.example", "page": "/"}',  # no beacon id
        _body(page="/a").replace(b"imt.example", b"10.0.0.1"),  # an IP is not a site
        # Control characters: a NUL cannot be stored, and would stop the aggregation.
        _body(page="/a\u0000b"),
        _body(screen="Home\n"),
        _body(screen="Home\u0085"),  # C1 controls too: the visit would be refused as read
        _body(page="/a", referrer="https://x.example/\u001f"),
        # A version 1 id carries the device's MAC address: only random ids are kept.
        json.dumps({"beacon_id": str(uuid.uuid1()), "site": "imt.example", "page": "/a"}).encode(),
        b"[" * 5000 + b"]" * 5000,  # nested deeper than the parser goes
    ],
)
def test_malformed_beacons_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedBeacon):
        parse_beacon(body)


@pytest.mark.promise("P-04")
@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    "site",
    [
        "4111-1111-1111-1111",
        "4111111111111111.example",
        "card-4111-1111-1111-1111.imt.example",
        "378282246310005.imt.example",
        "415-555-2671",
        "555-123-4567",  # no NANP number, but a phone all the same in a host name
        "call.555.123.4567.imt.example",
        "10.0.0.1.nip.io",
        "192-168-100-200.sslip.io",
        # An IPv4 address with dashes, too few digits to be a phone number.
        "10-0-0-1.sslip.io",
        "ip-10-0-0-1.imt.example",
        "2a01-4f8--1.imt.example",  # an IPv6 address with dashes
        "app-c0a80114.nip.io",  # an IPv4 address in hex, as nip.io writes it
        "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6.example",  # a secret's shape
        # A phone's digits unseparated, alone or in a label: as refused as separated.
        "12125550123.example",
        "x-2125550123.example",
        "p447911123456.example",
        "shop.5550123.example",
    ],
)
def test_a_site_holding_personal_data_is_refused(site: str) -> None:
    with pytest.raises(MalformedBeacon) as refused:
        parse_beacon(_body(page="/a", site=site))
    assert str(refused.value) == "invalid fields: site"


@pytest.mark.parametrize(
    "site",
    ["imt.example", "app.imt.example", "v2.imt.example", "app-2026.imt.example",
     "t0123abcd4567.example", "bench123456.example", "xn--bcher-kva.example"],
)  # fmt: skip
def test_host_names_with_digits_are_sites(site: str) -> None:
    assert parse_beacon(_body(page="/a", site=site)).site == site


def test_a_clean_site_is_checked_once_and_a_refused_one_never_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(beacon_module, "_CLEAN_SITES", set())
    checked: list[str] = []
    detect = contains_pii

    def counting(text: str) -> bool:
        checked.append(text)
        return detect(text)

    monkeypatch.setattr(beacon_module, "contains_pii", counting)
    clean, refused = "shop24.imt.example", "4111111111111111.example"
    for _ in range(3):
        assert parse_beacon(_body(page="/a", site=clean)).site == clean
        with pytest.raises(MalformedBeacon):
            parse_beacon(_body(page="/a", site=refused))
    assert checked.count(clean) == 1  # then remembered
    assert checked.count(refused) == 3  # checked every time: never remembered
    for n in range(beacon_module.CLEAN_SITES_REMEMBERED + 5):  # bounded
        parse_beacon(_body(page="/a", site=f"shop{n}.imt.example"))
    assert 0 < len(beacon_module._CLEAN_SITES) <= beacon_module.CLEAN_SITES_REMEMBERED


@pytest.mark.promise("P-09")
@settings(max_examples=60)
@given(card=card_numbers(("-",)), label=st.text("abcdefghij", min_size=1, max_size=8))
def test_a_card_in_the_site_refuses_the_beacon(card: tuple[str, str], label: str) -> None:
    digits, written = card
    # A host name takes ASCII letters, digits and dashes only: the card as it fits in one.
    written = written if written.isascii() else digits
    for site in (written, f"{label}-{written}.example", f"{label}.{written}.imt.example"):
        with pytest.raises(MalformedBeacon) as refused:
            parse_beacon(_body(page="/a", site=site))
        assert digits not in digits_of(str(refused.value))


def test_a_batch_with_personal_data_in_a_site_is_refused_whole() -> None:
    batch = b"[" + _body(page="/a") + b"," + _body(page="/b", site="4111-1111-1111-1111") + b"]"
    with pytest.raises(MalformedBeacon) as refused:
        parse_beacons(batch, most=3)
    assert str(refused.value) == "beacon 1: invalid fields: site"


def test_a_batch_is_an_array_of_beacons_taken_whole() -> None:
    pages = [_body(page=f"/p/{n}") for n in range(3)]
    batch = b"[" + b",".join(pages) + b"]"
    assert [b.page for b in parse_beacons(batch, most=3)] == ["/p/0", "/p/1", "/p/2"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_body(page="/a"), "not a JSON array"),
        (b"[]", "1 to 3 beacons, not 0"),
        (b"[" + b",".join([_body(page="/a")] * 4) + b"]", "1 to 3 beacons, not 4"),
        (b"[" + _body(page="/a") + b', "x"]', "beacon 1 is not a JSON object"),
        (b"[" + _body(page="/a") + b"," + _body() + b"]", "beacon 1: invalid fields"),
        (b"[1", "not JSON"),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_first_bad_beacon(body: bytes, why: str) -> None:
    with pytest.raises(MalformedBeacon) as refused:
        parse_beacons(body, most=3)
    assert why in str(refused.value)


def test_refusals_never_quote_the_values_sent() -> None:
    with pytest.raises(MalformedBeacon) as refused:
        parse_beacon(_body(page="/a", load_time_ms="jane@example.com"))
    assert "jane" not in str(refused.value)


@pytest.mark.parametrize(
    "agent",
    ["", "Googlebot/2.1 (+http://www.google.com/bot.html)", "curl/8.5", "python-httpx/0.28",
     "Mozilla/5.0 HeadlessChrome/120", "Mozilla/5.0 (compatible; bingbot/2.0)",
     "PYTHON-REQUESTS/2.32", "Mozilla/5.0 (compatible; UptimeRobot/2.0)"],
)  # fmt: skip
def test_bots_are_recognised(agent: str) -> None:
    assert is_bot(agent)


def test_browsers_are_not_bots() -> None:
    assert not is_bot(FIREFOX)
    assert not is_bot(IPHONE)
    assert device_class_of(FIREFOX) == "desktop"


def test_dnt_and_gpc_headers_suppress() -> None:
    assert header_suppression({"dnt": "1"}) is Suppression.DNT
    assert header_suppression({"sec-gpc": "1"}) is Suppression.GPC
    assert header_suppression({"dnt": "0"}) is None


def _claims(**overrides: object) -> Claims:
    return Claims.model_validate({"sub": "u", "sid": "s", "kind": "user", "exp": 2, "iat": 1,
                                  **overrides})  # fmt: skip


def test_children_opted_out_and_unverifiable_users_are_not_tracked() -> None:
    assert claims_suppression(_claims(age_band="under_13"), True) is Suppression.UNDER_13
    assert claims_suppression(_claims(tracking_opt_out=True), True) is Suppression.OPTED_OUT
    assert claims_suppression(None, token_sent=True) is Suppression.UNVERIFIED_TOKEN
    assert claims_suppression(None, token_sent=False) is None


@pytest.mark.parametrize("age_band", ["13_to_17", "adult", "unknown", None])
def test_users_not_under_13_are_tracked(age_band: str | None) -> None:
    # The bands accounts puts in a token (services/accounts/domain/age.py), or none.
    assert claims_suppression(_claims(age_band=age_band), True) is None


def test_addresses_are_truncated_before_hashing() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert truncate_ip("::ffff:203.0.113.9") == "203.0.113.0"
    salt = b"s" * 32
    same = visitor_hash(salt, "imt.example", "203.0.113.1")
    assert same == visitor_hash(salt, "imt.example", "203.0.113.250")
    assert same != visitor_hash(salt, "imt.example", "203.0.114.1")
    assert same != visitor_hash(salt, "other.example", "203.0.113.1")
    assert same != visitor_hash(b"t" * 32, "imt.example", "203.0.113.1")
    assert len(same) == 32


def test_the_salt_changes_with_the_day() -> None:
    days = iter([date(2026, 1, 1), date(2026, 1, 1), date(2026, 1, 2)])
    salt = DailySalt(lambda: next(days))
    first, again, next_day = salt.current(), salt.current(), salt.current()
    assert first == again
    assert next_day != first


@pytest.mark.promise("P-04")
def test_yesterdays_salt_is_forgotten_at_midnight_without_a_visit() -> None:
    """Kept until the next visit, a quiet night's salt outlived its day in memory."""
    today = [date(2026, 1, 1)]
    salt = DailySalt(lambda: today[0])
    first = salt.drawn()
    assert not salt.forget_if_stale()  # the same day: kept
    assert salt.drawn() == first
    today[0] = date(2026, 1, 2)
    assert salt.forget_if_stale()
    assert salt._salt.key == b""  # no visit came: it is gone from memory all the same
    assert salt.drawn().key not in (b"", first.key)


def test_a_salts_id_names_it_for_the_day_and_says_nothing_of_it() -> None:
    # Sent with every visit so a release knows how many salts a window's visitors were
    # hashed with; random, not derived from the key.
    days = iter([date(2026, 1, 1), date(2026, 1, 1), date(2026, 1, 2)])
    salt = DailySalt(lambda: next(days))
    first, again, next_day = salt.drawn(), salt.drawn(), salt.drawn()
    assert first == again
    assert len({first.id, next_day.id}) == 2
    assert all(len(s.id) == 16 and s.id not in s.key.hex() for s in (first, next_day))
    assert DailySalt().drawn().id != DailySalt().drawn().id  # a restart: another salt


@settings(max_examples=60, deadline=None)
@given(
    email=emails(),
    card=card_numbers(BEACON_CARD_SEPARATORS),
    octets=st.tuples(*[st.integers(1, 254)] * 4),
    where=st.sampled_from(["path", "query", "screen"]),
)
def test_no_personal_data_survives_scrubbing(
    email: str, card: tuple[str, str], octets: tuple[int, ...], where: str
) -> None:
    ip = ".".join(map(str, octets))
    if where == "path":
        body = _body(page=f"/p/{email}/{card[1]}/{ip}", referrer=f"https://{ip}/{email}")
    elif where == "query":
        body = _body(page=f"/p?utm_source={email}&utm_term={card[1]}&ip={ip}")
    else:
        body = _body(screen=f"{email} {card[1]} {ip}"[:200])
    visit = scrub(parse_beacon(body), FIREFOX, DEFAULT_ALLOWED_QUERY_KEYS)
    kept = f"{visit.page} {visit.referrer_host}"
    assert email not in kept
    assert card[0] not in digits_of(kept)
    assert ip not in kept
    assert not contains_pii(kept)
