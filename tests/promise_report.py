"""pytest plugin: records which promise each marked test proves, and whether it passed.

Writes ``.reports/promises.json`` at the end of the session; ``make promises`` turns it
into the promise table (tools/promises.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("IMT_REPORTS_DIR", ".reports")) / "promises.json"
_results: dict[str, dict[str, str]] = {}


def _promises(item: pytest.Item) -> list[str]:
    return [str(m.args[0]) for m in item.iter_markers("promise") if m.args]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for promise in _promises(item):
            _results.setdefault(promise, {})[item.nodeid] = "not run"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for tests in _results.values():
        if report.nodeid not in tests:
            continue
        if report.failed:
            tests[report.nodeid] = "failed"
        elif report.skipped and tests[report.nodeid] != "failed":
            tests[report.nodeid] = "skipped"
        elif report.when == "call" and tests[report.nodeid] == "not run":
            tests[report.nodeid] = "passed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _results or getattr(session.config, "workerinput", None) is not None:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    for promise, tests in _results.items():
        previous.setdefault(promise, {}).update(tests)
    REPORT.write_text(json.dumps(previous, indent=2, sort_keys=True))
