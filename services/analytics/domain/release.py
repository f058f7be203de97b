"""Releasing trends: small cells suppressed, complementary suppression, optional noise.

A cell is published only if at least ``k`` distinct visitors are in it. Because each
dimension's cells add up to the window total, a single suppressed cell could be
recovered by subtraction (total minus the published cells); so when exactly one cell
of a dimension is suppressed, the next smallest cell is suppressed with it. A window
whose total has fewer than ``k`` visitors is suppressed whole. Suppressed cells are
left out entirely, labels included (a page path may itself be revealing).

With ``epsilon`` set, Laplace noise of scale 1/epsilon is added to every published
count (then rounded, never below zero). The noise of a cell is derived from a keyed
hash of the cell, so asking the same question again returns the same answer instead
of a fresh sample that could be averaged away.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

NoiseSource = Callable[[str], float]
"""A uniform number in (0, 1) for a label; the same label gives the same number."""


@dataclass(frozen=True)
class Cell:
    dimension: str
    value: str
    visits: int
    unique_visitors: int
    load_time_p50_ms: float | None = None
    load_time_p95_ms: float | None = None


@dataclass(frozen=True)
class Window:
    label: str  # identifies the window for noise (site, grain, start)
    total: Cell
    cells: Sequence[Cell]


@dataclass(frozen=True)
class ReleasedWindow:
    label: str
    total: Cell | None
    cells: list[Cell] = field(default_factory=list)
    suppressed: int = 0


def suppress_window(window: Window, k: int) -> ReleasedWindow:
    """The cells of one window that may be published at threshold ``k`` (no noise)."""
    if window.total.unique_visitors < k:
        return ReleasedWindow(window.label, None, [], 1 + len(window.cells))
    published: list[Cell] = []
    suppressed = 0
    for dimension in sorted({c.dimension for c in window.cells}):
        group = [c for c in window.cells if c.dimension == dimension]
        small = [c for c in group if c.unique_visitors < k]
        kept = [c for c in group if c.unique_visitors >= k]
        if len(small) == 1 and kept:
            # Complementary suppression: the smallest published cell goes too.
            complement = min(kept, key=lambda c: (c.visits, c.unique_visitors, c.value))
            kept.remove(complement)
            small.append(complement)
        published += sorted(kept, key=lambda c: (-c.visits, c.value))
        suppressed += len(small)
    return ReleasedWindow(window.label, window.total, published, suppressed)


def laplace(u: float, scale: float) -> float:
    """Inverse CDF of the Laplace distribution (location 0) at ``u`` in (0, 1)."""
    u = min(max(u, 1e-12), 1 - 1e-12) - 0.5
    return -scale * math.copysign(1.0, u) * math.log(1 - 2 * abs(u))


def keyed_noise(key: bytes | None = None) -> NoiseSource:
    """A noise source keyed by a random per-process secret (or ``key``)."""
    secret = key if key is not None else secrets.token_bytes(32)

    def uniform(label: str) -> float:
        digest = hmac.new(secret, label.encode(), hashlib.sha256).digest()
        return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64

    return uniform


def add_noise(
    released: ReleasedWindow, epsilon: float, noise: NoiseSource, k: int
) -> ReleasedWindow:
    """Laplace noise on every published count; a noisy count is at least k visitors."""
    scale = 1.0 / epsilon

    def noisy(cell: Cell) -> Cell:
        base = f"{released.label}|{cell.dimension}|{cell.value}"
        visits = cell.visits + laplace(noise(base + "|visits"), scale)
        uniques = cell.unique_visitors + laplace(noise(base + "|uniques"), scale)
        # Rounded, and never below the threshold the cell was published under.
        unique_visitors = max(k, round(uniques))
        return replace(cell, visits=max(unique_visitors, round(visits)),
                       unique_visitors=unique_visitors)  # fmt: skip

    if released.total is None:
        return released
    return replace(released, total=noisy(released.total), cells=[noisy(c) for c in released.cells])


@dataclass(frozen=True)
class Release:
    k: int
    epsilon: float | None
    windows: list[ReleasedWindow]

    @property
    def cells_suppressed(self) -> int:
        return sum(w.suppressed for w in self.windows)

    @property
    def cells_published(self) -> int:
        return sum(len(w.cells) + (w.total is not None) for w in self.windows)


def release(
    windows: Sequence[Window], k: int, epsilon: float | None, noise: NoiseSource
) -> Release:
    """Suppress then (optionally) add noise to every window of a release."""
    out = []
    for window in windows:
        released = suppress_window(window, k)
        if epsilon is not None:
            released = add_noise(released, epsilon, noise, k)
        out.append(released)
    return Release(k, epsilon, out)
