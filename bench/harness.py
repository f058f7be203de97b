"""What every benchmark shares: scratch infrastructure, timing, medians, result lines.

A benchmark is an async function ``(BenchContext) -> list[Result]``. It measures its
value and its baseline ``ctx.repeats`` times each, interleaved (baseline, value,
baseline, value, ...) so that a noisy neighbour hurts both alike, on fresh scratch
topics and databases that are removed afterwards, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from deploy.local.layout import HOST
from shared.bus import scratch
from shared.config import PlatformSettings

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

T = TypeVar("T")
B = TypeVar("B")


# -- context and results ---------------------------------------------------------------


@dataclass(frozen=True)
class BenchContext:
    """What a benchmark is given: the platform settings and the run's size."""

    settings: PlatformSettings
    events: int = 50_000
    repeats: int = 3

    @property
    def timeout(self) -> float:
        """Seconds one measurement may take before it counts as hung."""
        return 60.0 + self.events / 500


BenchFn = Callable[[BenchContext], Awaitable[list["Result"]]]

_GOAL_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


INFORMATIVE = "-"  # the goal of a ratio shown for insight, with no target of its own


def goal_met(ratio: float, goal: str) -> bool | None:
    """Whether ``ratio`` satisfies a goal such as ``">= 0.5"`` (None if informative)."""
    if goal == INFORMATIVE:
        return None
    op, _, threshold = goal.strip().partition(" ")
    if op not in _GOAL_OPERATORS:
        raise ValueError(f"goal {goal!r} must look like '>= 0.5'")
    return _GOAL_OPERATORS[op](ratio, float(threshold))


@dataclass(frozen=True)
class Result:
    """One metric of one benchmark: medians of the runs, and their ratio.

    ``ratio`` is always ``value / baseline``; the goal says which way is good (a rate
    wants ``>= x``, a latency ``<= x``).
    """

    bench: str
    metric: str
    runs: Sequence[float]
    baseline_runs: Sequence[float]
    unit: str
    goal: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.runs)

    @property
    def baseline(self) -> float:
        return statistics.median(self.baseline_runs)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.nan

    @property
    def meets_goal(self) -> bool | None:
        return goal_met(self.ratio, self.goal)

    def line(self) -> dict[str, Any]:
        """The JSON line printed to stdout and written to latest.jsonl."""
        return {
            "bench": self.bench,
            "metric": self.metric,
            "value": _round(self.value),
            "baseline": _round(self.baseline),
            "ratio": round(self.ratio, 3),
            "unit": self.unit,
            "goal": self.goal,
            "meets_goal": self.meets_goal,
            "runs": [_round(r) for r in self.runs],
            "baseline_runs": [_round(r) for r in self.baseline_runs],
            **self.extra,
        }


def _round(x: float) -> float:
    return round(x, 1) if abs(x) >= 100 else round(x, 4)


def rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else math.inf


# -- progress and timing ---------------------------------------------------------------


