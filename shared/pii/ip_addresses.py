"""IPv4 and IPv6 addresses: a loose pattern finds candidates, then each is validated."""

from __future__ import annotations

import ipaddress
import re
import string

from shared.pii.findings import Finding, PiiKind

# The look-arounds refuse parts of longer dotted runs: "1.2.3.4.5" is a version, not an IP.
_IPV4 = re.compile(r"(?<![0-9])(?<![0-9]\.)[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])(?!\.[0-9])")
# Candidates only; ipaddress decides. The tail may be a dotted quad (``::ffff:192.0.2.1``).
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,8}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![0-9A-Za-z:])"
)


def find_ipv4(text: str) -> list[Finding]:
    """Dotted-quad IPv4 addresses with octets 0-255 (leading zeros tolerated)."""
    return [
        Finding(PiiKind.IPV4, m.start(), m.end())
        for m in _IPV4.finditer(text)
        if all(int(octet) <= 255 for octet in m.group().split("."))
    ]


def find_ipv6(text: str) -> list[Finding]:
    """IPv6 addresses in any textual form ``ipaddress`` accepts, compressed or not."""
    return [
        Finding(PiiKind.IPV6, m.start(), m.end())
        for m in _IPV6.finditer(text)
        if _is_ipv6_address(m.group())
    ]


def _is_ipv6_address(candidate: str) -> bool:
    # "::" alone is valid but names no host, and reads as a C++ scope far more often.
    if not any(char in string.hexdigits for char in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True
