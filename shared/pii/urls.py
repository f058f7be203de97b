"""Scrub URLs and referrers before they are stored or published (P-04).

In a scrubbed URL, removed data is marked in route-template style: ``:email``,
``:phone``, ``:card``, ``:ipv4``, ``:ipv6``, ``:token`` for personal data and ``:id`` for
opaque identifiers, e.g. ``/users/jane%40example.com/orders`` becomes
``/users/:email/orders``. Unlike ``[REDACTED:email]``, these markers need no
percent-encoding, so the result stays a valid, readable URL.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from shared.pii.cards import find_card_numbers
from shared.pii.findings import Finding, PiiKind
from shared.pii.ip_addresses import DIGIT_GROUPS, holds_ipv4_groups, is_integer_ipv4
from shared.pii.phones import find_phone_numbers
from shared.pii.redact import redact_with, replace_findings

DEFAULT_ALLOWED_QUERY_KEYS: frozenset[str] = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"}
    | {"ref", "source", "page", "lang"}
)
IP_HOST_MARKER = "ip-redacted"
ID_MARKER = ":id"

# UUIDs, long hex ids (with at least one digit and one letter, so plain numbers and words
# stay) and JWTs: they identify a person or a session without being readable themselves.
_OPAQUE_ID_FORMS = (
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{16,}"
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
_OPAQUE_ID = re.compile(_OPAQUE_ID_FORMS, re.IGNORECASE)
# The same ids as a part of a segment or a name ("tok-<id>", "<id>.json", "Order <id>"):
# a run of them between characters that are not letters or digits, so a word that only
# contains hex letters ("feedface2024cafe1" inside "xfeedface2024cafe1y") stays whole.
_OPAQUE_ID_IN_TEXT = re.compile(
    rf"(?<![0-9A-Za-z])(?:{_OPAQUE_ID_FORMS})(?![0-9A-Za-z])", re.IGNORECASE
)
# Browsers also resolve "2130706433", "127.1" and "0x7f.0.0.1" as IPv4 addresses.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?")
_HOSTNAME = re.compile(r"[\w-]+(?:\.[\w-]+)*")
# pchar minus ";" (it would start path parameters) and "/" (it would split the segment).
_SEGMENT_SAFE = "!$&'()*+,=:@"


# The schemes a page or referrer is addressed by; any other "scheme" is read as path.
WEB_SCHEMES = frozenset({"http", "https"})


def url_marker(kind: PiiKind) -> str:
    """The marker used inside URLs: ``:email``, ``:card``..."""
    return f":{kind}"


def scrub_url(url: str, allowed_query_keys: frozenset[str] = DEFAULT_ALLOWED_QUERY_KEYS) -> str:
    """``url`` without fragment, userinfo, IP host, personal data or non-allow-listed keys.

    Works on absolute and relative URLs and never raises: a URL that cannot be parsed
    (unbalanced IPv6 brackets, unencodable characters) becomes ``""``.
    """
    try:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme and parts.scheme.lower() not in WEB_SCHEMES:
            # urlsplit takes any "letter, then letters, digits, +, - or ., then :" start
            # for a scheme, kept as sent ("card4111111111111111:/checkout",
            # "tel+14155552671:x"): what is not a web address is all path, and scrubbed.
            parts = urlsplit("/" + url)
        path = _scrub_path(parts.path)
        query = _scrub_query(parts.query, allowed_query_keys)
        return urlunsplit((parts.scheme, _scrub_netloc(parts), path, query, ""))
    except ValueError:  # includes UnicodeEncodeError from lone surrogates
        return ""


def referrer_host(url: str) -> str | None:
    """The lowercased host of a referrer, or None if absent, malformed or an IP address."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    host = (host or "").rstrip(".")
    if not _HOSTNAME.fullmatch(host) or _is_ip_host(host):
        return None
    return host


def _scrub_netloc(parts: SplitResult) -> str:
    # Rebuilt from hostname and port alone, which drops any "user:password@".
    host = parts.hostname  # already lowercased by urllib
    if not host:
        return ""
    decoded = unquote(host, errors="replace")
    if _is_ip_host(host):
        host = IP_HOST_MARKER
    elif redact_with(decoded, url_marker) != decoded:
        host = ":host"  # no host of a site holds a card number or an address: none kept
    port = _port(parts)
    return host if port is None else f"{host}:{port}"


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # "host:abc" or out of range: the port is dropped, the URL kept
        return None


def _is_ip_host(host: str) -> bool:
    if _NUMERIC_HOST.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def percent_decoded(text: str) -> str:
    """Percent-decoded until nothing changes (twice-encoded "%2540" hides an "@")."""
    for _ in range(3):
        once = unquote(text, errors="replace")
        if once == text:
            break
        text = once
    return text


