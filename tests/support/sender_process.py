"""The notifier's email sender as a process of its own, for the SIGKILL tests.

``python -m tests.support.sender_process DSN`` runs the real :class:`Sender` with the
real SMTP transport (the local SMTP sink) on the notifier database at DSN (a scratch
one, its vault tables in it), with the settings of the environment
(``IMT_NOTIFIER_LEASE_SECONDS``, ``IMT_CRASH_POINTS``...), until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from services.notifier.config import NotifierSettings
from services.notifier.mailer import SmtpTransport
from services.notifier.sender import Sender, Wake
from shared.db import create_pool
from shared.vault import Vault


async def run(dsn: str) -> None:
    settings = NotifierSettings()
    pool = await create_pool(dsn, max_size=10)
    vault = await Vault.connect(settings, pool)
    sender = Sender(settings, pool, vault, lambda: SmtpTransport(settings), Wake())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, sender.stop)
    try:
        await sender.run()
    finally:
        await vault.close()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
