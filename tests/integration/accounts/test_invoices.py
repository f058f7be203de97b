"""Recording an invoice on real PostgreSQL and a real vault."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.accounts.invoices import InvoiceIn
from services.accounts.routes import operators
from shared.config import PlatformSettings
from shared.observability import Problem, problem_type
from shared.vault import Vault
from tests.integration.accounts.users import accounts_context, operator_claims, stored_user

INVOICE = InvoiceIn(
    number="INV-2026-000042",
    amount="129.90",
    currency="EUR",
    repair_reference="RPR-2026-0815",
    payment_provider="stripe",
    provider_reference="pi_3QxYzAbCdEfGh",
    description="Screen replacement, customer asked for a call back",
)


async def test_an_invoice_for_a_user_erased_since_the_check_is_404_not_500(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    """The user's row is still there, their vault key is not: the erasure got that far
    between the route's check and the sealing of the description."""
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
    await vault.shred(user_id)
    ctx = accounts_context(settings, pool, vault)

    with pytest.raises(Problem) as refused:
        await operators.record_invoice(
            user_id, INVOICE, ctx, operator_claims(uuid.uuid4(), "support")
        )
    assert (refused.value.status, refused.value.type) == (404, problem_type("not-found"))
    assert await pool.fetchval("SELECT count(*) FROM invoices") == 0
