"""Settings of the analytics service (the shared ones come from PlatformSettings)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.config import (
    DEV_SECRET,
    PlatformSettings,
    UnsafeConfiguration,
    is_development_secret,
)
from shared.events.topics import DELETION_COMMANDS
from shared.pii import DEFAULT_ALLOWED_QUERY_KEYS

ERASER_GROUP = "analytics-eraser"

# The sites counted when IMT_ANALYTICS_SITES is unset. Development and test also take
# every host under .example (a name reserved for examples, RFC 2606: no one's site),
# which the tests and benchmarks make one of per run, and localhost (the local stack's
# pages send location.hostname).
PRODUCTION_SITES: tuple[str, ...] = ("imt.example", "*.imt.example")
DEVELOPMENT_SITES: tuple[str, ...] = ("localhost", "imt.example", "*.example")
_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class SiteList:
    """Host names, exact (``imt.example``) or every host under one (``*.imt.example``:
    ``app.imt.example``, not ``imt.example`` itself)."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]  # ".imt.example"

    @classmethod
    def of(cls, entries: tuple[str, ...]) -> SiteList:
        return cls(
            frozenset(e for e in entries if not e.startswith("*.")),
            tuple(sorted(e[1:] for e in entries if e.startswith("*."))),
        )

    def __contains__(self, site: object) -> bool:
        return isinstance(site, str) and (site in self.exact or site.endswith(self.suffixes))


class AnalyticsSettings(PlatformSettings):
    service_name: str = "analytics"
    analytics_http_port: int = Field(8104, description="Port of the analytics API (loopback).")
    analytics_max_beacon_bytes: int = Field(
        4096, description="Largest beacon body accepted; bigger ones get 413."
    )
    analytics_max_batch_beacons: int = Field(
        25, ge=1, description="Most beacons in one batch (POST /beacons); more get 400."
    )
    analytics_max_batch_bytes: int = Field(
        60_000,
        description="Largest batch body accepted; bigger ones get 413 (the gateway takes "
        "64 KiB at most).",
    )
    analytics_allowed_query_keys: tuple[str, ...] = Field(
        tuple(sorted(DEFAULT_ALLOWED_QUERY_KEYS)),
        description="Query keys a page URL keeps; every other key is dropped at the edge.",
    )
    analytics_sites: tuple[str, ...] | None = Field(
        None,
        description="Sites (host names, as beacons send them) whose visits are counted; "
        "a beacon of another site gets 422. '*.name' takes every host under name. Unset: "
        "in production imt.example and *.imt.example; in development and test also "
        "localhost and *.example (the tests' and benchmarks' sites).",
    )
    analytics_max_labels_per_window: int = Field(
        200,
        ge=1,
        description="Most labels (pages, referrer hosts, device classes) a UTC day keeps "
        "per dimension, its hours and minutes with it; later ones are counted in one "
        "'(other)' cell. Bounds the cost of suppressing a release, which anyone may ask for.",
    )
    analytics_visits_topic: str = Field(
        "analytics.visits",
        description="Topic the collector writes and the aggregator reads (tests and "
        "benchmarks point them at a scratch copy named analytics.visits.<suffix>).",
    )
    analytics_worker_group: str = Field(
        "analytics-aggregator", description="Consumer group (Faust app id) of the aggregator."
    )
    analytics_window_grace_seconds: float = Field(
        10.0, description="A window is published this long after its end (late visits)."
    )
    analytics_close_interval_seconds: float = Field(
        2.0, description="How often the aggregator publishes closed (or revised) windows."
    )
    analytics_visitor_set_hours: int = Field(
        48,
        ge=2,  # the worker stops counting a day 70 minutes before it is final (handlers)
        description="Hours the per-window sets of visitor hashes are kept (then unique "
        "counts are final and visits older than this are ignored as too late). At least 2: "
        "the worker stops counting a day's visits an hour before it is final.",
    )
    analytics_minute_retention_days: int = Field(
        7, description="Days minute windows are kept after their UTC day ends."
    )
    analytics_day_retention_days: int = Field(
        730,
        description="Days day windows, and their hour windows with them, are kept after "
        "the day ends (a day's release is checked against its hours).",
    )
    analytics_release_retention_days: int = Field(
        730,
        ge=1,
        description="Days a release's receipt (trend_releases) is kept; anyone may ask for "
        "public trends, so each answer's receipt cannot be kept for ever.",
    )
    analytics_public_k: int = Field(
        11, ge=2, description="Public trends: cells with fewer distinct visitors are suppressed."
    )
    analytics_partner_k: int = Field(
        5, ge=2, description="Partner trends: cells with fewer distinct visitors are suppressed."
    )
    analytics_public_epsilon: float | None = Field(
        None, gt=0, description="Laplace noise epsilon of public releases (unset: no noise)."
    )
    analytics_partner_epsilon: float | None = Field(
        None, gt=0, description="Laplace noise epsilon of partner releases (unset: no noise)."
    )
    analytics_noise_key: SecretStr = Field(
        SecretStr(DEV_SECRET),
        description="HMAC key the noise of every release is derived from: the same on "
        "every replica and across restarts, or asking several of them (or one, again after "
        "a restart) would give fresh samples to average the noise away. Production refuses "
        "the development default once an epsilon is set (without one, there is no noise).",
    )
    analytics_max_release_windows: int = Field(
        1500,
        ge=25,
        description="Most windows one trends request may consider: a public or partner "
        "release of hours or days takes each day with its 24 hours, so covers this // 25 days.",
    )

    @field_validator("analytics_sites")
    @classmethod
    def _host_names(cls, sites: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if sites is None:
            return None
        entries = tuple(site.strip().lower().rstrip(".") for site in sites)
        for entry in entries:
            if not _HOST.fullmatch(entry.removeprefix("*.")):
                raise ValueError(f"IMT_ANALYTICS_SITES: {entry!r} is not a host name or *.name")
        return entries

    @cached_property
    def collected_sites(self) -> SiteList:
        """The sites the collector counts visits of (see ``analytics_sites``)."""
        if self.analytics_sites is not None:
            return SiteList.of(self.analytics_sites)
        if self.environment == "production":
            return SiteList.of(PRODUCTION_SITES)
        return SiteList.of(PRODUCTION_SITES + DEVELOPMENT_SITES)

    @model_validator(mode="after")
    def _public_within_partner(self) -> AnalyticsSettings:
        # The public release hides all the partners' hides: it must be the stricter one.
        if self.analytics_public_k < self.analytics_partner_k:
            raise ValueError("IMT_ANALYTICS_PUBLIC_K must be at least IMT_ANALYTICS_PARTNER_K")
        return self

    @model_validator(mode="after")
    def _refuse_dev_noise_key(self) -> AnalyticsSettings:
        noisy = (self.analytics_public_epsilon, self.analytics_partner_epsilon) != (None, None)
        key = self.analytics_noise_key.get_secret_value()
        if self.environment == "production" and noisy and is_development_secret(key, DEV_SECRET):
            raise UnsafeConfiguration("IMT_ANALYTICS_NOISE_KEY holds the development default")
        return self

    def consumer_groups(self) -> dict[str, tuple[str, ...]]:
        return {
            self.analytics_worker_group: (self.analytics_visits_topic,),
            ERASER_GROUP: (DELETION_COMMANDS.name,),
        }
