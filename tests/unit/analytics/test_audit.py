"""The release audit finds what an attacker's exact elimination finds."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.domain import audit
from services.analytics.domain.release import ReleasedWindow, Window
from tests.support.disclosure import (
    Members,
    Visit,
    derivable_sums,
    members,
    recoverable,
    sum_given_away,
)
from tests.unit.analytics.test_release import _family, _visits

Name = tuple[str, tuple[str, str]]


def _system(
    windows: list[Window], released: list[ReleasedWindow]
) -> tuple[audit.Sums, set[audit.Slot]]:
    index = {w.label: i for i, w in enumerate(windows)}
    holds = [[(c.dimension, c.value) for c in (w.total, *w.cells)] for w in windows]
    parents = [None if w.parent is None else index.get(w.parent) for w in windows]
    shown = [
        set() if r.total is None else {("total", "")} | {(c.dimension, c.value) for c in r.cells}
        for r in released
    ]
    hidden = {(i, key) for i, keys in enumerate(holds) for key in keys if key not in shown[i]}
    return audit.sums(holds, parents), hidden


def _service_audit(windows: list[Window], released: list[ReleasedWindow]) -> set[Name]:
    """The hidden counts the service's elimination pins one by one: its rows holding
    nothing but their pivot."""
    system, hidden = _system(windows, released)
    reduced = audit.reduce(system, hidden.__contains__, lambda slots: 0)
    return {
        (windows[reduced.slots[c][0]].label, reduced.slots[c][1])
        for c, row in reduced.rows.items()
        if len(row) == 1
    }


def _given_away(
    windows: list[Window], released: list[ReleasedWindow], who: Members, k: int
) -> list[frozenset[Name]]:
    """What the service's audit finds, each of its counts' visitors known exactly."""
    system, hidden = _system(windows, released)

    def visitors(slots: frozenset[audit.Slot]) -> int:
        return len(frozenset().union(*(who[(windows[i].label, key)] for i, key in slots)))

    reduced = audit.reduce(system, hidden.__contains__, visitors)
    return [
        frozenset((windows[i].label, key) for i, key in found)
        for found in audit.given_away(reduced, visitors, k)
    ]


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


@pytest.mark.promise("P-20")
@settings(max_examples=300, deadline=None)
@given(st.lists(_visits, min_size=1, max_size=4), st.integers(2, 12), st.data())
def test_the_audit_finds_a_sum_under_k_whenever_an_attacker_does(
    hours: list[list[Visit]], k: int, data: st.DataObject
) -> None:
    # Any hidden pattern, not only the release's: every set the audit reports has a sum
    # the published counts give away and fewer than k visitors, and when the attacker
    # finds such a set (up to four counts), the audit reports one.
    family = _family(hours)
    released = []
    for window in family:
        keys = [("total", "")] + [(c.dimension, c.value) for c in window.cells]
        released.append(_hide(window, data.draw(st.sets(st.sampled_from(keys)))))
    who = members(family, hours)
    found = _given_away(family, released, who, k)
    for names in found:
        assert sum_given_away(family, released, names)
        assert len(frozenset().union(*(who[name] for name in names))) < k
    if derivable_sums(family, released, who, k):
        assert found


def test_a_sum_of_two_quiet_pages_is_found_where_neither_count_is() -> None:
    # 01:00 shows its total (5) and hides /a (2) and /b (3): neither follows, their sum
    # (5, of 5 visitors) does. At k = 6 that gives 5 visitors away; at k = 5 it does not.
    family = _family([[("/c", "phone")] * 9, [("/a", "phone")] * 2 + [("/b", "phone")] * 3])
    day, h0, h1 = family
    hidden = {("page", "/a"), ("page", "/b")}
    released = [_hide(day, hidden), _hide(h0, set()), _hide(h1, hidden)]
    who = members(family, [[("/c", "phone")] * 9, [("/a", "phone")] * 2 + [("/b", "phone")] * 3])
    assert _service_audit(family, released) == set()
    assert _given_away(family, released, who, 6) != []
    assert all(len(names) > 1 for names in _given_away(family, released, who, 6))
    assert _given_away(family, released, who, 5) == []
