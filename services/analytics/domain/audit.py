"""Which hidden counts, and sums of them, a release's published counts give away.

A release's counts obey sums: in each window, each dimension's cells add up to the
total; a parent window's count of a key is the sum of its windows' counts. Taking
the published counts as known, a combination of hidden counts can be solved for
exactly when it lies in the row space of those sums over the hidden counts: a single
count when the reduced row echelon form has it as a row, the sum of a set of counts
when the set's indicator is a combination of the rows. Rules that look at one sum at
a time miss chains (an hour's total given by its only page, then used in the day's
sum; a large page hidden as a complement and solved for, which gives the sum of the
small pages beside it), so a release is audited this way before it goes out.

The audit assumes the reader knows which keys every window holds, which a careful
reader of many releases can come close to; so what it calls safe is safe for less.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Key = tuple[str, str]  # (dimension, value); the total is ("total", "")
TOTAL: Key = ("total", "")
Slot = tuple[int, Key]  # (window index, key)
Sum = list[tuple[Slot, int]]  # terms with their sign; they add up to zero
PRIME = 2**61 - 1


@dataclass(frozen=True)
class Sums:
    """The sums, and for each slot the sums it is a term of."""

    equations: list[Sum]
    involving: dict[Slot, list[int]]


def sums(holds: Sequence[Iterable[Key]], parent: Sequence[int | None]) -> Sums:
    """Every sum the windows obey. ``holds[i]``: the keys window i holds, its total
    included; ``parent[i]``: the index of the window it adds up to, if loaded. A key
    the parent holds and none of its windows (or the other way round) gets no sum:
    such windows do not add up, and the caller does not release them together."""
    out: list[Sum] = []
    children: dict[int, list[int]] = {}
    keys = [set(h) for h in holds]
    for i, held in enumerate(keys):
        for dimension in sorted({d for d, _ in held} - {TOTAL[0]}):
            out.append([((i, TOTAL), 1)] + [((i, k), -1) for k in held if k[0] == dimension])
        up = parent[i]
        if up is not None:
            children.setdefault(up, []).append(i)
    for up, kids in children.items():
        for key in sorted(keys[up]):
            terms = [((i, key), -1) for i in kids if key in keys[i]]
            if terms:
                out.append([((up, key), 1), *terms])
    involving: dict[Slot, list[int]] = {}
    for e, terms in enumerate(out):
        for slot, _ in terms:
            involving.setdefault(slot, []).append(e)
    return Sums(out, involving)


@dataclass(frozen=True)
class Reduced:
    """The sums over the hidden slots in reduced row echelon form, the slots with the
    most visitors first: ``rows`` by pivot column, each holding its pivot and free
    columns; ``slots[c]`` is column c's slot, ``alone[c]`` its own visitors."""

    slots: list[Slot]
    alone: list[int]
    rows: dict[int, dict[int, int]]


Visitors = Callable[[frozenset[Slot]], int]
"""How many visitors are in some counts together, at least; it grows with the set."""


def reduce(system: Sums, hidden: Callable[[Slot], bool], visitors: Visitors) -> Reduced:
    """The sums over the hidden slots, the others being known, for :func:`given_away`
    at any threshold: ordered by their own visitors, most first, the slots under any k
    are the last columns, and the rows whose pivot is one of them hold only those."""
    found = dict.fromkeys(s for terms in system.equations for s, _ in terms if hidden(s))
    alone = {s: visitors(frozenset((s,))) for s in found}
    slots = sorted(found, key=lambda s: -alone[s])
    columns = {s: c for c, s in enumerate(slots)}
    return Reduced(slots, [alone[s] for s in slots], _echelon(system, columns))


def given_away(
    reduced: Reduced, visitors: Visitors, k: int, most_steps: int = 20_000
) -> list[frozenset[Slot]]:
    """Sets of hidden slots whose sum the sums pin to one value, the others being known,
    while fewer than k visitors may be in them all together: at most one per connected
    part of the system, each a chain for :func:`cover` to break.

    A set's sum is pinned exactly when its indicator (1 on its slots, 0 elsewhere) lies
    in the row space of the sums over the hidden slots. Only slots with fewer than k
    visitors alone can be in such a set (its visitors are at least each slot's), and
    those are the last columns: the reduced rows whose pivot is one of them hold only
    such slots, and span every pinned combination of them. An indicator among their
    combinations takes each row 0 or 1 times (its pivot's entry), so the search is over
    subsets of rows whose other entries add up to 0 or 1 each: rows sharing no column
    are searched apart, and a branch stops once a sum cannot come back into [0, 1] or
    once the rows taken already hold k visitors. A part the search cannot finish within
    ``most_steps`` is taken as given away whole: a release may hide more than it must,
    never less.
    """
    slots = reduced.slots
    few = next((c for c, n in enumerate(reduced.alone) if n < k), len(slots))
    rows = {c: row for c, row in reduced.rows.items() if c >= few}

    def too_few(columns: set[int]) -> bool:
        return visitors(frozenset(slots[c] for c in columns)) < k

    out = []
    for part in _parts(rows):
        found = _indicator([rows[c] for c in part], too_few, most_steps)
        if found is not None:
            out.append(frozenset(slots[c] for c in found))
    return out


