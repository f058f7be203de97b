from tests.support.infra import scratch_dsn, scratch_topic, settings, stack

__all__ = ["scratch_dsn", "scratch_topic", "settings", "stack"]
