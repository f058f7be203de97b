"""The anonymous visitor: hash(daily salt, site, truncated IP).

A visitor is a network (a /24 or /48) on a day, not a browser: the user agent is left
out, so that one client cannot pose as many visitors by changing it and lift a small
cell over the publication threshold k (P-20) with its own visits around someone else's.
People behind one network count once; a network served by several API processes (or
one restarted) counts once per process and day.

The salt is 32 random bytes held in this process's memory only, replaced when the UTC
day changes (and lost on restart): once replaced, no one, us included, can link a hash
to an address again. Consequences, by design: a visitor counts once per day per
process (replica or restart) that served them, and never across days. So each salt has
a random id, sent with every visit: a window whose visitors were hashed under s salts
holds at least 1/s of its distinct hashes in networks, and releases count that
(services.analytics.handlers), so a restart cannot lift a cell over k.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import NamedTuple

IPV4_PREFIX = 24
IPV6_PREFIX = 48


def truncate_ip(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address; "" if it is not one."""
    address = address.strip()
    octets = address.split(".")
    # Fast path for the common case, a dotted-quad IPv4 address, exactly as ipaddress
    # would accept it (ASCII decimal, 0-255, no leading zeros).
    if len(octets) == 4 and all(
        o.isascii() and o.isdigit() and len(o) <= 3 and (o == "0" or o[0] != "0") and int(o) < 256
        for o in octets
    ):
        return f"{octets[0]}.{octets[1]}.{octets[2]}.0"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def visitor_hash(salt: bytes, site: str, address: str) -> str:
    """32 hex characters; the address is truncated before it is hashed."""
    # Each part NUL-terminated, hashed in one update (the same digest as one per part).
    message = f"{site}\x00{truncate_ip(address)}\x00".encode("utf-8", "replace")
    return hashlib.blake2b(message, key=salt, digest_size=16).hexdigest()


class Salt(NamedTuple):
    key: bytes
    id: str  # random, published with each visit: which visits share a salt, no more


class DailySalt:
    """A random salt per UTC day, in memory only; yesterday's is forgotten."""

    def __init__(self, today: Callable[[], date] | None = None) -> None:
        self._today = today or (lambda: datetime.now(UTC).date())
        self._day: date | None = None
        self._salt = Salt(b"", "")

    def drawn(self) -> Salt:
        """Today's salt and its id."""
        day = self._today()
        if day != self._day:
            # The old salt is dropped here. The id is drawn apart: it says nothing of the key.
            self._salt = Salt(secrets.token_bytes(32), secrets.token_hex(8))
            self._day = day
        return self._salt

    def current(self) -> bytes:
        return self.drawn().key

    def forget_if_stale(self) -> bool:
        """Drop yesterday's salt now, not at the next visit: kept in memory past its day,
        it would let whoever reads the process link that day's hashes to networks (by
        trying every /24). True if one was dropped."""
        if self._day is None or self._day == self._today():
            return False
        self._salt, self._day = Salt(b"", ""), None
        return True
