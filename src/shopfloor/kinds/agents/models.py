"""The agent coordinator's vocabulary (seed 002), as plain JSON in the seed's camelCase.

Workflow input is the seed's config (`goalId, specType, specConfig, agentType, agentConfig,
maxIterations`), so the seed's TypeScript starter and the `temporal` CLI work unchanged. Python
code uses snake_case; every model reads and writes the camelCase aliases.

Light (pydantic only): the controller, the CLI and workflows import it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

TASK_QUEUE = "agent-coordinator-queue"
# Agent outputs longer than this travel as artifact:// URIs; the history keeps a preview.
INLINE_OUTPUT_CHARS = 2000

# The words of a key (camelCase, snake_case, kebab-case) that make it a secret's name: `apiKey`,
# `accessToken`, `client_secret`, but not `maxTokens` (a count of tokens, not a token).
_SECRET_WORDS = {"secret", "token", "password", "passwd", "credential", "credentials", "apikey"}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
KEYS_LIVE_ON_WORKERS = (
    "Set SHOPFLOOR_ANTHROPIC_API_KEY (or SHOPFLOOR_AGENT_GATEWAY_TOKEN) in the workers' "
    "environment instead: API keys never enter job input or workflow history."
)


def is_secret_name(key: str) -> bool:
    words = [w.lower() for w in _WORD.findall(key)]
    pairs = {a + b for a, b in zip(words, words[1:], strict=False)}
    return bool(_SECRET_WORDS.intersection(words) or "apikey" in pairs)


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        allow_inf_nan=False,
    )


# -- state -------------------------------------------------------------------------------------


class GoalStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


class StepStatus(StrEnum):
    WAITING = "WAITING"  # requested, no reply yet
    IN_PROGRESS = "IN_PROGRESS"  # a PARTIAL reply: the agent goes on with it
    DONE = "DONE"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"  # rate-limited or out of context: a spec decides what next


class ReplyStatus(StrEnum):
    OK = "OK"
    FAIL = "FAIL"
    PARTIAL = "PARTIAL"
    RATE_LIMITED = "RATE_LIMITED"
    CONTEXT_EXCEEDED = "CONTEXT_EXCEEDED"


class Usage(_Camel):
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def plus(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            calls=self.calls + other.calls,
        )


class StepError(_Camel):
    code: str  # PROVIDER_ERROR, RATE_LIMITED, CONTEXT_EXCEEDED, or an agent's own code
    message: str


class Step(_Camel):
    id: str
    work_kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = StepStatus.WAITING
    attempt: int = 1
    output: str | None = None  # the reply's text, cut to INLINE_OUTPUT_CHARS
    output_uri: str | None = None  # the whole reply when it was longer
    error: StepError | None = None
    retry_after_s: float | None = None
    usage: Usage = Field(default_factory=Usage)


class EngineState(_Camel):
    goal_id: str
    status: GoalStatus = GoalStatus.RUNNING
    steps: dict[str, Step] = Field(default_factory=dict)  # in the order they were requested
    annotations: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    reason: str | None = None  # why it ended, when not plainly completed


# -- what a spec decides -----------------------------------------------------------------------


class RequestWork(_Camel):
    type: Literal["REQUEST_WORK"] = "REQUEST_WORK"
    work_kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    step_id: str | None = None  # None: a new step; an existing FAILED/BLOCKED one: a retry


class Annotate(_Camel):
    type: Literal["ANNOTATE"] = "ANNOTATE"
    key: str
    value: Any


class Finalize(_Camel):
    type: Literal["FINALIZE"] = "FINALIZE"
    status: Literal[GoalStatus.COMPLETED, GoalStatus.FAILED] = GoalStatus.COMPLETED
    reason: str | None = None


Decision = RequestWork | Annotate | Finalize


# -- an agent call (activity input and output) ------------------------------------------------


class AgentRequest(_Camel):
    job_id: str  # where large outputs are stored: artifact://<job_id>/…
    goal_id: str
    step_id: str
    work_kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
    agent_type: str
    agent_config: dict[str, Any] = Field(default_factory=dict)
    instructions: list[str] = Field(default_factory=list)
    partial: str | None = None  # the agent's previous PARTIAL output, to go on from
    partial_uri: str | None = None  # …or where it is, when it was too long for the history


class AgentReply(_Camel):
    goal_id: str
    step_id: str
    status: ReplyStatus
    output: str | None = None
    output_uri: str | None = None
    error: StepError | None = None
    retry_after_s: float | None = None
    usage: Usage = Field(default_factory=Usage)


class StoreArtifacts(_Camel):
    job_id: str
    goal_id: str
    artifacts: dict[str, Any]


# -- agentConfig, per agentType ----------------------------------------------------------------


class AgentConfig(_Camel):
    """What every agent's `agentConfig` may say. Keys that name a secret are refused: keys
    live on the workers."""

    model_config = ConfigDict(strict=True)

    timeout_s: float | None = Field(
        None, gt=0, description="seconds an agent call may take (default 600)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = {f.alias or n for n, f in cls.model_fields.items()} | set(cls.model_fields)
            secret = sorted(k for k in data if k not in fields and is_secret_name(str(k)))
            if secret:
                raise ValueError(
                    f"agentConfig may not carry secrets ({', '.join(secret)}). "
                    + KEYS_LIVE_ON_WORKERS
                )
        return data


class MockFailure(_Camel):
    """A scripted reply (or error) of the mock agent instead of its usual one."""

    model_config = ConfigDict(strict=True)

    work_kind: str | None = None  # which steps it applies to (None: every one)
    attempt: int | None = None  # which engine attempt of the step (None: every one)
    status: str = Field(
        "FAIL", description="FAIL, PARTIAL, RATE_LIMITED, CONTEXT_EXCEEDED, or RAISE"
    )
    message: str | None = None
    output: str | None = None
    retry_after_s: float | None = Field(None, ge=0)
    # Raise a retryable error on the first n activity attempts, then reply as usual.
    activity_attempts: int | None = Field(None, ge=0)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        value = value.upper()
        if value != "RAISE" and value not in ReplyStatus.__members__:
            raise ValueError(f"unknown status {value!r}")
        return value


class MockAgentConfig(AgentConfig):
    """`mock-agent`: scripted replies, no network, no key."""

    default_response: str | None = None  # for work kinds without a scripted response
    responses: dict[str, str] = Field(default_factory=dict)  # by work kind
    delay_ms: float = Field(0, ge=0, description="time each call takes")
    failures: list[MockFailure] = Field(default_factory=list)


class AnthropicAgentConfig(AgentConfig):
    """`anthropic-agent`: the Messages API with the worker's key."""

    model: str | None = Field(None, description="default: SHOPFLOOR_ANTHROPIC_MODEL")
    max_tokens: int = Field(1024, ge=1)
    system: str | None = None


