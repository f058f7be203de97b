"""Print the promise table: ``P-NN<TAB>status<TAB>test ids`` for every promise.

Statuses: ``proved`` (every marked test passed, and at least one of them runs through
the real stack: a test outside tests/unit), ``failing`` (a marked test failed, was
skipped or did not run), ``missing`` (no test is marked with it, or only unit tests:
promises.md asks for proof end to end through real services, so a unit test alone
does not keep a promise; its ids are still listed). Reads the
promise list from policy/promises.md and the results that tests/promise_report.py
wrote during the last ``make test``. Exits 1 when a promise is failing, so a broken
proof cannot hide; ``missing`` promises are reported, not failed, while the services
that keep them are still being built.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMISES = ROOT / "policy" / "promises.md"
REPORT = ROOT / ".reports" / "promises.json"


def promise_ids(text: str) -> list[str]:
    return sorted(set(re.findall(r"^\| (P-\d\d) \|", text, flags=re.MULTILINE)))


def status_of(tests: dict[str, str]) -> str:
    if not all(s == "passed" for s in tests.values()):
        return "failing"
    end_to_end = [t for t in tests if not t.startswith("tests/unit/")]
    return "proved" if end_to_end else "missing"


def table(ids: list[str], results: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    return [
        (pid, status_of(results.get(pid, {})), " ".join(sorted(results.get(pid, {}))) or "-")
        for pid in ids
    ]


def main() -> int:
    results = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    rows = table(promise_ids(PROMISES.read_text()), results)
    for row in rows:
        print("\t".join(row))
    counts = {s: sum(1 for r in rows if r[1] == s) for s in ("proved", "failing", "missing")}
    print(
        f"# {counts['proved']} proved, {counts['failing']} failing, {counts['missing']} missing",
        file=sys.stderr,
    )
    return 1 if counts["failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
