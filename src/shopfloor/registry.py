"""The one registry of job kinds. The worker, the controller's routes and the CLI derive from it.

A new kind is one sub-package under `shopfloor.kinds` whose `kind.py` defines a `KIND`
descriptor, plus one line in `_KIND_MODULES` below (or, for kinds that live outside this
package, a module name in `SHOPFLOOR_KIND_MODULES`). A kind owns all of itself through three
facets the shared code only calls (docs/architecture.md):

- the contract: the `JobKind` fields themselves (name, queue, workflow types, input and result
  models, signals, queries, updates), what any client relies on;
- the worker bundle (`WorkerBundle`): its workflows and the run context that yields its
  activities and extra queues, the shape of temporalio's `SimplePlugin`;
- the presentation (`Presentation`): its dashboard page, live query, large-input offload,
  kill reason, CLI options, commands and routes, and its own settings model.

Descriptors are light on purpose: the controller and every CLI call import them. They name
their workflows and worker-side code by import path ("module:attribute"), so importing the
registry never imports activities, the sandbox or anything a worker alone needs.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from shopfloor.progress import WorkflowProgress

if TYPE_CHECKING:
    from shopfloor.artifacts import ArtifactStore
    from shopfloor.settings import Settings

T = TypeVar("T")

# Activities as the SDK's Worker takes them: functions (or bound methods) of any signature.
Activities = Sequence[Callable[..., Any]]

# The standard query any workflow may offer (see `shopfloor.jobs.ReportsProgress`): where the
# job is when no activity is heartbeating — asleep on a timer, waiting for a signal, in a child.
PROGRESS_QUERY = "progress"


class InputRejected(ValueError):
    """Input that is well-formed but not allowed by this deployment's policy (→ HTTP 422)."""


# -- how a kind is steered and watched ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Signal:
    """A fire-and-forget message to a running job. `model` is its body (None: no body)."""

    name: str
    model: type[BaseModel] | None = None
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Query:
    """A read-only look into a running job; `result` is what it answers."""

    name: str
    result: type[BaseModel]
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Update:
    """A change the job validates and acknowledges with `result` (or rejects with a reason)."""

    name: str
    model: type[BaseModel] | None = None
    result: type[BaseModel]
    description: str = ""


PROGRESS = Query(
    name=PROGRESS_QUERY,
    result=WorkflowProgress,
    description="where the job is: its step, and when a durable timer wakes it",
)


# -- the worker bundle ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WorkerBundle:
    """What a worker runs for a kind, as temporalio's `SimplePlugin` holds it (workflows, and a
    run context around the worker that provides the activities), named by "module:attribute"
    so that the registry imports none of it."""

    # "module:Class" of every workflow the kind's workers run (the entry one first).
    workflows: Sequence[str]
    # "module:function": the kind's worker-side lifespan. Called with the WorkerContext, it is
    # an async context manager that yields the kind's activities (or a KindWork: activities
    # plus work on other queues) and holds whatever they need (an HTTP client pool, a Docker
    # client, a warm zygote) until the worker stops.
    run_context: str
    # "module:Class" made with the worker's prometheus-client registry: its `observe(
    # activity_type, args, result, error)` sees every activity this worker process runs and
    # counts what is the kind's (pipeline services' health, agent calls).
    observer: str | None = None

    def load_workflows(self) -> list[type]:
        return [takes_any_input(load(path)) for path in self.workflows]

    def lifespan(self, ctx: WorkerContext) -> AbstractAsyncContextManager[Activities | KindWork]:
        run_context: RunContext = load(self.run_context)
        return run_context(ctx)


# -- the presentation -------------------------------------------------------------------------

# Stores bytes under a file name, answers their artifact:// URI (`ArtifactStore.put_upload`).
PutUpload = Callable[[str, bytes], str]


