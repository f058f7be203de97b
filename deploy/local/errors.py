"""The one error the local stack raises for the user: its message says what to do."""

from __future__ import annotations


class StackError(RuntimeError):
    """A component cannot start; the message tells the user what to do."""
