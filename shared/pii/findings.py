"""What a detector reports: the kind of personal data and where it sits in the text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class PiiKind(StrEnum):
    """Kinds of personal or secret data the platform refuses to store or publish."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    TOKEN = "token"  # noqa: S105 - the name of a kind, not a secret


@dataclass(frozen=True, slots=True)
class Finding:
    """A span ``text[start:end]`` holding data of ``kind``.

    The matched value is deliberately not stored: a finding may end up in logs or
    reprs, and it must not become the leak it reports.
    """

    kind: PiiKind
    start: int
    end: int


def merge_overlapping(findings: Iterable[Finding]) -> list[Finding]:
    """Findings of one kind, sorted, with overlapping ones joined into a single span.

    A detector may try several patterns on the same text; its caller wants each stretch
    of personal data once, and a joined span never leaves part of either match behind.
    """
    merged: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, f.end)):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.kind, last.start, max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged
