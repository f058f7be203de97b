"""Content chosen by the damage state of a user's devices (promise P-02).

The catalogue ships with the service (``catalogue.json``). With personalisation off, or
with no device, everyone gets the same generic list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, get_args

from shared.events.catalogue.accounts import DamageState

CATALOGUE = Path(__file__).with_name("catalogue.json")
DAMAGE_STATES: tuple[str, ...] = get_args(DamageState)


@cache
def catalogue() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CATALOGUE.read_text())
    missing = set(DAMAGE_STATES) - set(data["by_damage_state"])
    if missing:
        raise ValueError(f"catalogue lacks content for {sorted(missing)}")
    return data


def generic() -> list[dict[str, str]]:
    return list(catalogue()["generic"])


def content_for(damage_states: Iterable[str], personalisation: bool) -> list[dict[str, str]]:
    """Items for each distinct damage state (in first-seen order), else the generic list."""
    if not personalisation:
        return generic()
    items: list[dict[str, str]] = []
    seen: set[str] = set()
    for state in damage_states:
        if state in seen:
            continue
        seen.add(state)
        items.extend(catalogue()["by_damage_state"][state])
    return items or generic()
