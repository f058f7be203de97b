"""Whom an email's greeting names ("Hello {name},"): pure.

The account's name is whatever its holder typed at sign-up, and anyone can sign up with
someone else's address: printed in an email to an address nobody has confirmed, it is
a message of the stranger's choosing sent from our domain ("Claim your free iPhone at
evil.com"). So it is printed only to a confirmed address, and never when it reads like
a link or a domain; the greeting then names no one. Such a name must not refuse the
email either: a link in it would have the compliance gate refuse every email of that
account, breach notices included.
"""

from __future__ import annotations

from shared.email_links import looks_like_link

NO_NAME = "there"  # "Hello there,": a greeting that names no one
GUARDIAN = "parent or guardian"
# Emails that go to an address not yet confirmed: asking to confirm it is their point.
UNCONFIRMED = frozenset({"verify_email", "verify_new_email", "parental_consent"})


def greeting_name(template: str, recipient: str, active: bool, name: str) -> str:
    """What the greeting prints for an email of ``template`` to ``recipient`` (user,
    guardian, pending, previous), the account's card being ``active`` (its address
    confirmed) and its name ``name``."""
    if recipient == "guardian":
        return GUARDIAN
    if recipient == "pending" or template in UNCONFIRMED or not active:
        return NO_NAME
    if not name.strip() or looks_like_link(name):
        return NO_NAME
    return name
