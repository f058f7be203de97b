"""Releases: no cell under k, none recoverable by subtraction, noise repeatable."""

from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.domain.release import (
    Cell,
    Window,
    keyed_noise,
    laplace,
    release,
    suppress_window,
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
    released = suppress_window(_window({"page": [(40, 30), (20, 12), (15, 11), (3, 2)]}), 11)
    assert [c.value for c in released.cells] == ["page-0", "page-1"]
    assert released.suppressed == 2


def test_two_small_cells_need_no_complement() -> None:
    released = suppress_window(_window({"page": [(40, 30), (3, 2), (4, 3)]}), 5)
    assert [c.value for c in released.cells] == ["page-0"]


def test_a_window_under_k_is_suppressed_whole() -> None:
    released = suppress_window(_window({"page": [(5, 4), (3, 3)]}), 11)
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
    released = suppress_window(_window({"page": cells}), k)
    assert all(c.unique_visitors >= k for c in released.cells)
    if released.total is not None:
        assert released.total.unique_visitors >= k
        # Exactly one hidden cell would be total minus the published ones.
        hidden = len(cells) - len(released.cells)
        assert hidden != 1


def test_noise_is_repeatable_and_keeps_counts_at_least_k() -> None:
    window = _window({"page": [(400, 300), (200, 120)]})
    noise = keyed_noise(b"k" * 32)
    first = release([window], 11, 1.0, noise)
    again = release([window], 11, 1.0, noise)
    assert first.windows == again.windows
    assert all(c.unique_visitors >= 11 for c in first.windows[0].cells)
    assert first.cells_published == 3
    assert first.cells_suppressed == 0


def test_laplace_is_symmetric() -> None:
    assert laplace(0.5, 1.0) == 0.0
    assert laplace(0.25, 2.0) == -laplace(0.75, 2.0)
