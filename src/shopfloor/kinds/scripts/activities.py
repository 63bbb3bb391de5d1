"""run_script: the script in a fresh job dir, sandboxed, heartbeating; `out/` → artifacts."""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio import activity

from shopfloor.artifacts import ArtifactError, Collected
from shopfloor.jobs import invalid_input
from shopfloor.kinds.scripts.kind import KIND
from shopfloor.kinds.scripts.models import InputFile, ScriptInput, ScriptResult
from shopfloor.kinds.scripts.settings import ScriptSettings
from shopfloor.kinds.scripts.stubs import RUN_SCRIPT
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.sandbox import Limits, SandboxOutcome, Script
from shopfloor.usercode import (
    Launch,
    UserCode,
    UserCodeRun,
    Zygotes,
    cold_python_argv,
    kind_work,
    refuse_over_ceilings,
    run_user_code,
    zygotes,
)

# Scripts that import these pay seconds of import time in a fresh interpreter; a warm fork
# of a process that already imported them starts in milliseconds.
_HEAVY_IMPORT = re.compile(r"^\s*(from|import)\s+(build123d|mujoco|OCP)\b", re.MULTILINE)


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    """The kind's worker-side lifespan: its activities, on the worker's shared zygotes."""
    yield await kind_work(ctx, KIND, [ScriptActivities(ctx, await ctx.shared(zygotes)).run_script])


class ScriptActivities:
    def __init__(self, ctx: WorkerContext, zygotes: Zygotes) -> None:
        self.ctx = ctx
        self.zygotes = zygotes

    def _read_uri(self, uri: str, what: str) -> bytes:
        try:
            return self.ctx.artifacts.read_bytes(uri)
        except ArtifactError as err:
            raise invalid_input(f"cannot read {what} from {uri}: {err}") from err

    def _source(self, job: ScriptInput) -> str:
        if job.source is not None:
            return job.source
        try:
            return self._read_uri(job.source_uri or "", "script").decode()
        except UnicodeDecodeError as err:
            raise invalid_input(f"script at {job.source_uri} is not UTF-8: {err}") from err

    def _file_bytes(self, f: InputFile) -> bytes:
        if f.uri is not None:
            return self._read_uri(f.uri, f"file {f.path}")
        if not f.base64:
            return f.content.encode()
        try:
            return base64.b64decode(f.content, validate=True)
        except ValueError as err:
            raise invalid_input(f"file {f.path}: invalid base64") from err

    def _prepare(self, workdir: Path, job: ScriptInput, source: str) -> None:
        (workdir / "script.py").write_text(source)
        for f in job.files:
            dest = workdir / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self._file_bytes(f))

    @activity.defn(name=RUN_SCRIPT.name)
    async def run_script(self, job: ScriptInput) -> ScriptResult:
        refuse_over_ceilings(job, self.ctx.settings)
        disallowed = job.disallowed_env(self.ctx.settings.of(ScriptSettings).env_allowlist)
        if disallowed:
            raise invalid_input(f"environment variables not allowed here: {disallowed}")
        # The store may be S3 (network): its reads and writes run off the event loop; what
        # is only a few small local writes runs on it (a thread hop costs more than they do).
        source = (
            job.source if job.source is not None else await asyncio.to_thread(self._source, job)
        )
        return await run_user_code(self.zygotes, self.ctx.artifacts, self._user_code(job, source))

    def _user_code(self, job: ScriptInput, source: str) -> UserCode[ScriptResult]:
        """The script and its files written into the job dir, then a warm fork for a script
        that imports a heavy library, a fork of the clean interpreter for another, or a fresh
        one (`warm: never`)."""

        async def prepare(run: UserCodeRun) -> None:
            if _small_and_inline(job, source):
                self._prepare(run.path, job, source)
            else:
                await asyncio.to_thread(self._prepare, run.path, job, source)

        forked = job.warm == "auto"
        return UserCode(
            limits=Limits(
                wall_timeout_s=job.timeout_s,
                memory_mb=job.memory_mb,
                max_processes=job.max_processes,
                file_size_mb=job.file_size_mb,
                disk_mb=job.disk_mb,
            ),
            env=job.env,
            network=job.network,
            prepare=prepare,
            launch=functools.partial(
                _launch, job, forked=forked, heavy=forked and bool(_HEAVY_IMPORT.search(source))
            ),
            collect=_collect,
        )


def _launch(job: ScriptInput, run: UserCodeRun, *, forked: bool, heavy: bool) -> Launch:
    return Launch(
        warm=Script(path=str(run.path / "script.py"), args=job.args) if heavy else None,
        # Other scripts fork from the cold zygote's clean interpreter: the same Python,
        # without ~15 ms of CPU for an interpreter start per job.
        plain=Script(path="script.py", args=job.args) if forked and not heavy else None,
        cold=cold_python_argv("script.py", job.args),
    )


async def _collect(run: UserCodeRun, outcome: SandboxOutcome) -> ScriptResult:
    collected = await run.collect(outcome)
    return _result(outcome, collected, attempt=await run.run_number(), warm=run.ran_warm)


SMALL_INPUT = 256 * 1024  # bytes of script and inline files written on the event loop


def _small_and_inline(job: ScriptInput, source: str) -> bool:
    return all(f.uri is None for f in job.files) and (
        len(source) + sum(len(f.content) for f in job.files) <= SMALL_INPUT
    )


def _result(
    outcome: SandboxOutcome, collected: Collected, *, attempt: int, warm: bool
) -> ScriptResult:
    return ScriptResult(
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        timed_out=outcome.timed_out,
        killed_reason=outcome.killed_reason,
        stdout_tail=outcome.stdout,
        stderr_tail=outcome.stderr,
        stdout_bytes=outcome.stdout_bytes,
        stderr_bytes=outcome.stderr_bytes,
        duration_s=outcome.duration_s,
        artifacts=collected.uris,
        refused_artifacts=collected.refused_list(),
        attempt=attempt,
        warm=warm,
        warnings=outcome.warnings,
    )
