"""The notifier's answer to the deletion service's retention releases, on PostgreSQL.

A release is the same EraseSubject under its own id, without the released category in
``retain_categories``, sent after the account's erasure (the key already shredded). The
notifier must not take it for a new erasure: no erasure record with the subject's id,
no second "your data was deleted" email; it deletes what it keeps of the category.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from services.notifier import handlers
from shared.events.catalogue.deletion import EraseSubject
from shared.vault import Vault

KEPT = ("security_audit", "financial_records", "disclosure_log", "suppression_list")


async def _erase(pool: asyncpg.Pool, vault: Vault, command: EraseSubject) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handlers.start_erasure(conn, vault, command)


async def _receipts(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT convert_from(value, 'UTF8') AS value FROM bus_outbox"
        " WHERE topic = 'deletion.receipts' ORDER BY seq"
    )
    return [json.loads(r["value"])["data"] for r in rows]


async def test_a_release_is_no_new_erasure_and_deletes_only_its_category(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    subject, request_id = uuid.uuid4(), uuid.uuid4()
    first = EraseSubject(request_id=request_id, subject_id=subject, retain_categories=KEPT)
    await _erase(pool, vault, first)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.finish_erasure(conn, request_id)  # the final email cannot go: no contact
    await vault.shred(subject)  # as the deletion service does once every store answered

    async def release(still_kept: tuple[str, ...]) -> uuid.UUID:
        erase_id = uuid.uuid4()
        await _erase(
            pool,
            vault,
            EraseSubject(request_id=erase_id, subject_id=subject, retain_categories=still_kept),
        )
        return erase_id

    async def erasures() -> list[tuple[uuid.UUID, str]]:
        rows = await pool.fetch(
            "SELECT request_id, state FROM erasures WHERE subject_id = $1", subject
        )
        return [(r["request_id"], r["state"]) for r in rows]

    # Releases of categories the notifier holds nothing of: its erasure record stays.
    financial = await release(("security_audit", "disclosure_log", "suppression_list"))
    audit = await release(("disclosure_log", "suppression_list"))
    assert await erasures() == [(request_id, "done")]
    # The disclosure log's release: the record of the erasure goes.
    disclosure = await release(("suppression_list",))
    assert await erasures() == []
    last = await release(())
    await _erase(pool, vault, first)  # a late copy of the first command: no new erasure
    assert await erasures() == []

    notices = await pool.fetch("SELECT notice_id, template FROM notices")
    assert [(n["notice_id"], n["template"]) for n in notices] == [
        (handlers.erasure_notice_id(request_id), "erasure_done")
    ]
    answered = [(r["request_id"], r["erased"]) for r in await _receipts(pool)]
    assert [a for a, _ in answered] == [
        str(i) for i in (request_id, financial, audit, disclosure, last, request_id)
    ]
    assert [e for _, e in answered[1:]] == [{}, {}, {"erasures": 1}, {"erasures": 0}, {}]