def log(message: str) -> None:
    """Human-readable progress, on stderr (stdout carries only result lines)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def wait_until(
    done: Callable[[], bool], within: float, what: str, interval: float = 0.005
) -> None:
    """Poll an in-process condition (cheap: no I/O) until true, or raise TimeoutError."""
    deadline = time.perf_counter() + within
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not done after {within:.0f}s")
        await asyncio.sleep(interval)


async def interleaved(
    repeats: int,
    baseline: Callable[[int], Awaitable[B]],
    value: Callable[[int], Awaitable[T]],
    label: str,
) -> tuple[list[B], list[T]]:
    """Run baseline then value, ``repeats`` times; return (baseline runs, value runs)."""
    baselines: list[B] = []
    values: list[T] = []
    for i in range(repeats):
        log(f"{label}: run {i + 1}/{repeats} baseline")
        baselines.append(await baseline(i))
        log(f"{label}: run {i + 1}/{repeats} value")
        values.append(await value(i))
    return baselines, values


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- a minimal HTTP/1.1 client ---------------------------------------------------------
# The load generator of the HTTP benchmarks: httpx.AsyncClient tops out near 600
# requests/s on a 2-core machine, below what the services serve, which would make every
# measurement a measurement of httpx.


class Connection:
    """One keep-alive HTTP/1.1 connection sending one prepared request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reconnects = 0  # keep-alive connections the server closed between requests
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self._reader, self._writer

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` (whole, as bytes); the status and the body.

        A keep-alive connection the server closed before answering (nginx does on a
        reload, which anyone's ``ensure_up`` may cause) is reopened once.
        """
        while True:
            reader, writer = await self.open()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if partial or self.reconnects >= 10:
                    raise
                self.reconnects += 1
        status_line, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        else:
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            await self.close()
        return int(status_line.split(b" ", 2)[1]), body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


def prepared(
    method: str,
    path: str,
    port: int,
    token: str | None = None,
    body: object = None,
    *,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 request: a JSON ``body``, or raw ``content`` (its Content-Type
    among ``headers``), with the bearer ``token`` if given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    payload = content if content is not None else b"" if body is None else json.dumps(body).encode()
    if body is not None and content is None:
        lines.append("Content-Type: application/json")
    if body is not None or content is not None:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Client:
    """A connection and the one request it repeats."""

    connection: Connection
    request: bytes

    async def call(self) -> int:
        status, _ = await self.connection.send(self.request)
        return status


@asynccontextmanager
async def clients(port: int, requests: Sequence[bytes]) -> AsyncIterator[list[Client]]:
    """One connected Client per request; closed afterwards."""
    made = [Client(Connection(port), request) for request in requests]
    try:
        await asyncio.gather(*(c.connection.open() for c in made))
        yield made
    finally:
        await asyncio.gather(*(c.connection.close() for c in made))
        if reopened := sum(c.connection.reconnects for c in made):
            log(f"  {reopened} keep-alive connection(s) to :{port} closed by the server "
                "between requests and reopened (a gateway reload?)")  # fmt: skip


# -- scratch infrastructure ------------------------------------------------------------


@asynccontextmanager
async def scratch_database(
    settings: PlatformSettings, extra_ddl: Sequence[str] = ()
) -> AsyncIterator[str]:
    """A new database with the bus tables (and ``extra_ddl``); dropped afterwards."""
    async with scratch.scratch_database(settings, extra_ddl, prefix="scratch_bench") as dsn:
        yield dsn


scratch_topic = scratch.scratch_topic


class _KafkaClient(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


C = TypeVar("C", bound=_KafkaClient)


@asynccontextmanager
async def started(client: C) -> AsyncIterator[C]:
    """An aiokafka producer or consumer, started, and stopped afterwards."""
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


# -- results files ---------------------------------------------------------------------


def write_results(
    lines: Sequence[dict[str, Any]], events: int, directory: Path = RESULTS_DIR
) -> None:
    """latest.jsonl and latest.md, each written whole (temp file, then rename).

    A run of some benchmarks (``--only``) replaces their lines and keeps the others', so
    the table always shows the latest measurement of every benchmark; the README's
    benchmark block is refreshed from it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    merged = _merge(_previous(directory / "latest.jsonl"), lines)
    _write_atomic(directory / "latest.jsonl", "".join(json.dumps(line) + "\n" for line in merged))
    table = markdown_table(merged, events)
    _write_atomic(directory / "latest.md", table)
    _sync_readme_block(directory.parent.parent / "README.md", table)


def _previous(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _merge(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    fresh = {(line["bench"], line["metric"]) for line in new}
    return [line for line in old if (line["bench"], line["metric"]) not in fresh] + list(new)


def _sync_readme_block(readme: Path, table: str) -> None:
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if not readme.exists():
        return
    text = readme.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}{end}{tail}")


def markdown_table(lines: Sequence[dict[str, Any]], events: int) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"Benchmarks of {when}: {events:,} events per measurement, median of the runs, "
        f"{os.cpu_count()} CPUs; ratio = value / baseline.",
        "",
        "| bench | metric | value | baseline | ratio | goal | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for line in lines:
        unit = line["unit"]
        out.append(
            f"| {line['bench']} | {line['metric']} | {_fmt(line['value'])} {unit} "
            f"| {_fmt(line['baseline'])} {unit} | {line['ratio']:.2f} | {line['goal']} "
            f"| {_met(line['meets_goal'])} |"
        )
    return "\n".join(out) + "\n"


def _met(meets_goal: bool | None) -> str:
    return "-" if meets_goal is None else "yes" if meets_goal else "**no**"


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
