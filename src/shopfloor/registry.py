"""The one registry of job kinds. The worker, the controller's routes and the CLI derive from it.

A new kind is one sub-package under `shopfloor.kinds` whose `kind.py` defines a `KIND`
descriptor, plus one line in `_KIND_MODULES` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from shopfloor.artifacts import ArtifactStore
    from shopfloor.sandbox.zygote import Zygote
    from shopfloor.settings import Settings


class InputRejected(ValueError):
    """Input that is well-formed but not allowed by this deployment's policy (→ HTTP 422)."""


@dataclass(frozen=True)
class WorkerContext:
    """What activities get from the worker process: settings, the artifact store, a launcher
    zygote that starts fresh interpreters, and — when a served kind has heavy imports — a
    warm zygote to fork user code from."""

    settings: Settings
    artifacts: ArtifactStore
    zygote: Zygote | None = None
    launcher: Zygote | None = None


@dataclass(frozen=True, kw_only=True)
class JobKind:
    name: str  # URL and CLI name: POST /jobs/<name>, `shopfloor submit <name> FILE`
    summary: str
    task_queue: str
    workflow: type  # the job's entry workflow; its type name is what any client starts
    input_model: type[BaseModel]
    result_model: type[BaseModel]
    # Built per worker process so activities can hold settings, stores and warm pools.
    make_activities: Callable[[WorkerContext], Sequence[Callable[..., Any]]]
    extra_workflows: Sequence[type] = ()
    # `shopfloor submit <kind> FILE`: builds the input from a file plus CLI options.
    input_from_file: Callable[[Path, dict[str, Any]], BaseModel] | None = None
    # Deployment policy the model alone cannot know (e.g. the env allow-list). Raises InputRejected.
    check_input: Callable[[BaseModel, Settings], None] | None = None
    # Heavy modules a warm worker imports once at start-up (e.g. build123d, mujoco).
    warm_imports: Sequence[str] = field(default_factory=tuple)
    # Other names the CLI accepts (`shopfloor submit simulate …`).
    aliases: Sequence[str] = ()

    @cached_property
    def workflow_type(self) -> str:
        from temporalio.workflow import _Definition

        return _Definition.must_from_class(self.workflow).name


_KIND_MODULES = (
    "shopfloor.kinds.scripts.kind",
    "shopfloor.kinds.simulation.kind",
)


@cache
def kinds() -> dict[str, JobKind]:
    found: dict[str, JobKind] = {}
    for module_name in _KIND_MODULES:
        kind: JobKind = importlib.import_module(module_name).KIND
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
        if kind.workflow_type == workflow_type:
            return kind
    return None


def queue_for(kind: JobKind, settings: Settings) -> str:
    return settings.task_queue_prefix + kind.task_queue
