"""Unsubscribe links: a page on GET (changes nothing), RFC 8058 one-click on POST.

No login, no cookie, no redirect: the opaque signed token in the URL is the proof.
``List-Unsubscribe=One-Click`` opts the address out of the token's category;
``scope=all`` (the page's second button) out of every email (global suppression):
only in-site notices remain.

A person opens the GET in a browser: a link cut short or mangled is answered there with
a page (its status kept), not a JSON problem. The POST's answers to a mail client's
one-click stay problems.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

from services.notifier import store
from services.notifier.domain import unsubscribe
from services.notifier.domain.compliance import ONE_CLICK
from services.notifier.routes.deps import RuntimeDep, SettingsDep, get_settings
from shared.observability import Problem

Token = Annotated[str, Path(min_length=20, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
HEADERS = {
    "Cache-Control": "no-store",
    # Narrower than the gateway's policy, which browsers enforce too: the site's own
    # stylesheet, no inline style, no script.
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; style-src 'self'",
    "Referrer-Policy": "no-referrer",
}
LABELS = {
    "all": "all email",
    "transactional": "account emails",
    "account_security": "security and deletion notices",
    "service_announcement": "service announcements",
    "policy_change": "privacy-policy change notices",
    "marketing": "newsletters and offers",
}


def _verify(settings: SettingsDep, token: str) -> unsubscribe.Unsubscribe:
    try:
        return unsubscribe.verify(settings.unsubscribe_keys(), token)
    except unsubscribe.InvalidUnsubscribeToken:
        raise Problem(
            404, "Not found", "This unsubscribe link is not valid.", slug="not-found"
        ) from None


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        "<link rel='stylesheet' href='/assets/site.css'>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status_code,
        headers=HEADERS,
    )


def _not_valid(status_code: int, mailto: str) -> HTMLResponse:
    """A broken link's page: what else stops the emails (the policy's "email us", which
    support records as a request to stop them all)."""
    address = html.escape(mailto)
    href = html.escape(f"mailto:{quote(mailto, safe='@')}", quote=True)
    return _page(
        "This unsubscribe link is not valid",
        "<p>It may have been cut short or changed on its way here. Open it again from the"
        " bottom of the email, whole, or use your mail program's Unsubscribe button.</p>"
        f"<p>Or write to <a href='{href}'>{address}</a> from the address we write to:"
        " we will stop every email to it.</p>",
        status_code,
    )


class _PersonsPage(APIRoute):
    """The GET's request validation (a token cut short, or with characters a link never
    holds) answers with the broken link's page; other methods keep their problems."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "GET" not in (self.methods or set()):
            return handler

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                mailto = get_settings(request).notifier_unsubscribe_mailto
                return _not_valid(422, mailto)

        return answer


router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"], route_class=_PersonsPage)


@router.get("/{token}", response_class=HTMLResponse)
async def page(token: Token, settings: SettingsDep) -> HTMLResponse:
    """Offers the choices; a GET never unsubscribes (mail scanners prefetch links)."""
    try:
        found = _verify(settings, token)
    except Problem as refused:
        return _not_valid(refused.status, settings.notifier_unsubscribe_mailto)
    label = html.escape(LABELS.get(found.scope, found.scope))
    return _page(
        "Unsubscribe",
        f"<form method='post'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        f"<button>Stop {label}</button></form>"
        "<p></p><form method='post'><input type='hidden' name='scope' value='all'>"
        "<button>Stop all email from iMT</button></form>"
        "<p>In-site notices stay in your inbox on the site.</p>",
    )


async def form_fields(request: Request) -> dict[str, str]:
    """The first value of each text field of the POST's form, without surrounding space.

    RFC 8058 senders should post ``multipart/form-data`` and may post
    ``application/x-www-form-urlencoded``; both are read (and a body sent with neither
    type, as urlencoded). Some end the value with a line
    break ("One-Click\\r\\n"), which must still unsubscribe: a refused one-click leaves
    the recipient subscribed.
    """
    fields: dict[str, str] = {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=0, max_fields=10) as form:
            items = [(n, v) for n, v in form.multi_items() if isinstance(v, str)]
    else:  # no or another type: read the body as the urlencoded form it most likely is
        items = parse_qsl((await request.body()).decode("utf-8", "replace"))
    for name, value in items:
        fields.setdefault(name, value.strip())
    return fields


@router.post("/{token}", response_class=HTMLResponse)
async def one_click(
    token: Token, request: Request, settings: SettingsDep, runtime: RuntimeDep
) -> HTMLResponse:
    found = _verify(settings, token)
    form = await form_fields(request)
    if form.get("scope") == "all":
        scope, source = "all", "page"
    elif form.get("List-Unsubscribe") == ONE_CLICK.split("=", 1)[1]:
        scope, source = found.scope, "one_click"
    else:
        raise Problem(
            400, "Bad request", f"Send the body {ONE_CLICK} (RFC 8058).", slug="bad-request"
        )
    async with runtime.pool.acquire() as conn:
        await store.suppress(conn, found.email_index, scope, source)
    label = html.escape(LABELS.get(scope, scope))
    return _page("Unsubscribed", f"<p>You will get no more {label}.</p>")
