"""Email addresses, as people actually write them (not the full RFC 5322 grammar)."""

from __future__ import annotations

import re

from shared.pii.findings import Finding, PiiKind

# ``%40`` is accepted for ``@`` because addresses often arrive URL-encoded inside query
# strings. The look-behinds make a match start only at the beginning of a word run, which
# keeps the scan linear on long runs without any ``@``. An apostrophe (RFC 5322 atext) is
# taken between characters of the local part ("o'brien@"), never first: a quote before
# an address ('jane@example.com') is not part of it.
_EMAIL = re.compile(
    r"(?<![\w.%+-])(?<![\w%+-]')"
    r"[\w%+-]+(?:[.'][\w%+-]+)*"
    r"(?:@|%40)"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
    r"(?:[Xx][Nn]--[A-Za-z0-9-]{1,59}|[^\W\d_]{2,63})"
)


def find_emails(text: str) -> list[Finding]:
    """Email addresses in ``text`` (plain or with ``%40``), sorted by start."""
    return [Finding(PiiKind.EMAIL, m.start(), m.end()) for m in _EMAIL.finditer(text)]
