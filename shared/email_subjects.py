"""When an email subject misleads (CAN-SPAM; P-28): the rules every subject is held to.

The notifier's compliance gate refuses an email whose subject breaks one; accounts holds
the titles operators type (announcements, incidents), which become subjects, to the same
rules when they are typed, so a title the gate would refuse is a 422 for the operator,
not an email dead-lettered for every user later. Pure: text in, reasons out.

A subject is read as a recipient reads it (:func:`displayed`, :func:`comparable`): a
fullwidth "Re:", one with a zero-width space inside, or one written as an RFC 2047
encoded word (``=?utf-8?q?Re=3A?=``), is "Re:" to them.
"""

from __future__ import annotations

import email.policy
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

MAX_SUBJECT_CHARS = 150

#: When a claim the rule finds is allowed: never; when the body makes it too; or when
#: the body makes it in a security notice (urgency and account threats are real there).
Allowed = Literal["never", "body", "security_notice"]


@dataclass(frozen=True)
class SubjectRule:
    name: str
    pattern: re.Pattern[str]
    allowed: Allowed


# Reply and forward prefixes as localised mail clients write them: English, German,
# Dutch, the Nordic languages, French, Italian, Spanish, Portuguese, Polish, Hungarian,
# Turkish, Welsh, Indonesian, Greek, Hebrew, Chinese.
_THREAD_PREFIXES = "|".join(
    (
        *("re", "fw", "fwd", "aw", "wg", "antw", "doorst", "sv", "vs", "vb", "vl", "fs"),
        *("tr", "r", "rif", "i", "rv", "res", "enc", "odp", "pd", "vá", "továbbítás"),
        *("ynt", "ilt", "İlt", "atb", "yml", "bls", "trs"),
        *("απ", "σχετ", "πρθ", "השב", "הועבר", "回复", "回覆", "答复", "转发", "轉寄"),
    )
)

SUBJECT_RULES: tuple[SubjectRule, ...] = (
    # We never answer in a thread by email: a reply or forward prefix is always fake.
    SubjectRule(
        "fake reply or forward prefix",
        re.compile(rf"^\W*({_THREAD_PREFIXES})\s*(\[\d+\]|\(\d+\))?\s*:", re.I),
        "never",
    ),
    SubjectRule(
        "prize or winnings claim",
        re.compile(r"\b(you'?ve\s+won|you\s+have\s+won|winner|prize|lottery|jackpot)\b", re.I),
        "never",
    ),
    SubjectRule(
        "payment claim (iMT takes no payments)",
        re.compile(r"\b(invoice|payment (due|failed|overdue)|refund issued)\b", re.I),
        "never",
    ),
    SubjectRule("free offer not in the body", re.compile(r"\bfree\b", re.I), "body"),
    SubjectRule("discount not in the body", re.compile(r"\b\d{1,3}\s?% off\b", re.I), "body"),
    SubjectRule(
        "urgency outside a security notice",
        re.compile(r"\b(urgent|action required|final notice|immediately)\b", re.I),
        "security_notice",
    ),
    SubjectRule(
        "account threat outside a security notice",
        re.compile(r"\baccount (suspended|locked|closed|disabled|compromised)\b", re.I),
        "security_notice",
    ),
)

# Apostrophes and quotation marks that read like ASCII ones (NFKC keeps these apart).
_QUOTES = str.maketrans(
    dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2035\u02bc\u02b9\u00b4`", "'")
    | dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u2036\u00ab\u00bb", '"')
)


def displayed(subject: str) -> str:
    """``subject`` as a mail client shows it: RFC 2047 encoded words decoded, as the
    email package reads a Subject header (adjacent words joined, an unknown charset read
    as ASCII). A title typed as ``=?utf-8?q?Re=3A_Your_order?=`` is all ASCII: put in a
    Subject as it is, any client shows "Re: Your order". The notifier's mailer encodes
    it, so it would show as typed, but the rules hold whatever sends it (P-31)."""
    if "=?" not in subject:  # no encoded word: shown as it is
        return subject
    return str(email.policy.default.header_factory("Subject", subject))


def comparable(text: str) -> str:
    """``text`` as a reader sees it, for the subject rules: invisible format characters
    (zero-width spaces and joiners, bidi marks: category Cf) dropped, compatibility
    forms folded by NFKC (fullwidth letters and colon, ligatures), quote variants made
    ASCII. Otherwise a fullwidth "Re:", or one with a zero-width space inside, reads as
    "Re:" to the recipient but matches no rule."""
    if not text.isascii():
        visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
        text = unicodedata.normalize("NFKC", visible)
    return text.translate(_QUOTES)


def subject_problems(
    subject: str, *, security_notice: bool, body_says: Callable[[str], bool]
) -> list[str]:
    """Why ``subject`` misleads (empty: it does not). ``body_says(claim)``: whether the
    body makes the claim too (the claim as found in the comparable subject, casefolded);
    ``security_notice``: the email is one (category account_security)."""
    readable = comparable(displayed(subject))
    if not readable.strip():  # blank, or only invisible characters
        return ["subject is empty"]
    problems = []
    if len(subject) > MAX_SUBJECT_CHARS:
        problems.append(f"subject longer than {MAX_SUBJECT_CHARS} characters")
    if "\n" in subject or "\r" in subject:
        problems.append("subject contains a line break")
    for rule in SUBJECT_RULES:
        match = rule.pattern.search(readable)
        if match is None or rule.allowed == "never":
            if match is not None:
                problems.append(f"misleading subject: {rule.name}")
            continue
        claim = match.group(0).casefold()
        supported = body_says(claim) and (rule.allowed == "body" or security_notice)
        if not supported:
            problems.append(f"misleading subject: {rule.name}")
    return problems


def body_makes(claim: str, *bodies: str) -> bool:
    """Whether every one of ``bodies``, read as the subject is, makes ``claim``."""
    return all(claim in comparable(body).casefold() for body in bodies)
