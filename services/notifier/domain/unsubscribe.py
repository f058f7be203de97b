"""Unsubscribe tokens: opaque, HMAC-signed, never expiring (CAN-SPAM asks >= 30 days).

A key can be replaced (a leak, a rotation) without breaking the links already mailed:
the keys it replaced still verify (``IMT_NOTIFIER_UNSUBSCRIBE_PREVIOUS_SECRETS``).

A token names an address by its blind index (never the address) and a scope: one
category, or ``all`` (every email). It needs no login: holding the link is the proof,
as RFC 8058's one-click model intends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.notifier.domain.compliance import CATEGORIES

SCOPES: tuple[str, ...] = ("all", *CATEGORIES)
VERSION = 1
INDEX_BYTES = 32
MAC_BYTES = 16


class InvalidUnsubscribeToken(ValueError):
    """A token that was not issued by us (or was altered)."""


@dataclass(frozen=True)
class Unsubscribe:
    email_index: bytes
    scope: str


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"imt-unsubscribe\x00" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def issue(secret: bytes, email_index: bytes, scope: str) -> str:
    if len(email_index) != INDEX_BYTES:
        raise ValueError("an email blind index is 32 bytes")
    payload = bytes([VERSION, SCOPES.index(scope)]) + email_index
    return base64.urlsafe_b64encode(payload + _mac(secret, payload)).rstrip(b"=").decode()


def verify(keys: Sequence[bytes], token: str) -> Unsubscribe:
    """The request ``token`` makes, if one of ``keys`` signed it: the current key first,
    then those it replaced (a link must work for 30 days after its email, CAN-SPAM)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeToken("not a token") from None
    if len(raw) != 2 + INDEX_BYTES + MAC_BYTES or raw[0] != VERSION:
        raise InvalidUnsubscribeToken("not a token")
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    signed = any(hmac.compare_digest(mac, _mac(key, payload)) for key in keys)
    if not signed or payload[1] >= len(SCOPES):
        raise InvalidUnsubscribeToken("not a token")
    return Unsubscribe(payload[2:], SCOPES[payload[1]])


# "unsubscribe <token>", as a mail client fills it in from the List-Unsubscribe mailto
# (whatever it puts around it: "Re:", quotes); "unsubscribe all <token>" asks for every
# email to stop, as the policy's "email us ... from ALL correspondence" promises.
_MAILTO_SUBJECT = re.compile(r"\bunsubscribe\s+(?:(all)\s+)?([A-Za-z0-9_-]{20,200})\b", re.I)


@dataclass(frozen=True)
class MailedRequest:
    token: str
    everything: bool  # "all": every category, whatever the token's


def mailed_request(subject: str) -> MailedRequest | None:
    """The unsubscribe request in a mailed reply's subject, if there is one."""
    found = _MAILTO_SUBJECT.search(subject)
    if found is None:
        return None
    return MailedRequest(found.group(2), everything=found.group(1) is not None)
