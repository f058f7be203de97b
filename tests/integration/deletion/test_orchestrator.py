"""The orchestrator on real Kafka and PostgreSQL, with stand-in stores (a test helper).

These prove the orchestration (stages, receipts, resends, escalation, holds, shredding,
backups gating, the certificate); the promises themselves are proved end to end in
tests/e2e/deletion against the real services.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from services.deletion import backups, handlers
from services.deletion.config import DeletionSettings
from services.deletion.gauges import DeletionGauges
from shared.bus import Delivery, read_record
from shared.bus.kafka_options import client_options
from shared.events.catalogue.accounts import (
    DeletionCancelled,
    DeletionConfirmed,
    DeletionRequested,
)
from shared.events.catalogue.deletion import DeletionStageChanged
from shared.events.catalogue.notifier import SendNotice
from shared.observability import Metrics
from tests.integration.deletion.harness import (
    Harness,
    harness_settings,
    running_harness,
    send,
    short_financial_rules,
)

HAPPY_PATH = ["requested", "grace", "holds", "erasing", "shredded", "backups_pending", "complete"]


@pytest.fixture
async def harness(scratch_dsn: str, suffix: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(harness_settings(scratch_dsn, suffix, tmp_path)) as h:
        yield h


async def _read_topic(
    settings: DeletionSettings,
    topic: str,
    enough: Callable[[list[Delivery]], bool] = lambda _: True,
    timeout: float = 30.0,
) -> list[Delivery]:
    """The topic from the beginning, read up to its end and until ``enough`` holds (an
    event may still be on its way from the outbox when the database shows its effect)."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic), **client_options(settings), group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    found: list[Delivery] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    read = read_record(r.value, r.key, r.topic, r.partition, r.offset)
                    if isinstance(read, Delivery):
                        found.append(read)
            assigned = consumer.assignment()
            ends = await consumer.end_offsets(list(assigned)) if assigned else {}
            at_end = bool(ends) and all(
                [await consumer.position(tp) >= end for tp, end in ends.items()]
            )
            if (at_end and enough(found)) or time.monotonic() > deadline:
                return found
    finally:
        await consumer.stop()


def _stages_of(request_id: uuid.UUID, found: list[Delivery]) -> list[str]:
    return [
        d.event.stage for d in found
        if isinstance(d.event, DeletionStageChanged) and d.event.request_id == request_id
    ]  # fmt: skip


async def test_a_request_goes_through_every_stage_once_and_gets_a_certificate(
    harness: Harness,
) -> None:
    bystander = uuid.uuid4()
    sealed = await harness.runtime.vault.seal(bystander, "kept", purpose="t")  # type: ignore[union-attr]
    request_id, subject = await harness.request_deletion()

    assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"

    assert await harness.history(request_id) == HAPPY_PATH
    assert await harness.runtime.vault.is_shredded(subject)  # type: ignore[union-attr]
    assert await harness.runtime.vault.open(bystander, sealed, purpose="t") == "kept"  # type: ignore[union-attr]
    receipts = await harness.pool.fetch(
        "SELECT store FROM store_receipts WHERE request_id = $1", request_id
    )
    assert sorted(r["store"] for r in receipts) == ["accounts", "analytics", "notifier"]
    certificate = await harness.pool.fetchrow(
        "SELECT body, digest FROM certificates WHERE request_id = $1", request_id
    )
    assert certificate is not None
    assert str(subject) not in str(certificate["body"])
    assert set(certificate["body"]["stores"]) == {"accounts", "notifier", "analytics"}
    assert certificate["body"]["verified"]["vault_key_shredded"] is True
    # The retention rules were applied: kept categories named in the command.
    assert "financial_records" in harness.stores.seen[0].retain_categories

    stages = await _read_topic(
        harness.settings,
        "deletion.stages",
        lambda found: len(_stages_of(request_id, found)) >= len(HAPPY_PATH),
    )
    assert _stages_of(request_id, stages) == HAPPY_PATH
    # Accounts confirms the request; the notifier sends the last email itself.
    assert await _notices(harness, subject) == []


async def _notices(harness: Harness, subject: uuid.UUID, expected: int = 0) -> list[SendNotice]:
    """The notifier commands about ``subject``: read until ``expected`` of them arrived."""

    def of_subject(found: list[Delivery]) -> list[SendNotice]:
        return [
            d.event for d in found
            if isinstance(d.event, SendNotice) and d.event.user_ids == (subject,)
        ]  # fmt: skip

    found = await _read_topic(
        harness.settings, "notifier.commands", lambda f: len(of_subject(f)) >= expected
    )
    return of_subject(found)


