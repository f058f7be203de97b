"""The bus's own probe event, used by its tests and benchmarks only."""

from __future__ import annotations

from typing import ClassVar

from shared.events.registry import Event, register_event
from shared.events.topics import BUS_SELFTEST, Topic


@register_event
class ProbeRecorded(Event):
    """A numbered probe; ``seq`` is strictly increasing per key."""

    event_name: ClassVar[str] = "bus_probe.recorded"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = BUS_SELFTEST
    key: str
    seq: int
