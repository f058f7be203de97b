"""The accounts service's composition root: settings read once, runtime opened once."""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import uuid4

from services.accounts import store
from services.accounts.config import AccountsSettings
from services.accounts.context import OPERATOR_EMAIL, OPERATOR_EMAIL_INDEX
from services.accounts.domain.roles import ADMIN
from services.accounts.security import hash_password
from shared.service import Runtime, open_runtime

log = logging.getLogger(__name__)

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

    Both addresses are checked before either is created, in one transaction under a
    lock: processes starting together, or with two configurations mid-rollout, never
    make a third line between them, nor one of two addresses of a refused pair.
    """
    assert runtime.vault is not None
    vault = runtime.vault
    configured = [
        (variable, email, password.get_secret_value(),
         vault.blind_index(email, purpose=OPERATOR_EMAIL_INDEX))
        for variable, email, password in (
            ("IMT_ACCOUNTS_ADMIN_EMAIL", settings.accounts_admin_email,
             settings.accounts_admin_password),
            ("IMT_ACCOUNTS_SECOND_ADMIN_EMAIL", settings.accounts_second_admin_email,
             settings.accounts_second_admin_password),
        )
    ]  # fmt: skip
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('first_admins'))")
        missing = []
        for variable, email, password, index in configured:
            found = await conn.fetchrow(
                "SELECT created_by FROM operators WHERE email_index = $1", index
            )
            if found is not None and found["created_by"] is not None:
                # Taken for a first admin, it would leave one line: no approval could pass.
                raise FirstAdminRefused(
                    f"{variable} names an operator another operator created: name another"
                    " address, one no operator has"
                )
            if found is None:  # (a disabled first admin stays disabled)
                missing.append((variable, email, password, index))
        active = await conn.fetchval(
            "SELECT count(*) FROM operators WHERE created_by IS NULL AND disabled_at IS NULL"
        )
        if missing and active + len(missing) > FIRST_ADMINS:
            # A new address in the configuration is not a way to add a line of one's own.
            named = " and ".join(variable for variable, *_ in missing)
            raise FirstAdminRefused(
                f"{named} {'names' if len(missing) == 1 else 'name'} no first admin, and"
                f" {active} are active: an admin disables the one it replaces first (audited)"
            )
        for _, email, password, index in missing:
            operator_id = uuid4()
            sealed = await vault.seal(operator_id, email, purpose=OPERATOR_EMAIL)
            await store.insert_operator(
                conn, operator_id, index, sealed, await hash_password(password), [ADMIN], None,
                own_password=settings.environment != "production",
            )  # fmt: skip
    if active + len(missing) < FIRST_ADMINS:
        # Started, but until a second line exists no operator's deletion can be approved.
        log.error(
            "only %d first admin(s) active: no operator deletion can be approved until an"
            " IMT_ACCOUNTS_*ADMIN_EMAIL names a new one (P-15)",
            active + len(missing),
        )


FIRST_ADMINS = 2