async def test_duplicate_receipts_change_nothing_and_resends_reach_slow_stores(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_retry_seconds=0.3)
    async with running_harness(settings) as harness:
        harness.stores.ignore_first = 2  # the first two commands get no answer
        request_id, _ = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
        assert harness.stores.commands[request_id] >= 3
        # Resends after completion-relevant answers produce duplicate receipts: harmless.
        count = await harness.pool.fetchval(
            "SELECT count(*) FROM store_receipts WHERE request_id = $1", request_id
        )
        assert count == 3
        assert await harness.history(request_id) == HAPPY_PATH


async def test_cancel_in_grace_erases_nothing(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings) as harness:
        request_id, subject = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "grace"))[request_id] == "grace"
        cancel = DeletionCancelled(user_id=subject, request_id=request_id)
        await send(harness.producer, settings, cancel, subject)
        assert (await harness.wait_for([request_id], "cancelled"))[request_id] == "cancelled"
        # Both grace periods end now; the request left alone, the control, erases to the
        # end: the cancelled one had every chance to be erased too.
        control, _ = await harness.request_deletion()
        assert (await harness.wait_for([control], "grace"))[control] == "grace"
        await harness.pool.execute(
            "UPDATE deletion_requests SET grace_ends_at = now() - interval '1 second',"
            " next_check_at = now() WHERE request_id = ANY($1::uuid[])",
            [request_id, control],
        )
        assert (await harness.wait_for([control], "complete"))[control] == "complete"
        assert harness.stores.commands[request_id] == 0  # no EraseSubject was ever sent
        assert {c.request_id for c in harness.stores.seen} == {control}
        assert not await harness.runtime.vault.is_shredded(subject)  # type: ignore[union-attr]
        assert await harness.history(request_id) == ["requested", "grace", "cancelled"]
        notices = await _notices(harness, subject, expected=1)
        assert [(n.template, n.params) for n in notices] == [
            ("deletion_cancelled", {"request_id": str(request_id)})
        ]


