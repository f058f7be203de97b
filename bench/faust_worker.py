"""The Faust no-op worker of ``bus.faust_noop``, run as its own process like any worker.

    python -m bench.faust_worker --topic T --group G --events N --progress FILE

Its agent counts the events ``accepted()`` yields (decoded and validated by the
envelope codec) and does nothing else. At the Nth it writes the timings (monotonic
clock, comparable across processes) to FILE and exits at once: the benchmark measures
up to the Nth event, never the shutdown.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

from shared.bus.faust_app import EnvelopeSchema, accepted, create_faust_app, run_worker
from shared.config import PlatformSettings


def build_counting_app(
    settings: PlatformSettings, topic: str, group: str, events: int, progress: Path
) -> tuple[faust.App, dict[str, float]]:
    app = create_faust_app(group, settings)
    source = app.topic(topic, schema=EnvelopeSchema(), allow_empty=True)
    timings: dict[str, float] = {}

    @app.agent(source, concurrency=1)
    async def count_events(stream: faust.StreamT[Any]) -> None:
        count = 0
        async for _ in accepted(stream, app, group):
            count += 1
            if count == 1:
                timings["first"] = time.monotonic()
            if count >= events:
                timings["nth"] = time.monotonic()
                _report(progress, {**timings, "count": count})
                os._exit(0)

    return app, timings


def _report(progress: Path, timings: dict[str, float]) -> None:
    tmp = progress.with_name(progress.name + ".tmp")
    tmp.write_text(json.dumps(timings))
    os.replace(tmp, progress)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faust_worker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--progress", type=Path, required=True)
    args = parser.parse_args(argv)
    app, timings = build_counting_app(
        PlatformSettings(), args.topic, args.group, args.events, args.progress
    )
    timings["worker_start"] = time.monotonic()
    run_worker(app)


if __name__ == "__main__":
    main()