def _echelon(system: Sums, columns: dict[Slot, int]) -> dict[int, dict[int, int]]:
    """The reduced row echelon form of the sums over the slots in ``columns`` (the
    others are known): each row by its pivot, holding its pivot (1) and free columns.

    The elimination runs modulo a large prime: the coefficients are small integers, so
    it agrees with the rationals unless the prime divides a minor of the system."""
    pivots: dict[int, dict[int, int]] = {}
    for terms in system.equations:
        row: dict[int, int] = {}
        for slot, sign in terms:
            column = columns.get(slot)
            if column is not None:
                row[column] = (row.get(column, 0) + sign) % PRIME
        row = _reduce({c: v for c, v in row.items() if v}, pivots)
        if row:
            first = min(row)
            inverse = pow(row[first], -1, PRIME)
            pivots[first] = {c: v * inverse % PRIME for c, v in row.items()}
    # Back substitution, last pivot first: each row then holds its pivot and free columns.
    for column in sorted(pivots, reverse=True):
        pivots[column] = _reduce(pivots[column], pivots, above=column)
    return pivots


def _reduce(
    row: dict[int, int], pivots: dict[int, dict[int, int]], above: int = -1
) -> dict[int, int]:
    """Clear from ``row`` every pivot column greater than ``above``, smallest first
    (clearing one only brings in larger columns)."""
    while True:
        present = [c for c in row if c > above and c in pivots]
        if not present:
            return row
        column = min(present)
        factor, pivot = row[column], pivots[column]
        row = dict(row)
        for c, v in pivot.items():
            row[c] = (row.get(c, 0) - factor * v) % PRIME
            if not row[c]:
                del row[c]


def _parts(rows: dict[int, dict[int, int]]) -> list[list[int]]:
    """The pivots of the rows, grouped so that no two groups share a column."""
    owner: dict[int, int] = {}
    up = {c: c for c in rows}

    def root(c: int) -> int:
        while up[c] != c:
            up[c] = up[up[c]]
            c = up[c]
        return c

    for pivot, row in rows.items():
        for column in row:
            if column != pivot:
                other = owner.setdefault(column, pivot)
                up[root(other)] = root(pivot)
    groups: dict[int, list[int]] = {}
    for pivot in sorted(rows):
        groups.setdefault(root(pivot), []).append(pivot)
    return list(groups.values())


def _signed(value: int) -> int:
    return value if value <= PRIME // 2 else value - PRIME


def _indicator(
    rows: list[dict[int, int]], too_few: Callable[[set[int]], bool], most_steps: int
) -> set[int] | None:
    """The columns of a 0/1 combination of ``rows`` (each row its pivot first, taken 0 or
    1 times) that is ``too_few``, if any; every column when the search runs out."""
    pivots = [min(row) for row in rows]
    free = sorted({c for row in rows for c in row} - set(pivots))
    entries = [{c: _signed(v) for c, v in row.items() if c in free} for row in rows]
    small = 2**32  # entries the search can bound; others are checked at the end only
    bounded = [c for c in free if all(abs(e.get(c, 0)) < small for e in entries)]
    # What the rows from i on can still add to each bounded column, at least and at most.
    low = [dict.fromkeys(bounded, 0) for _ in range(len(rows) + 1)]
    high = [dict.fromkeys(bounded, 0) for _ in range(len(rows) + 1)]
    for i in range(len(rows) - 1, -1, -1):
        for c in bounded:
            v = entries[i].get(c, 0)
            low[i][c] = low[i + 1][c] + min(v, 0)
            high[i][c] = high[i + 1][c] + max(v, 0)
    steps = 0
    sums = dict.fromkeys(free, 0)
    taken: list[int] = []

    def search(i: int) -> set[int] | None:
        nonlocal steps
        steps += 1
        if steps > most_steps:
            raise _OutOfSteps
        if any(sums[c] + low[i][c] > 1 or sums[c] + high[i][c] < 0 for c in bounded):
            return None
        if i == len(rows):
            if not taken or any(sums[c] % PRIME not in (0, 1) for c in free):
                return None
            held = set(taken) | {c for c in free if sums[c] % PRIME == 1}
            return held if too_few(held) else None
        taken.append(pivots[i])
        if too_few(set(taken)):  # enough visitors in these already: no set holding them
            for c, v in entries[i].items():
                sums[c] += v
            found = search(i + 1)
            for c, v in entries[i].items():
                sums[c] -= v
            if found is not None:
                return found
        taken.pop()
        return search(i + 1)

    try:
        return search(0)
    except (_OutOfSteps, RecursionError):  # one level per row: a part of ~1,000 rows
        return set(pivots) | set(free)


class _OutOfSteps(Exception):
    pass


def cover(
    leak: frozenset[Slot],
    system: Sums,
    hidden: Callable[[Slot], bool],
    hide: Callable[[int, Key], None],
    size: Callable[[Slot], int],
) -> None:
    """Hide the published count nearest to the slots ``leak`` in the sums (the smallest
    of the nearest), so the chain that pinned their sum breaks; with none, hide every
    window the chain goes through."""
    equations, involving = system.equations, system.involving
    seen, used, frontier = set(leak), set[int](), sorted(leak)
    while frontier:
        shown: list[Slot] = []
        reached: list[Slot] = []
        for slot in frontier:
            for e in involving.get(slot, ()):
                if e in used:
                    continue
                used.add(e)
                for term, _ in equations[e]:
                    if term not in seen:
                        seen.add(term)
                        (reached if hidden(term) else shown).append(term)
        if shown:
            hide(*min(shown, key=lambda s: (size(s), s)))
            return
        frontier = reached
    for window in {i for i, _ in seen}:
        hide(window, TOTAL)
