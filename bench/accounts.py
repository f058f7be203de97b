"""Accounts benchmarks: the profile API through the gateway, login, and login storms.

``accounts.profile_get``    GET /api/accounts/me through the gateway, 32 closed-loop
                            clients (each its own user and access token), against a
                            bare FastAPI app (one GET/PATCH route, same response model,
                            constant data, same uvicorn settings as the services)
                            behind the same gateway at /api/bench/, so both pay the
                            same proxy hop. requests/s and p99 latency; requests/s
                            also against the bare app hit directly (informative).
``accounts.profile_patch``  The same with PATCH /me (a new name: sealed, written, one
                            event and a contact card in the outbox).
``accounts.login``          POST /api/accounts/sessions, 8 closed-loop clients (8 users),
                            against argon2 verify alone with the same hasher (the
                            service's HASHER), 8 callers, on as many threads as the
                            service hashes on (HASH_THREADS, one per CPU): more threads
                            hash slower, and the baseline is argon2 at its best here.
``accounts.profile_during_login_storm``
                            p99 of a paced GET /me probe while 8 clients log in
                            without pause, against the same probe alone. Shows whether
                            argon2 blocks the event loop (it must run in a thread).

The load generator is a minimal keep-alive HTTP/1.1 client (one connection per
client): httpx.AsyncClient tops out near 600 requests/s on this kind of machine,
below the bare endpoint, which would make every measurement a measurement of httpx.

Each benchmark raises the gateway's per-client rate limit (every client is 127.0.0.1),
runs its own accounts-api and accounts-relay (any already running are stopped first and
restarted afterwards), and puts the rate limit back at the end. Bench users
(``bench-*@example.com``) are created once per run, through the API, and stay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.harness import (
    INFORMATIVE,
    REPO,
    BenchContext,
    BenchFn,
    Result,
    clients,
    interleaved,
    log,
    prepared,
)
from deploy.local import gateway, procs, services, stack
from deploy.local.layout import HOST, Layout
from services.accounts.routes.me import Preferences, Profile, ProfileChange
from services.accounts.security import HASH_THREADS, HASHER
from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.topics import NOTIFIER_COMMANDS

PROCESSES = ["accounts-api", "accounts-relay"]
API = "/api/accounts"
ACCOUNTS_PORT = 8101  # AccountsSettings.accounts_http_port: nothing else may hold it
BARE_PORT = 18191
BARE_API = "/api/bench"  # the gateway's path to the bare app (gateway.BENCH_UPSTREAM_ENV)
SECONDS = 3.0  # one measurement
WARMUP_SECONDS = 0.5
PROFILE_CLIENTS = 32
LOGIN_CLIENTS = 8
PROBE_CLIENTS = 4
PROBE_INTERVAL = 0.025  # each probe client: one GET every 25 ms (160 GET/s in all)

# Set while our gateway config is rendered and our accounts processes are started.
BENCH_ENV = {
    "IMT_GATEWAY_RATE_PER_SECOND": "100000",
    # Every client is 127.0.0.1 (as in the e2e tests). No bench login fails, so the
    # per-account throttle (and its NIST lockout, <= 100) never engages.
    "IMT_ACCOUNTS_CLIENT_FREE_FAILURES": "1000000",
    # Tokens are issued once per benchmark; let them outlive a slow one (as long as the
    # other APIs remember revocations: accounts refuses a longer lifetime).
    "IMT_ACCOUNTS_ACCESS_TOKEN_SECONDS": "3000",
    "IMT_TOKEN_MAX_SECONDS": "3000",
    # The bare baseline app behind the gateway, at /api/bench/ (BARE_API).
    gateway.BENCH_UPSTREAM_ENV: f"{HOST}:{BARE_PORT}",
}


# -- load ------------------------------------------------------------------------------


@dataclass
class Load:
    """What one measurement saw."""

    elapsed: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per request

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def p99_ms(self) -> float:
        if len(self.latencies) < 2:
            return math.nan
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98] * 1000


Call = Callable[[], Awaitable[int]]


async def run_load(
    calls: Sequence[Call], seconds: float, interval: float = 0.0, expect: int = 200
) -> Load:
    """Each call repeated by its own task for ``seconds``: back to back (``interval`` 0,
    closed loop) or one every ``interval`` seconds (a paced probe, start times spread)."""
    latencies: list[float] = []
    unexpected: Counter[int] = Counter()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker(n: int, call: Call) -> None:
        due = t0 + interval * n / len(calls)
        while True:
            if interval:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due = max(due + interval, time.perf_counter())
            start = time.perf_counter()
            if start >= deadline:
                return
            status = await call()
            latencies.append(time.perf_counter() - start)
            if status != expect:
                unexpected[status] += 1

    await asyncio.wait_for(
        asyncio.gather(*(worker(n, c) for n, c in enumerate(calls))), seconds + 60
    )
    load = Load(time.perf_counter() - t0, latencies)
    if unexpected:
        hint = (
            (
                " (429: the gateway was re-rendered with a low IMT_GATEWAY_RATE_PER_SECOND "
                "by another process's ensure_up during the run?)"
            )
            if 429 in unexpected
            else ""
        )
        raise RuntimeError(f"{sum(unexpected.values())} of {len(latencies)} answers were "
                           f"not {expect}: {dict(unexpected)}{hint}")  # fmt: skip
    return load


def _report(what: str, load: Load, unit: str = "requests/s") -> Load:
    log(f"  {what}: {load.per_s:,.0f} {unit}, p99 {load.p99_ms:.1f} ms ({len(load.latencies)})")
    return load


# -- the stack: gateway rate limit, our accounts processes -------------------------------


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ (what gateway rendering and process spawning read)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_ours(layout: Layout, previous: Sequence[str]) -> None:
    """Stop the accounts processes someone else started; start ours with BENCH_ENV."""
    if previous:
        log(f"  stopping {', '.join(previous)} (started before the benchmark)")
        services.stop_processes(previous, layout)
    if procs.port_open(ACCOUNTS_PORT):
        raise RuntimeError(f"{HOST}:{ACCOUNTS_PORT} is held by a process without a pid file "
                           "(make run?): stop it first")  # fmt: skip
    with environment(BENCH_ENV):
        stack.ensure_up(["gateway"], layout)  # re-rendered with the high rate, reloaded
        services.ensure_processes(PROCESSES, layout)
    services.wait_for_apis(["accounts"], layout)
    if services.running(layout, "accounts-api") is None:
        raise RuntimeError("accounts-api exited after starting")


def _stop_ours(layout: Layout, previous: Sequence[str]) -> None:
    services.stop_processes(PROCESSES, layout)
    stack.ensure_up(["gateway"], layout)  # the rate limit of the caller's environment
    if previous:
        log(f"  restarting {', '.join(previous)}")
        services.ensure_processes(previous, layout)


@asynccontextmanager
async def accounts_running() -> AsyncIterator[int]:
    """Our accounts-api and -relay behind a gateway without a rate limit; its port."""
    layout = Layout.from_env()
    previous = [name for name in PROCESSES if services.running(layout, name) is not None]
    try:
        await asyncio.to_thread(_start_ours, layout, previous)
        yield layout.ports.gateway
    finally:
        await asyncio.to_thread(_stop_ours, layout, previous)


# -- users -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    email: str
    password: str


_users: list[BenchUser] = []  # made once per run, then reused by every benchmark


async def _notifier_tail(settings: PlatformSettings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    await consumer._client.force_metadata_update()
    partitions = [
        TopicPartition(NOTIFIER_COMMANDS.name, p)
        for p in consumer.partitions_for_topic(NOTIFIER_COMMANDS.name) or ()
    ]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolved now: every later record is seen
    return consumer


async def _verify_tokens(consumer: AIOKafkaConsumer, user_ids: set[str]) -> dict[str, str]:
    """user id -> token of the verify_email notice accounts sent (through the relay)."""
    tokens: dict[str, str] = {}
    while not user_ids <= tokens.keys():
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for r in records:
                key = r.key.decode() if r.key is not None else ""
                value = json.loads(r.value) if r.value is not None else {}
                data = value.get("data", {})
                if key in user_ids and data.get("template") == "verify_email":
                    tokens[key] = data["params"]["token"]
    return tokens


async def bench_users(settings: PlatformSettings, gateway: int, count: int) -> list[BenchUser]:
    """``count`` active users (signed up and verified through the API), made once."""
    missing = count - len(_users)
    if missing <= 0:
        return _users[:count]
    log(f"  signing up and verifying {missing} bench users")
    made = [
        BenchUser(f"bench-{uuid.uuid4().hex[:12]}@example.com", f"pw-{uuid.uuid4().hex}")
        for _ in range(missing)
    ]
    consumer = await _notifier_tail(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{gateway}", timeout=30) as http:
            gate = asyncio.Semaphore(8)

            async def sign_up(user: BenchUser) -> str:
                async with gate:
                    body = {"name": "Bench User", "email": user.email, "password": user.password}
                    response = await http.post(f"{API}/users", json=body)
                response.raise_for_status()
                user_id: str = response.json()["user_id"]
                return user_id

            ids = await asyncio.gather(*(sign_up(u) for u in made))
            tokens = await asyncio.wait_for(_verify_tokens(consumer, set(ids)), 60)
            for user_id in ids:
                response = await http.post(
                    f"{API}/email-verifications", json={"token": tokens[user_id]}
                )
                response.raise_for_status()
                if not response.json()["active"]:
                    raise RuntimeError(f"bench user {user_id} is not active after verification")
    finally:
        await consumer.stop()
    _users.extend(made)
    return _users[:count]


async def access_tokens(gateway: int, users: Sequence[BenchUser]) -> list[str]:
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{gateway}", timeout=30) as http:

        async def log_in(user: BenchUser) -> str:
            response = await http.post(f"{API}/sessions", json=_credentials(user))
            response.raise_for_status()
            token: str = response.json()["access_token"]
            return token

        return list(await asyncio.gather(*(log_in(u) for u in users)))


def _credentials(user: BenchUser) -> dict[str, str]:
    return {"email": user.email, "password": user.password}


# -- the bare FastAPI endpoint ------------------------------------------------------------


def serve_bare(port: int) -> None:
    """A FastAPI app with a GET and a PATCH route on /me (direct) and on BARE_API/me
    (through the gateway) answering the accounts Profile model with constant data (no
    auth, no database, no vault), run by uvicorn with the services' settings
    (shared.service.api.serve)."""
    from datetime import UTC, datetime

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    profile = Profile(
        id=uuid.uuid4(), name="Bench User", email="bench@example.com", email_verified=True,
        age_band="adult", birth_date=None, guardian_email=None, active=True, locale="en",
        preferences=Preferences(marketing_email=False, personalisation=True,
                                tracking_opt_out=False),
        created_at=datetime.now(UTC),
    )  # fmt: skip

    async def read() -> Profile:
        return profile

    async def edit(body: ProfileChange) -> Profile:
        return profile.model_copy(update={"name": body.name or profile.name})

    for path in ("/me", f"{BARE_API}/me"):
        app.get(path, response_model=Profile)(read)
        app.patch(path, response_model=Profile)(edit)

    uvicorn.run(app, host=HOST, port=port, log_config=None, access_log=False,
                loop="uvloop", http="httptools", proxy_headers=False)  # fmt: skip


@asynccontextmanager
async def bare_api() -> AsyncIterator[int]:
    if procs.port_open(BARE_PORT):
        raise RuntimeError(f"{HOST}:{BARE_PORT} is taken: the bare endpoint needs it")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.accounts", "bare-api", "--port", str(BARE_PORT),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not procs.port_open(BARE_PORT):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare FastAPI app did not start (exit {proc.returncode})")
            await asyncio.sleep(0.1)
        yield BARE_PORT
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


# -- accounts.profile_get / accounts.profile_patch --------------------------------------


def _profile_bench(method: str) -> BenchFn:
    name = f"accounts.profile_{method.lower()}"
    body = {"name": "Bench User Renamed"} if method == "PATCH" else None

    async def bench(ctx: BenchContext) -> list[Result]:
        async with accounts_running() as gateway, bare_api() as bare:
            users = await bench_users(ctx.settings, gateway, PROFILE_CLIENTS)
            tokens = await access_tokens(gateway, users)
            ours = [prepared(method, f"{API}/me", gateway, t, body) for t in tokens]
            bare_gw = [prepared(method, f"{BARE_API}/me", gateway, t, body) for t in tokens]
            bare_direct = [prepared(method, "/me", bare, t, body) for t in tokens]
            async with (
                clients(gateway, ours) as ours_c,
                clients(gateway, bare_gw) as bare_gw_c,
                clients(bare, bare_direct) as bare_direct_c,
            ):
                ours_calls = [c.call for c in ours_c]
                gw_calls = [c.call for c in bare_gw_c]
                direct_calls = [c.call for c in bare_direct_c]
                for calls in (gw_calls, direct_calls, ours_calls):
                    await run_load(calls, WARMUP_SECONDS)

                direct: list[Load] = []

                async def baseline(_: int) -> Load:
                    through = await run_load(gw_calls, SECONDS)
                    direct.append(await run_load(direct_calls, SECONDS))
                    _report("bare FastAPI, direct", direct[-1])
                    return _report("bare FastAPI via the gateway", through)

                async def value(_: int) -> Load:
                    return _report("accounts via the gateway", await run_load(ours_calls, SECONDS))

                base, runs = await interleaved(ctx.repeats, baseline, value, name)
        extra = {
            "baseline_kind": "bare FastAPI through the gateway",
            "value_kind": "accounts API through the gateway",
            "clients": PROFILE_CLIENTS,
            "seconds": SECONDS,
        }
        return [
            Result(name, "requests_per_s", [r.per_s for r in runs], [b.per_s for b in base],
                   "requests/s", ">= 0.3", extra),
            LatencyResult(name, "p99_ms", [r.p99_ms for r in runs], [b.p99_ms for b in base],
                          "ms", ">= 0.3", {**extra, "ratio_is": RATIO_IS}),
            Result(name, "requests_per_s_vs_direct", [r.per_s for r in runs],
                   [d.per_s for d in direct], "requests/s", INFORMATIVE,
                   {**extra, "baseline_kind": "bare FastAPI, direct (no proxy hop)"}),
        ]  # fmt: skip

    return bench


RATIO_IS = "baseline / value (inverted: higher is better)"


@dataclass(frozen=True)
class LatencyResult(Result):
    """A latency, whose ratio is inverted (baseline / value) so that higher is better."""

    @property
    def ratio(self) -> float:
        return self.baseline / self.value if self.value else math.nan


# -- accounts.login --------------------------------------------------------------------


async def argon2_verifies(password: str, stored: str, seconds: float) -> Load:
    """argon2 verify alone: LOGIN_CLIENTS tasks, each verifying in a thread pool of the
    service's size (HASH_THREADS): the same hashing concurrency as a login gets."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="bench-argon2") as pool:

        async def verify() -> int:
            ok = await loop.run_in_executor(pool, HASHER.verify, stored, password)
            return 200 if ok else 401

        return await run_load([verify] * LOGIN_CLIENTS, seconds)


