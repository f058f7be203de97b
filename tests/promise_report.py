"""pytest plugin: records which promise each marked test proves, and whether it passed.

Writes ``.reports/promises.json`` at the end of the session; ``make promises`` turns it
into the promise table (tools/promises.py).
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("IMT_REPORTS_DIR", ".reports")) / "promises.json"
_results: dict[str, dict[str, str]] = {}


def _promises(item: pytest.Item) -> list[str]:
    return [str(m.args[0]) for m in item.iter_markers("promise") if m.args]


# Last, after -k/-m have deselected: a deselected test keeps its last result, not "not run".
@pytest.hookimpl(trylast=True)
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


@cache
def _source(file: Path) -> str | None:
    return file.read_text(encoding="utf-8") if file.is_file() else None


def _still_exists(nodeid: str, root: Path) -> bool:
    # Telling a deleted test from one this run did not select would take the whole
    # collection. A test whose file is gone, or whose name no longer appears in its file,
    # was deleted or renamed for sure: enough to stop it keeping an old "passed".
    path, _, rest = nodeid.partition("::")
    name = rest.split("[", 1)[0].rsplit("::", 1)[-1]
    source = _source(root / path)
    return source is not None and re.search(rf"\b{re.escape(name)}\b", source) is not None


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not _results or getattr(config, "workerinput", None) is not None:
        return
    if config.option.collectonly:  # nothing ran: writing would turn real results "not run"
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    # Merged on purpose: the tests a partial run did not select keep their last result.
    for promise, tests in _results.items():
        previous.setdefault(promise, {}).update(tests)
    report = {
        promise: kept
        for promise, tests in previous.items()
        if (kept := {t: s for t, s in tests.items() if _still_exists(t, config.rootpath)})
    }
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True))
