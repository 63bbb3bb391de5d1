"""Worker-side resources for kinds that run user code (scripts, simulation scenes).

One pair of zygotes per worker process, shared by every such kind (`WorkerContext.shared`):
`cold` forks fresh interpreters, so the big, threaded worker never forks itself; `warm` has
imported the heavy libraries the served kinds name (`JobKind.warm_imports`) and forks children
that start in milliseconds.

`UserCodeRun` is what every such activity does around the user's code: a fresh job dir with
`out/` and `tmp/`, the scrubbed job environment, the limits, a warm fork or a cold interpreter,
progress as heartbeats, a cancel check, `out/` uploaded to the artifact store, clean-up.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity

from shopfloor.artifacts import ArtifactStore
from shopfloor.jobs import JOB_PROGRESS, ensure_cancel_was_requested
from shopfloor.registry import WorkerContext
from shopfloor.sandbox import (
    Call,
    Limits,
    SandboxOutcome,
    Script,
    Zygote,
    job_environment,
    release_cgroup_pool,
    run_fresh,
)


@dataclass(frozen=True)
class Zygotes:
    cold: Zygote
    warm: Zygote | None  # None when no served kind has heavy imports


def warm_environment(modules: list[str]) -> dict[str, str]:
    """Settings the warm zygote's modules read when it imports them."""
    if "mujoco" not in modules:
        return {}
    from shopfloor.kinds.simulation import gl  # light: no mujoco import

    return gl.environment(gl.worker_backend())


@asynccontextmanager
async def zygotes(ctx: WorkerContext) -> AsyncIterator[Zygotes]:
    try:
        cold = await Zygote.start([])
        try:
            warm_imports = sorted({m for kind in ctx.served for m in kind.warm_imports})
            warm = (
                await Zygote.start(warm_imports, warm_environment(warm_imports))
                if warm_imports
                else None
            )
            try:
                yield Zygotes(cold=cold, warm=warm)
            finally:
                if warm is not None:
                    await warm.close()
        finally:
            await cold.close()
    finally:
        release_cgroup_pool()  # no more jobs in this process: its cgroups go


class UserCodeRun:
    """One run of user code in its own job dir; `async with` it, inside an activity.

    `path` is the job dir (the child's cwd and HOME), `out` the directory whose files become
    the job's artifacts; all of it is removed on exit.
    """

    def __init__(
        self,
        zygotes: Zygotes,
        artifacts: ArtifactStore,
        limits: Limits,
        user_env: Mapping[str, str] | None = None,
    ) -> None:
        self.zygotes, self.artifacts, self.limits = zygotes, artifacts, limits
        self.user_env = dict(user_env or {})
        self.path = Path()

    async def __aenter__(self) -> UserCodeRun:
        self.path = Path(tempfile.mkdtemp(prefix="shopfloor-"))
        (self.path / "out").mkdir()
        (self.path / "tmp").mkdir()
        return self

    async def __aexit__(self, *_: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def out(self) -> Path:
        return self.path / "out"

    async def run(self, *, warm: Script | Call | None, cold: list[str]) -> SandboxOutcome:
        """Runs `warm` in a fork of the warm zygote when there is one and it is given, else
        the `cold` argv in a fresh interpreter that applies the memory limit itself once its
        runtime is loaded (`cold_python_argv`, `limit_address_space`). A cancelled run returns
        only if the user asked for the cancel (else the activity fails and is retried)."""
        options = {
            "cwd": self.path,
            "env": job_environment(self.path, self.user_env),
            "limits": self.limits,
            **JOB_PROGRESS,
        }
        if self.ran_warm(warm):
            assert self.zygotes.warm is not None and warm is not None
            if isinstance(warm, Script):
                outcome = await self.zygotes.warm.run_script(Path(warm.path), warm.args, **options)
            else:
                outcome = await self.zygotes.warm.run_call(warm.target, warm.arg, **options)
        else:
            outcome = await run_fresh(
                cold, cold=self.zygotes.cold, sets_own_memory_limit=True, **options
            )
        if outcome.killed_reason == "cancelled":
            ensure_cancel_was_requested()
        return outcome

    def ran_warm(self, warm: Script | Call | None) -> bool:
        """Whether `run(warm=warm, ...)` forks the warm zygote."""
        return warm is not None and self.zygotes.warm is not None

    def store_out(self) -> dict[str, str]:
        """Every file under `out/` into the artifact store: relative name → artifact URI."""
        return self.artifacts.put_tree(activity.info().workflow_id, self.out)


def cold_module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` in a fresh, isolated interpreter (the module applies the memory
    limit itself: `shopfloor.sandbox.limit_address_space`)."""
    return [sys.executable, "-E", "-s", "-m", module, *args]
