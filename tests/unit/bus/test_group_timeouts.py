"""A consumer group's member timeouts follow IMT_KAFKA_SESSION_TIMEOUT_SECONDS, in the
services' consumers and in the analytics aggregator (Faust) alike."""

from pathlib import Path

from services.analytics.config import AnalyticsSettings
from services.analytics.worker import build_app
from shared.bus.kafka_options import manual_commit_consumer
from shared.config import PlatformSettings


async def _timeouts_ms(settings: PlatformSettings) -> tuple[int, int]:
    consumer = manual_commit_consumer(settings, "t", group_id="g")  # never started
    try:
        return consumer._session_timeout_ms, consumer._heartbeat_interval_ms
    finally:
        await consumer.stop()


async def test_a_consumer_heartbeats_three_times_per_session_timeout() -> None:
    assert await _timeouts_ms(PlatformSettings(kafka_session_timeout_seconds=3)) == (3000, 1000)
    assert await _timeouts_ms(PlatformSettings()) == (10_000, 3333)


def test_the_aggregator_takes_the_same_session_timeout(tmp_path: Path) -> None:
    app = build_app(AnalyticsSettings(state_dir=str(tmp_path), kafka_session_timeout_seconds=3))
    assert (app.conf.broker_session_timeout, app.conf.broker_heartbeat_interval) == (3, 1)
    default = build_app(AnalyticsSettings(state_dir=str(tmp_path)))
    assert (default.conf.broker_session_timeout, default.conf.broker_heartbeat_interval) == (10, 1)
