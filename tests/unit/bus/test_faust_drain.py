"""The Faust drain replaces one upstream loop: it is wired in, and upstream has not moved."""

import hashlib
import inspect
from pathlib import Path

import pytest
from faust.transport.consumer import Consumer

from shared.bus.faust_app import create_faust_app
from shared.bus.faust_drain import BatchRacedConsumer, PlatformFaustApp
from shared.config import PlatformSettings

# faust-streaming 0.15.3's code that BatchRacedConsumer copies or relies on. A change
# here means an upgrade: re-read shared/bus/faust_drain.py against the new code, then
# update the digest.
UPSTREAM = {
    "_drain_messages": "44a2500309e83c63",  # the loop it replaces
    "_wait_next_records": "6218e1969a636b3f",  # sleeps 1 s when every partition is paused
    "on_buffer_full": "c8961679e0bcdce5",  # pauses a partition into _buffered_partitions
    "on_buffer_drop": "4b57e8a418d5ad9c",  # resumes it (the drain's wake-up)
    "getmany": "4b168d84882a70d6",  # fetches on the first step only, then yields
}


@pytest.mark.parametrize("method", sorted(UPSTREAM))
def test_upstream_code_is_the_version_the_drain_was_written_against(method: str) -> None:
    source = inspect.getsource(getattr(Consumer, method))
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == UPSTREAM[method]


def test_platform_apps_drain_with_the_batch_raced_consumer(tmp_path: Path) -> None:
    settings = PlatformSettings(state_dir=str(tmp_path))
    app = create_faust_app("drain-wiring", settings)
    assert isinstance(app, PlatformFaustApp)
    assert app.transport.Consumer is BatchRacedConsumer
