"""The two first admins (P-15): created once, each the head of its own line of
operators; provisional in production, where whoever wrote the configuration knows both
passwords; and never taken from an operator another created, or added as a third line
by a new address in the configuration."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from services.accounts import store
from services.accounts.bootstrap import FirstAdminRefused, ensure_first_admins
from services.accounts.config import AccountsSettings
from services.accounts.context import OPERATOR_EMAIL, OPERATOR_EMAIL_INDEX
from services.accounts.security import hash_password
from shared.service import Runtime
from shared.vault import Vault


def _runtime(pool: asyncpg.Pool, vault: Vault) -> Runtime:
    return cast(Runtime, SimpleNamespace(pool=pool, vault=vault))


def _settings(**changes: Any) -> AccountsSettings:
    # A copy, unvalidated: production's other checks (its secrets) are not what this tests.
    return AccountsSettings().model_copy(update=changes)


async def _first_admins(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, password_set_at, disabled_at FROM operators WHERE created_by IS NULL"
    )


@pytest.mark.promise("P-15")
async def test_two_first_admins_are_made_once_and_set_their_own_passwords_in_production(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    production = _settings(environment="production")
    await ensure_first_admins(_runtime(pool, vault), production)
    await ensure_first_admins(_runtime(pool, vault), production)  # a restart
    admins = await _first_admins(pool)
    assert len(admins) == 2
    # Provisional: every other route answers password-change-required until they do.
    assert [a["password_set_at"] for a in admins] == [None, None]


@pytest.mark.promise("P-15")
async def test_an_address_of_an_operator_another_created_is_no_first_admin(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    await ensure_first_admins(_runtime(pool, vault), _settings())
    root = (await _first_admins(pool))[0]["id"]
    made, email = uuid.uuid4(), "made-by-root@imt.example"
    async with pool.acquire() as conn:
        assert await store.insert_operator(
            conn, made, vault.blind_index(email, purpose=OPERATOR_EMAIL_INDEX),
            await vault.seal(made, email, purpose=OPERATOR_EMAIL), await hash_password("x" * 12),
            ["admin"], root, own_password=True,
        )  # fmt: skip
    # Taken for a first admin (however it is spelt), the two lines would be one: refused,
    # not skipped in silence.
    taken = _settings(accounts_second_admin_email="Made-By-Root@IMT.example ")
    with pytest.raises(FirstAdminRefused, match="SECOND_ADMIN_EMAIL names an operator another"):
        await ensure_first_admins(_runtime(pool, vault), taken)


@pytest.mark.promise("P-15")
async def test_a_new_address_in_the_configuration_adds_no_third_line(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    await ensure_first_admins(_runtime(pool, vault), _settings())
    replaced = _settings(accounts_admin_email="new-admin@imt.example")
    with pytest.raises(FirstAdminRefused, match="IMT_ACCOUNTS_ADMIN_EMAIL names no first admin"):
        await ensure_first_admins(_runtime(pool, vault), replaced)
    assert len(await _first_admins(pool)) == 2
    # Once an admin has disabled the first admin it replaces, the new one is made.
    index = vault.blind_index(AccountsSettings().accounts_admin_email, purpose=OPERATOR_EMAIL_INDEX)
    await pool.execute("UPDATE operators SET disabled_at = now() WHERE email_index = $1", index)
    await ensure_first_admins(_runtime(pool, vault), replaced)
    admins = await _first_admins(pool)
    assert (len(admins), sum(a["disabled_at"] is None for a in admins)) == (3, 2)


@pytest.mark.promise("P-15")
async def test_a_pair_of_new_addresses_is_checked_whole_before_either_is_made(
    pool: asyncpg.Pool, vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """One first admin disabled, both addresses replaced: refused with neither made (one
    made before the other was refused would be a third line for good)."""
    await ensure_first_admins(_runtime(pool, vault), _settings())
    index = vault.blind_index(
        AccountsSettings().accounts_second_admin_email, purpose=OPERATOR_EMAIL_INDEX
    )
    await pool.execute("UPDATE operators SET disabled_at = now() WHERE email_index = $1", index)
    both = _settings(
        accounts_admin_email="c@imt.example", accounts_second_admin_email="d@imt.example"
    )
    with pytest.raises(FirstAdminRefused, match="ADMIN_EMAIL and IMT_ACCOUNTS_SECOND_ADMIN"):
        await ensure_first_admins(_runtime(pool, vault), both)
    assert len(await _first_admins(pool)) == 2
    # The configuration as it was, a first admin disabled: it starts, and says so.
    await ensure_first_admins(_runtime(pool, vault), _settings())
    assert "only 1 first admin(s) active" in caplog.text
