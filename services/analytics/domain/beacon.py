"""The beacon a page sends, and how it is cut down to an anonymous visit.

What a client sends is never trusted nor kept as sent: the page URL loses its
fragment, userinfo, non-allow-listed query keys, any personal data in its path and
whatever is encoded deeper than it is decoded; the referrer becomes a host, or none if
the host holds personal data; a screen name is redacted; the time is the server's. The
site is kept as sent, so a beacon whose site holds personal data is refused. Sites and
referrer hosts are judged by one rule.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit
from uuid import UUID

from pydantic import (
    UUID4,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.events.catalogue.analytics import DeviceClass
from shared.pii import contains_pii, redact, referrer_host, scrub_url
from shared.pii.ip_addresses import DIGIT_GROUPS, holds_ipv4_groups
from shared.pii.phones import MIN_PHONE_DIGITS
from shared.pii.urls import percent_decoded, scrub_ids

# C0, DEL and C1 controls (VisitRecorded refuses C0 and DEL only: it must still read
# what an older collector published).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_PAGE_CHARS = 512
DIRECT = "(direct)"
# A site is a host name of ours (e.g. "imt.example" or "app.imt.example"); never an IP.
_SITE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_IPV4_SITE = re.compile(r"^[0-9.]+$")
# A run of digits, or digit groups joined by dashes or dots. With 7 digits or more (the
# fewest a phone number has), a host such as "555-123-4567" or "p447911123456.example" is
# refused even where the phone detector, made for free text, lets it pass (NANP exchanges
# never start with 1; a bare run is an order number as often as a phone in text): no host
# of ours is a number. Any decimal digit (\d): a referrer's host may be written in
# full-width or other digits, which a site (ASCII only) cannot.
_NUMBER_IN_HOST = re.compile(r"\d+(?:[.-]\d+)*")
_DIGIT = re.compile(r"\d")
# A label of hex groups and dashes with a digit: an IPv6 address with ":" written "-"
# (sslip.io's form, 2a01-4f8--1).
_DASHED_IPV6 = re.compile(r"(?=[a-f-]*\d)[0-9a-f]*(?:-[0-9a-f]*){2,8}")
# nip.io's and sslip.io's hexadecimal form of an IPv4 address: a label of exactly 8 hex
# digits, alone or after a prefix and a dash (app-c0a80114.nip.io is 192.168.1.20). One
# without a decimal digit is an address too (deadbeef is 222.173.190.239), and no word
# is spelt with 8 of the letters a to f; more or fewer digits, or a prefix glued on
# without a dash, and the label is not that form.
_HEX_IPV4_LABEL = re.compile(r"(?:^|[.-])[0-9a-f]{8}(?:\.|$)")
# A screen name whose raw and percent-decoded readings disagree on its personal data.
SCREEN_WITHHELD = "screen:[REDACTED]"
# A page's path segment or query value encoded deeper than the scrubber decodes: what it
# holds was never read, so none of it is kept (as a screen name is withheld).
PAGE_PART_WITHHELD = ":redacted"
CLEAN_SITES_REMEMBERED = 1024
_CLEAN_SITES: set[str] = set()
V = TypeVar("V")
# The scheme and host of an absolute URL (the host is the site, already known).
_SCHEME_HOST = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?]*", re.IGNORECASE)


class MalformedBeacon(ValueError):
    """A beacon that is not JSON, misses fields, or carries values out of range."""


class Beacon(BaseModel):
    """What a page or app sends. Unknown members are ignored (and never stored)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=2048)

    # Random (version 4) only: it is kept for deduplication, and a version 1 id carries
    # the sending device's MAC address and a timestamp.
    beacon_id: UUID4
    site: str = Field(min_length=1, max_length=253)
    page: str | None = Field(None, min_length=1)
    screen: str | None = Field(None, min_length=1, max_length=200)
    referrer: str | None = None
    device_class: DeviceClass | None = None
    load_time_ms: int | None = Field(None, ge=0, le=600_000)

    @field_validator("page", "screen", "referrer")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # A NUL cannot be stored in PostgreSQL text: one such visit would stop the
        # aggregation at it. No control character belongs in a URL or a screen name, and
        # the visit would be refused as it is read (see VisitRecorded): refused here.
        if value is not None and _CONTROLS.search(value):
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("site")
    @classmethod
    def _host_name(cls, site: str) -> str:
        if not _SITE.fullmatch(site) or _IPV4_SITE.fullmatch(site):
            raise ValueError("site must be a host name")
        # Unlike the page, the site reaches Kafka and PostgreSQL as sent, and
        # "4111-1111-1111-1111" has the shape of a host name: it is refused, not scrubbed.
        if _holds_personal_data(site):
            raise ValueError("site must not hold personal data")
        return site

    @model_validator(mode="after")
    def _page_or_screen(self) -> Beacon:
        if (self.page is None) == (self.screen is None):
            raise ValueError("exactly one of page or screen is required")
        return self