def _login_requests(gateway: int, users: Sequence[BenchUser]) -> list[bytes]:
    return [prepared("POST", f"{API}/sessions", gateway, None, _credentials(u)) for u in users]


async def bench_login(ctx: BenchContext) -> list[Result]:
    name = "accounts.login"
    async with accounts_running() as gateway:
        users = await bench_users(ctx.settings, gateway, LOGIN_CLIENTS)
        password = users[0].password
        stored = await asyncio.to_thread(HASHER.hash, password)
        async with clients(gateway, _login_requests(gateway, users)) as login_c:
            await run_load([c.call for c in login_c], WARMUP_SECONDS)

            async def baseline(_: int) -> Load:
                return _report("argon2 verify", await argon2_verifies(password, stored, SECONDS),
                               "verifies/s")  # fmt: skip

            async def value(_: int) -> Load:
                return _report("login", await run_load([c.call for c in login_c], SECONDS),
                               "logins/s")  # fmt: skip

            base, runs = await interleaved(ctx.repeats, baseline, value, name)
    return [
        Result(name, "logins_per_s", [r.per_s for r in runs], [b.per_s for b in base],
               "logins/s", ">= 0.8",
               {"baseline_kind": "argon2id verify alone, same parameters, thread pool",
                "clients": LOGIN_CLIENTS, "hash_threads": HASH_THREADS, "seconds": SECONDS,
                "argon2": f"m={HASHER.memory_cost} KiB, t={HASHER.time_cost}, "
                          f"p={HASHER.parallelism}"})
    ]  # fmt: skip


