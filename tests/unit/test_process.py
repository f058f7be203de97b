"""The collector policy every service process starts with (shared.process)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json
from shared.process import start_process
before = gc.get_freeze_count()
start_process("probe", "WARNING")
print(json.dumps({"before": before, "after": gc.get_freeze_count(),
                  "threshold": gc.get_threshold()}))
"""


def test_start_process_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    # In a child: the policy is process-wide and this test process keeps its own.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=True
    )
    probe = json.loads(out.stdout)
    assert probe["before"] == 0
    assert probe["after"] > 1000  # modules, settings, logging: everything start-up made
    assert probe["threshold"] == [50_000, 20, 100]


def test_every_service_entry_point_starts_with_the_policy() -> None:
    entry_points = [
        *REPO.glob("services/*/worker.py"),
        REPO / "services/analytics/eraser.py",
        REPO / "shared/service/relay.py",
        REPO / "shared/service/api.py",
    ]
    assert len(entry_points) == 7
    for path in entry_points:
        source = path.read_text()
        assert "start_process(" in source, path
        assert "configure_logging(" not in source, path
