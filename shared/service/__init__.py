"""What every service process shares: its runtime (database, vault, Kafka producer),
its HTTP app conventions, and the outbox relay process."""

from shared.service.api import StartUp, create_api, serve, service_app
from shared.service.runtime import Runtime, open_runtime

__all__ = ["Runtime", "StartUp", "create_api", "open_runtime", "serve", "service_app"]
