"""The phased kinds' own settings (`SHOPFLOOR_GATEWAY_*`): seed 003's gateway."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Agent turns are `POST {url}/api/cron/fire` with this token. Read by workers only; never
    part of any job input or workflow history."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPFLOOR_GATEWAY_", env_file=".env", extra="ignore"
    )

    url: str | None = None
    token: SecretStr | None = None
    timeout_s: float = 300.0
