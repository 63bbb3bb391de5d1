"""Pipeline definitions, the workflow's input and answers, and what its activities exchange.

Light (pydantic only): the registry, the controller and the CLI import it; workflows too.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from shopfloor.inputs import StrictInput as _Strict

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Error types of a docker service's start that no retry fixes soon (the message says what to
# do): the activity fails at once, and the workflow knows its start created nothing.
DOCKER_ENGINE_UNAVAILABLE = "DockerEngineUnavailable"
IMAGE_UNAVAILABLE = "ImageUnavailable"


# Unknown fields are errors (a typo is not a default); NaN and Infinity are not numbers. (`_Strict`
# is an import alias: an assigned alias would hide the models' fields from mypy's pydantic plugin.)


# -- the definition (YAML) -------------------------------------------------------------------


class HealthCheck(_Strict):
    """How to tell that a service is up: exactly one of `http`, `tcp` or `command`."""

    http: str | None = Field(None, description="URL that must answer `expect_status`")
    expect_status: int = Field(200, ge=100, le=599)
    tcp: str | None = Field(None, description='"host:port" that must accept a connection')
    command: list[str] | None = Field(None, description="argv that must exit 0")
    interval_s: float = Field(1.0, gt=0, le=3600, description="between checks while starting")
    timeout_s: float = Field(2.0, gt=0, le=300, description="for one check")
    start_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="a start that is not healthy by then has failed"
    )
    failures_before_restart: int = Field(
        2, ge=1, le=100, description="consecutive failed checks of a running service"
    )

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("tcp")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError('must be "host:port"')
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        given = [k for k in ("http", "tcp", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of http, tcp, command (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http else "tcp" if self.tcp else "command"


class ServiceSpec(_Strict):
    """One service: a container `image` (docker runtime) or a local `command` (process)."""

    name: str = Field(pattern=NAME_PATTERN)
    image: str | None = Field(None, description="container image: the docker runtime")
    command: list[str] | None = Field(None, description="argv (or one shell-like string)")
    cwd: str | None = Field(None, description="process runtime: working directory")
    env: dict[str, str] = Field(default_factory=dict)
    ports: dict[str, int] = Field(
        default_factory=dict, description='docker: {"3100/tcp": 3100} container → host port'
    )
    volumes: dict[str, str] = Field(
        default_factory=dict, description="docker: host path → container path"
    )
    network: str | None = Field(
        None,
        description="docker: the container's network: \"host\" (the host's own, ports and all), "
        "\"none\", or a network's name; default the engine's (its bridge)",
    )
    depends_on: list[str] = Field(default_factory=list)
    health: HealthCheck | None = Field(
        None, description="none: running is healthy (docker: the image's own HEALTHCHECK)"
    )
    stop_timeout_s: float = Field(10.0, gt=0, le=600, description="SIGTERM → SIGKILL after")

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_runtime(self) -> ServiceSpec:
        if self.image is None:
            if not self.command:
                raise ValueError("give an `image` (docker) or a `command` (local process)")
            if self.ports or self.volumes:
                raise ValueError("`ports` and `volumes` are for `image` services")
            if self.network:
                raise ValueError("`network` is for `image` services")
        elif self.cwd is not None:
            raise ValueError("`cwd` is for local `command` services")
        elif self.ports and self.network in ("host", "none"):
            # The engine would drop them with only a warning in its own log.
            raise ValueError(
                f"`ports` are not published with network {self.network!r}"
                + (": the container listens on the host's ports" if self.network == "host" else "")
            )
        return self

    @property
    def runtime(self) -> Literal["process", "docker"]:
        return "docker" if self.image else "process"


def start_timeout_s(spec: ServiceSpec) -> float:
    """How long a start may take to become healthy (the check's own, else a minute)."""
    return spec.health.start_timeout_s if spec.health else 60.0


class RestartPolicy(_Strict):
    backoff_initial_s: float = Field(1.0, gt=0, le=3600)
    backoff_max_s: float = Field(60.0, gt=0, le=86400)

    def delay_s(self, failed_restarts: int) -> float:
        """Wait before the next restart after `failed_restarts` restarts in a row that failed."""
        factor: int = 2 ** max(failed_restarts - 1, 0)
        return min(self.backoff_initial_s * factor, self.backoff_max_s)


class PipelineDefinition(_Strict):
    """A pipeline: services started in dependency order, each gated on its health check,
    supervised, and stopped in reverse order. Seed 004's `WorkflowConfig` is this plus
    settings: its task queue defaults to `<name>-queue`."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    workflow: Literal["PipelineWorkflow", "LogsPipelineWorkflow"] = "PipelineWorkflow"
    task_queue: str | None = Field(None, description="default: <name>-queue")
    host: str | None = Field(
        None, description="pin to this host's worker (default: the worker that picks it up)"
    )
    supervise_every_s: float = Field(5.0, gt=0, le=3600, description="health loop period")
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    services: list[ServiceSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _a_dag(self) -> PipelineDefinition:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"services: names must be unique, repeated: {dupes}")
        for s in self.services:
            unknown = [d for d in s.depends_on if d not in names]
            if unknown:
                raise ValueError(f"services.{s.name}.depends_on: unknown services {unknown}")
            if s.name in s.depends_on:
                raise ValueError(f"services.{s.name}.depends_on: a service cannot need itself")
        cycle = _find_cycle({s.name: s.depends_on for s in self.services})
        if cycle:
            raise ValueError(
                f"services.{cycle[0]}.depends_on: dependency cycle {' → '.join(cycle)}"
            )
        return self

    @property
    def queue(self) -> str:
        return self.task_queue or f"{self.name}-queue"

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    def start_order(self) -> list[str]:
        """Topological order; among services that are ready together, the order written."""
        done: list[str] = []
        left = list(self.services)
        while left:
            ready = [s for s in left if all(d in done for d in s.depends_on)]
            done += [s.name for s in ready]
            left = [s for s in left if s not in ready]
        return done


def _find_cycle(needs: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as [a, b, …, a], or None (depth-first, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in needs[name]:
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in needs:
        if name not in state and (found := visit(name)):
            return found
    return None


# -- the workflow: input, state, answers ------------------------------------------------------

ServiceState = Literal[
    "pending", "starting", "healthy", "unhealthy", "dead", "restarting", "stopping", "stopped",
    "failed",
]  # fmt: skip
Phase = Literal["starting", "running", "stopping", "stopped", "failed"]


class ServiceStatus(BaseModel):
    name: str
    runtime: Literal["process", "docker"]
    state: ServiceState = "pending"
    pid: int | None = None
    container_id: str | None = None
    health: str = Field("unknown", description='"ok" or the last health error')
    restarts: int = 0
    since: datetime | None = Field(None, description="when it entered `state`")
    failed_checks: int = Field(0, description="consecutive failed checks")
    failed_restarts: int = Field(0, description="restarts in a row that did not get healthy")
    next_restart_at: datetime | None = None
    leftovers_stopped: list[str] = Field(
        default_factory=list,
        description="what earlier runs of this pipeline left running (a terminated run, a "
        "crashed host) that its start or stop found by the pipeline's marker and stopped",
    )


class PipelineStatus(BaseModel):
    name: str
    phase: Phase
    host_queue: str | None = None
    services: list[ServiceStatus]
    error: str | None = None


class PipelineInput(_Strict):
    definition: PipelineDefinition
    # Set by continue-as-new (the pipeline's state so far); callers leave them unset.
    host_queue: str | None = None
    run_token: str | None = None
    carried: list[ServiceStatus] | None = None
    stop_requested: bool = False


class StoppedService(BaseModel):
    name: str
    was_running: bool
    stopped_at: datetime


class PipelineResult(BaseModel):
    name: str
    phase: Phase
    services: list[ServiceStatus]
    stopped: list[StoppedService] = Field(description="in the order they were stopped")


class RestartService(_Strict):
    service: str = Field(pattern=NAME_PATTERN)


class ServiceRestarted(BaseModel):
    service: str
    healthy: bool
    restarts: int
    pid: int | None = None
    container_id: str | None = None
    health: str


# -- between the workflow and its host activities ---------------------------------------------


class ServiceRef(_Strict):
    """Which service of which pipeline run: what a runtime identifies its process or container
    by, so that a retried start finds the running one instead of starting a second."""

    pipeline: str
    run_token: str
    service: ServiceSpec


class ServiceHandle(BaseModel):
    pid: int | None = None
    container_id: str | None = None
    adopted: bool = Field(False, description="it was already running: nothing was started")
    leftovers: list[str] = Field(
        default_factory=list,
        description="processes of earlier runs of this pipeline stopped before the start",
    )


class Probe(BaseModel):
    alive: bool
    healthy: bool
    error: str | None = None
    pid: int | None = None
    container_id: str | None = None
    log_tail: str = ""
    stranger: str | None = Field(
        None,
        description="who else answers the service's health-check port (pid and command): "
        "its check cannot count, and a start fails at once",
    )


class ProbeRequest(_Strict):
    refs: list[ServiceRef]


class StopReport(BaseModel):
    was_running: bool
    leftovers: list[str] = Field(
        default_factory=list, description="processes of earlier runs of this pipeline stopped"
    )
