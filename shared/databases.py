"""The databases of the platform: one per service, and the vault's own.

Each database has a role of the same name that owns it; no role can read another's.
"""

SERVICE_DATABASES: tuple[str, ...] = ("accounts", "deletion", "notifier", "analytics")
VAULT_DATABASE = "vault"
ALL_DATABASES: tuple[str, ...] = (*SERVICE_DATABASES, VAULT_DATABASE)
