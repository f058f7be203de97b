"""IPv4 and IPv6 addresses: a loose pattern finds candidates, then each is validated."""

from __future__ import annotations

import ipaddress
import re
import string

from shared.pii.findings import Finding, PiiKind

# The look-arounds refuse parts of longer dotted runs: "1.2.3.4.5" is a version, not an IP.
_IPV4 = re.compile(r"(?<![0-9])(?<![0-9]\.)[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])(?!\.[0-9])")
# Candidates only; ipaddress decides. The tail may be a dotted quad (``::ffff:192.0.2.1``)
# or a port of five digits (a client "host:port" without brackets, as servers log it).
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,8}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?|[0-9]{5}|[0-9A-Fa-f]{1,4})?"
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
    found = []
    for m in _IPV6.finditer(text):
        length = _address_length(m.group())
        if length is not None:
            found.append(Finding(PiiKind.IPV6, m.start(), m.start() + length))
    return found


def _address_length(candidate: str) -> int | None:
    """How much of ``candidate`` is an IPv6 address: all of it, or all but a ":port"
    after it ("2001:db8::1:54321", a client's "host:port" without brackets); None if
    neither is one."""
    if _is_ipv6_address(candidate):
        return len(candidate)
    head, colon, port = candidate.rpartition(":")
    if colon and port.isdigit() and _is_ipv6_address(head):
        return len(head)
    return None


def _is_ipv6_address(candidate: str) -> bool:
    # "::" alone is valid but names no host, and reads as a C++ scope far more often.
    if not any(char in string.hexdigits for char in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


# Four or more digit groups joined by dashes or dots: an IPv4 address may be among them,
# written with dashes as in ec2-3-8-1-9.compute-1.amazonaws.com, ip-10-0-0-1.ec2.internal
# or a path's /192-168-1-20/ (find_ipv4 reads dots only). Any decimal digit (\d): int()
# reads full-width ones too.
DIGIT_GROUPS = re.compile(r"\d+(?:[.-]\d+){3,}")
_GROUP_SEPARATOR = re.compile(r"[.-]")
# An IPv4 address written as one integer, as browsers and inet_aton read "2130706433"
# (127.0.0.1) or "0x7f000001". Only from 1.0.0.0 (16777216) up: below it lies 0.0.0.0/8
# ("this network"), never someone's host, and there lie most ordinary ids, counts and
# amounts ("/orders/12345"), which stay. From there to 2**32 - 1 a number standing alone
# cannot be told from an address (a nine- or ten-digit id, a Unix time): it is taken for
# one, as losing a visit's id costs less than keeping someone's address.
INTEGER_IPV4_MIN = 1 << 24
INTEGER_IPV4_END = 1 << 32
_DECIMAL = re.compile(r"\d{8,10}")
_HEXADECIMAL = re.compile(r"0[xX][0-9a-fA-F]{7,8}")


def holds_ipv4_groups(number: str) -> bool:
    """Whether four consecutive groups of ``number`` (a :data:`DIGIT_GROUPS` match) could
    be an IPv4 address: which four are the address cannot be told ("ec2-3-8-1-9"), so
    any of them counts."""
    groups = _GROUP_SEPARATOR.split(number)
    return any(
        all(len(group) <= 3 and int(group) <= 255 for group in groups[i : i + 4])
        for i in range(len(groups) - 3)
    )


def is_integer_ipv4(text: str) -> bool:
    """Whether ``text`` (all of it: a path segment, a query value) is an IPv4 address
    written as one integer from 1.0.0.0 to 255.255.255.255: decimal without a leading
    zero (an id such as "0012345678" stays), in any digits (URL hosts map full-width
    digits to ASCII), or ``0x`` hexadecimal."""
    if _HEXADECIMAL.fullmatch(text):
        value = int(text[2:], 16)
    elif _DECIMAL.fullmatch(text) and int(text[0]) != 0:
        value = int(text)
    else:
        return False
    return INTEGER_IPV4_MIN <= value < INTEGER_IPV4_END
