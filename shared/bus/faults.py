"""Crash points for fault-injection tests, off unless ``IMT_CRASH_POINTS`` names them.

``IMT_CRASH_POINTS=relay.after_publish:0.05,consumer.after_effects:0.05`` makes the
process kill itself with SIGKILL, with that probability, at the narrow windows where a
crash leads to redelivery: after Kafka acknowledged but before the outbox rows were
deleted, and after the effects committed but before the offset was. Random external
kills rarely land there; the SIGKILL test needs them to.
"""

from __future__ import annotations

import functools
import os
import random
import signal


@functools.cache
def _armed_points() -> dict[str, float]:
    spec = os.environ.get("IMT_CRASH_POINTS", "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition(":")
        points[name] = float(probability or "1")
    return points


def crash_point(name: str) -> None:
    """Die here, as if killed, when this point is armed and the dice say so."""
    probability = _armed_points().get(name)
    if probability and random.random() < probability:  # noqa: S311 - not security
        os.kill(os.getpid(), signal.SIGKILL)
