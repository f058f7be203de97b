from datetime import UTC, datetime, timedelta

from tests.support.clock import seconds_to_clear_midnight

FOUR_MINUTES = timedelta(minutes=4)


def test_a_test_waits_only_when_it_could_cross_midnight() -> None:
    def wait(hour: int, minute: int, second: int = 0, micro: int = 0, day: int = 29) -> float:
        now = datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)
        return seconds_to_clear_midnight(now, FOUR_MINUTES)

    assert wait(12, 0) == 0.0
    assert wait(23, 55) == 0.0
    assert wait(23, 58) == 121.0
    assert wait(23, 59, 59, 500_000) == 1.5
    assert wait(0, 0, 1, day=30) == 0.0
