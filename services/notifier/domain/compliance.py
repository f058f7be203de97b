"""The compliance gate every email passes before any transport sees it (P-27..P-31).

Pure: it reads a fully built :class:`OutgoingEmail` and answers the reasons to refuse
it (none: it may leave). A refused email is never sent; it is dead-lettered with the
reasons. The rules follow the FTC's CAN-SPAM guide and RFC 8058:

* From and Reply-To are the configured business addresses (marketing has its own);
* the subject is not misleading: no fake ``RE:``/``FW:``, no prize claims, no claims
  the body does not support (a small rule set, below);
* every email carries ``List-Unsubscribe`` (https + mailto), the one-click
  ``List-Unsubscribe-Post`` and ``List-Id``, and an unsubscribe link at the bottom;
* marketing is labelled as an advertisement and carries the postal address;
* links point only at the platform's own hosts (no third-party offers, P-21): every
  link a mail client would make, with any scheme or none ("www.x.com", "x.com/offer"),
  in the text part and in the HTML as it reads and in its tags; a link whose host
  cannot be read is refused like one that points elsewhere;
* the category is one of the notifier's categories (P-27).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from html import unescape

from shared import email_links as links
from shared import email_subjects

CATEGORIES: tuple[str, ...] = (
    "transactional",
    "account_security",
    "service_announcement",
    "policy_change",
    "marketing",
)
ONE_CLICK = "List-Unsubscribe=One-Click"
FOOTER_WINDOW = 1200  # the unsubscribe link must sit within this many final characters


@dataclass(frozen=True)
class GatePolicy:
    """What the gate holds every email to (from configuration)."""

    from_transactional: str
    from_marketing: str
    reply_to: str
    postal_address: str
    ad_label: str
    list_id: str
    link_hosts: frozenset[str]


@dataclass(frozen=True)
class OutgoingEmail:
    """An email as it would leave: envelope, headers and both bodies."""

    category: str
    sender: str
    reply_to: str
    to: str
    subject: str
    text: str
    html: str
    unsubscribe_url: str
    headers: Mapping[str, str] = field(default_factory=dict)


_LIST_UNSUBSCRIBE = re.compile(r"^<(https://[^>\s]+)>,\s*<(mailto:[^>\s]+)>$")
_TAG = re.compile(r"<[^>]+>")


def _spaced(text: str) -> str:
    # str.split's whitespace is re's \s: the same runs, collapsed many times faster.
    return " ".join(text.split())


# Several checks read the same email's HTML (the subject's claims, the marketing label,
# the links): read once per email.
@functools.lru_cache(maxsize=4)
def _visible_text(html: str) -> str:
    """What a reader sees of ``html``: tags out, then entities read (in that order, so an
    escaped ``&lt;b&gt;`` stays text), so that it compares with plain text: the template
    escapes ``&`` in a postal address as ``&amp;``."""
    return _spaced(unescape(_TAG.sub(" ", html)))


@functools.lru_cache(maxsize=64)
def _same_address(header: str, configured: str) -> bool:
    # Memoised: both are business addresses from configuration (never a recipient's),
    # the same on every email, and parseaddr is slow.
    parsed = parseaddr(header)
    return parsed == parseaddr(configured) and parsed[1] != ""


def subject_problems(email: OutgoingEmail) -> list[str]:
    """Why the subject is misleading (empty: it is not): the shared subject rules, with
    a claim supported when the text and the visible HTML both make it."""
    html = _visible_text(email.html)
    return email_subjects.subject_problems(
        email.subject,
        security_notice=email.category == "account_security",
        body_says=lambda claim: email_subjects.body_makes(claim, email.text, html),
    )


def check(email: OutgoingEmail, policy: GatePolicy) -> list[str]:
    """Every reason to refuse ``email``; an empty list lets it leave."""
    reasons: list[str] = []
    if email.category not in CATEGORIES:
        reasons.append(f"category {email.category!r} is not a notifier category")
    expected_from = (
        policy.from_marketing if email.category == "marketing" else policy.from_transactional
    )
    if not _same_address(email.sender, expected_from):
        reasons.append("From is not the configured business address of this category")
    if not _same_address(email.reply_to, policy.reply_to):
        reasons.append("Reply-To is not the configured business address")
    reasons.extend(subject_problems(email))
    reasons.extend(_header_problems(email, policy))
    reasons.extend(_footer_problems(email))
    if email.category == "marketing":
        reasons.extend(_marketing_problems(email, policy))
    reasons.extend(_link_problems(email, policy))
    return reasons


def _header_problems(email: OutgoingEmail, policy: GatePolicy) -> list[str]:
    problems = []
    match = _LIST_UNSUBSCRIBE.match(email.headers.get("List-Unsubscribe", ""))
    if match is None:
        problems.append("List-Unsubscribe must be <https://...>, <mailto:...>")
    elif match.group(1) != email.unsubscribe_url:
        problems.append("List-Unsubscribe does not point at the unsubscribe link")
    if email.headers.get("List-Unsubscribe-Post") != ONE_CLICK:
        problems.append("List-Unsubscribe-Post must be List-Unsubscribe=One-Click (RFC 8058)")
    if email.headers.get("List-Id") != policy.list_id:
        problems.append("List-Id is missing or not the configured one")
    return problems


def _footer_problems(email: OutgoingEmail) -> list[str]:
    problems = []
    url = email.unsubscribe_url
    if not url.startswith("https://"):
        problems.append("the unsubscribe link is not https")
    if url not in email.text[-FOOTER_WINDOW:]:
        problems.append("the text part has no unsubscribe link at the bottom")
    if url not in email.html[-FOOTER_WINDOW * 2 :]:
        problems.append("the HTML part has no unsubscribe link at the bottom")
    return problems


def _marketing_problems(email: OutgoingEmail, policy: GatePolicy) -> list[str]:
    # Plain text against plain text: the configured values and the text part as they
    # are, the HTML part as it reads; spacing aside, which line breaks may change.
    problems = []
    text, html_text = _spaced(email.text), _visible_text(email.html)
    label, address = _spaced(policy.ad_label), _spaced(policy.postal_address)
    # Blank text is in every email: no label or address configured labels nothing.
    if not label or label not in text or label not in html_text:
        problems.append("marketing email is not labelled as an advertisement")
    if not address or address not in text or address not in html_text:
        problems.append("marketing email lacks the business's postal address")
    return problems


UNREADABLE_LINK = (
    "a link whose host cannot be read (such as a placeholder in brackets, https://[...],"
    " or one with a backslash): where it leads cannot be checked"
)


def _link_problems(email: OutgoingEmail, policy: GatePolicy) -> list[str]:
    # The HTML as it reads, and its tags, where hrefs are (entities read: a browser
    # follows "https&#58;//..."). Operators' text can hold a link whose host urlsplit
    # cannot read, or one it reads otherwise than a browser: refused, not raised (a gate
    # that raised would have the email retried to the last attempt). The link itself
    # stays out of the reason, which is stored and published: it may be one of ours
    # with a token in it.
    tags = unescape(" ".join(_TAG.findall(email.html)))
    # Our own configured words are no link of a third party's, whatever a client makes
    # of them ("Pty.Ltd", "P.O.Box": .ltd and .box are top-level domains).
    ours = [_spaced(w) for w in (policy.postal_address, policy.ad_label) if w.strip()]
    parts = [_spaced(email.text), _visible_text(email.html)]
    for words in ours:
        parts = [part.replace(words, " ") for part in parts]
    found = [links.hosts(part) for part in (*parts, tags)]
    hosts = frozenset[str]().union(*(f.found for f in found))
    foreign = sorted(h for h in hosts if h not in policy.link_hosts)
    problems = [f"links to third-party hosts: {', '.join(foreign)}"] if foreign else []
    return [*problems, UNREADABLE_LINK] if any(f.unreadable for f in found) else problems
