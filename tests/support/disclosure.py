"""An attacker's audit of a trends release: which hidden counts follow from the shown ones.

Every window's cells of one dimension add up to its total, and a parent window's count
of a key is the sum of its windows' counts. Moving the published counts to the right,
these sums are a linear system over the hidden counts. A hidden count is pinned to one
value exactly when no solution of the homogeneous system moves it, that is when its
column is not a combination of the other columns: dropping it lowers the rank. This is
checked column by column with exact integer elimination (slow, and meant to be: it
shares no code and no method with the service's own audit).

The attacker is given more than the API tells: which keys a window holds at all (a
key a window does not hold is a known zero). So nothing this audit finds safe can be
recovered by someone who knows less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.analytics.domain.release import Cell, ReleasedWindow, Window

Key = tuple[str, str]
TOTAL: Key = ("total", "")
Visit = tuple[str, str]  # (page, device class)


def counted(label: str, visits: list[Visit], parent: str | None) -> Window:
    """A window of these visits, each by a distinct visitor (so uniques add up too)."""
    counts: dict[Key, int] = {}
    for page, device in visits:
        for key in (("page", page), ("device_class", device)):
            counts[key] = counts.get(key, 0) + 1
    cells = [Cell(d, v, n, n) for (d, v), n in sorted(counts.items())]
    return Window(label, Cell("total", "", len(visits), len(visits)), cells, parent)


def small(windows: Sequence[Window], found: set[tuple[str, Key]], k: int) -> set[tuple[str, Key]]:
    """The counts ``found`` that cover fewer than k visitors (those must stay hidden)."""
    cells = {(w.label, (c.dimension, c.value)): c for w in windows for c in (w.total, *w.cells)}
    return {f for f in found if cells[f].unique_visitors < k}


def _equations(windows: Sequence[Window]) -> list[list[tuple[tuple[int, Key], int]]]:
    index = {w.label: i for i, w in enumerate(windows)}
    sums: list[list[tuple[tuple[int, Key], int]]] = []
    children: dict[int, list[int]] = {}
    for i, window in enumerate(windows):
        for dimension in {c.dimension for c in window.cells}:
            cells = [c for c in window.cells if c.dimension == dimension]
            sums.append([((i, TOTAL), 1)] + [((i, (c.dimension, c.value)), -1) for c in cells])
        if window.parent in index:
            children.setdefault(index[window.parent], []).append(i)
    for parent, kids in children.items():
        keys = {TOTAL} | {(c.dimension, c.value) for i in kids for c in windows[i].cells}
        for key in keys:
            terms = [((parent, key), 1)]
            terms += [((i, key), -1) for i in kids if _holds(windows[i], key)]
            sums.append(terms)
    return sums


def _holds(window: Window, key: Key) -> bool:
    return key == TOTAL or any((c.dimension, c.value) == key for c in window.cells)


def _shown(released: ReleasedWindow) -> set[Key]:
    if released.total is None:
        return set()
    return {TOTAL} | {(c.dimension, c.value) for c in released.cells}


def recoverable(
    windows: Sequence[Window], released: Sequence[ReleasedWindow]
) -> set[tuple[str, Key]]:
    """(window label, key) of every hidden count the published ones give away."""
    shown = [_shown(r) for r in released]
    every = [
        (i, key)
        for i, w in enumerate(windows)
        for key in [TOTAL, *((c.dimension, c.value) for c in w.cells)]
    ]
    hidden = sorted({(i, key) for i, key in every if key not in shown[i]})
    matrix = [
        [sum(sign for t, sign in terms if t == h) for h in hidden] for terms in _equations(windows)
    ]
    full = _rank(matrix)
    return {
        (windows[hidden[j][0]].label, hidden[j][1])
        for j in range(len(hidden))
        if _rank([row[:j] + row[j + 1 :] for row in matrix]) < full
    }


def _rank(matrix: list[list[int]]) -> int:
    """Rank by fraction-free (Bareiss-style) elimination on integer rows."""
    rows = [list(r) for r in matrix if any(r)]
    rank, width = 0, len(rows[0]) if rows else 0
    for column in range(width):
        pick = next((r for r in range(rank, len(rows)) if rows[r][column]), None)
        if pick is None:
            continue
        rows[rank], rows[pick] = rows[pick], rows[rank]
        top = rows[rank]
        for r in range(rank + 1, len(rows)):
            if rows[r][column]:
                a, b = top[column], rows[r][column]
                rows[r] = [a * x - b * y for x, y in zip(rows[r], top, strict=True)]
                g = math.gcd(*rows[r])
                if g > 1:
                    rows[r] = [x // g for x in rows[r]]
        rank += 1
    return rank
