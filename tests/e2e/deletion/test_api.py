"""The deletion API through the gateway: a user's status with dates, operators' pipeline
and legal holds, and who may see what. DeletionRequested is published on the real
accounts.lifecycle exactly as accounts publishes it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from shared.config import PlatformSettings
from tests.e2e.deletion.support import (
    API,
    GRACE_SECONDS,
    announce_deletion,
    officer,
    token_headers,
    wait_for_stage,
)


async def test_a_user_sees_their_request_with_a_date_for_every_remaining_stage(
    client: httpx.AsyncClient, settings: PlatformSettings
) -> None:
    subject = uuid.uuid4()
    request_id = await announce_deletion(settings, subject)
    shown = await wait_for_stage(client, subject, request_id, ("grace", "paused"), timeout=30)

    assert shown["stage"] == "grace"
    assert shown["cancellable_until"] is not None
    by_stage = {s["stage"]: s for s in shown["stages"]}
    assert list(by_stage) == [
        "requested", "grace", "holds", "erasing", "shredded", "backups_pending", "complete",
    ]  # fmt: skip
    assert by_stage["requested"]["done_at"] is not None
    for stage in ("grace", "holds", "erasing", "shredded", "backups_pending", "complete"):
        assert by_stage[stage]["expected_by"] is not None, stage
    assert set(shown["legal_deadlines"]) == {"gdpr", "ccpa"}

    mine = await client.get(f"{API}/me/requests", headers=token_headers(subject))
    assert [r["request_id"] for r in mine.json()["requests"]] == [str(request_id)]


# Any stage: the request is known to the deletion service.
STAGES_SEEN = ("requested", "grace", "holds", "erasing", "shredded", "backups_pending",
               "complete", "paused", "escalated")  # fmt: skip


async def test_a_users_requests_come_a_page_at_a_time_newest_first(
    client: httpx.AsyncClient, settings: PlatformSettings
) -> None:
    """Each device or request a user deletes is a deletion request of theirs: the list
    is paged (each entry is described whole), newest first, each request once."""
    subject = uuid.uuid4()
    made = []
    for _ in range(5):
        item = uuid.uuid4()
        made.append(await announce_deletion(settings, subject, scope="device", item=item))
        # Each seen before the next is announced: their requested_at order is made's.
        await wait_for_stage(client, subject, made[-1], STAGES_SEEN, timeout=30)
    headers, pages, before = token_headers(subject), [], None
    while True:
        params = {"limit": 2} | ({} if before is None else {"before": before})
        page = await client.get(f"{API}/me/requests", params=params, headers=headers)
        assert page.status_code == 200, page.text
        pages.append([r["request_id"] for r in page.json()["requests"]])
        before = page.json()["next_before"]
        if before is None:
            break
        assert before == pages[-1][-1]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r for p in pages for r in p] == [str(r) for r in reversed(made)]
    too_many = await client.get(f"{API}/me/requests", params={"limit": 101}, headers=headers)
    assert too_many.status_code == 422


async def test_a_user_never_sees_another_users_request(
    client: httpx.AsyncClient, settings: PlatformSettings
) -> None:
    subject, other = uuid.uuid4(), uuid.uuid4()
    request_id = await announce_deletion(settings, subject)
    await wait_for_stage(client, subject, request_id, ("grace", "holds", "erasing"), timeout=30)

    theirs = await client.get(f"{API}/me/requests/{request_id}", headers=token_headers(other))
    assert theirs.status_code == 404
    assert (await client.get(f"{API}/me/requests", headers=token_headers(other))).json() == {
        "requests": [], "next_before": None,
    }  # fmt: skip
    # Nor pages through them: another's request is no cursor of theirs.
    paged = await client.get(
        f"{API}/me/requests", params={"before": str(request_id)}, headers=token_headers(other)
    )
    assert (paged.status_code, paged.json()["type"]) == (
        422, "https://imt.example/problems/invalid-cursor",
    )  # fmt: skip
    assert (await client.get(f"{API}/me/requests")).status_code == 401
    operator_as_user = token_headers(uuid.uuid4(), "operator", ("admin",))
    assert (await client.get(f"{API}/me/requests", headers=operator_as_user)).status_code == 403


async def test_only_privacy_officers_and_admins_see_the_pipeline(
    client: httpx.AsyncClient,
) -> None:
    support = token_headers(uuid.uuid4(), "operator", ("support",))
    assert (await client.get(f"{API}/operator/pipeline", headers=support)).status_code == 403
    user = token_headers(uuid.uuid4())
    assert (await client.get(f"{API}/operator/pipeline", headers=user)).status_code == 403
    response = await client.get(f"{API}/operator/pipeline", headers=officer())
    assert response.status_code == 200
    assert set(response.json()) == {"counts", "overdue", "escalations", "release_escalations"}


@pytest.mark.promise("P-13")
async def test_a_legal_hold_pauses_the_request_with_its_reason_and_lifting_resumes(
    client: httpx.AsyncClient, settings: PlatformSettings
) -> None:
    subject = uuid.uuid4()
    request_id = await announce_deletion(settings, subject)
    await wait_for_stage(client, subject, request_id, ("grace",), timeout=30)
    hold_url = f"{API}/operator/requests/{request_id}/hold"

    held = await client.post(hold_url, json={"reason": "litigation hold 7"}, headers=officer())
    assert held.status_code == 200, held.text
    assert held.json()["stage"] == "paused"
    counts = (await client.get(f"{API}/operator/pipeline", headers=officer())).json()["counts"]
    assert counts["paused"] >= 1

    await asyncio.sleep(GRACE_SECONDS + 1)  # past the grace period: the hold delays it
    seen = await wait_for_stage(client, subject, request_id, ("paused",))
    assert seen["on_hold"] is True
    assert seen["stage"] == "paused"
    assert all(s["expected_by"] is None for s in seen["stages"] if s["done_at"] is None)
    assert seen["cancellable_until"] is not None  # accounts still takes a cancel
    detail = await client.get(f"{API}/operator/requests/{request_id}", headers=officer())
    # The operator's words stay with the hold: the paused request carries a code only.
    assert detail.json()["reason"] == "legal_hold"
    assert detail.json()["legal_hold"]["reason"] == "litigation hold 7"

    # Restated through the request it paused: recorded, the request paused as it was.
    again = await client.post(hold_url, json={"reason": "second hold"}, headers=officer())
    assert again.status_code == 200, again.text
    assert again.json()["stage"] == "paused"
    detail = await client.get(f"{API}/operator/requests/{request_id}", headers=officer())
    restated = detail.json()["legal_hold"]["restatements"]
    assert [r["reason"] for r in restated] == ["second hold"]
    before_lift = datetime.now(UTC)
    lifted = await client.delete(hold_url, headers=officer())
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["stage"] in ("grace", "holds", "erasing")
    # Lifted past the grace end: what remains is dated from the lift, not the grace end.
    late = [
        s["stage"]
        for s in lifted.json()["stages"]
        if s["done_at"] is None and datetime.fromisoformat(s["expected_by"]) < before_lift
    ]
    assert late == []
    resumed = await wait_for_stage(client, subject, request_id, ("holds", "erasing", "shredded",
                                   "backups_pending", "escalated", "complete"))  # fmt: skip
    assert resumed["stage"] != "paused"


async def test_holds_need_a_reason_and_a_known_request(client: httpx.AsyncClient) -> None:
    unknown = f"{API}/operator/requests/{uuid.uuid4()}/hold"
    assert (await client.post(unknown, json={"reason": "x"}, headers=officer())).status_code == 422
    blank = await client.post(unknown, json={"reason": "     "}, headers=officer())
    assert blank.status_code == 422, blank.text  # blanks stripped first: too short
    assert blank.headers["content-type"].startswith("application/problem+json")
    # Kept for good, with no erasure to reach it: it may name no one.
    naming = {"reason": "claim by jane.roe@example.org, call +44 20 7183 8750"}
    personal = await client.post(unknown, json=naming, headers=officer())
    assert personal.status_code == 422, personal.text
    assert personal.json()["type"].endswith("personal-data")
    assert "jane.roe" not in personal.text
    missing = await client.post(unknown, json={"reason": "court order"}, headers=officer())
    assert missing.status_code == 404
