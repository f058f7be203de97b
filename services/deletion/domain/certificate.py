"""The anonymised certificate of a completed deletion, and the verifier's verdict.

The certificate names the request, never the subject: stage times, the stores and what
each erased or kept (counts), the retention version, what the verifier scanned, and a
SHA-256 digest over all of it (canonical JSON) so a copy can be checked unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Finding:
    """Where the verifier found the subject (or item): a place, never a value."""

    store: str  # e.g. "accounts.users.id", "kafka:accounts.contacts", "backup:<id>:accounts..."
    rows: int
    kept_by_rule: str | None = None  # a retention rule allows it (ids only)


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]
    scanned: tuple[str, ...]
    shredded: bool | None  # None for an item (the subject's key stays)

    @property
    def personal_data_found(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kept_by_rule is None)

    @property
    def clean(self) -> bool:
        return not self.personal_data_found and self.shredded is not False

    def summary(self) -> str:
        problems = [f"{f.store} ({f.rows} rows)" for f in self.personal_data_found]
        if self.shredded is False:
            problems.append("vault key not shredded")
        return "verifier found: " + ", ".join(problems) if problems else "nothing found"


@dataclass(frozen=True)
class Certificate:
    request_id: UUID
    scope: str
    stages: dict[str, datetime]
    stores: dict[str, dict[str, Any]]
    retention_version: str
    verdict: Verdict
    issued_at: datetime
    body: dict[str, Any] = field(init=False)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        body = {
            "request_id": str(self.request_id),
            "scope": self.scope,
            "stages": {s: t.isoformat() for s, t in self.stages.items()},
            "stores": self.stores,
            "retention_version": self.retention_version,
            "verified": {
                "scanned": list(self.verdict.scanned),
                "kept_anonymised": {
                    f.store: {"rows": f.rows, "rule": f.kept_by_rule}
                    for f in self.verdict.findings
                    if f.kept_by_rule
                },
                "vault_key_shredded": self.verdict.shredded,
            },
            "issued_at": self.issued_at.isoformat(),
        }
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "digest", digest_of(body))


def digest_of(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