def _holds_personal_data(site: str) -> bool:
    if site in _CLEAN_SITES:
        return False
    found = host_holds_personal_data(site)
    if not found and _DIGIT.search(site):
        # A site with a digit ("shop24.example") is checked once, not on every beacon.
        # Only clean sites are remembered: a refused one may hold someone's data.
        if len(_CLEAN_SITES) >= CLEAN_SITES_REMEMBERED:
            _CLEAN_SITES.clear()
        _CLEAN_SITES.add(site)
    return found


def host_holds_personal_data(host: str) -> bool:
    """Whether a host name (a site, or a referrer's host) may hold someone's data: what
    the detectors find, a number of seven digits or more, or an IP address with dashes
    or as one label of 8 hex digits."""
    # Full-width or other letters and digits are read as the ASCII they stand for, as a
    # browser's IDNA mapping reads them.
    folded = host if host.isascii() else unicodedata.normalize("NFKC", host).lower()
    if _HEX_IPV4_LABEL.search(folded):
        return True
    # Every detector needs a digit in a host name (it has no "@", ":", spaces or capital
    # letters), so the usual digit-free host costs nothing, where the detectors take ~10 µs.
    if not _DIGIT.search(host):
        return False
    numbers = (match.group() for match in _NUMBER_IN_HOST.finditer(host))
    return (
        contains_pii(host)
        or any(sum(char.isdigit() for char in number) >= MIN_PHONE_DIGITS for number in numbers)
        # Four or more digit groups, an IPv4 address with dashes among them (too few
        # digits for the rule above, and no detector reads dashes as dots).
        or any(holds_ipv4_groups(m.group()) for m in DIGIT_GROUPS.finditer(host))
        or any(_is_ipv6(label) for label in host.split("."))
    )


