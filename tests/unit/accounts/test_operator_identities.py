"""Operator identities (P-15, P-07), in-process: an operator created by another may do
nothing but set their own password, and their tokens carry no role until then; a
disabled operator's session is refused; what the new operator routes state for the
audit log is checked before any store is reached."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.accounts.config import AccountsSettings
from services.accounts.routes import auth, operators
from services.accounts.sessions import access_for, session_checker
from shared.auth import issue_token, verify_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import install_problem_handlers, problem_type
from tests.unit.accounts.offline_api import offline_client, operator_headers

SOMEONE = uuid.uuid4()
EMAIL = "jane.doe@example.com"


def _operator(password_set_at: datetime | None) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "roles": ["privacy_officer"], "password_set_at": password_set_at}


def _token_roles(principal: dict[str, Any]) -> tuple[str, ...]:
    ctx = SimpleNamespace(
        settings=AccountsSettings(environment="test"), private_key=DEV_TOKEN_PRIVATE_KEY
    )
    token = access_for(ctx, principal, "operator", uuid.uuid4())  # type: ignore[arg-type]
    return verify_token(DEV_TOKEN_PUBLIC_KEY, token).roles


@pytest.mark.promise("P-15")
def test_an_operators_token_carries_their_roles_only_once_they_set_their_own_password() -> None:
    # No role: the other APIs refuse a provisional operator's token too (403).
    assert _token_roles(_operator(None)) == ()
    assert _token_roles(_operator(datetime.now(UTC))) == ("privacy_officer",)


class _Connection:
    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row

    async def fetchrow(self, *_: Any) -> dict[str, Any] | None:
        return self.row


class _Pool:
    """Answers every session check with ``row`` (None: no open session of an active
    operator); nothing else may reach it."""

    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Connection]:
        yield _Connection(self.row)


def _checked_client(row: dict[str, Any] | None) -> httpx.AsyncClient:
    """The accounts routes with the accounts session check, whose database holds the
    operator's session as ``row``."""
    ctx = SimpleNamespace(pool=_Pool(row))
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(auth.router)
    app.include_router(operators.router)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.accounts = ctx
    app.state.session_check = session_checker(ctx)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _headers(operator_id: uuid.UUID, *roles: str, kind: str = "operator") -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(operator_id), session_id=str(uuid.uuid4()),
        kind=kind, ttl=timedelta(minutes=5), roles=roles,  # type: ignore[arg-type]
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


SET_AT = datetime(2026, 1, 5, tzinfo=UTC)


def _session(
    operator_id: uuid.UUID,
    *,
    password_set_at: datetime | None = SET_AT,
    disabled_at: datetime | None = None,
) -> dict[str, Any]:
    """An open session of the operator, as the store answers it."""
    return {
        "kind": "operator", "id": operator_id, "roles": ["admin"],
        "password_set_at": password_set_at, "disabled_at": disabled_at,
    }  # fmt: skip


SAME = {"current_password": "chosen-by-admin", "new_password": "chosen-by-admin"}


@pytest.mark.promise("P-15")
async def test_an_operator_with_their_creators_password_may_only_set_their_own() -> None:
    operator_id = uuid.uuid4()
    row = _session(operator_id, password_set_at=None)
    # A token issued with roles (before this rule, say) opens nothing either.
    headers = _headers(operator_id, "admin")
    async with _checked_client(row) as client:
        for method, path, body in (
            ("GET", "/operator/stats", None),
            ("POST", f"/operator/operators/{SOMEONE}/disable", {}),
            ("POST", f"/operator/users/{SOMEONE}/deletion-requests", {}),
            ("POST", f"/operator/deletion-requests/{SOMEONE}/approve", {}),
            ("GET", "/operator/audit", None),
        ):
            refused = await client.request(method, path, json=body, headers=headers)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["type"] == problem_type("password-change-required"), path
        # Setting it is let through (the route itself refuses the same password again).
        same = await client.post("/operator/me/password", json=SAME, headers=headers)
        assert same.status_code == 422, same.text
        assert same.json()["type"] == problem_type("password-unchanged")


async def test_an_operator_with_their_own_password_passes_the_session_check() -> None:
    operator_id = uuid.uuid4()
    row = _session(operator_id)
    async with _checked_client(row) as client:
        # Past the session check and the role: stopped by the body's validation.
        invalid = await client.post(
            f"/operator/operators/{SOMEONE}/disable",
            json={},
            headers=_headers(operator_id, "admin"),
        )
        assert invalid.status_code == 422, invalid.text


@pytest.mark.promise("P-07")
@pytest.mark.parametrize("session", ["ended", "disabled"])
async def test_a_disabled_operators_session_is_refused(session: str) -> None:
    # Disabled by an admin (who ends the sessions too) or by hand: refused either way.
    row = None if session == "ended" else _session(SOMEONE, disabled_at=datetime.now(UTC))
    async with _checked_client(row) as client:
        refused = await client.post(
            f"/operator/operators/{SOMEONE}/disable", json={}, headers=_headers(SOMEONE, "admin")
        )
    assert refused.status_code == 401, refused.text


async def test_an_operators_token_for_a_users_session_is_refused() -> None:
    # Only the signing key makes one; it does not pass for an operator.
    row = {"kind": "user", "id": None, "roles": None, "password_set_at": None, "disabled_at": None}
    async with _checked_client(row) as client:
        refused = await client.post(
            f"/operator/operators/{SOMEONE}/disable", json={}, headers=_headers(SOMEONE, "admin")
        )
    assert (refused.status_code, refused.json()["type"]) == (403, problem_type("forbidden"))


async def test_only_operators_set_an_operators_password_here() -> None:
    async with offline_client(operators.router) as client:
        refused = await client.post(
            "/operator/me/password", json=SAME, headers=_headers(SOMEONE, kind="user")
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == problem_type("forbidden")


# What the new operator routes state is kept for good in the audit log (P-14).
REASONS = [
    ("admin", "POST", f"/operator/operators/{SOMEONE}/disable", {}),
    ("admin", "PUT", f"/operator/operators/{SOMEONE}/roles", {"roles": ["support"]}),
    ("support", "POST", f"/operator/deletion-requests/{SOMEONE}/withdraw", {}),
    ("privacy_officer", "POST", f"/operator/deletion-requests/{SOMEONE}/reject", {}),
]


@pytest.mark.parametrize(("role", "method", "path", "body"), REASONS)
async def test_a_reason_with_personal_data_is_refused_before_the_store(
    role: str, method: str, path: str, body: dict[str, Any]
) -> None:
    async with offline_client(operators.router) as client:
        refused = await client.request(
            method,
            path,
            json={**body, "reason": f"asked from {EMAIL}"},
            headers=operator_headers(role),
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == problem_type("personal-data")
        assert EMAIL not in refused.text
        clean = await client.request(
            method,
            path,
            json={**body, "reason": "asked in writing"},
            headers=operator_headers(role),
        )
        assert clean.json()["type"] == problem_type("store-reached")


async def test_an_admin_does_not_disable_their_own_identity() -> None:
    admin = uuid.uuid4()
    async with offline_client(operators.router) as client:
        refused = await client.post(
            f"/operator/operators/{admin}/disable",
            json={"reason": "leaving the team"},
            headers=_headers(admin, "admin"),
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == problem_type("own-identity")
