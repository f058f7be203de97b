"""Version 7 UUIDs (shared.ids): the layout RFC 9562 gives them, ordered by time."""

import time
import uuid

from shared.ids import uuid7


def test_version_variant_and_the_time_they_carry() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after_and_none_repeat() -> None:
    first = [uuid7() for _ in range(50_000)]
    time.sleep(0.002)
    later = uuid7()
    assert len(set(first)) == len(first)
    assert all(later > earlier for earlier in first)
    # The random bits really vary: within one millisecond, ids are not a counter.
    assert len({u.int & ((1 << 62) - 1) for u in first}) == len(first)
