"""What routes get from the app: the runtime, the settings, the live-inbox hub."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request

from services.notifier.config import NotifierSettings
from services.notifier.domain.templates import Renderer
from services.notifier.stream import InboxHub
from shared.observability import Problem
from shared.service import Runtime


def user_id(claims: Any) -> UUID:
    """The user a token names; an operator's token names none."""
    try:
        return UUID(claims.sub)
    except ValueError:
        raise Problem(403, "Forbidden", "This token names no user.", slug="forbidden") from None


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise Problem(503, "Starting", "The notifier is starting.", slug="starting")
    return runtime


def get_settings(request: Request) -> NotifierSettings:
    settings: NotifierSettings = request.app.state.settings
    return settings


def get_hub(request: Request) -> InboxHub:
    hub: InboxHub = request.app.state.hub
    return hub


def get_renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[NotifierSettings, Depends(get_settings)]
HubDep = Annotated[InboxHub, Depends(get_hub)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]


# The largest id a bigint column holds: a larger one in a request is a 422, not a 500.
BIGINT_MAX = 2**63 - 1
