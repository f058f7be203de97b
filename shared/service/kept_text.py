"""Free text an operator states that is kept for good (an audit purpose, a legal hold's
reason): it must name no one, since no erasure reaches it."""

from __future__ import annotations

from shared.observability import Problem
from shared.pii import find_pii


def refuse_personal_data(where: str = "body", **fields: str | None) -> None:
    """Refuse (422) text holding personal data, naming the field, never the value.

    What the detectors find only: addresses, phone numbers, card numbers, IP addresses,
    secrets. A name goes unseen: the forms say not to write one.
    """
    kinds = {name: _kinds(text) for name, text in fields.items() if text}
    holding = sorted(name for name, found in kinds.items() if found)
    if holding:
        raise Problem(
            422,
            "Personal data is not accepted here",
            "This text is kept for good: state it without personal data"
            " (addresses, phone numbers, card numbers, IP addresses, secrets). Remove it"
            " from: " + ", ".join(holding) + ".",
            slug="personal-data",
            errors=[
                {
                    "location": f"{where}.{name}",
                    "message": f"holds personal data ({', '.join(kinds[name])})",
                    "type": "personal_data",
                }
                for name in holding
            ],
        )


def _kinds(text: str) -> list[str]:
    return sorted({finding.kind.value for finding in find_pii(text)})
