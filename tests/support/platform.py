"""Fixtures for end-to-end tests: every service process running behind the gateway.

Processes come from ``services/*/Procfile``; those already running (``make run``) are
reused, those started here are stopped at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local import services
from deploy.local.layout import HOST, Layout


@pytest.fixture(scope="session")
def platform(stack: None) -> Iterator[str]:
    """The gateway's base URL, once every service API answers ready through it."""
    names = list(services.procfile_entries())
    started = services.ensure_processes(names)
    try:
        apis = sorted({n.removesuffix("-api") for n in names if n.endswith("-api")})
        services.wait_for_apis(apis)
        yield f"http://{HOST}:{Layout.from_env().ports.gateway}"
    finally:
        services.stop_processes(started)
