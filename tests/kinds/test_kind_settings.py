"""Each kind's settings live in its folder with its own env_prefix, under the same variable
names as when one flat Settings held them all (deployments keep their environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.kinds.agents.settings import AgentSettings
from shopfloor.kinds.phased.settings import GatewaySettings
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.kinds.scripts.settings import ScriptSettings
from shopfloor.settings import Settings

# variable → (model, field, value set, value read)
SAME_NAMES = {
    "SHOPFLOOR_SCRIPT_ENV_ALLOWLIST": (ScriptSettings, "env_allowlist", '["A_*"]', ["A_*"]),
    "SHOPFLOOR_ANTHROPIC_BASE_URL": (AgentSettings, "anthropic_base_url", "http://a", "http://a"),
    "SHOPFLOOR_ANTHROPIC_MODEL": (AgentSettings, "anthropic_model", "m", "m"),
    "SHOPFLOOR_AGENT_GATEWAY_URL": (AgentSettings, "agent_gateway_url", "http://g", "http://g"),
    "SHOPFLOOR_GATEWAY_URL": (GatewaySettings, "url", "http://gw", "http://gw"),
    "SHOPFLOOR_GATEWAY_TIMEOUT_S": (GatewaySettings, "timeout_s", "7", 7.0),
    "SHOPFLOOR_PIPELINE_DIRS": (PipelineSettings, "dirs", '["/p"]', [Path("/p")]),
    "SHOPFLOOR_PIPELINE_RUN_DIR": (PipelineSettings, "run_dir", "/r", Path("/r")),
    "SHOPFLOOR_PIPELINE_HOST": (PipelineSettings, "host", "h1", "h1"),
    "SHOPFLOOR_PIPELINE_RUN_AS": (PipelineSettings, "run_as", "", ""),
    "SHOPFLOOR_PIPELINE_DOCKER_HOST": (PipelineSettings, "docker_host", "tcp://d:1", "tcp://d:1"),
    "SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK": (
        PipelineSettings, "docker_host_network", "true", True
    ),
    "SHOPFLOOR_PIPELINE_DOCKER_VOLUME_ROOTS": (
        PipelineSettings, "docker_volume_roots", '["/v"]', [Path("/v")]
    ),
    "SHOPFLOOR_PIPELINE_SERVICE_MEMORY_MB": (PipelineSettings, "service_memory_mb", "64", 64),
    "SHOPFLOOR_PIPELINE_SERVICE_MAX_PROCESSES": (
        PipelineSettings, "service_max_processes", "9", 9
    ),
    "SHOPFLOOR_PIPELINE_CHECK_MEMORY_MB": (PipelineSettings, "check_memory_mb", "32", 32),
    "SHOPFLOOR_PIPELINE_CHECK_MAX_PROCESSES": (PipelineSettings, "check_max_processes", "3", 3),
}  # fmt: skip


@pytest.mark.parametrize("variable", sorted(SAME_NAMES))
def test_a_kind_setting_keeps_its_variable_name(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, field, given, read = SAME_NAMES[variable]
    monkeypatch.setenv(variable, given)
    assert getattr(Settings().of(model), field) == read


def test_secrets_keep_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOOR_ANTHROPIC_API_KEY", "k1")
    monkeypatch.setenv("SHOPFLOOR_AGENT_GATEWAY_TOKEN", "k2")
    monkeypatch.setenv("SHOPFLOOR_GATEWAY_TOKEN", "k3")
    settings = Settings()
    agent = settings.of(AgentSettings)
    assert (
        agent.anthropic_api_key is not None and agent.anthropic_api_key.get_secret_value() == "k1"
    )
    assert agent.agent_gateway_token is not None
    assert agent.agent_gateway_token.get_secret_value() == "k2"
    token = settings.of(GatewaySettings).token
    assert token is not None and token.get_secret_value() == "k3"


def test_a_kind_reads_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK", raising=False)
    (tmp_path / ".env").write_text("SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK=true\n")
    monkeypatch.chdir(tmp_path)
    assert Settings().of(PipelineSettings).docker_host_network is True


def test_runtime_dir_defaults_under_the_data_dir(tmp_path: Path) -> None:
    own = PipelineSettings(run_dir=None)
    assert own.runtime_dir(tmp_path) == (tmp_path / "pipelines").resolve()