@dataclass(frozen=True, kw_only=True)
class CliOption:
    """A repeatable option of `shopfloor submit` that only this kind reads (`--env NAME=VALUE`):
    `apply` folds the values given into the input fields built from the file."""

    flag: str  # the option without dashes: `env` → `--env`
    help: str
    apply: Callable[[list[str], dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Presentation:
    """How the shared controller, dashboard, CLI and metrics show and treat this kind's jobs.
    Every part is optional: a kind without one gets the generic behaviour."""

    # The dashboard's page of one job: a Jinja template in the kind's folder, rendered inside
    # the job page with `view` (dashboard.views.JobView), `job_id` and `csrf`…
    page: Path | None = None
    # …plus what "module:function"(view, settings) -> dict adds (a timeline, log tails).
    page_context: str | None = None
    # The query a running job answers for its page (under `view.live[<name>]`).
    live_query: str | None = None
    # The page shows the job's input (read from the first event of its history).
    page_input: bool = False
    # Kinds whose page has its own stop or cancel button hide the generic "Cancel job".
    cancel_button: bool = True
    # Moves large inline fields of the input (as JSON data) to the artifact store when the
    # input is over the limit; returns whether it changed anything (shopfloor.offload).
    offload: Callable[[dict[str, Any], PutUpload, int], bool] | None = None
    # Why the sandbox killed the run, read from an activity's result (as JSON), for
    # `shopfloor_sandbox_kills{reason}`.
    kill_reason: Callable[[dict[str, Any]], str | None] | None = None
    cli_options: Sequence[CliOption] = ()
    # Commands and routes of the kind's own, beyond submit/status/signal/…, by "module:attr":
    # a typer.Typer added as `shopfloor <cli_name> …`, and a FastAPI APIRouter the controller
    # includes. Keep those modules light: every CLI call imports the CLI one.
    cli: str | None = None
    cli_name: str | None = None  # default: the kind's name
    routes: str | None = None
    # The kind's own settings: a BaseSettings with its own env_prefix, read through
    # `Settings.of(model)`.
    settings: type[BaseSettings] | None = None


# -- the kind --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobKind:
    name: str  # URL and CLI name: POST /jobs/<name>, `shopfloor submit <name> FILE`
    summary: str
    task_queue: str  # fixed by the seeds for kinds other clients start: part of the contract
    workflow_type: str  # the entry workflow's type name: what any client starts
    # Other workflow types of the kind that clients start directly (seed names such as
    # `helloWorkflow`): jobs of these types are this kind's jobs too (status, steering, list).
    other_workflow_types: Sequence[str] = ()
    input_model: type[BaseModel]
    result_model: type[BaseModel]
    signals: Sequence[Signal] = ()
    queries: Sequence[Query] = ()
    updates: Sequence[Update] = ()
    # Activity slots of this kind's task queue in one worker process (None: the settings'
    # default). Kinds sharing a queue share its slots: the largest of their values counts.
    max_concurrent_activities: int | None = None
    # `shopfloor submit <kind> FILE`: builds the input from a file plus CLI options.
    input_from_file: Callable[[Path, dict[str, Any]], BaseModel] | None = None
    # Deployment policy the model alone cannot know (e.g. the env allow-list). Raises InputRejected.
    check_input: Callable[[Any, Settings], None] | None = None
    # Its workflow's `jobs.run_job_activity` runs the activity local-first, the one place that
    # says so; its worker bundle then adds a task queue of this worker process's own, where
    # long runs are handed over (`usercode.kind_work`).
    local_first: bool = False
    # Heavy modules a warm worker imports once at start-up (e.g. build123d, mujoco), in order;
    # `module:function` also calls a warm-up whose state forks inherit (a GL context).
    warm_imports: Sequence[str] = field(default_factory=tuple)
    # "module:function" (light: called in the worker) returning the environment the warm
    # imports read when the zygote imports them (the GL backend a warm-up binds).
    warm_environment: str | None = None
    # Other names the CLI accepts (`shopfloor submit simulate …`).
    aliases: Sequence[str] = ()
    # The kind's decision on its result (as JSON): "passed", "failed", "timed_out" or
    # "cancelled" (shopfloor.outcome, docs/outcomes.md). A script that exited 1 or a
    # simulation with a FAIL verdict did not pass: the job then ends FAILED, carrying the
    # result, and its `ShopfloorOutcome` search attribute says which. None: always passed.
    outcome: Callable[[dict[str, Any]], str] | None = None
    bundle: WorkerBundle
    presentation: Presentation = Presentation()

    def signal(self, name: str) -> Signal | None:
        return next((s for s in self.signals if s.name == name), None)

    def query(self, name: str) -> Query | None:
        return next((q for q in self.queries if q.name == name), None)

    def update(self, name: str) -> Update | None:
        return next((u for u in self.updates if u.name == name), None)

    def passed(self, result: dict[str, Any]) -> bool:
        """Whether a result (as JSON) counts as passed, by the kind's own decision."""
        return self.outcome is None or self.outcome(result) == "passed"

    @property
    def reports_progress(self) -> bool:
        return self.query(PROGRESS_QUERY) is not None

    def load_workflows(self) -> list[type]:
        return self.bundle.load_workflows()

    def lifespan(self, ctx: WorkerContext) -> AbstractAsyncContextManager[Activities | KindWork]:
        return self.bundle.lifespan(ctx)


def takes_any_input(cls: type) -> type:
    """A workflow class whose `@workflow.run` takes the raw payload with a default (`raw: Any =
    None`) and decodes it itself (`jobs.job_input`). Any client can start any workflow type
    with no input, `null` or `[]`: a run that requires an argument fails its first workflow
    task for ever (`missing 1 required positional argument`, the job RUNNING for ever) instead
    of failing the job at once naming what is missing. The worker refuses such a class."""
    import inspect

    # `@workflow.run` marks its method so (the SDK's own way of finding it on a class).
    runs = [
        member
        for klass in cls.__mro__
        for member in vars(klass).values()
        if callable(member) and getattr(member, "__temporal_workflow_run", False)
    ]
    if not runs:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no @workflow.run method")
    params = list(inspect.signature(runs[0]).parameters.values())[1:]
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    if required:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__}.run requires {', '.join(required)}: take the "
            "raw input with a default (`async def run(self, raw: Any = None)`) and decode it "
            "with shopfloor.jobs.job_input, so a job started with no input fails naming the field"
        )
    return cls


