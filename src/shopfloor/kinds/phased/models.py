"""Phased job definitions (YAML or JSON) and what their steps produce.

A definition is a list of steps run in order; a `parallel` step runs its own steps together.
Later steps may use earlier results with `${steps.<id>.<path>}` references (see references.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.durations import Duration
from shopfloor.inputs import StrictInput as _Strict
from shopfloor.kinds.phased.references import check_references

STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
# The gateway's agent job ids (`poetry-research-execute`), as the gateway names them.
GATEWAY_JOB_ID = r"^[A-Za-z0-9_.:-]{1,200}$"


# Unknown fields are errors (a typo is not a default); NaN and Infinity are not numbers. (`_Strict`
# is an import alias: an assigned alias would hide the models' fields from mypy's pydantic plugin.)


class StepRetry(_Strict):
    """How a failing step is retried (Temporal's retry policy, in plain words)."""

    initial: Duration = Field(timedelta(seconds=30), description="first wait before a retry")
    maximum: Duration = Field(timedelta(minutes=5), description="longest wait between retries")
    backoff: float = Field(2.0, ge=1.0, le=100.0, description="each wait × this")
    attempts: int = Field(3, ge=1, le=100, description="attempts in all, the first included")


class _Step(_Strict):
    id: str = Field(description="unique in the definition; later steps refer to it")
    retry: StepRetry = Field(default_factory=StepRetry)
    timeout: Duration | None = Field(None, description="per attempt; default per step type")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not STEP_ID.match(v):
            raise ValueError(f"invalid step id {v!r}: letters, digits, '_', '-', max 64")
        return v


class AgentTurnStep(_Step):
    """One agent turn through the gateway (`POST {gateway}/api/cron/fire`)."""

    type: Literal["agent_turn"]
    job_id: str = Field(description="the gateway's agent job, e.g. poetry-research-execute")


class DelayStep(_Step):
    """A durable wait: survives restarts of every process; shows its wake-up time."""

    type: Literal["delay"]
    duration: Duration


class HttpStep(_Step):
    """An HTTP request from the worker; a status other than `expect_status` fails the step."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(pattern=r"^https?://", max_length=2000)
    expect_status: int | list[int] = Field(200, description="a status or a list of them")
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(None, description="sent as JSON")

    @field_validator("headers")
    @classmethod
    def _no_secrets(cls, headers: dict[str, str]) -> dict[str, str]:
        # A definition lands in workflow history: credentials must come from worker settings.
        for name in headers:
            if name.lower() in ("authorization", "cookie", "x-api-key", "proxy-authorization"):
                raise ValueError(
                    f"header {name!r} would put a secret into workflow history; "
                    "call a service that does not need one, or use an agent_turn step"
                )
        return headers

    @property
    def expected(self) -> list[int]:
        return self.expect_status if isinstance(self.expect_status, list) else [self.expect_status]


class JobStep(_Step):
    """A shopfloor job of any kind, run as a child workflow; its result is `steps.<id>.result`."""

    type: Literal["job"]
    kind: str = Field(description="a job kind name, e.g. script or simulation")
    input: dict[str, Any] = Field(default_factory=dict, description="the kind's input")


class ParallelStep(_Strict):
    """Steps run together; the group ends when all have ended (the first failure fails it)."""

    type: Literal["parallel"]
    id: str
    steps: list[Step] = Field(min_length=1, max_length=50)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _Step._id(v)


Step = Annotated[
    AgentTurnStep | DelayStep | HttpStep | JobStep | ParallelStep, Field(discriminator="type")
]
ParallelStep.model_rebuild()


class PhasedDefinition(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    description: str = ""
    steps: list[Step] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _ids_and_references(self) -> PhasedDefinition:
        check_references(self.steps)
        return self


class PhasedInput(_Strict):
    """The input of a phased job: a definition (and, when it names any, the kinds it starts)."""

    definition: PhasedDefinition


class StepOutcome(BaseModel):
    id: str
    type: str
    status: Literal["COMPLETED", "FAILED", "SKIPPED", "CANCELLED"]
    result: Any = None
    error: str | None = None
    job_id: str | None = Field(None, description="`job` steps: the child job's id")
    started_at: str | None = None
    ended_at: str | None = None


class PhasedResult(BaseModel):
    name: str
    status: Literal["COMPLETED", "FAILED"]
    steps: list[StepOutcome]
    error: str | None = None


# -- activities' inputs and outputs -------------------------------------------------------


class AgentTurnRequest(_Strict):
    job_id: str = Field(pattern=GATEWAY_JOB_ID)


class AgentTurnResult(BaseModel):
    job_id: str
    status_code: int
    text: str = Field("", description="the gateway's answer, when small")
    text_uri: str | None = Field(None, description="artifact:// URI of a large answer")
    attempt: int = 1


class HttpRequest(_Strict):
    method: str
    url: str
    expect_status: list[int]
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class HttpResponse(BaseModel):
    status_code: int
    text: str = ""
    json_body: Any = Field(None, alias="json")
    text_uri: str | None = None

    model_config = ConfigDict(populate_by_name=True)


# -- the seed's workflow ---------------------------------------------------------------------


class PoetryResearchInput(_Strict):
    """All optional: the seed starts it with no input at all."""

    wait: Duration = Field(timedelta(hours=2), description="how long research settles")