class GatewayAgentConfig(AgentConfig):
    """`gateway-agent`: the step goes to the gateway as JSON, agentConfig with it; what else
    it holds is the gateway's business (never a secret)."""

    model_config = ConfigDict(extra="allow")


AgentType = Literal["mock-agent", "anthropic-agent", "gateway-agent"]
AGENT_CONFIGS: dict[str, type[AgentConfig]] = {
    "mock-agent": MockAgentConfig,
    "anthropic-agent": AnthropicAgentConfig,
    "gateway-agent": GatewayAgentConfig,
}


def _described(err: ValidationError, limit: int = 5) -> str:
    """`timeoutS: Input should be a valid number…`: the field inside agentConfig and why."""
    parts = []
    for error in err.errors(include_url=False, include_input=False)[:limit]:
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def agent_config_for(agent_type: str, raw: dict[str, Any]) -> AgentConfig:
    """The typed `agentConfig` of an agent type (already checked when the job's input was)."""
    return AGENT_CONFIGS.get(agent_type, AgentConfig).model_validate(raw)


# -- the job: input, steering, result ---------------------------------------------------------


class CoordinatorConfig(_Camel):
    """The seed's workflow config, plus optional knobs the seed's clients never send."""

    goal_id: str = Field(min_length=1, max_length=200)
    spec_type: str | None = Field(
        None, description="'hello' or 'multi-step'; the workflow type's own spec when unset"
    )
    spec_config: dict[str, Any] = Field(default_factory=dict)
    agent_type: AgentType = "mock-agent"
    # Travels as the JSON it came as (the gateway gets it so); checked against the agent
    # type's model (MockAgentConfig, AnthropicAgentConfig, GatewayAgentConfig).
    agent_config: dict[str, Any] = Field(default_factory=dict)
    max_iterations: int = Field(10, ge=1, le=100_000)
    # Seed 002's starter sends it (`agentApiKey: process.env.ANTHROPIC_API_KEY`). Accepted and
    # ignored: keys come from the workers' settings. A SecretStr, so that it never shows in a
    # repr or a log, and is masked whenever shopfloor serializes the config (the controller, the
    # CLI, continue-as-new): through them the key reaches no history. The result warns.
    agent_api_key: SecretStr | None = Field(
        None, description="ignored: agents use the workers' keys (the result warns)"
    )
    deadline_s: float | None = Field(
        None, gt=0, description="the run ends TIMED_OUT (artifacts stored) after this long"
    )
    iterations_per_run: int = Field(
        200, ge=1, description="continue-as-new after this many iterations (history stays small)"
    )
    carried: CarriedState | None = Field(None, description="internal: state across runs")

    @field_validator("agent_config")
    @classmethod
    def _agent_config_fits_its_type(cls, value: dict[str, Any], info: ValidationInfo) -> Any:
        agent_type = info.data.get("agent_type")
        if agent_type is not None:
            try:
                agent_config_for(agent_type, value)
            except ValidationError as err:
                raise ValueError(f"{_described(err)} (agentType {agent_type})") from None
        return value

    @property
    def agent_options(self) -> AgentConfig:
        """`agentConfig`, typed by `agentType`."""
        return agent_config_for(self.agent_type, self.agent_config)


