"""Per-subject encryption of personal data, and crypto-shredding."""

from shared.vault.crypto import SealBroken
from shared.vault.vault import SubjectShredded, Vault

__all__ = ["SealBroken", "SubjectShredded", "Vault"]
