"""The memo kind's own settings (`SHOPFLOOR_MEMO_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class MemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPFLOOR_MEMO_", env_file=".env", extra="ignore")

    # Shown at the top of every memo's dashboard page.
    banner: str = "memo"
