"""What accounts holds about a user, and which of it a third party may ever receive.

Promise P-19: a processor gets only fields classified non-sensitive, whatever a
registration asks for; P-18: nobody gets anything without the user's consent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

Sensitivity = Literal["sensitive", "non_sensitive"]

# Fields a recipient can be registered for, and their classification.
DISCLOSABLE_FIELDS: dict[str, Sensitivity] = {
    "user_id": "non_sensitive",
    "email": "non_sensitive",
    "name": "non_sensitive",
    "locale": "non_sensitive",
    "device_models": "non_sensitive",
    "device_damage_states": "non_sensitive",
    "age_band": "sensitive",  # reveals children
    "birth_date": "sensitive",
    "guardian_email": "sensitive",
    "requests": "sensitive",  # free text about the user's life
}


def is_sensitive(field: str) -> bool:
    return DISCLOSABLE_FIELDS.get(field, "sensitive") == "sensitive"


def unknown_positions(fields: Sequence[str]) -> list[int]:
    """Where in ``fields`` the entries no recipient can receive are (0-based)."""
    return [i for i, name in enumerate(fields) if name not in DISCLOSABLE_FIELDS]


def refused_for(kind: str, fields: Iterable[str]) -> list[str]:
    """Fields a recipient of ``kind`` may never be registered for."""
    if kind == "processor":
        return sorted(f for f in set(fields) if is_sensitive(f))
    return []


# In every record a recipient receives, whatever it was registered for: an erasure
# forwarded to a recipient names the subject by this id alone (recipients.py), so a
# record without it could never be found and erased there (P-19).
ALWAYS_DISCLOSED = "user_id"


def with_user_id(allowed: Iterable[str]) -> list[str]:
    """``allowed`` as a recipient gets it: ``user_id`` first, each field once."""
    return list(dict.fromkeys([ALWAYS_DISCLOSED, *allowed]))


def disclosed(kind: str, allowed: Iterable[str], record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``record`` a recipient receives: its ``user_id`` and the allowed
    fields, never sensitive to a processor (checked again here, whatever was
    registered)."""
    keep = [
        f
        for f in with_user_id(allowed)
        if f in record and not (kind == "processor" and is_sensitive(f))
    ]
    return {f: record[f] for f in keep}
