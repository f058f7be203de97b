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
import time
from uuid import UUID

from aiokafka import TopicPartition

from shared.bus.lag import GroupWatch
from shared.config import PlatformSettings
from shared.events.topics import ACCOUNTS_CONTACTS

log = logging.getLogger(__name__)

CONTACTS_GROUP = "notifier.contacts"
MARKS_KEPT_SECONDS = 3600.0


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
        # Notice id -> (when taken, the marks). A notice another worker sent leaves its
        # marks here: they go after an hour (a notice still waiting then takes new ones).
        self._marks: dict[UUID, tuple[float, dict[TopicPartition, int]]] = {}

    async def ready(self, notice_id: UUID) -> bool:
        now = time.monotonic()
        taken, marks = self._marks.get(notice_id, (now, None))
        if marks is None or now - taken > MARKS_KEPT_SECONDS:
            for stale in [n for n, (t, _) in self._marks.items() if now - t > MARKS_KEPT_SECONDS]:
                del self._marks[stale]
            marks = await self._watch.ends(self._topic)
            self._marks[notice_id] = (now, marks)
        behind = await self._watch.behind(self._group, marks)
        if behind:
            log.info("notice %s waits for %d contact card(s) to be applied", notice_id, behind)
            return False
        del self._marks[notice_id]
        return True

    async def close(self) -> None:
        await self._watch.close()
