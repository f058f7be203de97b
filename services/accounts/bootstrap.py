"""The accounts service's composition root: settings read once, runtime opened once."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from services.accounts import store
from services.accounts.config import AccountsSettings
from services.accounts.context import OPERATOR_EMAIL, OPERATOR_EMAIL_INDEX
from services.accounts.domain.roles import ADMIN
from services.accounts.security import hash_password
from shared.service import Runtime, open_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "accounts"


async def bootstrap(settings: AccountsSettings, *, with_producer: bool = False) -> Runtime:
    return await open_runtime(
        settings, DATABASE, MIGRATIONS, with_vault=True, with_producer=with_producer
    )


class FirstAdminRefused(RuntimeError):
    """The configured first admins cannot be what their rule needs: the API does not start."""


async def ensure_first_admins(runtime: Runtime, settings: AccountsSettings) -> None:
    """Create the two configured first admins, each unless it exists already.

    Two, held by two people: whoever creates an operator chose its first password, so
    an operator's deletion is approved only across two lines of creators (P-15). With
    one first admin every operator would share it, and no approval could ever pass.
    In production their configured passwords are provisional, as those an admin hands
    out: whoever wrote the configuration knows both, so each holder sets their own at
    their first login (audited) before they may do anything else.
    """
    provisional = settings.environment == "production"
    for variable, email, password in (
        ("IMT_ACCOUNTS_ADMIN_EMAIL", settings.accounts_admin_email,
         settings.accounts_admin_password),
        ("IMT_ACCOUNTS_SECOND_ADMIN_EMAIL", settings.accounts_second_admin_email,
         settings.accounts_second_admin_password),
    ):  # fmt: skip
        await _ensure_first_admin(
            runtime, variable, email, password.get_secret_value(), provisional=provisional
        )


async def _ensure_first_admin(
    runtime: Runtime, variable: str, email: str, password: str, *, provisional: bool
) -> None:
    assert runtime.vault is not None
    vault = runtime.vault
    index = vault.blind_index(email, purpose=OPERATOR_EMAIL_INDEX)
    async with runtime.pool.acquire() as conn:
        found = await conn.fetchrow(
            "SELECT created_by FROM operators WHERE email_index = $1", index
        )
        if found is not None and found["created_by"] is not None:
            # Taken for a first admin, it would leave one line: no approval could pass.
            raise FirstAdminRefused(
                f"{variable} names an operator another operator created: name another"
                " address, one no operator has"
            )
        if found is not None:
            return  # this first admin (a disabled one stays disabled)
        active = await conn.fetchval(
            "SELECT count(*) FROM operators WHERE created_by IS NULL AND disabled_at IS NULL"
        )
        if active >= FIRST_ADMINS:
            # A new address in the configuration is not a way to add a line of one's own.
            raise FirstAdminRefused(
                f"{variable} names no first admin, and {active} are active: an admin disables"
                " the one it replaces first (audited)"
            )
    operator_id = uuid4()
    password_hash = await hash_password(password)
    sealed = await vault.seal(operator_id, email, purpose=OPERATOR_EMAIL)
    async with runtime.pool.acquire() as conn:
        await store.insert_operator(
            conn, operator_id, index, sealed, password_hash, [ADMIN], None,
            own_password=not provisional,
        )  # fmt: skip


FIRST_ADMINS = 2
