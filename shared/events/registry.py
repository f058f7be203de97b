"""The registry of event types: every event is a frozen pydantic model, defined once.

An event class declares its name (past tense), version and topic::

    @register_event
    class UserRegistered(Event):
        event_name: ClassVar[str] = "user.registered"
        version: ClassVar[int] = 1
        topic: ClassVar[Topic] = ACCOUNTS_LIFECYCLE
        user_id: UUID

Its wire type is ``user.registered.v1``. Consumers read tolerantly (unknown fields are
ignored), so a producer may add optional fields without a new version; removing or
changing a field needs ``v2``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.events.envelope import Envelope, validation_summary
from shared.events.topics import Topic


class UnknownEventType(LookupError):
    """An envelope whose type no registered event declares."""


class EventSchemaViolation(ValueError):
    """An envelope whose data does not satisfy its event's schema."""


class Event(BaseModel):
    """Base of every event and command on the bus."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_name: ClassVar[str]
    version: ClassVar[int]
    topic: ClassVar[Topic]
    kind: ClassVar[str] = "event"  # "event" (a fact, past tense) or "command" (imperative)

    @classmethod
    def type_name(cls) -> str:
        """Wire type: name and version."""
        return f"{cls.event_name}.v{cls.version}"


E = TypeVar("E", bound=type[Event])

_REGISTRY: dict[str, type[Event]] = {}


def register_event(cls: E) -> E:
    """Class decorator adding an event type to the registry (once per wire type)."""
    type_name = cls.type_name()
    existing = _REGISTRY.get(type_name)
    if existing is not None and existing is not cls:
        raise ValueError(f"event type {type_name} registered twice")
    _REGISTRY[type_name] = cls
    return cls


def registered_events() -> dict[str, type[Event]]:
    """Every registered event type by wire type (a copy)."""
    _load_catalogue()
    return dict(_REGISTRY)


def event_class(type_name: str) -> type[Event]:
    """The class registered for a wire type."""
    _load_catalogue()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise UnknownEventType(f"unknown event type {type_name!r}") from None


def parse_event(envelope: Envelope) -> Event:
    """Validate an envelope's data against its registered event type."""
    cls = event_class(envelope.type)
    try:
        return cls.model_validate(envelope.data)
    except ValidationError as exc:
        raise EventSchemaViolation(
            f"{envelope.type} data invalid: {validation_summary(exc)}"
        ) from exc


def envelope_for(
    event: Event, *, source: str, subject: str | None, traceparent: str | None = None
) -> Envelope:
    """Wrap an event in a new envelope (a fresh id and time)."""
    data: dict[str, Any] = event.model_dump(mode="json")
    return Envelope(
        type=event.type_name(), source=source, subject=subject, data=data, traceparent=traceparent
    )


_catalogue_loaded: list[bool] = []


def _load_catalogue() -> None:
    # The catalogue modules register their events on import; importing here keeps the
    # registry complete for any consumer, whichever module it imported first.
    if not _catalogue_loaded:
        from shared.events import catalogue  # noqa: F401

        _catalogue_loaded.append(True)
