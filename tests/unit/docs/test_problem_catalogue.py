"""The problem catalogue finds every problem type where the code raises it."""

from __future__ import annotations

import re
from pathlib import Path

from tools.problem_catalogue import EVERY_SERVICE, catalogue_markdown, problem_uses

ROOT = Path(__file__).resolve().parents[3]

SERVICE_MODULE = """
from shared.observability import Problem

def not_found(what):
    return Problem(404, "Not found", f"No such {what}.", slug="not-found")

def _wait(title, detail, slug, seconds):
    return Problem(429, title, detail, slug=slug, headers={"Retry-After": str(seconds)})

def throttled(seconds):
    raise _wait("Slow down", "Wait.", "throttled", seconds)

def anonymous():
    return Problem(400)  # no slug: about:blank
"""
SHARED_MODULE = """
from shared.observability import problems

def refuse():
    raise problems.Problem(status=422, title="Invalid request", slug="validation")
"""


def test_problems_raised_directly_through_a_helper_or_in_shared_code_are_found(
    tmp_path: Path,
) -> None:
    (tmp_path / "services" / "demo").mkdir(parents=True)
    (tmp_path / "services" / "demo" / "routes.py").write_text(SERVICE_MODULE)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "errors.py").write_text(SHARED_MODULE)
    found = {(u.slug, u.status, u.title, u.owner) for u in problem_uses(tmp_path)}
    assert found == {
        ("not-found", 404, "Not found", "demo"),
        ("throttled", 429, "Slow down", "demo"),
        ("validation", 422, "Invalid request", EVERY_SERVICE),
    }
    page = catalogue_markdown(problem_uses(tmp_path), "<!-- header -->")
    assert "| `throttled` | 429 | Slow down | demo |" in page


def test_every_slug_in_the_code_is_in_the_catalogue() -> None:
    """Each slug written in the code (a ``slug="..."`` or a helper's argument) is found:
    a way of raising a problem the scanner does not follow fails here."""
    written: set[str] = set()
    for folder in ("services", "shared"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            written |= set(re.findall(r'slug="([a-z0-9-]+)"', text))
    written.add("login-throttled")  # through throttling._wait, positionally
    catalogued = {u.slug for u in problem_uses(ROOT)}
    assert written <= catalogued
    assert len(catalogued) > 40
