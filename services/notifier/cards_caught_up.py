"""A marketing notice waits for the contact cards already on the bus (P-32).

An opt-out made in the account reaches the notifier as a contact card on
``accounts.contacts``; a campaign comes as a notice on another topic. The settle
(:data:`services.notifier.handlers.MARKETING_SETTLE`) covers the usual gap between the
two. This covers a contacts consumer far behind (a backlog, a worker restarting): a
marketing notice is fanned out only once the ``notifier.contacts`` group has committed
every card that was on the topic when the notice first came due, so an opt-out
published before the campaign was decided always counts.

The marks are kept in memory: a restarted worker takes new ones, later and so no
weaker. While the group is behind, the notice waits (fails closed): the lag and
group-members alerts tell an operator why.
"""

from __future__ import annotations

import logging
from uuid import UUID

from aiokafka import TopicPartition

from shared.bus.lag import GroupWatch
from shared.config import PlatformSettings
from shared.events.topics import ACCOUNTS_CONTACTS

log = logging.getLogger(__name__)

CONTACTS_GROUP = "notifier.contacts"


class CardsCaughtUp:
    """Whether the cards on the bus when a notice came due are all applied."""

    def __init__(
        self,
        settings: PlatformSettings,
        topic: str = ACCOUNTS_CONTACTS.name,
        group: str = CONTACTS_GROUP,
    ) -> None:
        self._topic = topic
        self._group = group
        self._watch = GroupWatch(settings, {})
        self._marks: dict[UUID, dict[TopicPartition, int]] = {}

    async def ready(self, notice_id: UUID) -> bool:
        marks = self._marks.get(notice_id)
        if marks is None:
            marks = self._marks[notice_id] = await self._watch.ends(self._topic)
        behind = await self._watch.behind(self._group, marks)
        if behind:
            log.info("notice %s waits for %d contact card(s) to be applied", notice_id, behind)
            return False
        del self._marks[notice_id]
        return True

    async def close(self) -> None:
        await self._watch.close()
