"""The catalogue of problem types (``docs/api/problems.md``), read from the code.

A client tells errors apart by a problem's ``type``: ``https://imt.example/problems/<slug>``
for the platform's own. Each is raised where it happens (``Problem(status, title,
detail, slug=...)``), so the catalogue is found there, by reading every module under
``services/`` and ``shared/`` for those calls, rather than kept by hand beside them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.observability.problems import PROBLEM_TYPE_BASE

EVERY_SERVICE = "every service"


@dataclass(frozen=True)
class ProblemUse:
    """One ``Problem(...)`` call with a literal slug: its status and title when literal."""

    slug: str
    status: int | None
    title: str | None
    owner: str  # the service, or EVERY_SERVICE for shared code
    where: str  # path:line, for the reader of the code


def problem_uses(root: Path, folders: Iterable[str] = ("services", "shared")) -> list[ProblemUse]:
    """Every ``Problem(...)`` call with a literal ``slug`` under ``root``'s ``folders``."""
    found: list[ProblemUse] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            owner = relative.parts[1] if relative.parts[0] == "services" else EVERY_SERVICE
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            helpers = _helpers(tree)
            for node in ast.walk(tree):
                where = f"{relative}:{getattr(node, 'lineno', 0)}"
                use = _use(node, owner, where) or _helper_use(node, helpers, owner, where)
                if use is not None:
                    found.append(use)
    return found


def _use(node: ast.AST, owner: str, where: str) -> ProblemUse | None:
    if not (isinstance(node, ast.Call) and _called(node.func) == "Problem"):
        return None
    slug = _argument(node, "slug", None)
    if not isinstance(slug, str):
        return None
    return _found(slug, _argument(node, "status", 0), _argument(node, "title", 1), owner, where)


@dataclass(frozen=True)
class _Helper:
    """A module's function that raises a problem whose slug is one of its parameters."""

    parameters: tuple[str, ...]
    slug: str  # the parameter
    status: object  # a literal, or the name of a parameter
    title: object


def _helpers(tree: ast.Module) -> dict[str, _Helper]:
    found = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        parameters = tuple(a.arg for a in function.args.args)
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and _called(node.func) == "Problem"):
                continue
            slug = next((k.value for k in node.keywords if k.arg == "slug"), None)
            if isinstance(slug, ast.Name) and slug.id in parameters:
                status, title = (_named_or_literal(node, i) for i in (0, 1))
                found[function.name] = _Helper(parameters, slug.id, status, title)
    return found


def _named_or_literal(call: ast.Call, position: int) -> object:
    """A positional argument: a parameter's name, or a literal value (None if neither)."""
    if position >= len(call.args):
        return None
    value = call.args[position]
    return value.id if isinstance(value, ast.Name) else _literal(value)


def _helper_use(
    node: ast.AST, helpers: dict[str, _Helper], owner: str, where: str
) -> ProblemUse | None:
    """A call of a module's problem helper with a literal slug."""
    if not isinstance(node, ast.Call):
        return None
    helper = helpers.get(_called(node.func) or "")
    if helper is None:
        return None

    def given(value: object) -> object:
        if isinstance(value, str) and value in helper.parameters:
            return _argument(node, value, helper.parameters.index(value))
        return value

    slug = given(helper.slug)
    if not isinstance(slug, str):
        return None
    return _found(slug, given(helper.status), given(helper.title), owner, where)


def _argument(call: ast.Call, name: str, position: int | None) -> object:
    """The literal value of an argument, by keyword or position (None if not literal)."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return _literal(keyword.value)
    if position is not None and position < len(call.args):
        return _literal(call.args[position])
    return None


def _found(slug: str, status: object, title: object, owner: str, where: str) -> ProblemUse:
    return ProblemUse(
        slug,
        status if isinstance(status, int) else None,
        title if isinstance(title, str) else None,
        owner,
        where,
    )


def _called(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:  # built at run time (a status or title from a variable)
        return None


def catalogue_markdown(uses: Iterable[ProblemUse], header: str) -> str:
    """The catalogue page: one row per problem type."""
    by_slug: dict[str, list[ProblemUse]] = {}
    for use in uses:
        by_slug.setdefault(use.slug, []).append(use)
    rows = []
    for slug, found in sorted(by_slug.items()):
        statuses = sorted({u.status for u in found if u.status is not None})
        titles = sorted({u.title for u in found if u.title is not None})
        owners = sorted({u.owner for u in found})
        if EVERY_SERVICE in owners:
            owners = [EVERY_SERVICE]
        rows.append(
            f"| `{slug}` | {', '.join(map(str, statuses)) or 'varies'} |"
            f" {'; '.join(titles) or 'varies'} | {', '.join(owners)} |"
        )
    return (
        f"{header}\n\n# Problem types\n\n"
        "Every error answer of the platform is an RFC 9457 problem"
        " (`application/problem+json`, the `ProblemDetails` schema of each OpenAPI"
        " document). Its `type` tells errors apart: the platform's own are"
        f" `{PROBLEM_TYPE_BASE}<slug>`, listed below from the code that raises them;"
        " `about:blank` is an error whose status says it all (the gateway's 400, 404, 413,"
        " 414, 429, 503 and 504, and an unexpected 500). `detail` says what went wrong"
        " with this request, for people; a 422 names each invalid part in `errors`"
        " (`location`, `message`, `type`). Quote the answer's `trace_id` to support.\n\n"
        "| type | status | title | raised by |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
