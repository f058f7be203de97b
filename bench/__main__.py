"""``python -m bench [--only bus,accounts] [--events N] [--repeats R]`` (``make bench``).

Prints one JSON line per result on stdout, progress on stderr, and writes
bench/results/latest.jsonl and latest.md. To add a benchmark, write a module with
async functions ``(BenchContext) -> list[Result]`` and merge its dict into BENCHMARKS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from bench import accounts, analytics, bus, deletion
from bench import notifier as notifier_bench
from bench.harness import BenchContext, BenchFn, log, write_results
from shared.config import PlatformSettings
from shared.process import tune_collector

BENCHMARKS: dict[str, BenchFn] = {
    **bus.BENCHMARKS,
    **analytics.BENCHMARKS,
    **accounts.BENCHMARKS,
    **notifier_bench.BENCHMARKS,
    **deletion.BENCHMARKS,
}


def select(only: str | None) -> list[str]:
    """Names matching ``--only`` (comma separated; ``bus`` selects every ``bus.*``)."""
    if not only:
        return list(BENCHMARKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [
        name for name in BENCHMARKS if any(name == w or name.startswith(w + ".") for w in wanted)
    ]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches none of: {', '.join(BENCHMARKS)}")
    return chosen


async def run(names: Sequence[str], ctx: BenchContext) -> tuple[list[dict[str, Any]], list[str]]:
    main = asyncio.current_task()
    if main is not None:  # SIGTERM cleans up like Ctrl-C: scratch topics and databases go
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    lines: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in names:
        started = time.perf_counter()
        log(f"{name}: starting ({ctx.events:,} events, {ctx.repeats} runs)")
        try:
            results = await BENCHMARKS[name](ctx)
        except Exception:
            log(f"{name}: FAILED\n{traceback.format_exc()}")
            failed.append(name)
            continue
        for result in results:
            line = result.line()
            print(json.dumps(line), flush=True)
            lines.append(line)
        log(f"{name}: done in {time.perf_counter() - started:.0f}s")
    return lines, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help="comma-separated names or prefixes, e.g. bus")
    parser.add_argument("--events", type=int, default=50_000, help="events per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    names = select(args.only)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from deploy.local import services, stack

    # The stack where IMT_KAFKA_PORT and the like put it, in every settings object built
    # from here on (here, in each benchmark, in the processes they start).
    services.use_stack_env()
    stack.ensure_up(["kafka", "postgres"])
    ctx = BenchContext(PlatformSettings(), events=args.events, repeats=args.repeats)
    # In-process measurements (the bus consumer, relay, the raw baselines beside them)
    # run under the collector policy every service process starts with.
    tune_collector()
    try:
        lines, failed = asyncio.run(run(names, ctx))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; scratch topics and databases were removed, no results written")
        return 130
    write_results(lines, ctx.events)
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
