"""An export to a recipient through the API, a page at a time (P-18, P-19): the pages
of one export share its id, follow one another by the Link header (or ``next``), hold
every consenting user once and no one else, and each disclosure is logged and audited
once. An audited read between two pages is answered at once and is audited between
them (tests/integration/accounts/test_paged_exports.py: also while a page is stuck)."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx
import pytest

from tests.e2e.accounts.support import API, BusTail, Operator, active_user, new_operator, unique


@pytest.mark.promise("P-18")
async def test_an_export_of_more_users_than_a_page_comes_in_pages_each_user_once(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    made = await client.post(
        f"{API}/operator/recipients",
        json={"name": unique("partner"), "kind": "partner", "purpose": "repairs",
              "allowed_fields": ["user_id", "email"]},
        headers=root.headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    partner = made.json()["id"]
    officer = await new_operator(client, root, "privacy_officer")
    support = await new_operator(client, root, "support")
    consenting = [await active_user(client, bus) for _ in range(3)]
    silent = await active_user(client, bus)
    for user in consenting:
        granted = await client.put(
            f"{API}/me/consents/{partner}", json={"granted": True}, headers=user.headers
        )
        assert granted.status_code == 200, granted.text
    exports = f"{API}/operator/recipients/{partner}/exports"

    first = await client.post(exports, params={"limit": 2}, headers=officer.headers)
    assert first.status_code == 200, first.text
    following = first.json()["next"]
    assert following
    link = re.fullmatch(r'<\?(.+)>; rel="next"', first.headers["link"])
    assert link is not None
    assert link.group(1) == f"after={following}&limit=2"
    # Another operator's audited read, between the pages: answered, audited between them.
    someone = consenting[0].id
    read = await client.get(
        f"{API}/operator/users/{someone}", params={"purpose": "answering a ticket"},
        headers=support.headers,
    )  # fmt: skip
    assert read.status_code == 200, read.text
    second = await client.post(f"{exports}?{link.group(1)}", headers=officer.headers)
    assert second.status_code == 200, second.text
    assert second.json()["next"] is None
    assert "link" not in second.headers

    pages = [first.json(), second.json()]
    export_id = first.json()["export_id"]
    assert {p["export_id"] for p in pages} == {export_id}
    assert [len(p["records"]) for p in pages] == [2, 1]
    exported = [r["user_id"] for p in pages for r in p["records"]]
    assert exported == sorted(u.id for u in consenting)
    assert {r["email"] for p in pages for r in p["records"]} == {u.email for u in consenting}
    assert silent.id not in first.text + second.text
    assert silent.email not in first.text + second.text

    logged = await db.fetch(
        "SELECT d.user_id, a.chain_seq FROM disclosures d JOIN audit_log a"
        " ON a.subject_id = d.user_id AND a.action = 'disclose' AND a.operator_id = d.operator_id"
        " WHERE d.export_id = $1 ORDER BY a.chain_seq",
        uuid.UUID(export_id),
    )
    assert [str(r["user_id"]) for r in logged] == exported  # once each, pages in order
    read_seq = await db.fetchval(
        "SELECT chain_seq FROM audit_log WHERE operator_id = $1 AND action = 'read'",
        uuid.UUID(support.id),
    )
    assert logged[1]["chain_seq"] < read_seq < logged[2]["chain_seq"]
    for table, column in (("disclosures", "user_id"), ("audit_log", "subject_id")):
        found = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1", uuid.UUID(silent.id)
        )
        assert found == 0, table

    # The second page asked for again (its answer lost): the same records, logged and
    # audited once in the export all the same.
    again = await client.post(exports, params={"after": following}, headers=officer.headers)
    assert again.status_code == 200, again.text
    assert (again.json()["export_id"], again.json()["records"]) == (export_id, pages[1]["records"])
    assert await db.fetchval(
        "SELECT count(*) FROM disclosures WHERE export_id = $1", uuid.UUID(export_id)
    ) == len(consenting)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'disclose' AND operator_id = $1",
        uuid.UUID(officer.id),
    ) == len(consenting)
    # A cursor is its operator's: another privacy officer cannot continue the export.
    other = await new_operator(client, root, "privacy_officer")
    refused = await client.post(exports, params={"after": following}, headers=other.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/invalid-cursor")
    # A small export is one page, as before: no next, no Link.
    whole = await client.post(exports, headers=officer.headers)
    assert whole.status_code == 200, whole.text
    assert (len(whole.json()["records"]), whole.json()["next"]) == (3, None)
    assert "link" not in whole.headers
