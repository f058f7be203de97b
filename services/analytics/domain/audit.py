"""Which hidden counts of a release can be solved for from the published ones.

A release's counts obey sums: in each window, each dimension's cells add up to the
total; a parent window's count of a key is the sum of its windows' counts. Taking
the published counts as known, a hidden count can be solved for exactly when its unit
vector lies in the row space of those sums over the hidden counts, that is when the
reduced row echelon form has it as a row. Rules that look at one sum at a time miss
chains (an hour's total given by its only page, then used in the day's sum), so a
release is audited this way before it goes out.

The elimination runs modulo a large prime: the coefficients are small integers, so it
agrees with the rationals unless the prime divides a minor of the system (the tests
check it against exact integer elimination).

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


def solvable(system: Sums, hidden: Callable[[Slot], bool]) -> set[Slot]:
    """The hidden slots the sums pin to one value, the others being known."""
    columns: dict[Slot, int] = {}
    pivots: dict[int, dict[int, int]] = {}
    for terms in system.equations:
        row: dict[int, int] = {}
        for slot, sign in terms:
            if hidden(slot):
                column = columns.setdefault(slot, len(columns))
                row[column] = (row.get(column, 0) + sign) % PRIME
        row = _reduce({c: v for c, v in row.items() if v}, pivots)
        if row:
            first = min(row)
            inverse = pow(row[first], -1, PRIME)
            pivots[first] = {c: v * inverse % PRIME for c, v in row.items()}
    # Back substitution, last pivot first: each row then holds its pivot and free columns.
    for column in sorted(pivots, reverse=True):
        pivots[column] = _reduce(pivots[column], pivots, above=column)
    slot_of = {c: s for s, c in columns.items()}
    return {slot_of[c] for c, row in pivots.items() if len(row) == 1}


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


def cover(
    leak: Slot,
    system: Sums,
    hidden: Callable[[Slot], bool],
    hide: Callable[[int, Key], None],
    size: Callable[[Slot], int],
) -> None:
    """Hide the published count nearest to ``leak`` in the sums (the smallest of the
    nearest), so the chain that solved for it breaks; with none, hide every window the
    chain goes through."""
    equations, involving = system.equations, system.involving
    seen, used, frontier = {leak}, set[int](), [leak]
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