@pytest.mark.promise("P-15")
async def test_an_account_is_erased_only_after_accounts_closed_the_cancel_window(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """Past grace, a request waits in ``holds`` for DeletionConfirmed: a cancel that
    accounts took meanwhile still cancels it, and nothing is ever sent to the stores."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)  # grace 0
    async with running_harness(settings) as harness:
        waiting, waiting_subject = await _request_kept_open(harness)
        late, late_subject = await _request_kept_open(harness)
        assert set((await harness.wait_for([waiting, late], "holds")).values()) == {"holds"}
        await asyncio.sleep(1.0)  # several ticks: still waiting, nothing sent
        assert await harness.stage(waiting) == "holds"
        assert harness.stores.commands[waiting] == harness.stores.commands[late] == 0

        await send(harness.producer, settings,
                   DeletionCancelled(user_id=waiting_subject, request_id=waiting),
                   waiting_subject)  # fmt: skip
        assert (await harness.wait_for([waiting], "cancelled"))[waiting] == "cancelled"
        confirmation = DeletionConfirmed(user_id=late_subject, request_id=late)
        await send(harness.producer, settings, confirmation, late_subject)
        assert (await harness.wait_for([late], "complete"))[late] == "complete"

        assert harness.stores.commands[waiting] == 0
        assert not await harness.runtime.vault.is_shredded(waiting_subject)  # type: ignore[union-attr]
        assert await harness.history(waiting) == ["requested", "grace", "holds", "cancelled"]
        closed_at = await harness.pool.fetchval(
            "SELECT cancel_window_closed_at FROM deletion_requests WHERE request_id = $1", late
        )
        assert closed_at is not None
        # Accounts confirms only past grace: a confirmation it did not send changes
        # nothing for a cancelled request either.
        await send(harness.producer, settings,
                   DeletionConfirmed(user_id=waiting_subject, request_id=waiting),
                   waiting_subject)  # fmt: skip
        await asyncio.sleep(0.5)
        assert await harness.stage(waiting) == "cancelled"


async def _request_kept_open(harness: Harness) -> tuple[uuid.UUID, uuid.UUID]:
    """A whole-account request whose window the stand-in accounts will not close."""
    subject, request_id = uuid.uuid4(), uuid.uuid4()
    harness.stores.subjects.add(subject)
    harness.stores.windows_kept_open.add(request_id)
    await send(harness.producer, harness.settings,
               DeletionRequested(user_id=subject, request_id=request_id, initiated_by="user"),
               subject)  # fmt: skip
    return request_id, subject


async def test_a_store_that_never_answers_escalates_and_others_are_untouched(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(
        # Long enough for the stand-in stores' group to join on a slow run: only the
        # silent store may be named.
        scratch_dsn,
        suffix,
        tmp_path,
        deletion_store_timeout_seconds=10,
        deletion_retry_seconds=0.5,
    )
    async with running_harness(settings) as harness:
        harness.stores.silent = {"analytics"}
        stuck, subject = await harness.request_deletion()
        assert (await harness.wait_for([stuck], "escalated"))[stuck] == "escalated"
        reason = await harness.pool.fetchval(
            "SELECT reason FROM deletion_requests WHERE request_id = $1", stuck
        )
        assert reason == "no answer in time from: analytics"
        assert harness.stores.commands[stuck] >= 2  # resent before escalating
        assert not await harness.runtime.vault.is_shredded(subject)  # type: ignore[union-attr]

        # An operator retries. Accounts and notifier answered the first pass; their
        # receipts must not answer for this one: the retry waits until every store has
        # answered it. Here analytics answers first, the other two only later.
        harness.stores.silent = {"accounts", "notifier"}
        sent_before = harness.stores.commands[stuck]
        # A long timeout for the retried pass: waiting here must not escalate on a slow run.
        patient = replace(
            _deps(harness),
            settings=settings.model_copy(update={"deletion_store_timeout_seconds": 120}),
        )
        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.retry_escalated(conn, patient, stuck, uuid.uuid4())
        assert await _current_receipts(harness, stuck, until={"analytics"}) == {"analytics"}
        await asyncio.sleep(1.5)  # the receipt woke the ticker: it had time to move on
        assert await harness.stage(stuck) == "erasing"
        assert "shredded" not in await harness.history(stuck)
        assert not await harness.runtime.vault.is_shredded(subject)  # type: ignore[union-attr]

        harness.stores.silent = set()  # the next resend is answered by all three
        assert (await harness.wait_for([stuck], "complete"))[stuck] == "complete"
        assert harness.stores.commands[stuck] > sent_before + 1  # resent while it waited
        assert await harness.history(stuck) == [
            "requested", "grace", "holds", "erasing", "escalated",
            "erasing", "shredded", "backups_pending", "complete",
        ]  # fmt: skip
        superseded = await harness.pool.fetch(
            "SELECT store FROM store_receipts WHERE erase_id = $1 AND superseded_at IS NOT NULL",
            stuck,
        )
        assert sorted(r["store"] for r in superseded) == ["accounts", "notifier"]
        assert await _current_receipts(harness, stuck) == {"accounts", "notifier", "analytics"}


async def _current_receipts(
    harness: Harness, erase_id: uuid.UUID, until: set[str] | None = None
) -> set[str]:
    """The stores whose receipt counts for ``erase_id``, once ``until`` all answered."""
    deadline = time.monotonic() + 30
    while True:
        rows = await harness.pool.fetch(
            "SELECT store FROM store_receipts WHERE erase_id = $1 AND superseded_at IS NULL",
            erase_id,
        )
        stores = {r["store"] for r in rows}
        if until is None or until <= stores or time.monotonic() > deadline:
            return stores
        await asyncio.sleep(0.1)


def _deps(harness: Harness) -> handlers.Deps:
    from services.deletion.bootstrap import dependencies

    return dependencies(harness.settings, harness.runtime)


async def test_a_legal_hold_pauses_with_its_reason_and_lifting_resumes(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    # A long grace, ended by hand once the hold is in place: placing it cannot race the
    # end of the grace period on a slow run.
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings) as harness:
        request_id, _ = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "grace"))[request_id] == "grace"
        operator = uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.place_hold(conn, _deps(harness), request_id, "court order 12", operator)
        assert await harness.stage(request_id) == "paused"
        # The grace period ends now and the request is due: the ticker looks at it (a
        # paused request has no step, so the ticker clears its next check) and must
        # leave it paused.
        await harness.pool.execute(
            "UPDATE deletion_requests SET grace_ends_at = now() - interval '1 second',"
            " next_check_at = now() WHERE request_id = $1",
            request_id,
        )
        assert await _ticker_visited(harness, request_id), await harness.history(request_id)
        assert await harness.stage(request_id) == "paused"
        assert await harness.history(request_id) == ["requested", "grace", "paused"]
        assert harness.stores.seen == []
        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.lift_hold(conn, _deps(harness), request_id, operator)
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
        reasons = await harness.pool.fetch(
            "SELECT stage, reason, actor FROM stage_history WHERE request_id = $1 ORDER BY id",
            request_id,
        )
        paused = [r for r in reasons if r["stage"] == "paused"]
        assert [(r["reason"], r["actor"]) for r in paused] == [("legal_hold", operator)]
        # The operator's words stay in legal_holds: deletion.stages carries the code only.
        announced = await _read_topic(
            harness.settings,
            "deletion.stages",
            lambda found: "complete" in _stages_of(request_id, found),
        )
        [pause] = [
            d.event for d in announced
            if isinstance(d.event, DeletionStageChanged) and d.event.stage == "paused"
        ]  # fmt: skip
        assert (pause.request_id, pause.reason) == (request_id, "legal_hold")
        assert not [d for d in announced if "court order" in d.event.model_dump_json()]


async def _ticker_visited(harness: Harness, request_id: uuid.UUID) -> bool:
    """Whether the ticker claimed the due request within 30 s: it clears the next check of
    a request it left where it was (or sets it later), and only it changes it here."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        due = await harness.pool.fetchval(
            "SELECT next_check_at <= now() FROM deletion_requests WHERE request_id = $1",
            request_id,
        )
        if due is not True:  # NULL (nothing due) or a later check: it was looked at
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_device_goes_through_the_same_commands_without_a_shred(harness: Harness) -> None:
    device = uuid.uuid4()
    request_id, subject = await harness.request_deletion(scope="device", item_id=device)
    assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
    assert (harness.stores.seen[0].scope, harness.stores.seen[0].item_id) == ("device", device)
    assert not await harness.runtime.vault.is_shredded(subject)  # type: ignore[union-attr]
    assert "shredded" not in await harness.history(request_id)


