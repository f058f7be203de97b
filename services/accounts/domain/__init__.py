"""Accounts' pure rules: no I/O, fast unit tests."""
