"""What in an email's words a mail client makes a link of, and the host it leads to: pure.

Clients link more than ``https://`` URLs: any scheme, ``www.`` names and bare names that
end in a top-level domain ("evil.com/offer"; not "report.pdf"), read as they show them
(fullwidth forms folded, invisible format characters dropped, an ideographic full stop
taken for a dot). An address is no link: it is written to, not visited. The greeting
prints no name that reads like a link (services/notifier/domain/greeting.py); the
notifier's compliance gate finds the host of every link in an email and refuses any host
not ours (P-21), and accounts refuses an operator's notice linking elsewhere as it is
typed, not found later as an email dead-lettered for every user.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

#: The hosts an email may link to unless configured (IMT_NOTIFIER_LINK_HOSTS): ours.
DEFAULT_LINK_HOSTS = ("localhost", "127.0.0.1", "phonedoctorbiz.com", "www.phonedoctorbiz.com")

# A scheme, "www.", a dotted IPv4 address, or a dot between a letter or digit and two
# letters (a host name: "evil.com", "xn--80ak6aa92e.com"). Some real names and words
# match ("St.John", "Node.js"): a greeting then names no one, which costs nothing. Where
# a host is looked for (:func:`hosts`), such a name counts only if it reads as one to a
# mail client (:func:`reads_as_host`).
LINK = re.compile(r"://|www\.|\d{1,3}(\.\d{1,3}){3}|[^\W_]\.[^\W\d_]{2}", re.I)
# Dots that mail clients and browsers take for one in a host name (IDNA).
_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))

# A URL with a scheme, whatever the scheme, up to where text around a link ends it.
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]*", re.I)
_URL_END = ".,;:!?"  # punctuation that ends a sentence, not the link before it
# Where a link without a scheme may be: a run of what is not space, quote or bracket.
_WORD = re.compile(r"[^\s\"'<>()]+")
_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)+")  # a dotted name, which may be a host
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_PATH = re.compile(r"(?::\d*)?[/?#]")  # after a host: its port, then its path


def shown(text: str) -> str:
    """``text`` as a mail client shows it: without invisible format characters (category
    Cf: "evil\\u200b.com" is shown as evil.com), compatibility forms folded by NFKC
    (fullwidth letters and stops), ideographic full stops as dots."""
    if text.isascii():  # nothing to fold (the common case: most emails are ASCII)
        return text
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible).translate(_DOTS)


def looks_like_link(text: str) -> bool:
    """Whether a client could make a link, or a domain a reader would type, of ``text``."""
    return LINK.search(shown(text)) is not None


@dataclass(frozen=True)
class Hosts:
    """The hosts the links of a text lead to, casefolded; ``unreadable``: a link whose
    host cannot be read (it could lead anywhere)."""

    found: frozenset[str]
    unreadable: bool


def hosts(text: str) -> Hosts:
    """Where every link in ``text`` leads, read a run of non-space characters at a time:
    a link never spans a space, and most runs hold none (no dot but a sentence's full
    stop, no "://", all ASCII), which str methods tell at a fraction of a regular
    expression's cost. The same runs come in every recipient's copy of a notice: each
    is read once (:func:`_run_hosts` is memoised)."""
    found: list[str | None] = []
    for run in text.split():
        if "." in run.rstrip(_RUN_END) or "://" in run or not run.isascii():
            found += _run_hosts(run)
    return Hosts(frozenset(h for h in found if h is not None), None in found)


_RUN_END = ".,;:!?)]\"'"  # what ends a sentence or a clause after its last word


@lru_cache(maxsize=4096)
def _run_hosts(run: str) -> tuple[str | None, ...]:
    """The hosts of the links in ``run`` (None: one that cannot be read). URLs with a
    scheme are read as written first (urlsplit refuses a host that NFKC would turn into a
    delimiter: unreadable, as for a browser); the rest is then read as shown, for the
    URLs folding makes (a fullwidth "https://") and the links without a scheme."""
    urls, rest = _split_urls(run)
    if not rest.isascii():
        folded, rest = _split_urls(shown(rest))
        urls += folded
    found = [_url_host(url) for url in urls]
    for word in _WORD.findall(rest):
        if LINK.search(word) is not None:
            found += _bare_hosts(word)
    return tuple(found)


def _split_urls(text: str) -> tuple[list[str], str]:
    """The URLs with a scheme in ``text``, and the text without them."""
    if "://" not in text:
        return [], text
    return _URL.findall(text), _URL.sub(" ", text)


def _url_host(url: str) -> str | None:
    """The host of a URL with a scheme; None when it cannot be read for sure."""
    # Browsers take "\" for "/" where urlsplit does not: in "https://evil.example\@ours/"
    # urlsplit reads the host after "@", a browser goes to evil.example.
    if "\\" in url:
        return None
    try:
        host = urlsplit(url.rstrip(_URL_END)).hostname
    except ValueError:  # a bracketed host that is no IP literal, a delimiter after NFKC
        return None
    return host.casefold().rstrip(".") if host else None


def _bare_hosts(word: str) -> list[str | None]:
    """The hosts a word without a scheme names: every dotted name a mail client makes a
    link of (:func:`reads_as_host`), except a mailbox's local part ("jane.doe@") and
    domain (an address is written to, not visited), and what follows a host's "/" (its
    path: "ours.com/guide.pdf"). None: such a word holds a backslash, which a browser
    reads as "/" and a mail client may not, so where it leads cannot be told."""
    found: list[str | None] = []
    position = 0
    while (name := _NAME.search(word, position)) is not None:
        position = name.end()
        in_mailbox = word.startswith("@", position) or word[: name.start()].endswith("@")
        if in_mailbox or not reads_as_host(name.group()):
            continue
        found.append(name.group().strip("-").casefold())  # a label never ends in "-"
        if _PATH.match(word, position):
            break
    return [None] if found and "\\" in word else found


def reads_as_host(name: str) -> bool:
    """Whether mail clients make a link of a dotted ``name`` written without a scheme:
    "www." names, IPv4 addresses, and names ending in a top-level domain (IANA's list,
    as clients check): "deals.example.com" and "done.Please" (a missing space: .please
    is none) differ there, as do "report.pdf", "Node.js" and "v2.beta" (no such TLD)."""
    if _IPV4.fullmatch(name) or name.casefold().startswith("www."):
        return True
    last = name.rstrip("-").rsplit(".", 1)[-1]
    try:
        label = last.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return label.upper() in _top_level_domains()


@cache
def _top_level_domains() -> frozenset[str]:
    """IANA's list of top-level domains, shipped beside this module (its first line says
    which version: refresh it from https://data.iana.org/TLD/tlds-alpha-by-domain.txt)."""
    lines = (Path(__file__).parent / "tlds-alpha-by-domain.txt").read_text().splitlines()
    return frozenset(line.strip() for line in lines if line and not line.startswith("#"))


def foreign_hosts(text: str, ours: frozenset[str]) -> list[str]:
    """The hosts ``text`` links to that are not ``ours`` (casefolded), sorted; a link
    whose host cannot be read is named by ``?``: it could lead anywhere."""
    found = hosts(text)
    foreign = sorted(h for h in found.found if h not in ours)
    return [*foreign, "?"] if found.unreadable else foreign
