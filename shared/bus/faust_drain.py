"""Faust's message drain, racing flow suspension once per fetched batch, not per message.

faust-streaming's ``Consumer._drain_messages`` hands every message to the conductor
through ``Service.wait_first(callback(message), suspend_flow.wait())``. That race is
needed: a delivery blocked on a full stream buffer must be abandoned when a rebalance
suspends the flow, or the rebalance waits on it forever. But ``wait_first`` creates
four tasks and an ``asyncio.wait`` for each message, about half of a no-op worker's
CPU. Here the whole batch is delivered inside one task raced against the suspension,
so a blocked delivery is still abandoned, at the cost of four tasks per fetch.

What is abandoned is the same as before: messages not yet handed to a stream. They
were never acknowledged, so no commit passes them, and every suspension is followed by
a seek to the committed offsets (the rebalance, or ``getmany`` while the flow is off),
which reads them again and resets the read offsets. Offsets are committed between
messages as before, never inside the raced task, so a suspension cannot cancel one.

The loop follows faust-streaming 0.15.3 (``tests/unit/bus/test_faust_drain.py`` pins
its source, so an upgrade is re-read before it ships).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message, TransportT
from mode import Service, ServiceT

YIELD_EVERY = 100  # messages between returns to the event loop, as upstream


class BatchRacedConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with :func:`_drain_messages` racing per batch."""

    _buffer_dropped: asyncio.Event | None = None

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        if self._buffer_dropped is not None:
            self._buffer_dropped.set()

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - loop
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        self._buffer_dropped = asyncio.Event()
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if await self._waited_for_buffers():
                    continue
                set_flag(CONSUMER_FETCHING)
                messages = self.getmany(timeout=1.0)
                # getmany can return at once in a loop that never yields otherwise.
                await self.sleep(0)
                if self.should_stop:
                    break
                held = await anext(messages, None)  # the fetch, outside the race as upstream
                while held is not None and not self.should_stop:
                    deliver = self._deliver(held, messages)
                    outcome = await self.wait_first(deliver, self.suspend_flow.wait())
                    if deliver not in outcome.done:
                        break  # the flow was suspended or the service stopped
                    held = outcome.results[outcome.done.index(deliver)]
                    if held is not None:  # a commit is due before this message
                        self._n_acked = 0
                        await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _waited_for_buffers(self) -> bool:
        """While every partition is paused because its stream buffer is full, wait for
        one to drain (up to a second) instead of upstream's fixed one-second sleep:
        the agent empties a buffer in well under that, and the fetch waited idle."""
        if self.app.client_only or not self._buffered_partitions:
            return False
        if self._get_active_partitions():
            return False
        assert self._buffer_dropped is not None
        self._buffer_dropped.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._buffer_dropped.wait(), 1.0)
        return True

    async def _deliver(
        self, first: tuple[TP, Message], rest: AsyncIterator[tuple[TP, Message]]
    ) -> tuple[TP, Message] | None:
        """Hand ``first`` and the rest of the batch to the conductor; return None when
        done, or the message still to deliver when a commit is due before it."""
        callback, commit_every = self.callback, self._commit_every
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        async for tp, message in _prepend(first, rest):
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            if commit_every is not None and self._n_acked >= commit_every:
                return tp, message
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is not None and offset < r_offset:
                self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                continue
            if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            await callback(message)
            set_read_offset(tp, offset)
        return None


async def _prepend(
    first: tuple[TP, Message], rest: AsyncIterator[tuple[TP, Message]]
) -> AsyncIterator[tuple[TP, Message]]:
    yield first
    async for item in rest:
        yield item


class BatchRacedTransport(aiokafka_driver.Transport):
    Consumer = BatchRacedConsumer


class PlatformFaustApp(faust.App):
    """A Faust app whose consumer drains with :class:`BatchRacedConsumer`."""

    def _new_transport(self) -> TransportT:
        return BatchRacedTransport(self.conf.broker_consumer, self)
