"""Retention releases await their stores' receipts (P-13), on real Kafka and PostgreSQL.

A release a store dead-letters must not leave the kept records there for ever: it is
resent with back-off until every store answered it, and escalated to an operator at the
store timeout; one every store answered is left alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from services.deletion import handlers, store
from services.deletion.bootstrap import dependencies
from services.deletion.gauges import DeletionGauges
from shared.observability import Metrics
from tests.integration.deletion.harness import (
    Harness,
    harness_settings,
    operator_api,
    running_harness,
    short_financial_rules,
)

TIMEOUT = 6.0  # the store timeout: a release unanswered this long after its first send


async def _release(harness: Harness, request_id: uuid.UUID) -> asyncpg.Record:
    row = await harness.pool.fetchrow(
        "SELECT erase_id, sent_at, send_attempts, answered_at, escalated_at, reason,"
        " next_check_at FROM retention_releases WHERE request_id = $1",
        request_id,
    )
    assert row is not None
    return row


async def _until(harness: Harness, request_id: uuid.UUID, column: str) -> asyncpg.Record:
    """The request's release once ``column`` is set (or as it is after a minute)."""
    deadline = time.monotonic() + 60
    while True:
        row = await _release(harness, request_id)
        if row[column] is not None or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.1)


async def _escalated_gauge(harness: Harness) -> Any:
    metrics = Metrics("deletion-test", CollectorRegistry())
    gauges = DeletionGauges(metrics.registry)
    await gauges.refresh(harness.runtime)
    return metrics.registry.get_sample_value("deletion_releases_escalated")


async def test_an_unanswered_release_is_resent_then_escalated_and_an_answered_one_stops(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    rules = short_financial_rules(tmp_path, seconds=2)
    settings = harness_settings(
        scratch_dsn,
        suffix,
        tmp_path,
        deletion_retention_file=rules,
        deletion_store_timeout_seconds=TIMEOUT,
    )
    async with running_harness(settings) as harness:
        deps = dependencies(settings, harness.runtime)
        lost = uuid.uuid4()
        # The notifier dead-letters this subject's release (never its erasure).
        harness.stores.releases_unanswered_by[lost] = {"notifier"}
        unanswered, _ = await harness.request_deletion(lost)
        answered, _ = await harness.request_deletion()
        done = await harness.wait_for([unanswered, answered], "complete")
        assert set(done.values()) == {"complete"}, done

        # Every store answered this one: it is done, and never sent again.
        row = await _until(harness, answered, "answered_at")
        assert row["answered_at"] is not None
        assert (row["escalated_at"], row["next_check_at"]) == (None, None)
        sends = harness.stores.commands[row["erase_id"]]

        # The other is resent with back-off, then escalated at the timeout.
        row = await _until(harness, unanswered, "escalated_at")
        assert row["escalated_at"] is not None, row
        assert row["reason"] == "no answer in time from: notifier"
        assert (row["answered_at"], row["next_check_at"]) == (None, None)
        assert row["send_attempts"] >= 3
        assert (row["escalated_at"] - row["sent_at"]).total_seconds() >= TIMEOUT
        escalated_id = row["erase_id"]
        resent = harness.stores.commands[escalated_id]
        assert resent == row["send_attempts"]
        assert await _escalated_gauge(harness) == 1
        async with harness.pool.acquire() as conn:  # what the operators' pipeline lists
            listed = await store.escalated_releases(conn, 10)
        assert [(r["request_id"], r["category"]) for r in listed] == [
            (unanswered, "financial_records")
        ]

        await asyncio.sleep(2)  # past several back-offs: neither is sent again
        assert harness.stores.commands[escalated_id] == resent
        assert harness.stores.commands[(await _release(harness, answered))["erase_id"]] == sends

        # The store fixed, an operator retries: resent, answered, and no longer counted.
        harness.stores.releases_unanswered_by.clear()
        async with harness.pool.acquire() as conn, conn.transaction():
            shown = await handlers.retry_escalated(conn, deps, unanswered, uuid.uuid4())
        assert shown.request.stage == "complete"
        row = await _until(harness, unanswered, "answered_at")
        assert row["answered_at"] is not None, row
        assert row["escalated_at"] is None
        assert harness.stores.commands[escalated_id] > resent
        assert await _escalated_gauge(harness) == 0


async def test_the_operators_detail_tells_a_releases_receipts_from_the_erasures(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    # A release's receipts are stored under the request it releases: listed unlabelled
    # beside the erasure's, an operator could not tell which counts were the erasure's.
    rules = short_financial_rules(tmp_path, seconds=2)
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_retention_file=rules)
    async with running_harness(settings) as harness:
        deps = dependencies(settings, harness.runtime)
        request_id, _ = await harness.request_deletion()
        done = await harness.wait_for([request_id], "complete")
        assert done == {request_id: "complete"}, done
        assert (await _until(harness, request_id, "answered_at"))["answered_at"] is not None

        async with operator_api(settings, harness, deps) as (client, headers):
            answer = await client.get(f"/operator/requests/{request_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        receipts = answer.json()["receipts"]
        stores = sorted(settings.store_names())
        by_kind = {
            kind: sorted(
                (r["store"], r["release_category"]) for r in receipts if r.get("kind") == kind
            )
            for kind in ("erasure", "release")
        }
        assert by_kind == {
            "erasure": [(s, None) for s in stores],
            "release": [(s, "financial_records") for s in stores],
        }, receipts
        assert [r["category"] for r in answer.json()["releases"]] == ["financial_records"]