async def test_backups_taken_before_the_erasure_hold_the_request_until_they_expire(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_verify_backups=False, deletion_grace_seconds=1
    )
    async with running_harness(settings) as harness:
        # Taken before the request, so before its erasure whatever the machine's speed.
        manifest = await backups.take(settings, databases=["analytics"])
        request_id, _ = await harness.request_deletion()
        assert (manifest.folder / "manifest.json").exists()
        assert (await harness.wait_for([request_id], "backups_pending"))[request_id] == (
            "backups_pending"
        )
        await asyncio.sleep(1.5)
        assert await harness.stage(request_id) == "backups_pending"  # the snapshot lives

        await harness.pool.execute(
            "UPDATE backup_snapshots SET expires_at = now() WHERE snapshot_id = $1",
            manifest.snapshot_id,
        )
        assert await backups.expire(settings) == [manifest.snapshot_id]
        assert not manifest.folder.exists()
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"


async def test_the_worker_expires_snapshots_on_its_own_schedule(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(
        scratch_dsn,
        suffix,
        tmp_path,
        deletion_verify_backups=False,
        deletion_grace_seconds=1,
        deletion_backup_expire_seconds=0.2,
    )
    async with running_harness(settings) as harness:
        # Both taken before the request, so before its erasure whatever the machine's speed.
        expiring = await backups.take(settings, databases=["analytics"])
        kept = await backups.take(settings, databases=["analytics"], retention=timedelta(days=1))
        request_id, _ = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "backups_pending"))[request_id] == (
            "backups_pending"
        )
        await asyncio.sleep(0.6)  # three expiry rounds: neither snapshot is due yet
        assert expiring.folder.exists()
        assert kept.folder.exists()

        await harness.pool.execute(
            "UPDATE backup_snapshots SET expires_at = now() WHERE snapshot_id = $1",
            expiring.snapshot_id,
        )
        expired_sql = "SELECT expired_at IS NOT NULL FROM backup_snapshots WHERE snapshot_id = $1"
        for _ in range(600):  # nobody runs `backups expire`: the worker does
            # The folder goes first, the row's mark commits after it: wait for both.
            marked = await harness.pool.fetchval(expired_sql, expiring.snapshot_id)
            if marked and not expiring.folder.exists():
                break
            await asyncio.sleep(0.1)
        assert not expiring.folder.exists()
        assert kept.folder.exists()
        expired = await harness.pool.fetch(
            "SELECT snapshot_id FROM backup_snapshots WHERE expired_at IS NOT NULL"
        )
        assert [r["snapshot_id"] for r in expired] == [expiring.snapshot_id]
        # The request waits for the snapshot that is still live.
        assert await harness.stage(request_id) == "backups_pending"


