"""What a detector reports: the kind of personal data and where it sits in the text."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PiiKind(StrEnum):
    """Kinds of personal or secret data the platform refuses to store or publish."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Finding:
    """A span ``text[start:end]`` holding data of ``kind``.

    The matched value is deliberately not stored: a finding may end up in logs or
    reprs, and it must not become the leak it reports.
    """

    kind: PiiKind
    start: int
    end: int
