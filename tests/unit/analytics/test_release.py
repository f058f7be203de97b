"""Releases: no cell under k, none recoverable by subtraction, noise repeatable."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.analytics.domain.release import (
    Cell,
    ReleasedWindow,
    Window,
    add_noise,
    hidden_keys,
    keyed_noise,
    laplace,
    noise_labels,
    release,
    suppress,
)
from tests.support.disclosure import (
    SMALL_SUM_BESIDE_A_SOLVED_ONE,
    Visit,
    counted,
    derivable_sums,
    members,
    recoverable,
    small,
)


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


@pytest.mark.promise("P-20")
@settings(max_examples=300, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=5), st.integers(2, 12))
@example(SMALL_SUM_BESIDE_A_SOLVED_ONE, 11)  # a review's case
def test_no_sum_of_hidden_counts_under_k_visitors_follows_from_a_release(
    hours: list[list[Visit]], k: int
) -> None:
    # Not one hidden count only: no set of them (up to four, the attacker's reach here)
    # whose visitors together are fewer than k has a sum the published counts give away.
    family = _family(hours)
    released = suppress(family, k)
    assert derivable_sums(family, released, members(family, hours), k) == set()


def test_hidden_counts_making_up_a_shown_count_are_not_taken_for_a_few_visitors() -> None:
    # 09:00 and 10:00 (one visit each), /repair at 11:00 (9) and the day's /blog and
    # /pricing (1 each, one hour each) are all hidden and add up to the day's total (13
    # visitors): their sum is no secret, and no count under k, so the day stays shown.
    quiet = [[("/repair", "phone")], [("/repair", "phone")],
             [("/repair", "phone")] * 9 + [("/blog", "phone"), ("/pricing", "phone")]]  # fmt: skip
    day, *_ = suppress(_family(quiet), 11)
    assert day.total is not None
    assert [(c.value, c.visits) for c in day.cells] == [("phone", 13)]


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


# -- releases under several k: each k's hides all a smaller k's does -------------------


def _pages(pages: dict[str, tuple[int, int]]) -> Window:
    cells = [Cell("page", page, visits, uniques) for page, (visits, uniques) in pages.items()]
    return Window("day", Cell("total", "", 268, 80), cells)


@pytest.mark.promise("P-20")
def test_a_day_released_under_a_larger_k_later_gives_nothing_away_with_the_first() -> None:
    # The day: 268 visits, 80 visitors. Settled at 11 from scratch, /b (3) goes with
    # /c, its smallest neighbour; settled at 15 from scratch, /a (12) and /b go and /c
    # shows: holding both releases, /b = 268 - 200 - 40 - 25 = 3. (Raising k to tighten
    # privacy, or lowering it, or any two audiences' k would do it.)
    day = _pages({"/a": (40, 12), "/b": (3, 3), "/c": (25, 20), "/d": (200, 40)})
    [at_11] = suppress([day], 11)
    [at_15] = suppress([day], 15)
    assert _shown(at_11) == {"/d", "/a"}
    assert _shown(at_15) <= _shown(at_11)  # what k = 15 shows, k = 11 did already
    both = ReleasedWindow("day", day.total, [*at_11.cells, *at_15.cells])
    assert len(day.cells) - len(_shown(both)) != 1  # no single page left to subtract
    assert small([day], recoverable([day], [both]), 11) == set()


_busier = st.lists(
    st.tuples(st.sampled_from(["/a", "/b", "/c", "/d", "/e"]),
              st.sampled_from(["phone", "desktop", "app"])),
    min_size=1,
    max_size=40,
)  # fmt: skip


@pytest.mark.promise("P-20")
@settings(max_examples=150, deadline=None)
@given(st.lists(_busier, min_size=1, max_size=3), st.integers(2, 9), st.integers(1, 6))
@example(  # settled from scratch, k = 3 showed a count k = 2 hid (found by this test)
    hours=[[("/a", "phone")] * 2 + [("/b", "phone")] * 2 + [("/c", "phone")] * 3,
           [("/b", "phone")] * 3 + [("/c", "phone")]],
    small_k=2,
    more=1,
)  # fmt: skip
def test_any_two_ks_nest_whichever_is_released_first(
    hours: list[list[Visit]], small_k: int, more: int
) -> None:
    # No release knows of the other (no 'already'): each k settles from scratch, and
    # still the larger k shows nothing the smaller one hides.
    family = _family(hours)
    lower, higher = suppress(family, small_k), suppress(family, small_k + more)
    for p, q in zip(lower, higher, strict=True):
        if q.total is not None:
            assert p.total is not None
            assert {_key(c) for c in q.cells} <= {_key(c) for c in p.cells}
    assert small(family, recoverable(family, lower), small_k) == set()


def test_a_partners_release_as_a_start_changes_nothing_at_the_public_k() -> None:
    # The ladder already holds every smaller k: starting from the partners' hidden
    # cells (as the public release does) gives the same release as starting from none.
    family = _family([[("/a", "phone")] * 12 + [("/b", "desktop")] * 6, [("/c", "phone")] * 9])
    assert suppress(family, 11, hidden_keys(family, 5)) == suppress(family, 11)


# -- noise: one draw per set of visits ---------------------------------------------------


def _quiet_day() -> list[Window]:
    """A day whose 60 visits all came in one hour, on one page, from one device class
    and one referrer: every count of the day and of the hour is the same 60 visits."""
    cells = [Cell("page", "/", 60, 60), Cell("device_class", "phone", 60, 60),
             Cell("referrer", "(none)", 60, 60)]  # fmt: skip
    total = Cell("total", "", 60, 60)
    return [Window("day", total, cells), Window("day|09", total, cells, parent="day")]


@pytest.mark.promise("P-20")
def test_counts_of_the_very_same_visits_show_one_noisy_count() -> None:
    # Drawn per label, the day, its hour, and their page, device class and referrer
    # would be eight independent draws around 60, to average back to 60.
    released = release(_quiet_day(), 11, 0.1, keyed_noise(b"k" * 32))
    shown = {(c.visits, c.unique_visitors) for w in released.windows
             for c in ([] if w.total is None else [w.total, *w.cells])}  # fmt: skip
    assert released.cells_published == 8
    assert len(shown) == 1, shown


def test_only_counts_provably_of_the_same_visits_share_a_draw() -> None:
    # /a and /b: 30 visits each, but other visits. The hour holds all its day's phone
    # visits (as many, and among them), not all its day's visits.
    def cells(*counts: tuple[str, str, int]) -> list[Cell]:
        return [Cell(dimension, value, n, n) for dimension, value, n in counts]

    day = Window("day", Cell("total", "", 80, 80), cells(
        ("page", "/a", 50), ("page", "/b", 30), ("device_class", "phone", 60),
        ("device_class", "app", 20)))  # fmt: skip
    hour = Window("day|09", Cell("total", "", 60, 60), cells(
        ("page", "/a", 30), ("page", "/b", 30), ("device_class", "phone", 60)), "day")  # fmt: skip
    other = Window("day|10", Cell("total", "", 20, 20), cells(
        ("page", "/a", 20), ("device_class", "app", 20)), "day")  # fmt: skip
    labels = noise_labels([day, hour, other])
    phone = ("device_class", "phone")
    assert labels[1][phone] == labels[1][("total", "")] == labels[0][phone] == ("day", phone)
    assert labels[1][("page", "/a")] != labels[1][("page", "/b")]
    assert labels[0][("total", "")] == ("day", ("total", ""))
    # An hour holding one page and one device class: three counts, one draw; the
    # day's /a holds other visits too.
    assert len({labels[2][key] for key in labels[2]}) == 1
    assert labels[2][("total", "")] == ("day", ("device_class", "app"))
    assert labels[0][("page", "/a")] == ("day", ("page", "/a"))


def test_a_count_of_visits_no_other_count_holds_keeps_its_own_draw() -> None:
    window = _window({"page": [(400, 300), (200, 120)]})
    noise = keyed_noise(b"k" * 32)
    [alone] = suppress([window], 11)
    assert release([window], 11, 1.0, noise).windows[0] == add_noise(alone, 1.0, noise, 11)


def test_a_family_is_settled_once_for_the_same_counts_and_again_once_they_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Public releases need no sign-in: a final day asked again is not settled again."""
    from services.analytics.domain import release as module

    climbs: list[int] = []
    climb = module._Ladder.climb

    def counted_climb(self: module._Ladder, k: int, start: list[set[module.Key]]) -> object:
        climbs.append(k)
        return climb(self, k, start)

    monkeypatch.setattr(module._Ladder, "climb", counted_climb)
    monkeypatch.setattr(module, "CLIMBS", module._Climbs(16))
    day = _window({"page": [(40, 30), (20, 12), (15, 11), (3, 2)]})
    first = hidden_keys([day], 11)
    again = hidden_keys([day], 11)
    assert again == first
    assert climbs == [11]
    again[0].add(("page", "page-0"))  # the caller's own copy: the cache is not changed
    assert hidden_keys([day], 11) == first
    hidden_keys([_window({"page": [(40, 30), (20, 12), (15, 11), (4, 3)]})], 11)
    hidden_keys([day], 5)
    assert climbs == [11, 11, 5]
