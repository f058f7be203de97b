"""Releases: no cell under k, none recoverable by subtraction, noise repeatable."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.domain.release import (
    Cell,
    ReleasedWindow,
    Window,
    hidden_keys,
    keyed_noise,
    laplace,
    release,
    suppress,
)
from tests.support.disclosure import Visit, counted, recoverable, small


def _window(groups: dict[str, list[tuple[int, int]]]) -> Window:
    cells = [
        Cell(dimension, f"{dimension}-{i}", visits, uniques)
        for dimension, values in groups.items()
        for i, (visits, uniques) in enumerate(values)
    ]
    first = next(iter(groups.values()))
    total = Cell("total", "", sum(v for v, _ in first), sum(u for _, u in first))
    return Window("w", total, cells)


def test_small_cells_and_a_complement_are_suppressed() -> None:
    released = suppress([_window({"page": [(40, 30), (20, 12), (15, 11), (3, 2)]})], 11)[0]
    assert [c.value for c in released.cells] == ["page-0", "page-1"]
    assert released.suppressed == 2


def test_two_small_cells_need_no_complement() -> None:
    released = suppress([_window({"page": [(40, 30), (3, 2), (4, 3)]})], 5)[0]
    assert [c.value for c in released.cells] == ["page-0"]


def test_a_window_under_k_is_suppressed_whole() -> None:
    released = suppress([_window({"page": [(5, 4), (3, 3)]})], 11)[0]
    assert released.total is None
    assert released.cells == []
    assert released.suppressed == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 30)), min_size=1, max_size=8),
    st.integers(2, 15),
)
def test_no_published_cell_is_under_k_nor_derivable(cells: list[tuple[int, int]], k: int) -> None:
    cells = [(max(v, u), u) for v, u in cells]
    released = suppress([_window({"page": cells})], k)[0]
    assert all(c.unique_visitors >= k for c in released.cells)
    if released.total is not None:
        assert released.total.unique_visitors >= k
        # Exactly one hidden cell would be total minus the published ones; several hidden
        # cells' sum is that difference, and must not be a count under k either.
        hidden = len(cells) - len(released.cells)
        assert hidden != 1
        if hidden:
            assert released.total.visits - sum(c.visits for c in released.cells) >= k


def test_noise_is_repeatable_and_keeps_counts_at_least_k() -> None:
    window = _window({"page": [(400, 300), (200, 120)]})
    noise = keyed_noise(b"k" * 32)
    first = release([window], 11, 1.0, noise)
    again = release([window], 11, 1.0, noise)
    assert first.windows == again.windows
    assert all(c.unique_visitors >= 11 for c in first.windows[0].cells)
    assert first.cells_published == 3
    assert first.cells_suppressed == 0


@pytest.mark.promise("P-20")
def test_noisy_counts_come_without_exact_load_time_percentiles() -> None:
    # Percentiles computed from exact load-time buckets pin the ratios of the exact
    # counts, and so the counts under the noise: with noise, none is published.
    cells = [Cell("page", "/", 400, 300, 32.5, 89.2), Cell("page", "/b", 200, 120, 40.0, 99.0)]
    window = Window("w", Cell("total", "", 600, 420, 35.0, 95.0), cells)
    noisy = release([window], 11, 1.0, keyed_noise(b"k" * 32)).windows[0]
    assert noisy.total is not None
    for cell in (noisy.total, *noisy.cells):
        assert (cell.load_time_p50_ms, cell.load_time_p95_ms) == (None, None)
    exact = release([window], 11, None, keyed_noise(b"k" * 32)).windows[0]
    assert exact.cells[0].load_time_p50_ms == 32.5  # without noise they are published


def test_replicas_sharing_the_key_publish_the_same_noise_and_another_key_does_not() -> None:
    """Two API processes (or one, restarted) with the configured key answer alike, so
    asking each of them gives no fresh sample to average the noise away."""
    window = _window({"page": [(400, 300), (200, 120)]})
    replicas = [release([window], 11, 1.0, keyed_noise(b"shared key")) for _ in range(2)]
    other = release([window], 11, 1.0, keyed_noise(b"another key"))
    assert replicas[0].windows == replicas[1].windows
    assert other.windows != replicas[0].windows


def test_another_epsilon_draws_new_noise_so_two_scales_cannot_cancel_it() -> None:
    """With one draw L at two scales, c + 2L and c + L would give c = 2(c + L) - (c + 2L)
    (to within rounding) for every cell. Independent draws leave most cells unsolved."""
    pages = [(1000 + i, 1000 + i) for i in range(200)]
    window = _window({"page": pages})
    noise = keyed_noise(b"shared key")
    wide, narrow = (release([window], 11, eps, noise).windows[0] for eps in (0.5, 1.0))
    exact = {c.value: c.unique_visitors for c in window.cells}
    solved = sum(
        abs(2 * n.unique_visitors - w.unique_visitors - exact[n.value]) <= 1
        for n, w in zip(narrow.cells, wide.cells, strict=True)
    )
    assert solved < len(pages) // 2


def test_laplace_is_symmetric() -> None:
    assert laplace(0.5, 1.0) == 0.0
    assert laplace(0.25, 2.0) == -laplace(0.75, 2.0)


def _hour(label: str, pages: dict[str, tuple[int, int]], day: str = "d1") -> Window:
    cells = [Cell("page", page, visits, uniques) for page, (visits, uniques) in pages.items()]
    total = Cell("total", "", sum(v for v, _ in pages.values()), sum(u for _, u in pages.values()))
    return Window(label, total, cells, parent=day)


def _shown(released: ReleasedWindow) -> set[str]:
    return {c.value for c in released.cells}


@pytest.mark.promise("P-20")
def test_a_cell_hidden_in_one_hour_is_hidden_in_another_of_its_day() -> None:
    # /blog: 6 visitors at 10:00 (under k), 20 at 11:00, 29 at noon. Published at 11:00
    # and noon, the day's count of /blog minus theirs would be 10:00's: so the smaller
    # published one goes too. (Each hour has two small pages of its own, so hiding one
    # more needs no complement inside the hour, which would cascade; together they hold
    # k visits, or their sum, the total minus the published pages, would be a count
    # under k.)
    small = {"/x": (6, 6), "/y": (5, 5)}
    ten = _hour("10", {"/home": (40, 30), "/pricing": (30, 25), "/blog": (6, 6), **small})
    eleven = _hour("11", {"/home": (50, 35), "/pricing": (30, 24), "/blog": (20, 20), **small})
    noon = _hour("12", {"/home": (45, 33), "/pricing": (26, 20), "/blog": (30, 29), **small})
    released = suppress([ten, eleven, noon], 11)
    assert _shown(released[0]) == {"/home", "/pricing"}
    assert _shown(released[1]) == {"/home", "/pricing"}  # /blog: the smaller of the two
    assert _shown(released[2]) == {"/home", "/pricing", "/blog"}
    # Another day's hours are another family: nothing to balance there.
    alone = suppress([_hour("13", {"/home": (40, 30), "/blog": (25, 20)}, day="d2"), ten], 11)
    assert _shown(alone[0]) == {"/home", "/blog"}


@pytest.mark.promise("P-20")
def test_hidden_cells_whose_sum_is_under_k_take_a_published_one_with_them() -> None:
    # Device classes: desktop 30, mobile 1, app 1. Publishing desktop beside the total
    # (32) would give the hidden two away: 2 visits, and every cell holds at least one,
    # so each is exactly 1. Their sum must not be a count under k either.
    cells = [
        Cell("page", "/", 32, 32),
        Cell("device_class", "desktop", 30, 30),
        Cell("device_class", "mobile", 1, 1),
        Cell("device_class", "app", 1, 1),
    ]
    [released] = suppress([Window("w", Cell("total", "", 32, 32), cells)], 11)
    assert released.total is not None
    assert {(c.dimension, c.value) for c in released.cells} == {("page", "/")}
    # Hidden cells holding k visits together leave their neighbours published.
    cells[2:] = [Cell("device_class", "mobile", 6, 6), Cell("device_class", "app", 5, 5)]
    many = Window("w", Cell("total", "", 41, 41), [Cell("page", "/", 41, 41), *cells[1:]])
    [released] = suppress([many], 11)
    assert ("device_class", "desktop") in {(c.dimension, c.value) for c in released.cells}


def test_a_window_hidden_whole_hides_a_sibling_whole() -> None:
    quiet = _hour("03", {"/home": (4, 3)})
    busy = [_hour(h, {"/home": (40 + i, 30 + i)}) for i, h in enumerate(("04", "05"))]
    released = suppress([quiet, *busy], 11)
    assert [r.total is None for r in released] == [True, True, False]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["/a", "/b", "/c", "/d"]),
            st.integers(1, 25),
            min_size=1,
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(2, 15),
)
def test_nothing_hidden_can_be_recovered_within_a_window_or_across_its_day(
    hours: list[dict[str, int]], k: int
) -> None:
    windows = [
        _hour(str(i), {page: (uniques + 2, uniques) for page, uniques in pages.items()})
        for i, pages in enumerate(hours)
    ]
    released = suppress(windows, k)
    for window, out in zip(windows, released, strict=True):
        if out.total is None:
            continue
        assert out.total.unique_visitors >= k
        assert all(c.unique_visitors >= k for c in out.cells)
        assert len(window.cells) - len(out.cells) != 1  # total minus the shown ones
    for key in {c.value for w in windows for c in w.cells} | {"total"}:
        holding = [
            (w, r)
            for w, r in zip(windows, released, strict=True)
            if key == "total" or key in {c.value for c in w.cells}
        ]
        hidden = [
            r for _, r in holding if r.total is None or (key != "total" and key not in _shown(r))
        ]
        if len(hidden) == 1:  # the day's count minus the shown hours would give it away
            assert len(holding) == 1, (key, hours)


# -- one family: a day and its hours ---------------------------------------------------


def _family(hours: list[list[Visit]], day: str = "d") -> list[Window]:
    """A day and its hours, as the trends handler loads them for either grain."""
    windows = [counted(f"{day}{h}", visits, day) for h, visits in enumerate(hours)]
    return [counted(day, [v for visits in hours for v in visits], None), *windows]


_visits = st.lists(
    st.tuples(st.sampled_from(["/a", "/b", "/c", "/d"]), st.sampled_from(["phone", "desktop"])),
    min_size=1,
    max_size=25,
)


@pytest.mark.promise("P-20")
@settings(max_examples=500, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=6), st.integers(2, 12))
def test_no_hidden_count_follows_from_a_day_and_its_hours_released_together(
    hours: list[list[Visit]], k: int
) -> None:
    family = _family(hours)
    released = suppress(family, k)
    for out in released:
        if out.total is not None:
            assert out.total.unique_visitors >= k
            assert all(c.unique_visitors >= k for c in out.cells)
    # Someone holding the day's and the hours' releases at once learns no count under
    # k (a hidden count of k or more may follow: it could have been shown).
    assert small(family, recoverable(family, released), k) == set()


@settings(max_examples=200, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=4), st.integers(2, 8), st.integers(1, 6))
def test_a_larger_k_hides_all_a_smaller_one_does(
    hours: list[list[Visit]], small_k: int, more: int
) -> None:
    # Public (larger k) and partner releases of the same windows: holding both says
    # no more than the partner's alone.
    family = _family(hours)
    partner = suppress(family, small_k)
    public = suppress(family, small_k + more, hidden_keys(family, small_k))
    for p, q in zip(partner, public, strict=True):  # what the public sees, partners do
        assert q.total is None or {_key(c) for c in q.cells} <= {_key(c) for c in p.cells}
    assert small(family, recoverable(family, public), small_k + more) == set()


def _key(cell: Cell) -> tuple[str, str]:
    return (cell.dimension, cell.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=4), st.lists(_visits, min_size=1, max_size=4))
def test_each_day_is_released_the_same_whatever_else_is_asked(
    first: list[list[Visit]], second: list[list[Visit]]
) -> None:
    one, two = _family(first, day="d1"), _family(second, day="d2")
    together = suppress([*one, *two], 11)
    assert together == [*suppress(one, 11), *suppress(two, 11)]


def test_hours_that_do_not_add_up_to_their_day_are_not_released_with_it() -> None:
    # Hours gone (or a page counted in an hour after the day was read): no sums hold,
    # so the day is released alone, its hours not at all, and other days as ever.
    day = counted("d", [("/a", "phone")] * 30, None)
    hours = [counted("d0", [("/a", "phone")] * 12, "d"),
             counted("d1", [("/b", "phone")] * 12, "d")]  # fmt: skip
    other = _family([[("/a", "phone")] * 20, [("/a", "phone")] * 15], day="e")
    released = suppress([day, *hours, *other], 11)
    assert released[0] == suppress([day], 11)[0]
    assert [r.total for r in released[1:3]] == [None, None]
    assert released[3:] == suppress(other, 11)


def test_the_audit_finds_a_count_the_sums_give_away() -> None:
    # The check above can fail: a day showing what one hour hides gives that hour away.
    day = counted("day", [("/a", "phone")] * 30, None)
    hours = [counted("h0", [("/a", "phone")] * 12, "day"),
             counted("h1", [("/a", "phone")] * 18, "day")]  # fmt: skip
    shown = suppress([day, *hours], 11)
    leaky = [shown[0], shown[1], ReleasedWindow("h1", None, [], 3)]
    assert recoverable([day, *hours], leaky) == {
        ("h1", ("total", "")),
        ("h1", ("page", "/a")),
        ("h1", ("device_class", "phone")),
    }
    assert recoverable([day, *hours], shown) == set()


# -- reloads: visits are not visitors ----------------------------------------------------


@pytest.mark.promise("P-20")
def test_reloads_cannot_fill_the_hidden_cells_of_a_window_up_to_k() -> None:
    # An attacker loads /decoy 11 times from one network; the victim loads /secret once.
    # Published, the total (52) and /home (40) leave 12 hidden visits, 11 of them the
    # attacker's: /secret had 1. Only 2 visitors are sure to be hidden: /home goes too.
    cells = [Cell("page", "/home", 40, 30), Cell("page", "/decoy", 11, 1),
             Cell("page", "/secret", 1, 1)]  # fmt: skip
    [released] = suppress([Window("w", Cell("total", "", 52, 32), cells)], 11)
    assert released.total is not None
    assert released.cells == []


@pytest.mark.promise("P-20")
def test_reloads_cannot_fill_the_hidden_hours_of_a_day_up_to_k() -> None:
    # The attacker reloads /home 11 times at 03:00, alone; the victim comes once at 04:00;
    # 30 visitors come at 10:00. Both early hours are hidden whole, but the day (52) minus
    # 10:00 (40) would be 12 visits, 11 of them the attacker's: the victim came at 04:00.
    day = Window("d", Cell("total", "", 52, 32), [Cell("page", "/home", 52, 32)])
    hours = [
        _hour("03", {"/home": (11, 1)}, day="d"),
        _hour("04", {"/home": (1, 1)}, day="d"),
        _hour("10", {"/home": (40, 30)}, day="d"),
    ]
    released = suppress([day, *hours], 11)
    assert released[0].total is not None
    assert [r.total for r in released[1:]] == [None, None, None]


def _visited(hours: list[list[tuple[str, int]]], day: str = "d") -> list[Window]:
    """A day and its hours from (page, visitor) visits: a visitor may come back."""

    def window(label: str, visits: list[tuple[str, int]], parent: str | None) -> Window:
        pages = sorted({page for page, _ in visits})
        cells = [
            Cell("page", page, sum(p == page for p, _ in visits),
                 len({v for p, v in visits if p == page}))
            for page in pages
        ]  # fmt: skip
        return Window(label, Cell("total", "", len(visits), len({v for _, v in visits})), cells,
                      parent)  # fmt: skip

    every = [visit for visits in hours for visit in visits]
    return [window(day, every, None),
            *(window(f"{day}{h}", visits, day) for h, visits in enumerate(hours))]  # fmt: skip


def _sure_to_be_hidden(whole: Cell, shown: list[Cell], hidden: list[Cell]) -> int:
    """The fewest visitors the hidden parts of ``whole`` can hold: those of the whole
    not in a shown part, and at least the largest hidden part's."""
    beyond_shown = whole.unique_visitors - sum(c.unique_visitors for c in shown)
    return max(beyond_shown, max((c.unique_visitors for c in hidden), default=0))


