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

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

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


def _hidden_system(
    windows: Sequence[Window], released: Sequence[ReleasedWindow]
) -> tuple[list[tuple[int, Key]], list[list[int]]]:
    """The hidden counts (window index, key), and the sums as rows over them."""
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
    return hidden, matrix


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
    hidden, matrix = _hidden_system(windows, released)
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


Members = dict[tuple[str, Key], frozenset[object]]  # (window label, key) -> its visitors


def members(windows: Sequence[Window], hours: Sequence[Sequence[Visit]]) -> Members:
    """Who is in each count of a day and its hours built from ``hours`` (the day first,
    as the tests build them), each visit by a distinct visitor (hour, position)."""
    day, *rest = windows
    out: dict[tuple[str, Key], set[object]] = {}
    for window, visits in zip(rest, hours, strict=True):
        for n, (page, device) in enumerate(visits):
            for key in (TOTAL, ("page", page), ("device_class", device)):
                for label in (window.label, day.label):
                    out.setdefault((label, key), set()).add((window.label, n))
    return {slot: frozenset(who) for slot, who in out.items()}


def derivable_sums(
    windows: Sequence[Window],
    released: Sequence[ReleasedWindow],
    who: Members,
    k: int,
    most: int = 4,
) -> set[frozenset[tuple[str, Key]]]:
    """Sets of up to ``most`` hidden counts whose sum the published ones give away while
    fewer than k visitors are in them all together: their sum is a count of those few.
    Only counts with fewer than k visitors each can be in such a set."""
    marks = _marks(windows, released)
    few = [name for name in marks if len(who[name]) < k]
    found: set[frozenset[tuple[str, Key]]] = set()
    for size in range(1, most + 1):
        for chosen in itertools.combinations(few, size):
            together = frozenset().union(*(who[name] for name in chosen))
            if len(together) < k and _adds_to_zero([marks[name] for name in chosen]):
                found.add(frozenset(chosen))
    return found


def sum_given_away(
    windows: Sequence[Window],
    released: Sequence[ReleasedWindow],
    names: frozenset[tuple[str, Key]],
) -> bool:
    """Whether the published counts give away the sum of these hidden ones."""
    marks = _marks(windows, released)
    return all(name in marks for name in names) and _adds_to_zero([marks[n] for n in names])


def _marks(
    windows: Sequence[Window], released: Sequence[ReleasedWindow]
) -> dict[tuple[str, Key], tuple[Fraction, ...]]:
    """For each hidden count, its entries in a basis of the solutions of the homogeneous
    system over the hidden counts (exact fractions). The sum of a set of hidden counts
    is given away exactly when its indicator lies in the row space of the system, that
    is when it is orthogonal to every such solution: when the set's marks add up to 0."""
    hidden, matrix = _hidden_system(windows, released)
    basis = _null_space([[Fraction(v) for v in row] for row in matrix], len(hidden))
    return {
        (windows[i].label, key): tuple(v[j] for v in basis) for j, (i, key) in enumerate(hidden)
    }


def _adds_to_zero(marks: list[tuple[Fraction, ...]]) -> bool:
    return all(sum(column) == 0 for column in zip(*marks, strict=True))


def _null_space(matrix: list[list[Fraction]], width: int) -> list[list[Fraction]]:
    """A basis of the solutions of matrix · x = 0, by exact reduced row echelon form."""
    rows = [list(r) for r in matrix]
    pivots: list[int] = []
    for column in range(width):
        pick = next((r for r in range(len(pivots), len(rows)) if rows[r][column]), None)
        if pick is None:
            continue
        top = len(pivots)
        rows[top], rows[pick] = rows[pick], rows[top]
        rows[top] = [x / rows[top][column] for x in rows[top]]
        for r in range(len(rows)):
            if r != top and rows[r][column]:
                factor = rows[r][column]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[top], strict=True)]
        pivots.append(column)
    basis = []
    for free in (c for c in range(width) if c not in pivots):
        vector = [Fraction(0)] * width
        vector[free] = Fraction(1)
        for r, column in enumerate(pivots):
            vector[column] = -rows[r][free]
        basis.append(vector)
    return basis


# A large page hidden only as a complement can be solved for, and with it the sum of
# the small pages beside it (a review's case at the public k): the day shows /b and /c,
# 00:00 shows its total and /d, 01:00 its total. (/b + /c) at 00:00 is 35 - 18 = 17, at
# 01:00 23 + 23 - 17 = 29, so /a + /d at 01:00 is 34 - 29 = 5 visits of 5 visitors.
SMALL_SUM_BESIDE_A_SOLVED_ONE: list[list[Visit]] = [
    [("/b", "desktop")] * 8 + [("/c", "desktop")] * 9 + [("/d", "desktop")] * 3
    + [("/d", "phone")] * 15,
    [("/a", "phone")] * 2 + [("/b", "desktop")] * 15 + [("/c", "desktop")] * 3
    + [("/c", "phone")] * 11 + [("/d", "phone")] * 3,
]  # fmt: skip
