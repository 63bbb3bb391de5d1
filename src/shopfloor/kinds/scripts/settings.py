"""The script kind's own settings (`SHOPFLOOR_SCRIPT_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ScriptSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPFLOOR_SCRIPT_", env_file=".env", extra="ignore"
    )

    # Environment variable names a job may set for its script (glob patterns). Names that look
    # like secrets are refused regardless: secrets come from the worker's own settings.
    env_allowlist: list[str] = Field(
        default_factory=lambda: ["JOB_*", "SEED", "TZ", "LANG", "LC_*", "OMP_NUM_THREADS"]
    )