def _is_ipv6(label: str) -> bool:
    if not _DASHED_IPV6.fullmatch(label):
        return False
    try:
        ipaddress.IPv6Address(label.replace("-", ":"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ScrubbedVisit:
    """A beacon after scrubbing: only what may reach Kafka (no visitor yet)."""

    beacon_id: UUID
    site: str
    page: str
    referrer_host: str | None
    device_class: DeviceClass
    load_time_ms: int | None


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep
        raise MalformedBeacon("the body is not JSON") from exc


def _beacon(data: object, where: str = "") -> Beacon:
    if not isinstance(data, dict):
        raise MalformedBeacon(f"{where or 'the body'} is not a JSON object")
    try:
        return Beacon.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise MalformedBeacon(f"{where}{': ' if where else ''}invalid fields: "
                              f"{', '.join(fields)}") from None  # fmt: skip


def parse_beacon(body: bytes) -> Beacon:
    """The beacon in a JSON body (sent as application/json or text/plain)."""
    return _beacon(_json(body))


def parse_beacons(body: bytes, most: int) -> list[Beacon]:
    """The beacons of a batch: a JSON array of 1 to ``most`` beacons (an app's queue of
    screen views, or a page's views sent at once when it is hidden). All or none: the
    first malformed one is named by its index."""
    data = _json(body)
    if not isinstance(data, list):
        raise MalformedBeacon("the body is not a JSON array of beacons")
    if not 1 <= len(data) <= most:
        raise MalformedBeacon(f"a batch holds 1 to {most} beacons, not {len(data)}")
    return [_beacon(item, f"beacon {index}") for index, item in enumerate(data)]


def scrub_page(page: str, allowed_query_keys: frozenset[str]) -> str:
    """Path and allow-listed query of a page URL, personal data replaced by markers; a
    path segment or query value encoded deeper than the scrubber decodes becomes
    ``:redacted``."""
    if page.startswith("//"):
        # A path that starts with "//" (a page at https://imt.example//x) would be read
        # as "//host/path", whose host is kept as sent: it is a path, and read as one.
        page = "/" + page.lstrip("/")
    scrubbed = scrub_url(_withheld_where_encoded_too_deep(page), allowed_query_keys)
    # Keep the path and query only: the host is the site, already known.
    path = _SCHEME_HOST.sub("", scrubbed, count=1)
    path = path or "/"
    if not path.startswith("/"):
        path = "/" + path
    return _bounded(path)


def _withheld_where_encoded_too_deep(page: str) -> str:
    """``page`` with each path segment or query value that is still percent-encoded after
    the decoding scrub_url gives it (three rounds, after the query parser's one for a
    value) replaced by ``:redacted``.

    The detectors see only that decoding: what is still encoded in it (a card encoded
    four times, or the rest of a segment beside an address) would be kept as sent, or
    re-encoded around the markers, a few decodings away from what it hides. The page is
    read as scrub_url reads it, so that the parts judged are the parts it scrubs.
    """
    if "%" not in page:
        return page  # most pages: nothing in them is encoded at all
    try:
        parts = urlsplit(page.strip())
    except ValueError:
        return page  # unparsable: scrub_url keeps nothing of it
    segments = parts.path.split("/")
    # What follows ";" in a segment (path parameters) is dropped by scrub_url unread.
    path = [PAGE_PART_WITHHELD if _too_deep(s.split(";", 1)[0]) else s for s in segments]
    pairs = parts.query.split("&")
    query = [_value_withheld(pair) if _too_deep(_query_value(pair)) else pair for pair in pairs]
    if path == segments and query == pairs:
        return page
    return urlunsplit(parts._replace(path="/".join(path), query="&".join(query)))


def _query_value(pair: str) -> str:
    # As parse_qsl reads it: "+" is a space, then one round of decoding.
    return unquote(pair.partition("=")[2].replace("+", " "), errors="replace")


def _value_withheld(pair: str) -> str:
    return pair.partition("=")[0] + "=" + PAGE_PART_WITHHELD


def _too_deep(part: str) -> bool:
    decoded = percent_decoded(part)
    return unquote(decoded, errors="replace") != decoded


def scrub_screen(screen: str) -> str:
    """An app screen name with personal data redacted and opaque ids replaced by ``:id``.

    Apps percent-encode names too ("Pay 4111%201111%201111%201111"), so a name is read as
    sent and percent-decoded, as a query value is. Where only the decoded reading finds
    something, that reading is kept, scrubbed. Where both find something but not the same
    (decoding may cut a token whose "/" was "%2F" in two, leaving half of it unseen), or
    decoding leaves control characters or still more encoding behind, the name is
    withheld whole: ``screen:[REDACTED]``.
    """
    raw = screen.strip()
    # Ids go before the cut: a cut one could be left too short to be recognised.
    scrubbed = _scrubbed_screen(raw)
    decoded = percent_decoded(raw)
    if decoded != raw:
        if percent_decoded(decoded) != decoded:  # encoded more than three times
            return SCREEN_WITHHELD
        from_decoded = _scrubbed_screen(decoded)
        if percent_decoded(scrubbed) != from_decoded:
            if scrubbed != raw or _CONTROLS.search(from_decoded):
                return SCREEN_WITHHELD
            scrubbed = from_decoded
    return "screen:" + _bounded(scrubbed, MAX_PAGE_CHARS - len("screen:"))


def _scrubbed_screen(text: str) -> str:
    return scrub_ids(redact(text))


def scrub_referrer(referrer: str | None) -> str | None:
    """The referrer's host only; None if absent, an IP address or personal-looking (by
    the rule that refuses a site: a host such as ec2-203-0-113-7.compute-1.amazonaws.com
    names someone's machine). None is what an IP referrer gives: counted as direct."""
    if not referrer:
        return None
    host = referrer_host(referrer)
    if host is None or host_holds_personal_data(host):
        return None
    return host[:253]


def scrub(beacon: Beacon, user_agent: str, allowed_query_keys: frozenset[str]) -> ScrubbedVisit:
    page = (
        scrub_page(beacon.page, allowed_query_keys)
        if beacon.page is not None
        else scrub_screen(beacon.screen or "")
    )
    return ScrubbedVisit(
        beacon_id=beacon.beacon_id,
        site=beacon.site,
        page=page,
        referrer_host=scrub_referrer(beacon.referrer),
        device_class=beacon.device_class or device_class_of(user_agent),
        load_time_ms=beacon.load_time_ms,
    )


class ScrubMemo:
    """Scrubbed pages and referrer hosts of recent beacons, so a popular page is scrubbed
    once rather than on every visit (scrubbing is most of a beacon's CPU).

    Holds no personal data: a raw URL is never kept, only its keyed hash (BLAKE2b under
    a random per-process key, gone on restart) as the key, and the scrubbed value (what
    Kafka receives anyway). At most ``size`` entries per kind; the oldest go first.
    """

    def __init__(self, allowed_query_keys: frozenset[str], size: int = 4096) -> None:
        self.allowed_query_keys = allowed_query_keys
        self.size = size
        self._key = secrets.token_bytes(32)
        self._pages: dict[bytes, str] = {}
        self._referrers: dict[bytes, str | None] = {}

    def page(self, page: str) -> str:
        return self._memo(self._pages, page, self._scrub_page)

    def referrer(self, referrer: str | None) -> str | None:
        if not referrer:
            return None
        return self._memo(self._referrers, referrer, scrub_referrer)

    def scrub(self, beacon: Beacon, user_agent: str) -> ScrubbedVisit:
        """What :func:`scrub` returns, from the memo when the page was seen recently."""
        return ScrubbedVisit(
            beacon_id=beacon.beacon_id,
            site=beacon.site,
            page=self.page(beacon.page) if beacon.page is not None
            else scrub_screen(beacon.screen or ""),
            referrer_host=self.referrer(beacon.referrer),
            device_class=beacon.device_class or device_class_of(user_agent),
            load_time_ms=beacon.load_time_ms,
        )  # fmt: skip

    def _scrub_page(self, page: str) -> str:
        return scrub_page(page, self.allowed_query_keys)

    def _memo(self, memo: dict[bytes, V], raw: str, scrub: Callable[[str], V]) -> V:
        # "surrogatepass": JSON may carry lone surrogates; the key stays one-to-one.
        key = hashlib.blake2b(
            raw.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16
        ).digest()
        try:
            return memo[key]
        except KeyError:
            pass
        value = scrub(raw)
        if len(memo) >= self.size:
            del memo[next(iter(memo))]
        memo[key] = value
        return value


def _bounded(text: str, limit: int = MAX_PAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    # Cutting could leave half of a marker or of a personal value: re-redact the cut.
    return redact(text[:limit])[:limit]


DeviceGuess = Literal["desktop", "mobile", "tablet", "other"]


def device_class_of(user_agent: str) -> DeviceGuess:
    """A coarse device class from the user agent (used when the beacon names none)."""
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    if any(os in ua for os in ("windows", "macintosh", "x11", "linux", "cros")):
        return "desktop"
    return "other"


# Matched against the lowered agent: with re.IGNORECASE the same search took ~25 µs a
# beacon (every alternative tried case-folded at every position), lowered ~2 µs.
_BOT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrape|headless|phantomjs|lighthouse|pingdom|uptime"
    r"|monitor|preview|facebookexternalhit|curl/|wget/|python-requests|python-httpx|"
    r"python-urllib|aiohttp|go-http-client|java/|okhttp|libwww|httpclient|scrapy|node-fetch"
)


def is_bot(user_agent: str | None) -> bool:
    """Whether the user agent is missing or names a crawler, monitor or HTTP library."""
    return not user_agent or not user_agent.strip() or bool(_BOT.search(user_agent.lower()))