class CarriedState(_Camel):
    """What a run hands to the next one on continue-as-new."""

    state: EngineState
    iteration: int
    instructions: list[str] = Field(default_factory=list)
    paused: bool = False
    cancel_requested: bool = False
    deadline: str | None = None  # ISO time, absolute across runs
    runs: int = 1


class AddInstruction(_Camel):
    text: str = Field(min_length=1, max_length=4000)


class InstructionAdded(_Camel):
    count: int  # instructions the run now has
    applies_from_iteration: int


class CoordinatorState(_Camel):
    """The `state` query: the engine's state and where the loop is."""

    state: EngineState
    iteration: int
    max_iterations: int
    paused: bool
    cancel_requested: bool
    instructions: list[str]
    current_step: str | None = None
    runs: int = 1


class CoordinatorResult(_Camel):
    """The final state; `status` as the seed's result has it."""

    goal_id: str
    status: GoalStatus
    reason: str | None = None
    steps: list[Step]
    annotations: dict[str, Any]
    artifacts: dict[str, str]  # key → artifact:// URI
    usage: Usage
    iterations: int
    runs: int = 1
    # What the job should know about its input (an ignored agentApiKey).
    warnings: list[str] = Field(default_factory=list)


_GOAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def config_problem(config: CoordinatorConfig) -> str | None:
    """Why this config may not run (None when it is fine). Checked by the controller (422) and
    again by the workflow, which other clients may start directly."""
    if not _GOAL_ID.match(config.goal_id):
        return (
            f"goalId {config.goal_id!r} must be letters, digits, '.', '_', ':' or '-' "
            "(it names the folder of the goal's artifacts)"
        )
    return None


# How pydantic writes a SecretStr as JSON: what the history holds when shopfloor sent the config.
_MASKED = "**********"


def config_warnings(config: CoordinatorConfig) -> list[str]:
    """What the result says about the input: an `agentApiKey` was ignored, and whether the key
    itself is now in the workflow's history (a client that started the workflow directly sent
    it there; the controller and the CLI mask it before the job starts)."""
    key = config.agent_api_key
    if key is None:
        return []
    ignored = (
        "agentApiKey was ignored: agents use the keys in the workers' settings "
        "(SHOPFLOOR_ANTHROPIC_API_KEY, SHOPFLOOR_AGENT_GATEWAY_TOKEN), never one from job input."
    )
    if key.get_secret_value() == _MASKED and config.carried is not None:
        # Continued as new: this run got the config masked, whatever the first run got.
        return [
            f"{ignored} Later runs of this job hold it masked; the first run's history holds "
            "it if the client that started the workflow sent the key itself."
        ]
    if key.get_secret_value() == _MASKED:
        return [f"{ignored} It was masked before the job started: it is in no history."]
    return [
        f"{ignored} The key was sent in the job's input, so it is now in this workflow's "
        "history (visible to anyone who can read it): stop sending it, and rotate it if that "
        "history is shared."
    ]


CoordinatorConfig.model_rebuild()
