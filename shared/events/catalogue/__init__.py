"""Every event and command on the bus, a module per producing service.

Importing this package registers them all; ``make docs`` generates docs/events/ from it.
"""

from shared.events.catalogue import accounts, analytics, deletion, notifier, selftest

__all__ = ["accounts", "analytics", "deletion", "notifier", "selftest"]
