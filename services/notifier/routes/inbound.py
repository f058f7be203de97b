"""Replies to the List-Unsubscribe mailto, posted by the mail provider's inbound webhook.

The reply's subject carries the same signed token as the one-click link
(``unsubscribe <token>``); ``unsubscribe all <token>`` stops every email, as the policy
promises to whoever "emails us". The From address is never trusted: anyone can write
any address there, while only the recipient of our email holds the token.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from services.notifier import store
from services.notifier.domain import unsubscribe
from services.notifier.routes.deps import RuntimeDep, SettingsDep
from shared.observability import Problem

router = APIRouter(prefix="/inbound", tags=["inbound"])
INBOUND_HEADER = "X-IMT-Inbound-Secret"
MAX_MESSAGE_BYTES = 64 * 1024  # the gateway's own body limit


class InboundOutcome(BaseModel):
    action: Literal["unsubscribed", "ignored"]
    scope: str | None = None
    reason: str | None = None


@router.post(
    "/mail",
    status_code=202,
    response_model=InboundOutcome,
    responses={401: {"description": f"Missing or wrong {INBOUND_HEADER}."}},
)
async def inbound_mail(
    request: Request, settings: SettingsDep, runtime: RuntimeDep
) -> InboundOutcome:
    """One received message, raw (RFC 5322), as the provider forwards it. Accepted
    (202) whatever it says, so the provider does not retry what will never apply."""
    sent = request.headers.get(INBOUND_HEADER, "").encode()
    expected = settings.notifier_inbound_secret.get_secret_value().encode()
    if not hmac.compare_digest(sent, expected):
        raise Problem(401, "Unauthorised", f"Missing or wrong {INBOUND_HEADER}.",
                      slug="unauthorised")  # fmt: skip
    raw = (await request.body())[:MAX_MESSAGE_BYTES]
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    asked = unsubscribe.mailed_request(str(headers.get("subject", "")))
    if asked is None:
        return InboundOutcome(action="ignored", reason="no unsubscribe request in the subject")
    try:
        found = unsubscribe.verify(settings.unsubscribe_keys(), asked.token)
    except unsubscribe.InvalidUnsubscribeToken:
        return InboundOutcome(action="ignored", reason="the token is not one of ours")
    scope = "all" if asked.everything else found.scope
    async with runtime.pool.acquire() as conn:
        await store.suppress(conn, found.email_index, scope, "mailto")
    return InboundOutcome(action="unsubscribed", scope=scope)