@pytest.mark.promise("P-20")
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["/a", "/b", "/c"]), st.integers(0, 12)),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(2, 12),
)
def test_whatever_is_hidden_beside_a_published_count_holds_k_visitors(
    hours: list[list[tuple[str, int]]], k: int
) -> None:
    family = _visited(hours)
    released = suppress(family, k)
    for window, out in zip(family, released, strict=True):
        if out.total is not None and len(out.cells) < len(window.cells):
            shown_keys = {_key(c) for c in out.cells}
            gone = [c for c in window.cells if _key(c) not in shown_keys]
            assert _sure_to_be_hidden(window.total, out.cells, gone) >= k
    day_out = released[0]
    if day_out.total is None:
        return
    shown_day = {_key(c): c for c in (day_out.total, *day_out.cells)}
    for key, whole in shown_day.items():
        parts = [(w, r) for w, r in zip(family[1:], released[1:], strict=True)
                 if key == ("total", "") or key in {_key(c) for c in w.cells}]  # fmt: skip
        shown = [c for _, r in parts if r.total is not None
                 for c in (r.total, *r.cells) if _key(c) == key]  # fmt: skip
        gone = [c for w, r in parts if r.total is None or key not in
                {_key(x) for x in (r.total, *r.cells)}
                for c in (w.total, *w.cells) if _key(c) == key]  # fmt: skip
        if len(shown) < len(parts):
            assert _sure_to_be_hidden(whole, shown, gone) >= k, key


def test_readers_of_many_pages_do_not_make_every_page_hidden() -> None:
    """100 visitors each reading 5 of 10 pages (50 visitors a page) and 2 on a rare
    page: the rare one and one neighbour go, not the release. Bounding what is hidden
    by the total's visitors minus the shown cells' alone goes below zero here."""
    visits = [(f"/p{(v + j) % 10}", v) for v in range(100) for j in range(5)]
    visits += [("/rare", 1), ("/rare", 2)]
    [released] = suppress([_visited([visits])[0]], 10)
    shown = {c.value for c in released.cells}
    assert "/rare" not in shown
    assert len(shown) == 9, shown
