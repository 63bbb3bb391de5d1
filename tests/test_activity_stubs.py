"""Every typed activity stub (`shopfloor.contracts`) has exactly one implementation in its kind's
worker bundle, registered under the stub's name, taking the stub's argument and returning its
result type; and every activity a kind's workflows call goes through a stub."""

from __future__ import annotations

import ast
import importlib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from temporalio import activity

from shopfloor.artifacts import LocalArtifactStore
from shopfloor.contracts import ActivityStub
from shopfloor.registry import JobKind, KindWork, WorkerContext, kinds
from shopfloor.settings import Settings

KINDS_DIR = Path(__file__).parents[1] / "src" / "shopfloor" / "kinds"


class _NoSharedResources(WorkerContext):
    """A worker context whose shared resources (zygotes, pools) are stand-ins: the bundle's
    activities are only listed here, never run."""

    async def shared(self, lifespan: Any) -> Any:  # type: ignore[override]
        stand_in = mock.MagicMock()
        stand_in.close = mock.AsyncMock()
        return stand_in


def _package(kind: JobKind) -> str:
    return kind.bundle.workflows[0].partition(":")[0].rpartition(".")[0]


def _stubs(kind: JobKind) -> list[ActivityStub[Any, Any]]:
    try:
        module = importlib.import_module(_package(kind) + ".stubs")
    except ModuleNotFoundError:
        return []
    return [v for v in vars(module).values() if isinstance(v, ActivityStub)]


async def _registered(kind: JobKind, tmp_path: Path) -> list[Callable[..., Any]]:
    settings = Settings(data_dir=tmp_path)
    ctx = _NoSharedResources(
        settings=settings, artifacts=LocalArtifactStore(tmp_path / "artifacts")
    )
    async with ctx, kind.lifespan(ctx) as work:
        if not isinstance(work, KindWork):
            work = KindWork(activities=work)
        found = list(work.activities)
        for queue in work.other_queues:
            found += [a for a in queue.activities if a not in found]
        return found


BUILT_IN = [k for k in kinds().values() if k.bundle.workflows[0].startswith("shopfloor.kinds.")]


@pytest.mark.parametrize("kind", BUILT_IN, ids=lambda k: k.name)
async def test_every_stub_has_exactly_one_implementation(kind: JobKind, tmp_path: Path) -> None:
    stubs = _stubs(kind)
    registered = await _registered(kind, tmp_path)
    definitions = [activity._Definition.must_from_callable(fn) for fn in registered]
    for stub in stubs:
        impls = [d for d in definitions if d.name == stub.name]
        assert len(impls) == 1, f"{stub.name}: {len(impls)} implementations in {kind.name}"
        hints = typing.get_type_hints(impls[0].fn)
        params = [p for p in hints if p != "return"]
        assert params, f"{stub.name} takes no argument"
        assert hints[params[0]] == stub.arg, f"{stub.name} takes {hints[params[0]]}"
        assert hints["return"] == stub.result, f"{stub.name} returns {hints['return']}"


def _activity_names_called_by_string(path: Path) -> list[str]:
    """String literals passed as the activity of `workflow.execute_activity` & co."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute_activity", "start_activity", "execute_local_activity")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(node.args[0].value)
    return found


@pytest.mark.parametrize(
    "path", sorted(KINDS_DIR.glob("*/workflows.py")), ids=lambda p: p.parent.name
)
def test_workflows_call_activities_through_stubs(path: Path) -> None:
    assert _activity_names_called_by_string(path) == []


def test_stub_names_are_unique_across_kinds() -> None:
    names = [s.name for k in BUILT_IN for s in _stubs(k)]
    assert len(names) == len(set(names)), names
    assert {"run_script", "run_simulation", "run_agent_step", "agent_turn"} <= set(names)
