"""The release audit solves exactly what an attacker's exact elimination solves."""

from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.domain import audit
from services.analytics.domain.release import ReleasedWindow, Window
from tests.support.disclosure import Visit, recoverable
from tests.unit.analytics.test_release import _family, _visits


def _service_audit(windows: list[Window], released: list[ReleasedWindow]) -> set[object]:
    index = {w.label: i for i, w in enumerate(windows)}
    holds = [[(c.dimension, c.value) for c in (w.total, *w.cells)] for w in windows]
    parents = [None if w.parent is None else index.get(w.parent) for w in windows]
    shown = [
        set() if r.total is None else {("total", "")} | {(c.dimension, c.value) for c in r.cells}
        for r in released
    ]
    found = audit.solvable(audit.sums(holds, parents), lambda slot: slot[1] not in shown[slot[0]])
    return {(windows[i].label, key) for i, key in found}


def _hide(window: Window, keys: set[tuple[str, str]]) -> ReleasedWindow:
    if ("total", "") in keys:
        return ReleasedWindow(window.label, None, [], 1 + len(window.cells))
    cells = [c for c in window.cells if (c.dimension, c.value) not in keys]
    return ReleasedWindow(window.label, window.total, cells, len(window.cells) - len(cells))


@settings(max_examples=300, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=5), st.data())
def test_the_audit_agrees_with_exact_elimination_on_any_hidden_pattern(
    hours: list[list[Visit]], data: st.DataObject
) -> None:
    family = _family(hours)
    released = []
    for window in family:
        keys = [("total", "")] + [(c.dimension, c.value) for c in window.cells]
        hidden = data.draw(st.sets(st.sampled_from(keys)))
        released.append(_hide(window, hidden))
    assert _service_audit(family, released) == recoverable(family, released)


def test_a_chain_through_two_quiet_hours_is_found() -> None:
    # The day shows /repair (11) and its total (13); 11:00 shows its total (11). The
    # two other hours hold one /repair visit each: /repair at 11:00 is 11 - 2 = 9.
    one = [("/repair", "phone")]
    family = _family([one, one, one * 9 + [("/blog", "phone"), ("/pricing", "phone")]])
    day, h0, h1, h2 = family
    released = [
        _hide(day, {("page", "/blog"), ("page", "/pricing")}),
        _hide(h0, {("total", "")}),
        _hide(h1, {("total", "")}),
        _hide(h2, {("page", "/repair"), ("page", "/blog"), ("page", "/pricing")}),
    ]
    assert ("d2", ("page", "/repair")) in _service_audit(family, released)
