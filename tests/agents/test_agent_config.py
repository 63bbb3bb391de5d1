"""`agentConfig` has a model per `agentType`: strict types that name the field, secrets refused,
the examples and the seed's documented fields accepted (its `agentApiKey` too, ignored), the
JSON passed on as it came."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from shopfloor.kinds.agents.models import (
    AGENT_CONFIGS,
    AnthropicAgentConfig,
    CoordinatorConfig,
    GatewayAgentConfig,
    MockAgentConfig,
    MockFailure,
    config_problem,
    config_warnings,
    is_secret_name,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "agents"


def _config(**fields: object) -> CoordinatorConfig:
    return CoordinatorConfig.model_validate({"goalId": "g", **fields})


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_the_examples_are_valid(path: Path) -> None:
    config = CoordinatorConfig.model_validate(json.loads(path.read_text()))
    assert config_problem(config) is None


def test_the_seeds_config_is_accepted() -> None:
    # Seed 002's HelloWorkflowConfig, as its TypeScript starter sends it (no key in the env).
    config = _config(
        specType="hello",
        specConfig={"workKind": "greet"},
        agentType="mock-agent",
        agentConfig={},
        maxIterations=10,
    )
    assert isinstance(config.agent_options, MockAgentConfig)


def test_each_agent_type_gets_its_own_model() -> None:
    anthropic = _config(agentType="anthropic-agent", agentConfig={"maxTokens": 400})
    assert isinstance(anthropic.agent_options, AnthropicAgentConfig)
    assert anthropic.agent_options.max_tokens == 400  # maxTokens is no secret's name
    gateway = _config(agentType="gateway-agent", agentConfig={"maxTokens": 5, "style": "terse"})
    assert isinstance(gateway.agent_options, GatewayAgentConfig)
    # The JSON travels as it came: the gateway gets exactly what the job said.
    assert gateway.agent_config == {"maxTokens": 5, "style": "terse"}
    mock = _config(agentConfig={"delayMs": 200, "failures": [{"status": "rate_limited"}]})
    assert mock.agent_options.failures[0].status == "RATE_LIMITED"  # type: ignore[attr-defined]
    assert _config(agentConfig={"timeoutS": 30}).agent_options.timeout_s == 30


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"agentConfig": {"timeoutS": "soon"}}, "timeoutS: Input should be a valid number"),
        ({"agentConfig": {"timeoutS": -1}}, "timeoutS: Input should be greater than 0"),
        ({"agentConfig": {"delayMs": "2000"}}, "delayMs: Input should be a valid number"),
        ({"agentConfig": {"maxTokens": 400}}, "maxTokens: Extra inputs are not permitted"),
        (
            {"agentType": "anthropic-agent", "agentConfig": {"maxTokens": "many"}},
            "maxTokens: Input should be a valid integer",
        ),
        ({"agentConfig": {"failures": [{"status": "maybe"}]}}, "failures.0.status"),
        ({"agentConfig": {"apiKey": "x"}}, "agentConfig may not carry secrets (apiKey)"),
        (
            {"agentType": "gateway-agent", "agentConfig": {"authToken": "x"}},
            "agentConfig may not carry secrets (authToken)",
        ),
    ],
)
def test_bad_agent_config_is_refused_naming_the_field(fields: dict, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _config(**fields)
    assert says in str(refused.value)


def test_secret_names() -> None:
    secret = ["apiKey", "api_key", "API_KEY", "x-api-key", "accessToken", "client_secret"]
    plain = ["maxTokens", "tokens", "tokenizer", "keyword", "system", "model"]
    assert [k for k in secret if not is_secret_name(k)] == []
    assert [k for k in plain if is_secret_name(k)] == []


def test_a_key_in_the_input_is_accepted_ignored_and_never_serialized() -> None:
    """Seed 002's starter sends `agentApiKey: process.env.ANTHROPIC_API_KEY`: accepted, never
    used (keys come from the workers), masked whenever shopfloor serializes the config (the
    controller and the CLI send it so), and the result says so."""
    config = _config(agentApiKey="sk-ant-not-here")
    assert config_problem(config) is None
    assert "sk-ant-not-here" not in repr(config) + str(config)
    sent = config.model_dump(mode="json")
    assert sent["agentApiKey"] == "**********" and "sk-ant-not-here" not in json.dumps(sent)
    (direct,) = config_warnings(config)
    assert "agentApiKey was ignored" in direct and "SHOPFLOOR_ANTHROPIC_API_KEY" in direct
    assert "now in this workflow's history" in direct
    (masked,) = config_warnings(CoordinatorConfig.model_validate(sent))
    assert "in no history" in masked
    assert config_warnings(_config()) == []


def _keys(data: object) -> list[str]:
    if isinstance(data, dict):
        return [str(k) for k in data] + [k for v in data.values() for k in _keys(v)]
    if isinstance(data, list):
        return [k for v in data for k in _keys(v)]
    return []


def test_no_documented_option_name_is_taken_for_a_secret() -> None:
    """Every field of every agent config model (`maxTokens`…) and every key of every example
    under examples/ (agents, phased, pipelines, schedules) is an option, not a secret."""
    models = [CoordinatorConfig, MockFailure, *AGENT_CONFIGS.values()]
    names = [
        name
        for model in models
        for field_name, f in model.model_fields.items()
        for name in (field_name, f.alias or field_name)
        if field_name != "agent_api_key"  # the one secret: accepted, ignored, masked
    ]
    assert "maxTokens" in names
    assert [n for n in names if is_secret_name(n)] == []
    examples = Path(__file__).parents[2] / "examples"
    files = [p for p in sorted(examples.rglob("*")) if p.suffix in (".json", ".yaml", ".yml")]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        assert [k for k in _keys(data) if is_secret_name(k)] == [], path
    for path in sorted(EXAMPLES.glob("*.json")):
        config = CoordinatorConfig.model_validate(json.loads(path.read_text()))
        assert config_problem(config) is None and config.agent_options is not None
