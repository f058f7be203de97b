"""The operator-only routes of a service, read from its app as built (nothing started).

A route is operator-only when one of its dependencies is ``shared.auth.require_roles``;
the roles are the ones that call names. Role-matrix tests check that they call every
such route, so a route added later without a line in their matrix fails them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from shared.auth.dependencies import VerifiedBearer

# Each service's settings class (services/<service>/config.py).
SETTINGS = {
    "accounts": "AccountsSettings",
    "analytics": "AnalyticsSettings",
    "deletion": "DeletionSettings",
    "notifier": "NotifierSettings",
}

Route = tuple[str, str]  # (method, path template as the gateway serves it)


def operator_routes(service: str) -> dict[Route, frozenset[str]]:
    """Every operator-only route of ``service``'s API, with the roles it admits."""
    config = importlib.import_module(f"services.{service}.config")
    api = importlib.import_module(f"services.{service}.api")
    # Building the app starts nothing: its lifespan (pools, Kafka) runs only when served.
    app = api.build_app(getattr(config, SETTINGS[service])(environment="test"))
    routes: dict[Route, frozenset[str]] = {}
    for path, methods, dependant in _api_routes(app):
        roles = frozenset(r for d in _dependants(dependant) for r in _required_roles(d))
        if roles:
            for method in methods - {"HEAD", "OPTIONS"}:
                routes[(method, path)] = roles
    return routes


def _api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], Dependant]]:
    """(full path, methods, dependencies) of every API route, with the dependencies its
    router was included with."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # a FastAPI that copies included routes into app.routes
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, set(route.methods or ()), route.dependant
        return
    for context in contexts(app.routes):  # a FastAPI that includes routers lazily
        original = context.original_route
        if isinstance(original, APIRoute):
            dependant = getattr(context, "dependant", None) or original.dependant
            yield str(context.path), set(context.methods or original.methods or ()), dependant


def template_matches(template: str, path: str) -> bool:
    """Whether a concrete ``path`` is one of ``template``'s (``{name}``: one segment)."""
    pattern = "".join(
        "[^/]+" if part.startswith("{") else re.escape(part)
        for part in re.split(r"(\{[^}]+\})", template)
    )
    return re.fullmatch(pattern, path) is not None


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _required_roles(dependant: Dependant) -> tuple[str, ...]:
    call = dependant.call
    if not isinstance(call, VerifiedBearer):
        return ()
    admit = call._admit
    if admit is None or admit.__qualname__ != "require_roles.<locals>.operator":
        return ()
    cells = dict(zip(admit.__code__.co_freevars, admit.__closure__ or (), strict=True))
    roles: tuple[str, ...] = cells["roles"].cell_contents
    return roles
