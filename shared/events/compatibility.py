"""Released event schemas, and the changes a released version may still take.

Once an event type (``profile.updated.v1``) has been released, consumers in other
services are written against it, and Kafka keeps its records (14 days; for ever on a
compacted topic). So a change must leave every reader able to read every record:

* new readers read old records (a replay, a compacted topic), and
* old readers, still running during a rolling deploy, read new records.

Only one kind of change keeps both: adding an optional field. Anything else (a field
removed or newly required, a type, format, enum value or constraint changed) needs a
new version, ``profile.updated.v2``, published next to the old one while consumers
move over. Texts (titles, descriptions) and defaults may change.

The schema of each released version is kept in ``shared/events/released/<type>.json``.
``make docs`` records the types not recorded yet and never rewrites one; the unit tests
hold every registered type to its record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.events.registry import Event, registered_events

RELEASED_DIR = Path(__file__).resolve().parent / "released"
#: Words of a schema that change no record's validity.
_TEXTS = frozenset({"title", "description", "examples", "default", "$comment"})


def released_schema(cls: type[Event]) -> dict[str, Any]:
    """The schema recorded for an event type: ``$ref``s inlined, texts kept."""
    schema = cls.model_json_schema()
    inlined: dict[str, Any] = _inlined(schema, schema.get("$defs", {}))
    return inlined


def record_text(cls: type[Event]) -> str:
    return json.dumps(released_schema(cls), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def record_path(wire_type: str) -> Path:
    return RELEASED_DIR / f"{wire_type}.json"


def unrecorded() -> dict[Path, str]:
    """Record files of the registered types that have none yet (what ``make docs`` adds)."""
    return {
        record_path(wire): record_text(cls)
        for wire, cls in sorted(registered_events().items())
        if not record_path(wire).exists()
    }


def breaking_changes(released: dict[str, Any], current: dict[str, Any], at: str = "") -> list[str]:
    """Why ``current`` cannot replace ``released`` within one version (none: it can)."""
    where = at or "the event"
    if released.get("type") == "object" and current.get("type") == "object":
        return _object_changes(released, current, at)
    before, after = _rules(released), _rules(current)
    if "items" in before or "items" in after:
        problems = breaking_changes(before.pop("items", {}), after.pop("items", {}), f"{at}[]")
        if before != after:
            problems.append(f"{where}: {_describe(before)} became {_describe(after)}")
        return problems
    if before != after:
        return [f"{where}: {_describe(before)} became {_describe(after)}"]
    return []


def _object_changes(released: dict[str, Any], current: dict[str, Any], at: str) -> list[str]:
    problems: list[str] = []
    old_props, new_props = released.get("properties", {}), current.get("properties", {})
    old_required, new_required = set(released.get("required", ())), set(current.get("required", ()))
    for name in sorted(old_props):
        path = f"{at}.{name}" if at else name
        if name not in new_props:
            if name in old_required:
                problems.append(f"{path}: required, removed (old readers need it)")
            continue
        if name in old_required and name not in new_required:
            problems.append(f"{path}: was required, now optional (old readers need it)")
        if name not in old_required and name in new_required:
            problems.append(f"{path}: was optional, now required (old records lack it)")
        problems += breaking_changes(old_props[name], new_props[name], path)
    for name in sorted(set(new_props) - set(old_props)):
        if name in new_required:
            path = f"{at}.{name}" if at else name
            problems.append(f"{path}: new and required (old records lack it)")
    rest_before = _rules({k: v for k, v in released.items() if k not in ("properties", "required")})
    rest_after = _rules({k: v for k, v in current.items() if k not in ("properties", "required")})
    if rest_before != rest_after:
        problems.append(
            f"{at or 'the event'}: {_describe(rest_before)} became {_describe(rest_after)}"
        )
    return problems


def _rules(schema: dict[str, Any]) -> dict[str, Any]:
    """What in a schema decides which values are valid: everything but its texts."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _TEXTS or key.startswith("x-"):
            continue
        if isinstance(value, dict):
            out[key] = _rules(value)
        elif isinstance(value, list):
            out[key] = [_rules(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs[ref.removeprefix("#/$defs/")]
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return _inlined(merged, defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema


def _describe(rules: dict[str, Any]) -> str:
    return json.dumps(rules, sort_keys=True) if rules else "{}"