def _scrub_path(path: str) -> str:
    # Path parameters (";jsessionid=...") carry session ids, never content worth keeping;
    # they go first, or "/4111;x=1/1111/..." would hide a card from the check below.
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    # A card written with slashes ("/4111/1111/1111/1111", spaces around them encoded)
    # spans segments, each too short to be one: the whole decoded path is looked at first.
    # So do phones written with one ("/415/555-2671", "/030/12345678").
    decoded = percent_decoded(path)
    found = _across_segments(decoded)
    if found:
        kept = replace_findings(decoded, found, url_marker)
        path = "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in kept.split("/"))
    return "/".join(_scrub_segment(segment) for segment in path.split("/"))


def _across_segments(path: str) -> list[Finding]:
    """Cards anywhere in ``path``, and phones with a "/" in them (any other is within a
    segment, found there), sorted and merged: a card and a phone overlapping are a card."""
    phones = [f for f in find_phone_numbers(path) if "/" in path[f.start : f.end]]
    merged: list[Finding] = []
    for f in sorted([*find_card_numbers(path), *phones], key=lambda f: (f.start, f.end)):
        if merged and f.start < merged[-1].end:
            last = merged[-1]
            kind = PiiKind.CARD if PiiKind.CARD in (last.kind, f.kind) else last.kind
            merged[-1] = Finding(kind, last.start, max(last.end, f.end))
        else:
            merged.append(f)
    return merged


def scrub_ids(text: str) -> str:
    """``text`` with every opaque id standing on its own in it replaced by ``:id``."""
    return _OPAQUE_ID_IN_TEXT.sub(ID_MARKER, text)


def _without_ipv4_forms(text: str) -> str:
    """``text`` without the IPv4 addresses no detector reads: one integer standing alone
    ("2130706433"), or four digit groups joined by dashes ("192-168-1-20", as hosts are
    judged). A run of groups is taken for an address only with a dash among them: dotted
    ones are found by find_ipv4 if four, and are versions ("1.2.3.4.5") if more."""
    if is_integer_ipv4(text.strip()):
        return url_marker(PiiKind.IPV4)
    return DIGIT_GROUPS.sub(_dashed_ipv4_marked, text)


def _dashed_ipv4_marked(match: re.Match[str]) -> str:
    number = match.group()
    if "-" in number and holds_ipv4_groups(number):
        return url_marker(PiiKind.IPV4)
    return number


def _scrub_segment(segment: str) -> str:
    decoded = percent_decoded(segment)
    if _OPAQUE_ID.fullmatch(decoded):
        return ID_MARKER
    # Personal data first: an id inside an address would leave the address's other half.
    scrubbed = _without_ipv4_forms(scrub_ids(redact_with(decoded, url_marker)))
    # An untouched segment keeps its original encoding rather than a normalised one.
    return segment if scrubbed == decoded else quote(scrubbed, safe=_SEGMENT_SAFE)


def _scrub_query(query: str, allowed_query_keys: frozenset[str]) -> str:
    allowed = {key.lower() for key in allowed_query_keys}
    kept = [
        (key, _scrub_value(value))
        for key, value in parse_qsl(query, keep_blank_values=True)
        if key.lower() in allowed
    ]
    return urlencode(kept, quote_via=quote, safe=":")


# Every "+" but one before a digit that opens the value or follows a space (read as "+"):
# a number's international prefix. "summer+sale+2024" is still "summer sale 2024".
_PLUS_AS_SPACE = re.compile(r"\+(?![0-9])|(?<=[^+])\+")


def _scrub_value(value: str) -> str:
    # parse_qsl reads "+" as a space, which cuts "jane+news@example.com" in two and hides
    # "+1 212 555 0123"'s leading "+": the value is looked at as sent first, then with
    # its "+" as spaces (grouped numbers), so what either reading finds is removed.
    # A "+" that opens a number stays one in the second reading: "%2B44%2020%207183..."
    # arrives as "+44 20 7183...", which the first reading sees as "+44+20+7183...".
    as_sent = percent_decoded(value).replace(" ", "+")
    scrubbed = _PLUS_AS_SPACE.sub(" ", redact_with(as_sent, url_marker))
    scrubbed = redact_with(scrubbed, url_marker)
    # Ids are as identifying in a query as in a path ("?ref=5f0c3a2e1b2c4d3e").
    return _without_ipv4_forms(_OPAQUE_ID.sub(ID_MARKER, scrubbed))
