"""Settings of the accounts service (the shared ones come from PlatformSettings)."""

from __future__ import annotations

from pydantic import Field

from shared.config import PlatformSettings


class AccountsSettings(PlatformSettings):
    service_name: str = "accounts"
    accounts_http_port: int = Field(8101, description="Port of the accounts API (loopback).")
