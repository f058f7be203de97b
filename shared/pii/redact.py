"""Replace personal data in text by markers that say what was removed, never what it was."""

from __future__ import annotations

from collections.abc import Callable

from shared.pii.detectors import find_pii_of_kinds
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
    return replace_findings(text, find_pii_of_kinds(text, kinds), marker)


def replace_findings(text: str, findings: list[Finding], marker: Marker) -> str:
    """``text`` with each of the sorted, non-overlapping ``findings`` replaced by its marker."""
    pieces: list[str] = []
    cursor = 0
    for finding in findings:
        pieces += [text[cursor : finding.start], marker(finding.kind)]
        cursor = finding.end
    pieces.append(text[cursor:])
    return "".join(pieces)
