"""The accounts worker: ``python -m services.accounts.worker``.

Consumes deletion.commands (EraseSubject) and deletion.stages (a grace period ended:
close the cancel window) with an idempotent consumer; effects and the events they
publish are written in the transaction that marks the event processed. Beside it,
periodic rounds forget new addresses whose confirmation link expired, delete what is
kept only while it serves (``retention``), have lapsed sign-ups erased, and mail the
password resets asked for while the account's row was held (``pending_resets``).
"""

from __future__ import annotations

import asyncio
import signal

from services.accounts.bootstrap import bootstrap
from services.accounts.config import ERASURE_GROUP, AccountsSettings
from services.accounts.context import Context
from services.accounts.handlers import handler
from services.accounts.lapsed_signups import LapsedSignups
from services.accounts.pending_addresses import PendingAddressExpiry
from services.accounts.pending_resets import PendingResets
from services.accounts.retention import Retention
from shared.bus import IdempotentConsumer, manual_commit_consumer
from shared.events.topics import DELETION_COMMANDS, DELETION_STAGES
from shared.process import start_process

CONSUMER = ERASURE_GROUP


async def run(settings: AccountsSettings) -> None:
    runtime = await bootstrap(settings, with_producer=True)
    assert runtime.producer is not None
    assert runtime.vault is not None
    kafka = manual_commit_consumer(
        settings, DELETION_COMMANDS.name, DELETION_STAGES.name, group_id=CONSUMER
    )
    consumer = IdempotentConsumer(
        CONSUMER, kafka, runtime.producer, runtime.pool, handler(runtime.vault)
    )
    await kafka.start()
    expiry = PendingAddressExpiry(
        runtime.pool, runtime.vault, settings.accounts_pending_sweep_seconds
    )

    retention = Retention(runtime.pool, settings)
    lapsed = LapsedSignups(
        runtime.pool, settings.accounts_signup_lapse_days, settings.accounts_lapse_sweep_seconds
    )
    resets = PendingResets(Context(settings, runtime), settings.accounts_pending_reset_seconds)

    def stop() -> None:
        consumer.stop()
        expiry.stop()
        retention.stop()
        lapsed.stop()
        resets.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        async with asyncio.TaskGroup() as loops:
            loops.create_task(consumer.run())
            loops.create_task(expiry.run())
            loops.create_task(retention.run())
            loops.create_task(lapsed.run())
            loops.create_task(resets.run())
    finally:
        await kafka.stop()
        await runtime.close()


def main() -> None:
    settings = AccountsSettings(service_name="accounts-worker")
    start_process(settings.service_name, settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
