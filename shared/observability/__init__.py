"""Logs, metrics, health endpoints and error bodies: the same conventions in every service.

Personal data never leaves through them: log records are redacted before formatting,
metrics are labelled by route template, and error bodies never echo input or exceptions.
"""

from shared.observability.health import (
    DEFAULT_CHECK_TIMEOUT,
    ReadinessCheck,
    health_router,
    kafka_check,
    postgres_check,
    run_checks,
)
from shared.observability.logs import (
    DENIED_FIELD_NAMES,
    JsonFormatter,
    PersonalDataFilter,
    configure_logging,
)
from shared.observability.metrics import Metrics, MetricsMiddleware, route_template
from shared.observability.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    install_problem_handlers,
    problem_type,
)
from shared.tracing import trace_id_var

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "DENIED_FIELD_NAMES",
    "PROBLEM_CONTENT_TYPE",
    "JsonFormatter",
    "Metrics",
    "MetricsMiddleware",
    "PersonalDataFilter",
    "Problem",
    "ReadinessCheck",
    "configure_logging",
    "health_router",
    "install_problem_handlers",
    "kafka_check",
    "postgres_check",
    "problem_type",
    "route_template",
    "run_checks",
    "trace_id_var",
]