# -- accounts.profile_during_login_storm ------------------------------------------------


async def probe_during(
    probe: Callable[[], Awaitable[Load]], storm: Callable[[float], Coroutine[Any, Any, Load]]
) -> tuple[Load, Load]:
    """Run ``probe`` while ``storm`` runs (started WARMUP_SECONDS before, ends after)."""
    task = asyncio.create_task(storm(SECONDS + 2 * WARMUP_SECONDS))
    try:
        await asyncio.sleep(WARMUP_SECONDS)
        probed = await probe()
    finally:
        stormed = await task
    return probed, stormed


async def bench_storm(ctx: BenchContext) -> list[Result]:
    name = "accounts.profile_during_login_storm"
    async with accounts_running() as gateway:
        users = await bench_users(ctx.settings, gateway, max(PROBE_CLIENTS, LOGIN_CLIENTS))
        tokens = await access_tokens(gateway, users[:PROBE_CLIENTS])
        probes = [prepared("GET", f"{API}/me", gateway, t) for t in tokens]
        storm_rates: list[float] = []
        async with (
            clients(gateway, probes) as probe_c,
            clients(gateway, _login_requests(gateway, users[:LOGIN_CLIENTS])) as login_c,
        ):

            async def probe() -> Load:
                return await run_load([c.call for c in probe_c], SECONDS, PROBE_INTERVAL)

            async def storm(seconds: float) -> Load:
                return await run_load([c.call for c in login_c], seconds)

            await run_load([c.call for c in probe_c], WARMUP_SECONDS, PROBE_INTERVAL)

            async def alone(_: int) -> Load:
                return _report("GET /me alone", await probe())

            async def during(_: int) -> Load:
                probed, stormed = await probe_during(probe, storm)
                _report("GET /me during the storm", probed)
                storm_rates.append(_report("  the storm", stormed, "logins/s").per_s)
                return probed

            base, runs = await interleaved(ctx.repeats, alone, during, name)

    # Control (one run): the same probe against the bare app while argon2 alone keeps
    # the CPUs busy (HASH_THREADS threads, as in the service): what CPU contention alone
    # costs a loop that never blocks.
    log(f"{name}: control: bare FastAPI probe, alone and during argon2 verifies")
    password = users[0].password
    stored = await asyncio.to_thread(HASHER.hash, password)
    async with (
        bare_api() as bare,
        clients(bare, [prepared("GET", "/me", bare)] * PROBE_CLIENTS) as bare_c,
    ):

        async def bare_probe() -> Load:
            return await run_load([c.call for c in bare_c], SECONDS, PROBE_INTERVAL)

        async def argon2_storm(seconds: float) -> Load:
            return await argon2_verifies(password, stored, seconds)

        await run_load([c.call for c in bare_c], WARMUP_SECONDS, PROBE_INTERVAL)
        control_alone = _report("bare GET /me alone", await bare_probe())
        control_during = _report(
            "bare GET /me during argon2", (await probe_during(bare_probe, argon2_storm))[0]
        )
    return [
        LatencyResult(name, "p99_ms", [r.p99_ms for r in runs], [b.p99_ms for b in base],
                      "ms", ">= 0.5",
                      {"ratio_is": "p99 alone / p99 during the storm (higher is better)",
                       "probe": f"{PROBE_CLIENTS} clients x 1 GET /me every "
                                f"{PROBE_INTERVAL * 1000:.0f} ms, through the gateway",
                       "storm": f"{LOGIN_CLIENTS} clients logging in back to back",
                       "storm_logins_per_s": round(statistics.median(storm_rates), 1),
                       "probe_per_s_during": round(statistics.median(r.per_s for r in runs), 1),
                       "control_bare_p99_ms": {"alone": round(control_alone.p99_ms, 2),
                                               "during_argon2": round(control_during.p99_ms, 2)},
                       "control_is": "same probe, bare FastAPI direct, one run, while "
                                     f"{HASH_THREADS} threads of the bench verify argon2 for "
                                     f"{LOGIN_CLIENTS} callers",
                       "seconds": SECONDS})
    ]  # fmt: skip


BENCHMARKS: dict[str, BenchFn] = {
    "accounts.profile_get": _profile_bench("GET"),
    "accounts.profile_patch": _profile_bench("PATCH"),
    "accounts.login": bench_login,
    "accounts.profile_during_login_storm": bench_storm,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accounts")
    parser.add_argument("command", choices=["bare-api"])
    parser.add_argument("--port", type=int, default=BARE_PORT)
    args = parser.parse_args(argv)
    serve_bare(args.port)


if __name__ == "__main__":
    main()
