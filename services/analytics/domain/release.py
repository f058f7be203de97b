"""Releasing trends: small cells suppressed, complementary suppression, optional noise.

A cell is published only if at least ``k`` distinct visitors are in it. Because each
dimension's cells add up to the window total, a single suppressed cell could be
recovered by subtraction (total minus the published cells); so when exactly one cell
of a dimension is suppressed, the next smallest cell is suppressed with it. Several
suppressed cells' sum is recovered the same way, so it must hide at least ``k``
visitors too, and counted in visitors, not visits: one network can reload a page of
its own into that sum and subtract its reloads again. All a reader can be sure of is
that every visitor of the total not in a published cell is in a suppressed one, so
while the total's visitors minus the published cells' is under ``k``, the smallest
published cell goes too. A window whose total has fewer than ``k`` visitors is
suppressed whole. Suppressed cells are left out entirely, labels included (a page path
may itself be revealing).

Windows also add up across grains: a day's visits of a page are the sum of its hours'.
So a day and its hours are suppressed together, by the same two tests: a count hidden
in exactly one place of such a sum (the day or one hour), or hours hidden beside a
published day whose visitors minus the published hours' are under ``k``, take the
smallest shown count with them. Both rules run until neither suppresses anything more;
then an audit (``audit.py``) solves all the sums together, and any count, or sum of
hidden counts, it can still solve for with fewer than k visitors in it (through a chain
the rules cannot see, such as a large cell hidden as a complement and solved for, which
gives away the sum of the small ones beside it) takes the nearest shown count with it,
and the rules run again.

Releases under different k nest. Each k's suppression starts from everything k - 1's
hides (from k = 2 up), so a release at a larger k hides all that one at a smaller k
does, for any two k: someone holding both learns nothing the smaller k's does not say,
whichever came first and however k is changed later (raised, lowered, or the partner's
and the public's). Nesting is not built in: suppressing at k = 15 from scratch can hide
a cell that k = 11 shows and show its complement, and the two releases together give
a small cell away. The ladder is computed afresh, from the stored counts of final days
only (they no longer change), so it needs no record of past releases: it keeps working
when receipts expire, and a k that was never released before cannot break it.

With ``epsilon`` set, Laplace noise of scale 1/epsilon is added to every published
count (then rounded, never below zero). The noise of a cell is derived from a keyed
hash, so asking the same question again returns the same answer instead of a fresh
sample that could be averaged away. The hash is of what the cell counts, not of its
label: counts that are provably the same visits (a cell holding all its window's visits,
an hour holding all its day's) share one draw, so one hour, one device class and one
referrer of a quiet day show one noisy count, not several draws of it to average.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from services.analytics.domain import audit

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
    parent: str | None = None  # the coarser window it adds up to (None: the coarsest)


@dataclass(frozen=True)
class ReleasedWindow:
    label: str
    total: Cell | None
    cells: list[Cell] = field(default_factory=list)
    suppressed: int = 0


Key = tuple[str, str]  # (dimension, value); the total is ("total", "")
TOTAL: Key = ("total", "")


def _key(cell: Cell) -> Key:
    return (cell.dimension, cell.value)


def _smallest(cells: Sequence[Cell]) -> Cell:
    return min(cells, key=lambda c: (c.visits, c.unique_visitors, c.dimension, c.value))


class _Hidden:
    """What is suppressed so far in each window; a hidden total hides the window."""

    def __init__(self, windows: Sequence[Window], k: int, already: Sequence[set[Key]]) -> None:
        self.keys: list[set[Key]] = [
            {_key(c) for c in [w.total, *w.cells] if c.unique_visitors < k} for w in windows
        ]
        for keys, more in zip(self.keys, already, strict=True):
            keys |= more

    def hides(self, i: int, key: Key) -> bool:
        return TOTAL in self.keys[i] or key in self.keys[i]

    def hide(self, i: int, key: Key) -> None:
        self.keys[i].add(key)


def _too_few_hidden(whole: Cell, shown: Sequence[Cell], hidden: Sequence[Cell], k: int) -> bool:
    """Whether the ``hidden`` parts of ``whole`` may hold fewer than k visitors.

    Their visits (whole minus shown) say nothing of that: one visitor's reloads can
    fill them. Two bounds always hold: every visitor of the whole not in a shown part
    is in a hidden one, and the hidden parts hold at least their largest one's. (The
    first alone goes below zero as soon as visitors are in several parts, as returning
    visitors are in several hours, and readers of many pages in several pages: it would
    hide the smallest shown part again and again, and most of a release with it.)"""
    beyond_shown = whole.unique_visitors - sum(c.unique_visitors for c in shown)
    largest = max((c.unique_visitors for c in hidden), default=0)
    return max(beyond_shown, largest) < k


def _complement_within(windows: Sequence[Window], hidden: _Hidden, k: int) -> bool:
    """The hidden cells of a dimension add up to the total minus the published ones:
    with one hidden cell (its own sum), or too few visitors left to the hidden ones,
    hide the smallest published neighbour, or, with none left, the window."""
    changed = False
    for i, window in enumerate(windows):
        if hidden.hides(i, TOTAL):
            continue
        for dimension in sorted({c.dimension for c in window.cells}):
            group = [c for c in window.cells if c.dimension == dimension]
            kept = [c for c in group if not hidden.hides(i, _key(c))]
            hiding = len(group) - len(kept)
            out = [c for c in group if hidden.hides(i, _key(c))]
            if hiding and (hiding == 1 or _too_few_hidden(window.total, kept, out, k)):
                hidden.hide(i, _key(_smallest(kept)) if kept else TOTAL)
                changed = True
                if not kept:
                    break
    return changed


Place = tuple[int, Cell]  # a window's index and its cell for one key


@dataclass(frozen=True)
class _Sum:
    """A parent's count of a key is the sum of its windows' counts of it."""

    key: Key
    parts: list[Place]  # the windows holding the key
    whole: Place | None  # the parent's, None when the parent is not in the release


def _parent_sums(windows: Sequence[Window]) -> list[_Sum]:
    """For each parent and key: where the key is counted (the parent, its windows).
    A parent not in the release is left out of its sums but counts as published: it
    may be, elsewhere."""
    index = {w.label: i for i, w in enumerate(windows)}
    parts: dict[tuple[str, Key], list[Place]] = {}
    for i, window in enumerate(windows):
        if window.parent is not None:
            for cell in (window.total, *window.cells):
                parts.setdefault((window.parent, _key(cell)), []).append((i, cell))
    own: dict[str, dict[Key, Cell]] = {}
    sums = []
    for (parent, key), where in parts.items():
        whole = None
        if parent in index:
            up = index[parent]
            if parent not in own:
                own[parent] = {_key(c): c for c in (windows[up].total, *windows[up].cells)}
            if key in own[parent]:
                whole = (up, own[parent][key])
        sums.append(_Sum(key, where, whole))
    return sums


def _complement_across(sums: Sequence[_Sum], hidden: _Hidden, k: int) -> bool:
    """A key hidden in exactly one place of a parent's sum (the parent itself or one
    of its windows), or in windows holding too few of the published parent's visitors
    beside the shown ones: hide it where it is smallest among the others, or the sum
    gives it (or the hidden windows' sum) away."""
    changed = False
    for s in sums:
        where = [*s.parts, *([] if s.whole is None else [s.whole])]
        shown = [(i, c) for i, c in where if not hidden.hides(i, s.key)]
        if shown and (len(where) - len(shown) == 1 or _hidden_parts_too_few(s, hidden, k)):
            i, _ = min(shown, key=lambda ic: (ic[1].visits, ic[1].unique_visitors, ic[0]))
            hidden.hide(i, s.key)
            changed = True
    return changed


def _hidden_parts_too_few(s: _Sum, hidden: _Hidden, k: int) -> bool:
    """Whether some windows hide the key beside a published parent, holding too few
    visitors. (A parent not in the release has no visitor count here to bound them
    with; its windows then answer to the one-hidden-place rule only.)"""
    if s.whole is None or hidden.hides(s.whole[0], s.key):
        return False
    shown = [c for i, c in s.parts if not hidden.hides(i, s.key)]
    out = [c for i, c in s.parts if hidden.hides(i, s.key)]
    return bool(out) and _too_few_hidden(s.whole[1], shown, out, k)


def hidden_keys(
    windows: Sequence[Window], k: int, already: Sequence[set[Key]] = ()
) -> list[set[Key]]:
    """What each window hides at threshold ``k``: cells under k, and every cell that
    subtraction would give away, within a window or across a parent and its windows.

    Each family (a window and those that add up to it; windows whose parent is not
    loaded are siblings under it) is settled on its own: the rules above look at one
    sum at a time, then an audit of all the family's sums together finds any count
    under k they still give away and hides the nearest published count it is solved
    through, and the rules run again, until the audit finds none. A family whose
    windows do not add up to their parent (some gone, say) releases the parent alone.

    ``already`` is hidden from the start. Whatever it holds, each family is settled at
    every threshold from 2 up to ``k`` in turn, each starting from what the one below
    hides: so what k hides holds all that any smaller threshold hides (see the module's
    docstring), and a release under any other k shows nothing this one hides that the
    smaller of the two does not hide too.
    """
    out: list[set[Key]] = [set() for _ in windows]
    for members in _families(windows):
        family = [windows[i] for i in members]
        start = [set(already[i]) if i < len(already) else set() for i in members]
        if not _adds_up(family):
            start = [
                {TOTAL} if w.parent is not None else keys
                for w, keys in zip(family, start, strict=True)
            ]
            family = [replace(w, parent=None) for w in family]
        for i, keys in zip(members, _climbed(family, k, start), strict=True):
            out[i] = keys
    return out


class _Climbs:
    """Families already settled, by what they hold: a final day's counts never change,
    so each is settled once per k, not at every ask. Public releases need no sign-in,
    and settling a busy day takes one to two seconds: without this, a few asks for long
    ranges would keep both cores busy. Keyed by a digest of the counts themselves,
    not by the day, so a changed family (counts of a day not final, an erasure) is
    settled again, never served stale. Bounded: the oldest used go first."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._done: OrderedDict[bytes, list[frozenset[Key]]] = OrderedDict()
        self._lock = threading.Lock()  # releases are settled in worker threads

    def get(self, digest: bytes) -> list[set[Key]] | None:
        with self._lock:
            keys = self._done.get(digest)
            if keys is None:
                return None
            self._done.move_to_end(digest)
        return [set(k) for k in keys]

    def put(self, digest: bytes, keys: Sequence[set[Key]]) -> None:
        with self._lock:
            self._done[digest] = [frozenset(k) for k in keys]
            while len(self._done) > self._most:
                self._done.popitem(last=False)


CLIMBS = _Climbs(4096)  # ~ a few days of ten sites' releases at every grain


def _climbed(family: Sequence[Window], k: int, start: Sequence[set[Key]]) -> list[set[Key]]:
    digest = _family_digest(family, k, start)
    keys = CLIMBS.get(digest)
    if keys is None:
        keys = _Ladder(family).climb(k, start)
        CLIMBS.put(digest, keys)
    return keys


def _family_digest(family: Sequence[Window], k: int, start: Sequence[set[Key]]) -> bytes:
    """Everything what a family hides depends on: its windows' places in their sums,
    their cells' counts, k and what is hidden from the start."""
    held = [
        (w.label, w.parent, sorted(start[i]),
         [(c.dimension, c.value, c.visits, c.unique_visitors) for c in (w.total, *w.cells)])
        for i, w in enumerate(family)
    ]  # fmt: skip
    return hashlib.blake2b(repr((k, held)).encode(), digest_size=20).digest()


def _families(windows: Sequence[Window]) -> list[list[int]]:
    """Indexes of the windows of each family, each family in the order given."""
    index = {w.label: i for i, w in enumerate(windows)}

    def root(i: int) -> str:
        seen = 0
        while (up := windows[i].parent) is not None and up in index and seen <= len(windows):
            i, seen = index[up], seen + 1
        return windows[i].parent or windows[i].label

    families: dict[str, list[int]] = {}
    for i in range(len(windows)):
        families.setdefault(root(i), []).append(i)
    return list(families.values())


def _adds_up(family: Sequence[Window]) -> bool:
    """Whether every loaded parent's counts are its loaded windows' sums, key by key."""
    index = {w.label: i for i, w in enumerate(family)}
    sums: dict[tuple[int, Key], int] = {}
    for window in family:
        if window.parent in index:
            for cell in (window.total, *window.cells):
                slot = (index[window.parent], _key(cell))
                sums[slot] = sums.get(slot, 0) + cell.visits
    parents = {up for up, _ in sums}
    own = {(i, _key(c)): c.visits for i in parents for c in (family[i].total, *family[i].cells)}
    return own == sums


class _Ladder:
    """What one family hides at 2, 3, ... k in turn, each threshold starting from what
    the one below hides (so every threshold's hides all the lower ones' do).

    Why every threshold, and not only those ever released: the thresholds released (and
    the order they come in) are configuration, and may change at any time; settling every
    one up to ``k`` makes any two of them nest, with nothing remembered. The family's sums
    are set up once for all thresholds."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = windows
        index = {w.label: i for i, w in enumerate(windows)}
        self.parents = [None if w.parent is None else index.get(w.parent) for w in windows]
        self.cells = {(i, _key(c)): c for i, w in enumerate(windows) for c in (w.total, *w.cells)}
        self.across = _parent_sums(windows)
        holds = [[_key(c) for c in (w.total, *w.cells)] for w in windows]
        self.system = audit.sums(holds, self.parents)
        # For each sum: its parts, and its whole's visitors with all its parts' together.
        self.parts = [{slot for slot, sign in terms if sign < 0} for terms in self.system.equations]
        self.whole_of = [
            next(s for s, sign in terms if sign > 0) for terms in self.system.equations
        ]
        self.wholes = [
            (self.cells[next(slot for slot, sign in terms if sign > 0)].unique_visitors,
             sum(self.cells[part].unique_visitors for part in parts))
            for terms, parts in zip(self.system.equations, self.parts, strict=True)
        ]  # fmt: skip
        # Each count's visitors alone, at least (see visitors()).
        self.alone = {slot: cell.unique_visitors for slot, cell in self.cells.items()}
        for (whole, everyone), parts in zip(self.wholes, self.parts, strict=True):
            for part in parts:
                alone = whole - (everyone - self.cells[part].unique_visitors)
                self.alone[part] = max(self.alone[part], alone)
        self._reduced: tuple[tuple[frozenset[Key], ...], audit.Reduced] | None = None

    def climb(self, k: int, start: Sequence[set[Key]]) -> list[set[Key]]:
        keys = list(start)
        for threshold in range(min(2, k), k + 1):
            keys = self.settle(threshold, keys)
        return keys

    def settle(self, k: int, already: Sequence[set[Key]]) -> list[set[Key]]:
        """What the family hides at ``k`` from ``already``."""
        windows = self.windows
        hidden = _Hidden(windows, k, already)

        def hides(slot: audit.Slot) -> bool:
            return hidden.hides(*slot)

        while True:
            while _complement_within(windows, hidden, k) | _complement_across(
                self.across, hidden, k
            ):
                pass
            pattern = tuple(frozenset(keys) for keys in hidden.keys)
            if self._reduced is None or self._reduced[0] != pattern:
                self._reduced = (pattern, audit.reduce(self.system, hides, self.visitors))
            leaks = audit.given_away(self._reduced[1], self.visitors, k)
            if not leaks:
                return hidden.keys
            before = sum(map(len, hidden.keys))
            for leak in leaks:
                audit.cover(leak, self.system, hides, hidden.hide,
                            lambda slot: self.cells[slot].visits)  # fmt: skip
            if sum(map(len, hidden.keys)) == before:  # nothing left to hide but everything
                return [{TOTAL} for _ in windows]

    def visitors(self, slots: frozenset[audit.Slot]) -> int:
        """How many visitors are in these counts together, at least.

        Some counts are made of these counts' visits exactly: a whole all of whose parts
        are (a window's total, all its pages; a day's page, all its hours'), and either
        side of a sum with one part (a day's page seen in one hour only). Their visitors
        are among these counts', so as many visitors as any of them holds are here; and
        for each sum some of them are parts of, the whole's visitors less those of its
        other parts (each visitor of a whole is in one of its parts)."""
        made = self._made_of(slots)
        seen = max(self.alone[slot] for slot in made)
        if len(made) > 1:
            within: dict[int, int] = {}
            for slot in made:
                for e in self.system.involving.get(slot, ()):
                    if slot in self.parts[e]:
                        within[e] = within.get(e, 0) + self.cells[slot].unique_visitors
            for e, inside in within.items():
                whole, everyone = self.wholes[e]
                seen = max(seen, whole - (everyone - inside))
        return seen

    def _made_of(self, slots: frozenset[audit.Slot]) -> set[audit.Slot]:
        """These counts and every count made of their visits exactly (see visitors())."""
        made, work = set(slots), list(slots)
        held: dict[int, int] = {}  # parts made so far, by sum
        while work:
            slot = work.pop()
            for e in self.system.involving.get(slot, ()):
                parts, whole = self.parts[e], self.whole_of[e]
                if len(parts) == 1:
                    grown = [s for s in (whole, *parts) if s not in made]
                elif slot in parts:
                    held[e] = held.get(e, 0) + 1
                    grown = [whole] if held[e] == len(parts) and whole not in made else []
                else:
                    grown = []
                made.update(grown)
                work += grown
        return made


def suppress(
    windows: Sequence[Window], k: int, already: Sequence[set[Key]] = ()
) -> list[ReleasedWindow]:
    """The cells of these windows that may be published at threshold ``k`` (no noise)."""
    released = []
    for window, keys in zip(windows, hidden_keys(windows, k, already), strict=True):
        if TOTAL in keys:
            released.append(ReleasedWindow(window.label, None, [], 1 + len(window.cells)))
            continue
        kept = [c for c in window.cells if _key(c) not in keys]
        published = sorted(kept, key=lambda c: (c.dimension, -c.visits, c.value))
        released.append(
            ReleasedWindow(window.label, window.total, published, len(window.cells) - len(kept))
        )
    return released


def laplace(u: float, scale: float) -> float:
    """Inverse CDF of the Laplace distribution (location 0) at ``u`` in (0, 1)."""
    u = min(max(u, 1e-12), 1 - 1e-12) - 0.5
    return -scale * math.copysign(1.0, u) * math.log(1 - 2 * abs(u))


def keyed_noise(key: bytes) -> NoiseSource:
    """A noise source keyed by ``key``: the same label, the same noise, wherever asked."""

    def uniform(label: str) -> float:
        digest = hmac.new(key, label.encode(), hashlib.sha256).digest()
        return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64

    return uniform


Drawn = tuple[str, Key]  # what a noise draw is of: a window's label and a key


def noise_labels(windows: Sequence[Window]) -> list[dict[Key, Drawn]]:
    """For each window and key, the label its noise is drawn under: that of the cell it
    provably counts the same visits as, so all of them publish one draw.

    A cell's visits are among its window's total's, and a window's visits of a key among
    its parent's of that key: a cell contained in another, with as many visits, holds the
    very same visits (the hour holding all its day's, the device class all its window's).
    Cells joined by such steps form one class, whose label is its coarsest member's (the
    day before its hours, the total before its cells). Equal counts alone are not enough
    (two pages with 30 visits each are other visits): those keep their own draws. A cell
    equal to no other keeps its own label, as before, so its published count is unchanged.

    Why one draw per set of visits rather than noise on the finest cells only, with the
    sums derived: a window's dimensions are not one partition (there is no cell for page
    and device together), so no set of finest cells adds up to every published count;
    and derived sums would run through suppressed cells.
    """
    index = {w.label: i for i, w in enumerate(windows)}
    slots = {(i, _key(c)): c for i, w in enumerate(windows) for c in (w.total, *w.cells)}
    up: dict[tuple[int, Key], tuple[int, Key]] = {slot: slot for slot in slots}

    def root(slot: tuple[int, Key]) -> tuple[int, Key]:
        while up[slot] != slot:
            up[slot] = up[up[slot]]
            slot = up[slot]
        return slot

    def rank(slot: tuple[int, Key]) -> tuple[bool, bool, str, Key]:
        i, key = slot
        return (windows[i].parent is not None, key != TOTAL, windows[i].label, key)

    def join(inner: tuple[int, Key], outer: tuple[int, Key]) -> None:
        a, b = slots[inner], slots[outer]
        if (a.visits, a.unique_visitors) == (b.visits, b.unique_visitors):
            first, second = sorted((root(inner), root(outer)), key=rank)
            up[second] = first

    for i, key in list(slots):
        if key != TOTAL:
            join((i, key), (i, TOTAL))
        parent = windows[i].parent
        if parent is not None and parent in index and (index[parent], key) in slots:
            join((i, key), (index[parent], key))
    out: list[dict[Key, Drawn]] = [{} for _ in windows]
    for i, key in slots:
        j, drawn = root((i, key))
        out[i][key] = (windows[j].label, drawn)
    return out


def add_noise(
    released: ReleasedWindow,
    epsilon: float,
    noise: NoiseSource,
    k: int,
    labels: Mapping[Key, Drawn] | None = None,
) -> ReleasedWindow:
    """Laplace noise on every published count; a noisy count is at least k visitors.

    The noise of a cell is drawn once per epsilon: asked again (of any replica, by any
    audience with that epsilon) it is the same. Under another epsilon it is a new draw:
    the same draw at two scales (c + 2L and c + L) would give c away exactly. ``labels``
    (:func:`noise_labels`) names what each cell counts; without, the cell's own label.
    """
    scale = 1.0 / epsilon

    def noisy(cell: Cell) -> Cell:
        own = (released.label, _key(cell))
        window, (dimension, value) = own if labels is None else labels.get(own[1], own)
        base = f"{window}|{epsilon!r}|{dimension}|{value}"
        visits = cell.visits + laplace(noise(base + "|visits"), scale)
        uniques = cell.unique_visitors + laplace(noise(base + "|uniques"), scale)
        # Rounded, and never below the threshold the cell was published under.
        unique_visitors = max(k, round(uniques))
        # No exact percentiles beside noisy counts: computed from the exact load-time
        # buckets, they would pin the ratios of those counts, and with them the counts.
        return replace(cell, visits=max(unique_visitors, round(visits)),
                       unique_visitors=unique_visitors,
                       load_time_p50_ms=None, load_time_p95_ms=None)  # fmt: skip

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
    windows: Sequence[Window],
    k: int,
    epsilon: float | None,
    noise: NoiseSource,
    already: Sequence[set[Key]] = (),
) -> Release:
    """Suppress then (optionally) add noise to every window of a release."""
    out = suppress(windows, k, already)
    if epsilon is not None:
        labels = noise_labels(windows)
        out = [
            add_noise(released, epsilon, noise, k, keys)
            for released, keys in zip(out, labels, strict=True)
        ]
    return Release(k, epsilon, out)
