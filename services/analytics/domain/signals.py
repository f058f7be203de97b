"""Who must not be counted: decided at the edge, before anything is parsed or sent."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from shared.auth import Claims

# Age bands accounts may put in a token that mean "younger than 13".
UNDER_13_BANDS = frozenset({"under_13", "under-13", "<13", "0-12", "child", "minor_under_13"})


class Suppression(StrEnum):
    """Why a visit was dropped; the only trace of it is a daily count per reason."""

    DNT = "dnt"
    GPC = "gpc"
    UNDER_13 = "under_13"
    OPTED_OUT = "opted_out"
    UNVERIFIED_TOKEN = "unverified_token"  # noqa: S105 - a reason, not a secret


def header_suppression(headers: Mapping[str, str]) -> Suppression | None:
    """``DNT: 1`` or ``Sec-GPC: 1`` (header names are case-insensitive in ``headers``)."""
    if headers.get("dnt", "").strip() == "1":
        return Suppression.DNT
    if headers.get("sec-gpc", "").strip() == "1":
        return Suppression.GPC
    return None


def is_under_13(age_band: str | None) -> bool:
    return age_band is not None and age_band.strip().lower() in UNDER_13_BANDS


def claims_suppression(claims: Claims | None, token_sent: bool) -> Suppression | None:
    """A signed-in user under 13 or opted out is not tracked; nor is an unverifiable one.

    A token that fails verification cannot tell us the caller's age or choice, so the
    visit is dropped rather than risk counting a child.
    """
    if token_sent and claims is None:
        return Suppression.UNVERIFIED_TOKEN
    if claims is None:
        return None
    if is_under_13(claims.age_band):
        return Suppression.UNDER_13
    if claims.tracking_opt_out:
        return Suppression.OPTED_OUT
    return None
