"""Replace personal data in text by markers that say what was removed, never what it was."""

from __future__ import annotations

from collections.abc import Callable

from shared.pii.detectors import KIND_PRIORITY, find_pii_of_kinds
from shared.pii.findings import Finding, PiiKind

Marker = Callable[[PiiKind], str]


def text_marker(kind: PiiKind) -> str:
    """The marker used in free text: ``[REDACTED:card]``."""
    return f"[REDACTED:{kind}]"


def redact(text: str, kinds: frozenset[PiiKind] | None = None) -> str:
    """``text`` with every finding (of ``kinds``, if given) replaced by ``[REDACTED:<kind>]``."""
    return redact_with(text, text_marker, kinds)


def redact_with(text: str, marker: Marker, kinds: frozenset[PiiKind] | None = None) -> str:
    """Like :func:`redact`, with the marker chosen by ``marker`` (URLs need another one)."""
    return replace_findings(text, _whole_numbers(text, find_pii_of_kinds(text, kinds)), marker)


def _whole_numbers(text: str, findings: list[Finding]) -> list[Finding]:
    # A finding may end inside a run of digits: the token pattern knows ASCII digits only,
    # so it stops where full-width ones go on. What it left would be a number of its own,
    # possibly a card; the run was one number, so it goes whole.
    widened: list[Finding] = []
    for finding in findings:
        start, end = finding.start, finding.end
        while 0 < start < len(text) and text[start - 1].isdecimal() and text[start].isdecimal():
            start -= 1
        while 0 < end < len(text) and text[end - 1].isdecimal() and text[end].isdecimal():
            end += 1
        if widened and start < widened[-1].end:
            last = widened[-1]
            kind = min(last.kind, finding.kind, key=KIND_PRIORITY.index)
            widened[-1] = Finding(kind, last.start, max(end, last.end))
        else:
            widened.append(Finding(finding.kind, start, end))
    return widened


def replace_findings(text: str, findings: list[Finding], marker: Marker) -> str:
    """``text`` with each of the sorted, non-overlapping ``findings`` replaced by its marker."""
    pieces: list[str] = []
    cursor = 0
    for finding in findings:
        pieces += [text[cursor : finding.start], marker(finding.kind)]
        cursor = finding.end
    pieces.append(text[cursor:])
    return "".join(pieces)
