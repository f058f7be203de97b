"""Released event versions only take changes every reader can live with."""

import json
from typing import Any

import pytest

from shared.events.catalogue.accounts import ProfileUpdated
from shared.events.compatibility import (
    RELEASED_DIR,
    breaking_changes,
    record_path,
    released_schema,
)
from shared.events.registry import registered_events


def test_every_registered_version_is_recorded_and_still_reads_what_was_released() -> None:
    registered = registered_events()
    assert len(registered) >= 20  # the catalogue is loaded: this checks something
    for wire, cls in sorted(registered.items()):
        path = record_path(wire)
        assert path.exists(), f"{wire} is not recorded: run make docs"
        released = json.loads(path.read_text(encoding="utf-8"))
        assert breaking_changes(released, released_schema(cls)) == [], (
            f"{wire} changed incompatibly: publish {wire[:-1]}{int(wire[-1]) + 1} instead"
        )


def test_a_real_event_gaining_a_required_field_is_caught() -> None:
    class Changed(ProfileUpdated):
        reason: str  # required: records already on Kafka lack it

    class Extended(ProfileUpdated):
        reason: str | None = None  # optional: every reader copes

    released = json.loads(record_path("profile.updated.v1").read_text(encoding="utf-8"))
    assert breaking_changes(released, released_schema(Changed)) == [
        "reason: new and required (old records lack it)"
    ]
    assert breaking_changes(released, released_schema(Extended)) == []


def test_no_released_version_was_dropped() -> None:
    # Kafka may still hold its records; dropping one is deleting its record on purpose.
    recorded = {p.stem for p in RELEASED_DIR.glob("*.json")}
    assert recorded <= set(registered_events())


BASE: dict[str, Any] = {
    "type": "object",
    "title": "Thing",
    "properties": {
        "id": {"type": "string", "format": "uuid", "title": "Id"},
        "count": {"type": "integer", "minimum": 0},
        "kind": {"enum": ["a", "b"], "type": "string"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}},
    },
    "required": ["id", "count", "kind", "tags"],
}


def changed(**edits: Any) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(json.dumps(BASE))
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = schema
        for key in parents:
            node = node[key]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return schema


@pytest.mark.parametrize(
    "edits",
    [
        {"properties__extra": {"type": "string"}},  # an optional field added
        {"title": "Renamed thing", "properties__id__title": "Identifier"},
        {"properties__note__default": "-", "properties__note__description": "why"},
        {"properties__note": ...},  # an optional field dropped: readers default it
    ],
    ids=["optional added", "texts", "default and description", "optional removed"],
)
def test_compatible_changes(edits: dict[str, Any]) -> None:
    assert breaking_changes(BASE, changed(**edits)) == []


@pytest.mark.parametrize(
    ("edits", "found"),
    [
        ({"properties__extra": {"type": "string"}, "required": [*BASE["required"], "extra"]},
         "extra: new and required"),
        ({"properties__count": ..., "required": ["id", "kind", "tags"]},
         "count: required, removed"),
        ({"required": ["id", "count", "kind", "tags", "note"]}, "note: was optional, now required"),
        ({"required": ["id", "count", "kind"]}, "tags: was required, now optional"),
        ({"properties__count__type": "number"}, "count: "),
        ({"properties__count__minimum": 1}, "count: "),
        ({"properties__id__format": "email"}, "id: "),
        ({"properties__kind__enum": ["a", "b", "c"]}, "kind: "),
        ({"properties__kind__enum": ["a"]}, "kind: "),
        ({"properties__tags__items__maxLength": 10}, "tags[]: "),
        ({"properties__note__anyOf": [{"type": "string"}]}, "note: "),
    ],
    ids=[
        "required added", "required removed", "made required", "made optional", "type",
        "constraint", "format", "enum value added", "enum value removed", "item constraint",
        "null no longer allowed",
    ],
)  # fmt: skip
def test_breaking_changes_are_named(edits: dict[str, Any], found: str) -> None:
    problems = breaking_changes(BASE, changed(**edits))
    assert problems, edits
    assert any(p.startswith(found) for p in problems), problems
