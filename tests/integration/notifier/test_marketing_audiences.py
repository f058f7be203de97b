"""In-site advertising follows the marketing rule for every audience (P-25, P-26, P-18):
a campaign to all users reaches, in-site, only the adults who consented to marketing and
did not opt out of tracking, as a campaign to a list does. Email is decided again per
recipient at send time (tests/e2e/notifier); in-site items have no later check."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest

from services.notifier import handlers, store
from shared.vault import Vault
from tests.integration.notifier.support import address, sealed_contact


@pytest.mark.promise("P-26")
@pytest.mark.promise("P-25")
@pytest.mark.parametrize("audience", ["all", "listed"])
async def test_a_campaign_in_site_reaches_only_consenting_adults_who_allow_tracking(
    pool: asyncpg.Pool, vault: Vault, audience: str
) -> None:
    people = {
        "consenting adult": {"marketing_email": True},
        "child": {"marketing_email": True, "age_band": "under_13"},
        "age unknown": {"marketing_email": True, "age_band": "unknown"},
        "tracking opted out": {"marketing_email": True, "tracking_opt_out": True},
        "no consent": {},
    }
    ids = {who: uuid.uuid4() for who in people}
    async with pool.acquire() as conn, conn.transaction():
        for who, fields in people.items():
            contact = await sealed_contact(vault, ids[who], address(ids[who]))
            await store.upsert_contact(conn, replace(contact, **fields))  # type: ignore[arg-type]
    notice = store.Notice(
        notice_id=uuid.uuid4(),
        template="marketing_newsletter",
        category="marketing",
        audience=audience,
        params={"title": "Spring repairs", "message": "Screens at half price."},
        channels=("email", "inbox"),
        recipient="user",
        pinned=False,
        source="accounts",
        user_ids=tuple(ids.values()) if audience == "listed" else (),
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice, settle=timedelta(0))

    rows = await pool.fetch(
        "SELECT user_id FROM inbox_items WHERE notice_id = $1", notice.notice_id
    )
    reached = {who for who, uid in ids.items() if uid in {r["user_id"] for r in rows}}
    assert reached == {"consenting adult"}
