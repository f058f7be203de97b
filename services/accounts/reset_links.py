"""Password-reset links, mailed at most once per interval per account: asked for (a
forgotten password) or offered (someone signed up with the account's address).

The token's purpose is the same either way: completing it sets the password, confirms
the address and ends every session (:mod:`services.accounts.routes.password_reset`). So
none goes to an address an operator set until the owner signs in under it (migration
024): whoever typed the address would get the account.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from services.accounts import store
from services.accounts.context import Context
from services.accounts.lapsed_signups import lapsing
from services.accounts.links import mail_action_link
from shared.db.pool import Connection

PURPOSE = "password_reset"


async def mail_reset_link(
    ctx: Context,
    conn: Connection,
    user_id: UUID,
    *,
    template: str = "password_reset",
    params: dict[str, str] | None = None,
) -> bool:
    """Mail a reset link with ``template``, unless one went out within the interval (an
    address is never flooded), the account is being erased, or its address is one an
    operator set that its owner never signed in under (whoever typed it may hold the
    mailbox); True when mailed. The caller holds the user's row, so two requests never
    both mail."""
    if (
        await _mailed_recently(conn, ctx, user_id)
        or await lapsing(conn, user_id)
        or await store.address_set_by_operator(conn, user_id)
    ):
        return False
    await mail_action_link(
        ctx, conn, user_id, purpose=PURPOSE, template=template, path="reset-password",
        lifetime=timedelta(minutes=ctx.settings.accounts_reset_minutes), params=params,
    )  # fmt: skip
    return True


async def _mailed_recently(conn: Connection, ctx: Context, user_id: UUID) -> bool:
    interval = timedelta(seconds=ctx.settings.accounts_reset_interval_seconds)
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM action_tokens WHERE user_id = $1 AND purpose = $2"
            " AND used_at IS NULL AND created_at > now() - $3::interval)",
            user_id,
            PURPOSE,
            interval,
        )
    )
