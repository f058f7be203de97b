"""All detectors together: overlapping candidates become one finding per span of text.

Detectors disagree at the edges (a phone pattern may eat the first group of a card that
follows it, a token may contain a card). Overlapping candidates are therefore merged into
one span covering all of them, so nothing any detector saw is left half-visible, and the
span is labelled with the most sensitive kind among them: a card is never reported, nor
redacted, as a phone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.pii.cards import find_card_numbers
from shared.pii.emails import find_emails
from shared.pii.findings import Finding, PiiKind
from shared.pii.ip_addresses import find_ipv4, find_ipv6
from shared.pii.phones import find_phone_numbers
from shared.pii.tokens import find_tokens

Detector = Callable[[str], list[Finding]]

# Most sensitive first: this order names a merged span. Cards lead because of P-09.
KIND_PRIORITY: tuple[PiiKind, ...] = (
    PiiKind.CARD,
    PiiKind.EMAIL,
    PiiKind.PHONE,
    PiiKind.IPV6,
    PiiKind.IPV4,
    PiiKind.TOKEN,
)
_DETECTORS: tuple[Detector, ...] = (
    find_card_numbers,
    find_emails,
    find_phone_numbers,
    find_ipv6,
    find_ipv4,
    find_tokens,
)


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    kinds: frozenset[PiiKind]

    def finding(self) -> Finding:
        return Finding(min(self.kinds, key=KIND_PRIORITY.index), self.start, self.end)


def find_pii(text: str) -> list[Finding]:
    """Every kind of personal data in ``text``: non-overlapping findings sorted by start."""
    return [span.finding() for span in _spans(text)]


def find_pii_of_kinds(text: str, kinds: frozenset[PiiKind] | None = None) -> list[Finding]:
    """Like :func:`find_pii`, keeping spans where any detector saw one of ``kinds``.

    A kept span may be labelled with a kind outside ``kinds`` (an email glued to a card
    is reported as a card) because it is still the whole span that must go.
    """
    return [s.finding() for s in _spans(text) if kinds is None or not s.kinds.isdisjoint(kinds)]


def contains_pii(text: str, kinds: frozenset[PiiKind] | None = None) -> bool:
    """Whether ``text`` holds personal data (of one of ``kinds``, if given)."""
    return bool(find_pii_of_kinds(text, kinds))


def _spans(text: str) -> list[_Span]:
    candidates = sorted(
        (finding for detector in _DETECTORS for finding in detector(text)),
        key=lambda f: (f.start, f.end),
    )
    spans: list[_Span] = []
    for c in candidates:
        if spans and c.start < spans[-1].end:
            last = spans[-1]
            spans[-1] = _Span(last.start, max(last.end, c.end), last.kinds | {c.kind})
        else:
            spans.append(_Span(c.start, c.end, frozenset({c.kind})))
    return spans
