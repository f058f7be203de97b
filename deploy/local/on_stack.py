"""Run a command where the local stack is: ``python deploy/local/on_stack.py <command>``.

``make backup``, ``make restore`` and ``make audit-verify`` run service modules outside
the service processes, which read the stack's whereabouts from their own settings
(IMT_KAFKA_BOOTSTRAP, IMT_POSTGRES_PORT...). A stack moved with IMT_KAFKA_PORT, IMT_PG_PORT
and the like is found there only once translated, as the service processes get them
(services.process_env): else these commands would act on the default ports' stack, on a
shared machine another user's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from deploy.local.services import process_env


def main(argv: Sequence[str]) -> int:
    if not argv:
        sys.exit("usage: on_stack.py <command> [argument...]")
    os.execvpe(argv[0], list(argv), process_env())  # noqa: S606 - the caller's own command


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
