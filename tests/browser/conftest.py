"""A real headless Chromium (Debian's package) driven by Playwright.

Playwright's own browser download cannot run here; `make test` installs the system
Chromium before pytest starts (`deploy/local/stack.py install`), and this installs it on
first use when a test is run by itself (as root), like the rest of the stack.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from deploy.local import browser as system_browser
from deploy.local import procs

# Without these, Chromium phones home at start (refused on this network, and not ours).
QUIET_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _ensure_chromium() -> str:
    found = system_browser.find_binary()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # As the stack's packages are: without Recommends, waiting for apt's lock, no
        # daemon of the package started.
        procs.apt_install(["chromium"], "Chromium")
        found = system_browser.find_binary()
    if found is None:
        pytest.fail(f"Chromium is missing: run `{system_browser.INSTALL}` (as root)")
    return found


@pytest.fixture(scope="session")
async def browser(platform: str) -> AsyncIterator[Browser]:
    executable = _ensure_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=QUIET_FLAGS)
        yield launched
        await launched.close()