def load(path: str) -> Any:
    """The object a "module:attribute" path names (imported on first use)."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        raise ValueError(f"expected 'module:attribute', got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)


# -- what a worker process gives its kinds --------------------------------------------------


@dataclass(kw_only=True)
class WorkerContext:
    """What every kind's lifespan gets in one worker process: settings, the artifact store, the
    kinds this process serves, and `shared()` for resources several kinds use (one warm zygote
    for scripts and simulations, not one each)."""

    settings: Settings
    artifacts: ArtifactStore
    served: Sequence[JobKind] = ()
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _shared: dict[Callable[[WorkerContext], AbstractAsyncContextManager[Any]], Any] = field(
        default_factory=dict
    )

    async def shared(
        self, lifespan: Callable[[WorkerContext], AbstractAsyncContextManager[T]]
    ) -> T:
        """The one instance of `lifespan`'s resource in this worker process, entered on first
        use and closed when the worker stops."""
        if lifespan not in self._shared:
            self._shared[lifespan] = await self._stack.enter_async_context(lifespan(self))
        resource: T = self._shared[lifespan]  # what `lifespan` entered: its T
        return resource

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._shared.clear()

    async def __aenter__(self) -> WorkerContext:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


@dataclass(frozen=True, kw_only=True)
class QueueWork:
    """Work a kind runs on a task queue other than its own: a queue per host for activities
    that must run where a service lives, a queue per pipeline. The task-queue prefix of the
    settings is added to `task_queue`, as to every queue."""

    task_queue: str
    workflows: Sequence[type] = ()
    activities: Activities = ()
    # A queue this worker process polls beside the kind's own (the hand-off queue of user
    # code): activities only, counted in the own queue's metrics, with `slots_factor` times
    # its activity slots.
    beside_own_queue: bool = False
    slots_factor: int = 1


@dataclass(frozen=True, kw_only=True)
class KindWork:
    """What a kind's lifespan yields when it has more than activities on its own queue."""

    activities: Activities = ()
    other_queues: Sequence[QueueWork] = ()


# What a kind's `run_context` lifespan is, as an async generator under @asynccontextmanager: it
# yields its activities (on the kind's queue), or a KindWork.
ActivitiesIterator = AsyncIterator[Activities | KindWork]
# A kind's `run_context`, as `WorkerBundle.run_context` names it.
RunContext = Callable[[WorkerContext], AbstractAsyncContextManager[Activities | KindWork]]


# -- the registry -------------------------------------------------------------------------------

_KIND_MODULES = (
    "shopfloor.kinds.scripts.kind",
    "shopfloor.kinds.simulation.kind",
    "shopfloor.kinds.phased.kind",
    "shopfloor.kinds.poetry_research.kind",
    "shopfloor.kinds.agents.kind",
    "shopfloor.kinds.pipeline.kind",
)


@cache
def kinds() -> dict[str, JobKind]:
    from shopfloor.settings import get_settings

    found: dict[str, JobKind] = {}
    for module_name in (*_KIND_MODULES, *get_settings().kind_modules):
        kind: JobKind = importlib.import_module(module_name).KIND
        if kind.name in found:
            raise ValueError(f"two job kinds are named {kind.name!r} ({module_name})")
        found[kind.name] = kind
    return found


def kind_named(name: str) -> JobKind | None:
    """A kind by its name or one of its aliases."""
    for kind in kinds().values():
        if name == kind.name or name in kind.aliases:
            return kind
    return None


def kind_for_workflow_type(workflow_type: str) -> JobKind | None:
    for kind in kinds().values():
        if workflow_type == kind.workflow_type or workflow_type in kind.other_workflow_types:
            return kind
    return None


def queue_for(kind: JobKind, settings: Settings) -> str:
    return settings.task_queue_prefix + kind.task_queue


def kind_slots(kind: JobKind, settings: Settings) -> int:
    """What a kind runs at once in one worker process: the settings' value for it, else its
    own, else the settings' default."""
    return (
        settings.worker_concurrency.get(kind.name)
        or kind.max_concurrent_activities
        or settings.worker_max_concurrent_activities
    )