async def test_a_missing_backup_folder_is_not_taken_for_expired_snapshots(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path / "volume")
    async with running_harness(settings, with_worker=False) as harness:
        snapshot = await backups.take(
            settings, databases=["analytics"], retention=timedelta(seconds=1)
        )
        root = settings.backup_dir()
        assert (root / backups.MARKER).is_file()  # written by `take`
        root.rename(tmp_path / "elsewhere")  # the volume is not mounted...
        now = datetime.now(UTC) + timedelta(seconds=2)  # ...and the snapshot is due
        assert await backups.expire_due(harness.pool, root, now) == []
        root.mkdir()  # ...leaving its mount point, empty
        assert await backups.expire_due(harness.pool, root, now) == []
        (tmp_path / "elsewhere" / backups.MARKER).rename(root / backups.MARKER)
        # Mounted (the marker is back), and the snapshot's folder is really gone.
        assert await backups.expire_due(harness.pool, root, now) == [snapshot.snapshot_id]


async def test_a_kept_category_is_erased_by_a_second_command_when_its_period_ends(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    rules = short_financial_rules(tmp_path, seconds=3.5)
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_retention_file=rules)
    async with running_harness(settings) as harness:
        request_id, subject = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
        first = harness.stores.seen[0]
        assert first.retain_categories == ("financial_records",)
        release = await harness.release_of(request_id)
        assert (release.subject_id, release.retain_categories) == (subject, ())
        sent = await harness.pool.fetchval(
            "SELECT sent_at FROM retention_releases WHERE request_id = $1", request_id
        )
        assert sent is not None
        for _ in range(600):  # the stores' receipts for the release are recorded too
            receipts = await harness.pool.fetchval(
                "SELECT count(*) FROM store_receipts WHERE erase_id = $1", release.request_id
            )
            if receipts == 3:
                break
            await asyncio.sleep(0.1)
        assert receipts == 3


FINANCIAL_DUE = (
    "SELECT due_at FROM retention_releases WHERE request_id = $1 AND category = 'financial_records'"
)


async def test_a_release_is_due_when_the_store_says_its_last_kept_record_may_go(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """Under the shipped rules (5 years from the erasure), a store whose youngest kept
    invoice's period ends today has its release sent now, not five years on."""
    shipped = str(Path(handlers.__file__).parent / "retention.toml")  # whatever the env says
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_retention_file=shipped)
    async with running_harness(settings) as harness:
        subject = uuid.uuid4()
        harness.stores.kept_until[subject] = {"financial_records": datetime.now(UTC).date()}
        request_id, _ = await harness.request_deletion(subject)
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
        due = await harness.pool.fetchval(FINANCIAL_DUE, request_id)
        assert due < datetime.now(UTC) + timedelta(days=1)
        release = await harness.release_of(request_id)
        assert release.subject_id == subject
        assert "financial_records" not in release.retain_categories  # the others wait
        # The control: a subject whose store says nothing waits the rule's whole period.
        other, _ = await harness.request_deletion()
        assert (await harness.wait_for([other], "complete"))[other] == "complete"
        due = await harness.pool.fetchval(FINANCIAL_DUE, other)
        assert due > datetime.now(UTC) + timedelta(days=1800)


async def test_metrics_count_open_requests_per_stage_the_oldest_and_the_late(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    metrics = Metrics("deletion-test", CollectorRegistry())
    gauges = DeletionGauges(metrics.registry)
    sample = metrics.registry.get_sample_value
    async with running_harness(settings) as harness:
        requests = [await harness.request_deletion() for _ in range(3)]
        ids = [request_id for request_id, _ in requests]
        assert set((await harness.wait_for(ids, "grace")).values()) == {"grace"}
        await harness.pool.execute(
            "UPDATE deletion_requests SET stage_entered_at = now() - interval '2 hours'"
            " WHERE request_id = $1",
            ids[0],
        )
        for request_id, days in ((ids[0], 40), (ids[1], 50)):  # one month ago; and 45 days
            await harness.pool.execute(
                "UPDATE deletion_requests SET requested_at = now() - make_interval(days => $2)"
                " WHERE request_id = $1",
                request_id,
                days,
            )
        cancelled, subject = requests[2]
        cancel = DeletionCancelled(user_id=subject, request_id=cancelled)
        await send(harness.producer, settings, cancel, subject)
        assert (await harness.wait_for([cancelled], "cancelled"))[cancelled] == "cancelled"

        await gauges.refresh(harness.runtime)

    assert sample("deletion_requests", {"stage": "grace"}) == 2
    assert 7200 <= (sample("deletion_stage_oldest_seconds", {"stage": "grace"}) or 0) < 7300
    assert sample("deletion_requests", {"stage": "erasing"}) == 0
    assert sample("deletion_stage_oldest_seconds", {"stage": "erasing"}) == 0
    assert sample("deletion_requests", {"stage": "cancelled"}) is None  # final: not reported
    assert sample("deletion_requests_overdue", {"regime": "gdpr"}) == 2
    assert sample("deletion_requests_overdue", {"regime": "ccpa"}) == 1
