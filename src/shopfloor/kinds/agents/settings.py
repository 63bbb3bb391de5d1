"""The agent kind's own settings. Its variables kept the names they had before kinds had
settings of their own (`SHOPFLOOR_ANTHROPIC_*`, `SHOPFLOOR_AGENT_GATEWAY_*`), hence the bare
prefix."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPFLOOR_", env_file=".env", extra="ignore")

    # Keys live here, on the workers, never in job input or workflow history.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None  # unset: Anthropic's own API
    anthropic_model: str = "claude-sonnet-4-5"  # when a job's agentConfig names no model
    # An HTTP agent endpoint (`gateway-agent`), e.g. seed 003's gateway, and its bearer token.
    agent_gateway_url: str | None = None
    agent_gateway_token: SecretStr | None = None
