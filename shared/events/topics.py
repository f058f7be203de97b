"""The one registry of Kafka topics and their settings.

Deploy scripts create topics from :data:`TOPICS`; ``make docs`` publishes them. Every
topic that a service consumes has a dead-letter twin ``<name>.dlq`` (see :func:`dlq_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    """A Kafka topic with the settings it is created with."""

    name: str
    description: str
    partitions: int = 6
    compacted: bool = False
    consumed: bool = True
    retention_ms: int = 14 * DAY_MS
    extra_config: dict[str, str] = field(default_factory=dict)
    #: Records without a value are read as tombstones here even though the topic is not
    #: compacted (the bus's own tests use them as records without an id).
    null_values: bool = False

    @property
    def takes_tombstones(self) -> bool:
        """Whether a record without a value is a tombstone here, not bad input."""
        return self.compacted or self.null_values

    def config(self, replication_factor: int = 1) -> dict[str, str]:
        """Broker-side topic configuration for ``replication_factor`` copies.

        acks=all waits for the in-sync replicas only: with three copies, two must hold a
        record before the relay deletes its outbox row, or a leader's lost disk loses it.
        """
        settings = {
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(max(1, replication_factor - 1)),
        }
        if not self.compacted and self.retention_ms > 0:
            # Retention deletes a whole segment once its newest record is that old, and
            # Kafka rolls one a week by default: a 14-day record could live 21 days.
            # Rolled daily, a record outlives its retention by a day at most.
            settings["segment.ms"] = str(min(DAY_MS, self.retention_ms))
        if self.compacted:
            # The active segment is never compacted: roll it often and bound the lag so a
            # tombstoned contact card really leaves the log within an hour.
            settings.update(
                {
                    "cleanup.policy": "compact",
                    "segment.ms": str(600_000),
                    "max.compaction.lag.ms": str(3_600_000),
                    "min.cleanable.dirty.ratio": "0.01",
                    "delete.retention.ms": str(DAY_MS),
                    "retention.ms": "-1",
                }
            )
        settings.update(self.extra_config)
        return settings


# Kafka's limit on a record batch (the broker's message.max.bytes, which no topic here
# raises): what any record read from a topic weighs, at most.
RECORD_MAX_BYTES = 1_048_588
# A dead letter is such a record with the dead-letter facts added (a reason of up to
# 2,000 bytes, its place, the consumer): its producer may send this much, and its DLQ
# takes a batch framing more. Else a record near the limit could never be dead-lettered.
LETTER_MAX_BYTES = RECORD_MAX_BYTES + 64 * 1024
DLQ_MAX_MESSAGE_BYTES = LETTER_MAX_BYTES + 64 * 1024


def dlq_of(name: str) -> str:
    """Name of the dead-letter topic of a consumed topic."""
    return f"{name}.dlq"


ACCOUNTS_LIFECYCLE = Topic(
    "accounts.lifecycle",
    "User lifecycle facts (ids and facts only, never personal data).",
)
ACCOUNTS_CONTACTS = Topic(
    "accounts.contacts",
    "Current contact card per user; the ONLY topic with personal data, sealed with the "
    "subject's vault key; tombstoned on erasure.",
    compacted=True,
)
ACCOUNTS_SESSIONS = Topic(
    "accounts.sessions",
    "Sessions ended (logout, password change, account gone): every API process follows "
    "it, without a consumer group, to refuse the access tokens of ended sessions. Kept an "
    "hour, longer than any token it revokes lives; no DLQ (no group to dead-letter for).",
    partitions=1,
    consumed=False,
    retention_ms=3_600_000,
    # Retention deletes whole segments only: roll them often so an hour means an hour.
    extra_config={"segment.ms": str(600_000)},
)
ACCOUNTS_REQUESTS = Topic("accounts.requests", "User requests submitted and operator replies.")
ACCOUNTS_AUDIT = Topic(
    "accounts.audit",
    "Each audit-log row's place and hash in its chain (no ids): what an auditor checks "
    "the database against. Kept for ever; read by the audit verifier, not by a service.",
    partitions=1,
    consumed=False,
    retention_ms=-1,
)
ACCOUNTS_RECIPIENT_ERASURES = Topic(
    "accounts.recipient_erasures",
    "Erasures forwarded to the processors and partners a subject's data was disclosed to "
    "(ids only, P-19): what each recipient's connector follows. No service here reads it.",
    consumed=False,
)
POLICY_VERSIONS = Topic("policy.versions", "Privacy-policy versions published.", partitions=1)
SECURITY_INCIDENTS = Topic("security.incidents", "Security incidents declared by operators.")
NOTIFIER_COMMANDS = Topic("notifier.commands", "Commands for the notifier: send a notice.")
NOTIFIER_DELIVERIES = Topic("notifier.deliveries", "Outcome of every notice delivery.")
DELETION_COMMANDS = Topic("deletion.commands", "Erase a subject (or one item) from a store.")
DELETION_RECEIPTS = Topic("deletion.receipts", "Store owners' answers to erase commands.")
DELETION_STAGES = Topic("deletion.stages", "Every stage change of a deletion request.")
ANALYTICS_VISITS = Topic("analytics.visits", "Scrubbed, anonymous visits from the collector.")
ANALYTICS_TRENDS = Topic(
    "analytics.trends", "Aggregated visit windows, latest per window key.", compacted=True
)
BUS_SELFTEST = Topic(
    "bus.selftest",
    "Events of the bus's own tests and benchmarks; never read by a service.",
    retention_ms=DAY_MS,
    null_values=True,
)

PRIMARY_TOPICS: tuple[Topic, ...] = (
    ACCOUNTS_LIFECYCLE,
    ACCOUNTS_CONTACTS,
    ACCOUNTS_REQUESTS,
    ACCOUNTS_SESSIONS,
    ACCOUNTS_AUDIT,
    ACCOUNTS_RECIPIENT_ERASURES,
    POLICY_VERSIONS,
    SECURITY_INCIDENTS,
    NOTIFIER_COMMANDS,
    NOTIFIER_DELIVERIES,
    DELETION_COMMANDS,
    DELETION_RECEIPTS,
    DELETION_STAGES,
    ANALYTICS_VISITS,
    ANALYTICS_TRENDS,
    BUS_SELFTEST,
)
_BY_NAME = {t.name: t for t in PRIMARY_TOPICS}


def declared_topic(name: str) -> Topic | None:
    """The registered topic ``name`` is, or is derived from (``<declared>.<suffix>``: a
    dead-letter topic, a test's scratch copy); None for a topic not registered here."""
    while name:
        if (topic := _BY_NAME.get(name)) is not None:
            return topic
        name = name.rpartition(".")[0]
    return None


def dead_letter_topic(source: Topic) -> Topic:
    """The DLQ of ``source``, kept long enough for an operator to replay it."""
    return Topic(
        dlq_of(source.name),
        f"Dead letters of {source.name}.",
        partitions=1,
        consumed=False,
        retention_ms=30 * DAY_MS,
        extra_config={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
    )


def dead_letter_topics() -> tuple[Topic, ...]:
    """One DLQ per consumed topic."""
    return tuple(dead_letter_topic(t) for t in PRIMARY_TOPICS if t.consumed)


def all_topics() -> tuple[Topic, ...]:
    """Every topic the platform creates."""
    return PRIMARY_TOPICS + dead_letter_topics()
