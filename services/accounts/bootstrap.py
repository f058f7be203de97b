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


async def ensure_first_admins(runtime: Runtime, settings: AccountsSettings) -> None:
    """Create the two configured first admins, each unless its email exists already.

    Two, held by two people: whoever creates an operator chose its first password, so
    an operator's deletion is approved only across two lines of creators (P-15). With
    one first admin every operator would share it, and no approval could ever pass.
    """
    for email, password in (
        (settings.accounts_admin_email, settings.accounts_admin_password),
        (settings.accounts_second_admin_email, settings.accounts_second_admin_password),
    ):
        await _ensure_first_admin(runtime, email, password.get_secret_value())


async def _ensure_first_admin(runtime: Runtime, email: str, password: str) -> None:
    assert runtime.vault is not None
    vault = runtime.vault
    index = vault.blind_index(email, purpose=OPERATOR_EMAIL_INDEX)
    async with runtime.pool.acquire() as conn:
        if await store.operator_by_email_index(conn, index) is not None:
            return
    operator_id = uuid4()
    password_hash = await hash_password(password)
    sealed = await vault.seal(operator_id, email, purpose=OPERATOR_EMAIL)
    async with runtime.pool.acquire() as conn:
        # Its password is its owner's, not another operator's choice (P-15).
        await store.insert_operator(
            conn, operator_id, index, sealed, password_hash, [ADMIN], None, own_password=True
        )
