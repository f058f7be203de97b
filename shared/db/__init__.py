"""Database access: pools, plain-SQL migrations and the unit of work."""

from shared.db.migrations import MigrationChanged, apply_migrations, migration_files
from shared.db.pool import Connection, create_pool, service_pool
from shared.db.unit_of_work import UnitOfWork

__all__ = [
    "Connection",
    "MigrationChanged",
    "UnitOfWork",
    "apply_migrations",
    "create_pool",
    "migration_files",
    "service_pool",
]
