"""An export to a recipient goes a page at a time (P-18, P-19): a page's size is bounded
and the cursor of the next page names the export and where the page before ended. A
malformed cursor or page size is refused before the store is reached (offline_api)."""

from __future__ import annotations

import re
import uuid

import pytest

from services.accounts.routes import operators
from shared.observability import Problem
from tests.unit.accounts.offline_api import offline_client, operator_headers

EXPORTS = f"/operator/recipients/{uuid.uuid4()}/exports"


def test_a_cursor_names_its_export_and_the_last_user_of_the_page_before() -> None:
    export_id, last = uuid.uuid4(), uuid.uuid4()
    cursor = operators.export_cursor(export_id, last)
    assert re.fullmatch(operators._CURSOR, cursor)
    assert operators.read_export_cursor(cursor) == (export_id, last)
    # Every pair, whatever its bytes, makes a cursor the route's pattern admits.
    edge = operators.export_cursor(uuid.UUID(int=2**128 - 1), uuid.UUID(int=0))
    assert re.fullmatch(operators._CURSOR, edge)


@pytest.mark.parametrize("cursor", ["", "abc", "A" * 42, "A" * 44, "A" * 40 + "!!="])
def test_anything_else_is_no_cursor(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        operators.read_export_cursor(cursor)
    assert refused.value.status == 422


def test_a_page_is_bounded() -> None:
    assert 1 <= operators.EXPORT_PAGE <= operators.EXPORT_PAGE_MAX <= 1000


async def test_a_page_asked_for_reaches_the_store() -> None:
    cursor = operators.export_cursor(uuid.uuid4(), uuid.uuid4())
    async with offline_client(operators.router) as client:
        pages: list[dict[str, str | int]] = [{}, {"limit": 1}, {"limit": 1000, "after": cursor}]
        for params in pages:
            clean = await client.post(
                EXPORTS, params=params, headers=operator_headers("privacy_officer")
            )
            assert clean.status_code == 503, (params, clean.text)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"after": "not-a-cursor"},
        {"after": "A" * 42 + "="},
        {"after": "A" * 42 + "+"},
    ],
)
async def test_a_page_too_large_or_a_malformed_cursor_is_refused_before_the_store(
    params: dict[str, str | int],
) -> None:
    async with offline_client(operators.router) as client:
        refused = await client.post(
            EXPORTS, params=params, headers=operator_headers("privacy_officer")
        )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/validation")
