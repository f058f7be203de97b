"""Accounts: what iMT collects (name, email, password, content, devices) and where users
manage it. The source of the user-lifecycle events every other service consumes."""
