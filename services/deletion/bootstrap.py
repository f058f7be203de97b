"""The deletion service's composition root: settings read once, runtime opened once."""

from __future__ import annotations

from pathlib import Path

from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy
from services.deletion.handlers import Deps
from services.deletion.verifier import Verifier
from shared.service import Runtime, open_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "deletion"


async def bootstrap(settings: DeletionSettings, *, with_producer: bool = False) -> Runtime:
    return await open_runtime(
        settings, DATABASE, MIGRATIONS, with_vault=True, with_producer=with_producer
    )


def dependencies(settings: DeletionSettings, runtime: Runtime) -> Deps:
    """The handlers' dependencies: retention rules, the vault's shred, the verifier."""
    assert runtime.vault is not None
    policy = load_policy(settings.deletion_retention_file)
    verifier = Verifier(settings, policy, runtime.vault, runtime.pool)
    return Deps(settings, policy, runtime.vault.shred, verifier.verify)
