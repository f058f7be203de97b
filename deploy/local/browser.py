"""The headless browser of the page tests: Debian's Chromium, driven by Playwright.

Playwright's own browser download cannot run here (only Debian's mirrors, PyPI, Maven
Central and npm are reachable), so the system package is used, installed like the rest
of the stack's packages.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y --no-install-recommends chromium"


def find_binary() -> str | None:
    return str(CHROMIUM) if CHROMIUM.exists() else None
