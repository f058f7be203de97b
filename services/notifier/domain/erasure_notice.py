"""The params of the final ``erasure_done`` email of an account's erasure (P-16).

Once the stores are told to erase, accounts deletes the user: they can no longer sign
in to see the stages that remain. This email is the last thing they get, so it carries
what the status page would have shown: when backups become unreadable and when the
last one is gone, what is kept for a legal period, and the request's reference; and a
link that goes on showing the stages, without a sign-in, and then the certificate
(services/deletion/status_links.py).

Ids, dates, the link's secret and fixed wording only: nothing here is personal data.
Dates are UTC days (the renderer knows no recipient's time zone), written out so no
reader mistakes day for month.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from shared.events.catalogue.deletion import UNDER_LEGAL_HOLD, EraseSubject

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# What each category of retention.toml keeps, as the user should read it. Worded from
# docs/after-erasure.md: a label may not promise more deletion than its release does.
KEPT_RECORDS: dict[str, str] = {
    "financial_records": "financial records of your repairs (invoices), no longer linked"
    " to your account",
    "disclosure_log": "the record of whom your data was disclosed to with your consent,"
    " of that consent, and of this deletion",
    "security_audit": "the security log of our staff's access to your data (who, when and"
    " why, never the data itself), kept as long as that log",
    "fraud_abuse": "counters of failed sign-ins, kept against abuse under a fingerprint of"
    " your email address",
    "suppression_list": "your email opt-outs, kept under a fingerprint of your address so"
    " that it is never mailed against your wish",
}


def utc_day(moment: datetime) -> str:
    """``moment``'s day in UTC, e.g. ``7 March 2027``."""
    day = moment.astimezone(UTC)
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def kept_records(categories: Iterable[str]) -> str:
    """The kept categories in words, ``; ``-separated (empty: nothing is kept)."""
    return "; ".join(
        KEPT_RECORDS.get(c, c.replace("_", " ")) for c in categories if c != UNDER_LEGAL_HOLD
    )


def erasure_done_params(command: EraseSubject) -> dict[str, str]:
    """The params of the email ``command`` asks for; a date the command did not carry (a
    deletion service older than the fields) is left out, and the template says nothing
    of it. Without a link's secret, the email tells the user to write in quoting the
    reference."""
    params = {"request_id": str(command.request_id)}
    if command.status_key is not None:
        params["token"] = command.status_key  # a secret: dropped once the email is done
    if command.shredded_by is not None:
        params["shredded_by"] = utc_day(command.shredded_by)
    if command.backups_gone_by is not None:
        params["backups_gone_by"] = utc_day(command.backups_gone_by)
    kept = kept_records(command.retain_categories)
    if kept:
        params["kept"] = kept
    return params
