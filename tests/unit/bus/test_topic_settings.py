"""The settings an existing topic is brought back to: the registry's, plus the topic's
own tuning of anything the registry does not manage."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource

from shared.bus.topic_admin import (
    DYNAMIC_TOPIC_CONFIG,
    MANAGED,
    MIN_INSYNC,
    TopicCreationFailed,
    _in_effect,
    reconciled_config,
)
from shared.events.topics import ACCOUNTS_CONTACTS, ACCOUNTS_LIFECYCLE


def test_a_longer_retention_set_by_hand_goes_back_to_the_registrys() -> None:
    wanted = ACCOUNTS_LIFECYCLE.config()
    current = {**wanted, "retention.ms": str(365 * 24 * 3600 * 1000)}
    assert reconciled_config(wanted, current) == wanted


def test_settings_the_registry_does_not_manage_are_kept() -> None:
    wanted = ACCOUNTS_LIFECYCLE.config()
    current = {**wanted, "max.message.bytes": "2097152"}
    assert reconciled_config(wanted, current) == current


def test_compaction_settings_leave_a_topic_no_longer_compacted() -> None:
    """A topic registered as compacted, then not: its compaction settings are removed
    (not left behind to keep records for ever)."""
    current = ACCOUNTS_CONTACTS.config()
    wanted = ACCOUNTS_LIFECYCLE.config()
    config = reconciled_config(wanted, current)
    assert config == wanted
    assert "cleanup.policy" not in config
    assert config["retention.ms"] != "-1"


def test_a_stricter_min_insync_set_by_hand_is_kept_a_weaker_one_raised() -> None:
    wanted = ACCOUNTS_LIFECYCLE.config(replication_factor=3)
    assert wanted[MIN_INSYNC] == "2"
    assert reconciled_config(wanted, {**wanted, MIN_INSYNC: "3"})[MIN_INSYNC] == "3"
    assert reconciled_config(wanted, {**wanted, MIN_INSYNC: "1"})[MIN_INSYNC] == "2"


def test_every_registry_setting_is_managed() -> None:
    assert {"retention.ms", "cleanup.policy", MIN_INSYNC, "max.compaction.lag.ms"} <= MANAGED
    assert set(ACCOUNTS_CONTACTS.config()) <= MANAGED


class _LaggingBroker:
    """An admin client whose describes read the old settings for ``lag`` more calls."""

    def __init__(self, old: dict[str, str], new: dict[str, str], lag: int) -> None:
        self.old, self.new, self.lag, self.describes = old, new, lag, 0

    async def describe_configs(self, resources: list[ConfigResource]) -> list[Any]:
        self.describes += 1
        config = self.old if self.describes <= self.lag else self.new
        entries = [(k, v, False, DYNAMIC_TOPIC_CONFIG) for k, v in config.items()]
        response = SimpleNamespace(resources=[(0, "", 2, r.name, entries) for r in resources])
        return [response]


async def test_an_alter_is_waited_on_until_a_describe_reads_it() -> None:
    new = ACCOUNTS_LIFECYCLE.config()
    broker = _LaggingBroker({**new, "retention.ms": "1"}, new, lag=3)
    await _in_effect(broker, {"t": new})
    assert broker.describes == 4


async def test_an_alter_never_read_back_fails_loudly() -> None:
    new = ACCOUNTS_LIFECYCLE.config()
    broker = _LaggingBroker({**new, "retention.ms": "1"}, new, lag=10**9)
    with pytest.raises(TopicCreationFailed, match="not in effect after 0s: t"):
        await _in_effect(broker, {"t": new}, seconds=0.2)
