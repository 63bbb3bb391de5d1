"""One run of user code, end to end: `run_user_code` is the single entry a kind calls.

The kind says what its run is (`UserCode`): how to `prepare` the fresh job dir, what to
`launch` in it, how to `collect` its outcome into the kind's result. This module does the
rest in order, so no kind can forget a step: a uid of its own from the pool, a fresh 0700 job
dir with `out/` and `tmp/`, a run slot, the scrubbed job environment, the limits, a warm
fork or a cold interpreter, progress as heartbeats, a cancel check, the hand-off of a long
local run, adoption by a later attempt, keeping the result for one, and clean-up however the
run ends.

A run outlives an attempt that Temporal lost (a server away longer than the heartbeat
timeout): it is kept on this worker for `adoption_window_s`, and the next attempt of the same
activity that arrives here adopts it (`Runs`) instead of starting the user's code again.

Local-first (`JobKind.local_first`): in a local activity, a run still going after
`handoff_after_s` is kept the same way, under the job's hand-off key, and the attempt fails
with HANDED_OFF naming `handoff_queue(...)`, a queue only this worker process polls; the
activity there adopts the run and heartbeats. Should the local attempt's result be lost with
its workflow task (a server away), the task's retry on this worker adopts the run or its
result the same way. Who has the run at each step is its `Handoff` state (`_handoff`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from shopfloor.artifacts import ArtifactStore, Collected
from shopfloor.jobs import HANDED_OFF, PROGRESS_EVERY_S, ensure_cancel_was_requested, invalid_input
from shopfloor.observability.tracing import span
from shopfloor.sandbox import (
    MB,
    Call,
    LaunchOptions,
    Limits,
    Progress,
    SandboxOutcome,
    Script,
    give_to,
    job_environment,
    run_fresh,
)
from shopfloor.sandbox._limits import Network
from shopfloor.usercode._attempt import (
    Attempt,
    attempt_lost,
    collecting_heartbeat,
    heartbeat_here,
    lost_workflow_tasks,
    this_attempt,
)
from shopfloor.usercode._handoff import ANY_ATTEMPT, handoff_queue
from shopfloor.usercode._runs import Execution, Runs
from shopfloor.usercode._zygotes import Zygotes

log = logging.getLogger("shopfloor.sandbox")
R = TypeVar("R")
# What runs after a run's program, inside the run (`Launch.then`): given the program's
# outcome and where progress goes, it returns the run's outcome.
Then = Callable[[SandboxOutcome, Callable[[Progress], None]], Awaitable[SandboxOutcome]]


@dataclass(frozen=True, kw_only=True)
class Launch:
    """What a run starts: `warm` in a fork of the warm zygote when there is one and it is
    given; else `plain` in a fork of the cold zygote (a clean interpreter, nothing heavy
    imported: no interpreter start-up to pay); else the `cold` argv in a fresh interpreter
    (`cold_python_argv`: RLIMIT_AS counted from a fresh interpreter's size; a `-m` runner
    applies the memory limit itself once its runtime is loaded, `limit_address_space`).
    `then`, when given, is awaited once the program has ended (its whole tree gone) with its
    outcome and the run's progress callback: what it returns is the run's outcome, and a
    hand-over, an adoption or a cancel covers it as it covers the program (a cancel may reach
    it between processes: it then returns an outcome killed for "cancelled")."""

    cold: list[str]
    warm: Script | Call | None = None
    plain: Script | None = None
    then: Then | None = None


@dataclass(frozen=True, kw_only=True)
class UserCode(Generic[R]):
    """A kind's run of user code, for `run_user_code`."""

    limits: Limits
    # Writes the run's inputs into its fresh job dir (`run.path`). Not called for a run this
    # attempt took over: its dir is prepared and its code started already.
    prepare: Callable[[UserCodeRun], Awaitable[None]]
    launch: Callable[[UserCodeRun], Launch]
    # The kind's result from the run's outcome (`run.collect` stores its out/).
    collect: Callable[[UserCodeRun, SandboxOutcome], Awaitable[R]]
    env: Mapping[str, str] = field(default_factory=dict)
    network: Network = "none"


async def run_user_code(zygotes: Zygotes, artifacts: ArtifactStore, code: UserCode[R]) -> R:
    """Prepares, launches and collects one run of user code inside an activity (see the
    module's docstring). An earlier attempt's result kept on this worker (Temporal lost it)
    is returned as it is, and nothing runs."""
    run = UserCodeRun(zygotes, artifacts, code.limits, code.env, network=code.network)
    await run._enter()
    try:
        # An earlier attempt's `code.collect` made it (kept untyped by `Runs.results`).
        earlier: R | None = run._earlier_result
        if earlier is not None:
            return earlier
        if not run._execution.started:
            await code.prepare(run)
        outcome = await run._wait(code.launch(run))
        return run._keep(await code.collect(run, outcome))
    finally:
        await run._exit()


class UserCodeRun:
    """One attempt's part in a run of user code in its own job dir (`run_user_code` drives it;
    kinds get it in their `UserCode` callbacks).

    `path` is the job dir (the child's cwd and HOME), `out` the directory whose files become
    the job's artifacts; all of it is removed on exit, however the run ended. With an own
    uid, the dir is the run's (0700) and inputs written into it before the launch are handed
    over."""

    def __init__(
        self,
        zygotes: Zygotes,
        artifacts: ArtifactStore,
        limits: Limits,
        user_env: Mapping[str, str] | None = None,
        *,
        network: Network = "none",
    ) -> None:
        self.zygotes, self.artifacts = zygotes, artifacts
        self.user_env = dict(user_env or {})
        self.network = network
        self.contain = zygotes.contain
        if self.contain is not None:
            # The activity refused a job over the ceiling (`refuse_over_ceilings`); the cap
            # holds for any caller.
            disk = min(limits.disk_mb or self.contain.disk_mb, self.contain.max_disk_mb)
            limits = replace(limits, disk_mb=disk)
        self.limits = limits
        self.path = Path()
        self._earlier_result: Any = None
        self._this: Attempt | None = this_attempt()
        self._number = self._this.number if self._this is not None else 0
        self._runs: Runs | None = zygotes.runs if self._this is not None else None
        self._exec: Execution | None = None

    @property
    def _execution(self) -> Execution:
        if self._exec is None:
            raise RuntimeError("an earlier attempt's result is there: return it, run nothing")
        return self._exec

    async def run_number(self) -> int:
        """Which run of the job's user code this result is from, counting every run of it:
        this activity's earlier attempts, and a local attempt's runs lost with its worker
        (`lost_workflow_tasks`). A run this attempt took over keeps the number it started
        with (a hand-over is no new run); a lost attempt's run adopted by a retry counts the
        retry, as Temporal does. (Runs before a hand-off whose worker was then lost are the
        workflow's to add: `jobs.run_job_activity`'s `restarted`.)"""
        return max(self._number, await self._execution.run_number())

    @property
    def out(self) -> Path:
        return self.path / "out"

    @property
    def _local(self) -> bool:
        return self._this is not None and self._this.local

    # -- entering: a run taken over, an earlier result, or a fresh run ------------------------

    async def _enter(self) -> None:
        runs, this = self._runs, self._this
        if runs is not None and this is not None:
            if self._take_over(runs, this):
                return
            self._earlier_result = runs.results.claim(this.key, this.number)
            if self._earlier_result is not None:
                # Kept on, should this attempt's completion be lost too.
                runs.results.hold(this.key, this.result_owner, self._earlier_result, detached=True)
                log.warning(
                    "attempt %d of %s returns the result of an earlier attempt's run on this "
                    "worker (Temporal did not get it)",
                    this.number,
                    this.key,
                )
                return
        if self._local and not self._can_hand_off():
            raise self._handed_off("the worker keeps no runs for adoption")
        give_back = await self._take_slot()
        try:
            self._exec = await self._new_execution()
        except BaseException:
            give_back()
            raise
        self._exec.give_back_slot = give_back
        self.path = self._exec.path
        if self._local:  # asked while the run goes on: it costs the run no time
            self._exec.lost_before = asyncio.create_task(lost_workflow_tasks())

    def _take_over(self, runs: Runs, this: Attempt) -> bool:
        """Adopts the run an earlier attempt of this activity left or still has here, or
        (an activity) the one a local attempt of this job handed over."""
        earlier = runs.executions.claim(this.key, this.number)
        handed_over = earlier is None and not this.local
        if handed_over:
            earlier = runs.executions.claim(this.handoff_key, this.number)
            if earlier is not None:  # kept under this attempt's own key from now on
                runs.executions.release(this.handoff_key, this.number, earlier)
                runs.executions.hold(this.key, this.number, earlier)
        if earlier is None:
            return False
        previous = earlier.custody.adopt(this.number, local=this.local)
        if handed_over:  # the normal course of a run longer than the local budget
            log.debug("attempt %d of %s takes over its local run", this.number, this.key)
        else:
            log.warning(
                "attempt %d of %s adopts the run an earlier attempt (%s) started on this worker",
                this.number,
                this.key,
                previous if previous is not None else "lost",
            )
        stale = earlier.unwatched()
        if stale is not None and not stale.done():
            stale.cancel()  # the earlier attempt stops waiting: this one owns the run now
        self._exec, self.path = earlier, earlier.path
        return True

    async def _take_slot(self) -> Callable[[], None]:
        slots, this = self.zygotes.slots, self._this
        if slots is None or this is None:
            return lambda: None
        # A local attempt cannot heartbeat; an activity says what it waits for.
        waiting = {"waiting": "for a free run slot on this worker"}
        return await slots.take(
            this.task_queue,
            while_waiting=(lambda: None) if this.local else lambda: activity.heartbeat(waiting),
        )

    def _can_hand_off(self) -> bool:
        runs = self._runs
        return runs is not None and runs.executions.enabled and self.zygotes.handoff_after_s > 0

    async def _new_execution(self) -> Execution:
        contain = self.contain
        if contain is None:  # a resource made without containment (tests of old callers)
            path = Path(tempfile.mkdtemp(prefix="shopfloor-run-"))
            (path / "out").mkdir()
            (path / "tmp").mkdir()
            return Execution(self._number, None, path, None)
        if self.network == "host" and not contain.network_opt_in:
            raise invalid_input(
                "network: host is not available on this worker: it cannot keep a run with "
                "network away from the Temporal frontend and the controller (no iptables)"
            )
        lease = contain.lease_uid()
        try:
            path = contain.work_root.new_run_dir(
                lease.uid if lease else None, lease.gid if lease else None
            )
        except BaseException:
            contain.release_uid(lease)
            raise
        return Execution(self._number, contain, path, lease)

    # -- the run ------------------------------------------------------------------------------

    async def _wait(self, launch: Launch) -> SandboxOutcome:
        """Starts `launch` (unless this attempt took the run over: then it is going already)
        and waits for its outcome. A cancelled run returns only if the user asked for the
        cancel (else the activity fails and is retried); if Temporal lost this attempt, the
        run goes on, kept for a later attempt on this worker to adopt; a local attempt hands
        a run still going after its budget over to this worker's hand-off queue."""
        ex = self._execution
        if not ex.started:
            ex.warm = self._forks_warm(launch)
            ex.task = asyncio.create_task(self._start(ex, launch))
            ex.custody.start(local=self._local)
            if self._runs is not None and self._this is not None:
                self._runs.executions.hold(self._this.key, self._number, ex)
        # A local attempt cannot heartbeat; its run reports progress once handed over.
        ex.report_to(heartbeat_here() if self._this is not None and not self._local else None)
        ex.waiter = asyncio.current_task()
        assert ex.task is not None
        try:
            if self._local:
                await asyncio.wait({ex.task}, timeout=self.zygotes.handoff_after_s)
                if not ex.task.done():
                    raise self._hand_off(ex)
            outcome = await asyncio.shield(ex.task)
        except asyncio.CancelledError:
            if self._kept_for_later(ex):
                raise
            outcome = await self._killed(ex)
        if not self._owns():
            raise self._superseded()
        ex.unwatched()
        if outcome.killed_reason == "cancelled":
            ensure_cancel_was_requested()
        return outcome

    def _kept_for_later(self, ex: Execution) -> bool:
        """On a cancel: whether the run goes on without this attempt (Temporal lost it: kept
        for a later one). Raises when a later attempt took the run over already."""
        if not self._owns():
            raise self._superseded() from None
        ex.unwatched()
        runs, this = self._runs, self._this
        if runs is None or this is None or not attempt_lost():
            return False
        if not runs.executions.detach(this.key, this.number, ex):
            return False
        ex.custody.lose()
        log.warning(
            "Temporal lost attempt %d of %s: its run goes on, kept %gs for a later attempt on "
            "this worker",
            this.number,
            this.key,
            runs.executions.window_s,
        )
        return True

    async def _killed(self, ex: Execution) -> SandboxOutcome:
        """A cancel the user asked for, the worker stopping: the run's processes go, and its
        outcome says so."""
        assert ex.task is not None
        ex.task.cancel()
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return await ex.task

    def _owns(self) -> bool:
        return self._exec is not None and self._exec.custody.owned_by(self._number)

    def _superseded(self) -> ApplicationError:
        owner = self._exec.custody.owner if self._exec is not None else None
        return ApplicationError(
            f"attempt {self._number} was lost; attempt {owner} on this worker took its run over",
            type="AttemptSuperseded",
            category=ApplicationErrorCategory.BENIGN,
        )

    def _hand_off(self, ex: Execution) -> ApplicationError:
        """Keeps the still-running `ex` for the activity on this worker's own queue (or a retry
        of this local attempt, should its workflow task be lost)."""
        assert self._runs is not None and self._this is not None
        ex.unwatched()
        ex.custody.hand_off()
        self._runs.executions.hold(self._this.key, ANY_ATTEMPT, ex, detached=True)
        why = f"still running after {self.zygotes.handoff_after_s:g}s"
        return self._handed_off(why, runs=ex.run_number_now())

    def _handed_off(self, why: str, *, runs: int = 0) -> ApplicationError:
        """The local attempt ends here; the activity on this worker's own queue goes on.
        Its details: that queue, then the runs of the job's code so far (`runs`: should that
        worker be lost, the job starts again, and counts them: `jobs.handed_off_runs`)."""
        assert self._this is not None
        queue = handoff_queue(self._this.task_queue)
        return ApplicationError(
            f"{why}: handed to {queue}",
            queue,
            runs,
            type=HANDED_OFF,
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        )

    async def _start(self, ex: Execution, launch: Launch) -> SandboxOutcome:
        # A span of its own in the job's trace (under RunActivity): the sandboxed run itself.
        with span(
            "sandbox.run",
            warm=ex.warm,
            forked=ex.warm or launch.plain is not None,
            network=str(self.network),
        ):
            outcome = await self._launch(ex, launch)
        return outcome if launch.then is None else await launch.then(outcome, ex.report)

    async def _launch(self, ex: Execution, launch: Launch) -> SandboxOutcome:
        lease, contain, zygotes = ex.lease, self.contain, self.zygotes
        if lease is not None:
            give_to(self.path, lease.uid, lease.gid)
        options = LaunchOptions(
            cwd=self.path,
            env=job_environment(self.path, self.user_env),
            limits=self.limits,
            identity=contain.identity(lease, self.network) if contain else None,
            watch_dir=self.path,
            on_progress=ex.report,
            progress_every=PROGRESS_EVERY_S,
            netns_fd=await contain.network_of(lease, self.network) if contain else None,
        )
        warm, plain = launch.warm, launch.plain
        if ex.warm and warm is not None and zygotes.warm is not None:
            if isinstance(warm, Script):
                return await zygotes.warm.run_script(Path(warm.path), warm.args, options)
            return await zygotes.warm.run_call(warm.target, warm.arg, options)
        if plain is not None:
            return await zygotes.cold.run_script(Path(plain.path), plain.args, options)
        python = launch.cold[:2] == [sys.executable, "-E"] and "-m" not in launch.cold
        return await run_fresh(
            launch.cold,
            options,
            cold=zygotes.cold,
            sets_own_memory_limit=not python,
            python=python,
        )

    # -- leaving ------------------------------------------------------------------------------

    async def _exit(self) -> None:
        ex, this = self._exec, self._this
        if ex is None or not ex.custody.owned_by(self._number):
            return  # nothing of ours, kept for a later attempt, or adopted by one
        if self._runs is not None and this is not None:
            self._runs.executions.release(this.key, this.number, ex)
        await ex.close()

    def _keep(self, result: R) -> R:
        """`result`, also kept for the adoption window: should Temporal not get it (a server
        away as the activity completes, then the attempt timed out), the next attempt on this
        worker returns it instead of running the code again."""
        if self._runs is not None and self._this is not None:
            self._runs.results.hold(self._this.key, self._this.result_owner, result, detached=True)
        return result

    # -- what the kind's callbacks use --------------------------------------------------------

    @property
    def ran_warm(self) -> bool:
        """Whether the run's program was forked from the warm zygote."""
        return self._execution.warm

    def _forks_warm(self, launch: Launch) -> bool:
        return launch.warm is not None and self.zygotes.warm is not None

    def collect_out(
        self,
        outcome: SandboxOutcome | None = None,
        *,
        out: Path | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Collected:
        """The regular files under `out/` (or `out`, a directory inside the run's) into the
        artifact store (names → URIs), and what was refused (symlinks, hard links to files
        outside the run, special files, bad names). A run stopped for its disk cap keeps
        nothing: it may be half-written. Nor does one whose out/ holds more files than
        `max_artifacts`, or more bytes than its disk cap by apparent size (checked before
        anything is stored): its `outcome` is then marked `disk` too."""
        if outcome is not None and outcome.killed_reason == "disk":
            # What was found, and the cap, are in the outcome's warnings.
            return Collected(refused={"out/": "the run exceeded its disk cap"})
        job_id = activity.info().workflow_id
        assert job_id is not None, "a job's activities run in its workflow"
        collected = self.artifacts.collect_tree(
            job_id,
            out or self.out,
            run_dir=self.path,
            on_progress=on_progress,
            max_bytes=self.limits.disk_mb * MB if self.limits.disk_mb else None,
            max_files=self.contain.max_artifacts if self.contain is not None else None,
        )
        if collected.over_cap is not None and outcome is not None:
            outcome.killed_reason = "disk"
            outcome.warnings.append(f"disk: out/ has {collected.over_cap}")
        return collected

    async def collect(
        self, outcome: SandboxOutcome | None = None, *, out: Path | None = None
    ) -> Collected:
        """`collect_out`, off the event loop (the store may be S3) unless `out/` is empty."""
        try:
            with os.scandir(out or self.out) as entries:
                empty = next(entries, None) is None
        except OSError:
            empty = False  # collect_out says what is wrong with it
        if empty and (outcome is None or outcome.killed_reason != "disk"):
            return Collected()
        heartbeat = collecting_heartbeat()
        return await asyncio.to_thread(
            lambda: self.collect_out(outcome, out=out, on_progress=heartbeat)
        )


def cold_python_argv(script: str, args: list[str]) -> list[str]:
    """`python script.py args` in a fresh, isolated interpreter; its RLIMIT_AS is a fresh
    interpreter's size (measured once by the cold zygote) + memory_mb."""
    return [sys.executable, "-E", "-s", "-u", script, *args]


def cold_module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` in a fresh, isolated interpreter (the module applies the memory
    limit itself: `shopfloor.sandbox.limit_address_space`)."""
    return [sys.executable, "-E", "-s", "-m", module, *args]
