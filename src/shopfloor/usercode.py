"""Worker-side resources for kinds that run user code (scripts, simulation scenes).

One pair of zygotes per worker process, shared by every such kind (`WorkerContext.shared`):
`cold` forks fresh interpreters, so the big, threaded worker never forks itself; `warm` has
imported the heavy libraries the served kinds name (`JobKind.warm_imports`) and forks children
that start in milliseconds.

At start the worker finds out what the host offers to contain runs (`sandbox.host.detect`),
logs it, warns about what is missing, removes what an earlier, killed worker left, and makes
its own work root. `UserCodeRun` is what every such activity does around the user's code: a
uid of its own from the pool, a fresh 0700 job dir with `out/` and `tmp/`, the scrubbed job
environment, the limits, a warm fork or a cold interpreter, progress as heartbeats, a cancel
check, `out/` collected safely into the artifact store, clean-up however the run ends.

A run outlives an attempt that Temporal lost (a server away longer than the heartbeat
timeout): it is kept on this worker for `adoption_window_s`, and the next attempt of the same
activity that arrives here adopts it (`Runs`) instead of starting the user's code again.

Local-first (`jobs.run_job_activity(local_first=True)`): in a local activity, a run still
going after `handoff_after_s` is kept the same way, under the job's hand-off key, and the
attempt fails with HANDED_OFF naming `handoff_queue(...)`, a queue only this worker process
polls; the activity there adopts the run and heartbeats. Should the local attempt's result
be lost with its workflow task (a server away), the task's retry on this worker adopts the
run or its result the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from shopfloor.artifacts import ArtifactStore, Collected
from shopfloor.jobs import (
    DROP_HANDED_OVER,
    HANDED_OFF,
    PROGRESS_EVERY_S,
    ensure_cancel_was_requested,
    heartbeat_progress,
    invalid_input,
)
from shopfloor.observability.tracing import span
from shopfloor.processes import listening_pid, listening_ports
from shopfloor.registry import JobKind, WorkerContext, kind_slots, queue_for
from shopfloor.sandbox import (
    Call,
    Limits,
    Progress,
    RunIdentity,
    SandboxOutcome,
    Script,
    Zygote,
    job_environment,
    release_cgroup_pool,
    run_fresh,
)
from shopfloor.sandbox._identity import UidLease, UidPool, WorkRoot, give_to, remove_run_dir
from shopfloor.sandbox._limits import MB
from shopfloor.sandbox._netns import RunNetworks
from shopfloor.sandbox._netns import usable as netns_usable
from shopfloor.sandbox.adoption import Adoptions
from shopfloor.sandbox.host import (
    HostCapabilities,
    detect,
    install_network_filter,
)
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.sandbox")
R = TypeVar("R")
# What runs after a run's program, inside the run (`UserCodeRun.run(then=...)`): given the
# program's outcome and where progress goes, it returns the run's outcome.
Then = Callable[[SandboxOutcome, Callable[[Progress], None]], Awaitable[SandboxOutcome]]
UID_LOCK_DIR = Path("/run/shopfloor-sandbox/uids")
# Names this worker process among all workers: its hand-off queues are its alone.
_WORKER_TAG = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def refuse_over_ceilings(job: object, settings: Settings) -> None:
    """Fails the job at once (non-retryable) when it asks for more than this worker's
    ceilings (`Settings.over_ceiling`): the worker holds to its own settings whichever
    client started the job, never trusting that a controller checked."""
    why = settings.over_ceiling(job)
    if why is not None:
        raise invalid_input(why)


def handoff_queue(task_queue: str) -> str:
    """The task queue beside `task_queue` that only this worker process polls: where its local
    attempts hand over the runs they leave running."""
    return f"{task_queue}@{_WORKER_TAG}"


def _shared_queue(task_queue: str) -> str:
    suffix = f"@{_WORKER_TAG}"
    return task_queue.removesuffix(suffix)


class RunSlots:
    """How many runs of user code one worker process has going at once, per task queue: the
    queue's slots (`registry.kind_slots`). A run holds its slot from its start until it is
    freed, whichever attempt supervises it meanwhile (local, handed over, adopting), so the
    bound holds however many activity and local-activity slots the queue's Workers have."""

    def __init__(self, settings: Settings, served: Sequence[JobKind]) -> None:
        self._sizes: dict[str, int] = {}
        for kind in served:
            queue = queue_for(kind, settings)
            self._sizes[queue] = max(self._sizes.get(queue, 0), kind_slots(kind, settings))
        self._default = settings.worker_max_concurrent_activities
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _semaphore(self, task_queue: str) -> asyncio.Semaphore:
        queue = _shared_queue(task_queue)
        if queue not in self._semaphores:
            self._semaphores[queue] = asyncio.Semaphore(self._sizes.get(queue, self._default))
        return self._semaphores[queue]

    async def take(
        self, task_queue: str, *, while_waiting: Callable[[], None]
    ) -> Callable[[], None]:
        """Waits for a slot (calling `while_waiting` every PROGRESS_EVERY_S meanwhile: an
        activity heartbeats); returns what gives it back (once)."""
        semaphore = self._semaphore(task_queue)
        taking = asyncio.ensure_future(semaphore.acquire())
        try:
            while not taking.done():
                await asyncio.wait({taking}, timeout=PROGRESS_EVERY_S)
                if not taking.done():
                    while_waiting()
        except BaseException:
            if not taking.cancel() and not taking.cancelled() and taking.exception() is None:
                semaphore.release()  # taken just as we were cancelled
            raise
        given = False

        def give_back() -> None:
            nonlocal given
            if not given:
                given = True
                semaphore.release()

        return give_back


@dataclass
class Containment:
    """What this worker uses to contain runs, decided once at start."""

    caps: HostCapabilities
    work_root: WorkRoot
    uids: UidPool | None
    disk_mb: int  # a run's disk cap when its job asks for none
    max_disk_mb: int  # the most a job may ask for
    max_artifacts: int  # files a run may leave in out/
    network_opt_in: bool  # whether `network: host` may run (filtered, or allowed unfiltered)
    warnings: list[str] = field(default_factory=list)
    # Each uid's own network namespace for `network: "host"` (None: such runs share the
    # host's, filtered by uid).
    networks: RunNetworks | None = None

    def identity(self, lease: UidLease | None, network: str) -> RunIdentity:
        if network == "none" and not self.caps.netns:
            network = "shared"
        return RunIdentity(
            uid=lease.uid if lease else None,
            gid=lease.gid if lease else None,
            network=network,  # type: ignore[arg-type]  # "none" | "host" | "shared"
        )

    async def network_of(self, lease: UidLease | None, network: str) -> int | None:
        """A descriptor of the run's own network namespace, for `network: "host"`."""
        if network != "host" or self.networks is None or lease is None:
            return None
        return await asyncio.to_thread(self.networks.open, lease.uid)


def containment(settings: Settings, caps: HostCapabilities | None = None) -> Containment:
    caps = caps or detect()
    uids = None
    if caps.own_uids:
        try:
            uids = UidPool(settings.sandbox_uid_base, settings.sandbox_uid_count, UID_LOCK_DIR)
        except OSError as err:
            log.warning("no uid pool (%s): runs keep the worker's uid", err)
    work_root = WorkRoot(settings.sandbox_root, shared_with_runs=uids is not None)
    for gone in work_root.sweep():
        log.info("removed %s, left by a worker that is gone", gone)
    work_root.create()
    network_opt_in = settings.sandbox_unfiltered_network
    if caps.iptables and uids is not None:
        last = settings.sandbox_uid_base + settings.sandbox_uid_count - 1
        forbidden = [settings.target_address, settings.public_controller_url]
        network_opt_in = install_network_filter(
            (settings.sandbox_uid_base, last),
            forbidden,
            protected_ports(settings),
            metrics_ports(settings),
            settings.monitoring_gid if settings.monitoring_pipeline else None,
        )
    warnings = caps.warnings()
    clash = uids_taken(settings.sandbox_uid_base, settings.sandbox_uid_count) if uids else []
    if clash:
        warnings.append(
            f"uids {clash[:5]} of the sandbox range belong to users in /etc/passwd: choose "
            "another SHOPFLOOR_SANDBOX_UID_BASE"
        )
    if network_opt_in and not caps.iptables:
        warnings.append("network: host runs unfiltered (SHOPFLOOR_SANDBOX_UNFILTERED_NETWORK)")
    networks = None
    if network_opt_in and caps.iptables and caps.netns and uids is not None and netns_usable():
        try:
            networks = RunNetworks(
                uid_base=settings.sandbox_uid_base,
                uid_count=settings.sandbox_uid_count,
                cidr=settings.sandbox_veth_cidr,
                forbidden=[settings.target_address],
            )
            networks.install()
        except (ValueError, OSError) as err:
            networks = None
            warnings.append(f"network: host runs share the host's network namespace: {err}")
    return Containment(
        caps=caps,
        work_root=work_root,
        uids=uids,
        disk_mb=min(settings.sandbox_disk_mb, settings.max_job_disk_mb),
        max_disk_mb=settings.max_job_disk_mb,
        max_artifacts=settings.max_artifacts,
        network_opt_in=network_opt_in,
        warnings=warnings,
        networks=networks,
    )


def protected_ports(settings: Settings) -> list[int]:
    """Loopback ports no run (nor pipeline service) may reach: the Temporal frontend and every
    port of the local process serving it (a dev server's HTTP API, UI and metrics ports are
    random unless given; its internal services listen too), the Temporal UI, the controller,
    the worker's metrics port, and any the deployment adds."""
    ports = {settings.controller_port, *settings.sandbox_protected_ports}
    for address in (settings.target_address, settings.public_controller_url, settings.temporal_ui):
        found = urlsplit(address if "://" in address else f"tcp://{address}") if address else None
        if found is not None and found.port is not None:
            ports.add(found.port)
            listener = listening_pid(found.port)
            if listener is not None and listener != os.getpid():
                ports |= listening_ports(listener)
    if settings.embedded:
        ports.add(settings.dev_ui_port)
    if settings.worker_metrics_port:
        ports.add(settings.worker_metrics_port)
    if settings.controller_metrics_port:
        ports.add(settings.controller_metrics_port)
    return sorted(ports)


def metrics_ports(settings: Settings) -> list[int]:
    """The protected ports the monitoring pipeline's services may reach (with
    `SHOPFLOOR_MONITORING_PIPELINE` set): this worker's and the controller's metrics-only
    ports, never one that is also the controller's API, Temporal's or its UI's."""
    if not settings.monitoring_pipeline:
        return []
    wanted = {settings.worker_metrics_port, settings.controller_metrics_port} - {0}
    without = settings.model_copy(update={"worker_metrics_port": 0, "controller_metrics_port": 0})
    return sorted(wanted - set(protected_ports(without)))


@dataclass(frozen=True)
class Zygotes:
    cold: Zygote
    warm: Zygote | None  # None when no served kind has heavy imports
    contain: Containment | None = None
    runs: Runs | None = None  # kept for later attempts (None: no adoption)
    handoff_after_s: float = 0.0  # a local attempt's run goes on in an activity after this
    slots: RunSlots | None = None  # None: runs are not counted (outside a worker)


def warm_environment(modules: list[str]) -> dict[str, str]:
    """Settings the warm zygote's modules read when it imports them."""
    if "mujoco" not in modules:
        return {}
    from shopfloor.kinds.simulation import gl  # light: no mujoco import

    backend = gl.worker_backend()
    return {**gl.environment(backend), **gl.fork_safe_environment(backend)}


def zygote_options(contain: Containment, settings: Settings) -> dict:
    """How this worker's zygotes are contained (`Zygote.start` options): every zygote a kind
    starts for runs gets the same."""
    mounts = None
    if contain.caps.mountns and contain.uids is not None:
        hide = {str(settings.data_dir.resolve()), str(settings.artifact_root)}
        mounts = {
            "work_root": str(contain.work_root.path),
            "hide": sorted(hide),
            "tmp_mb": settings.sandbox_tmp_mb,
            "shared": [str(p.resolve()) for p in settings.sandbox_shared_dirs],
        }
    return {
        "mounts": mounts,
        "memory_cgroups": contain.caps.memory_cgroup,
        "pidns": mounts is not None and contain.caps.pidns,
    }


@asynccontextmanager
async def zygotes(ctx: WorkerContext) -> AsyncIterator[Zygotes]:
    contain = containment(ctx.settings)
    log.info("%s", contain.caps.describe())
    for warning in contain.warnings:
        log.warning("sandbox: %s", warning)
    options = zygote_options(contain, ctx.settings)
    try:
        cold = await Zygote.start([], **options)
        try:
            # In the kinds' order: a `module:function` warm-up runs after what it needs.
            warm_imports = list(dict.fromkeys(m for k in ctx.served for m in k.warm_imports))
            warm = (
                await Zygote.start(warm_imports, warm_environment(warm_imports), **options)
                if warm_imports
                else None
            )
            try:
                runs = Runs(ctx.settings.adoption_window_s)
                try:
                    yield Zygotes(
                        cold=cold,
                        warm=warm,
                        contain=contain,
                        runs=runs,
                        handoff_after_s=ctx.settings.handoff_after_s,
                        slots=RunSlots(ctx.settings, ctx.served),
                    )
                finally:
                    await runs.close()  # runs nobody adopted: killed and freed
            finally:
                if warm is not None:
                    await warm.close()
        finally:
            await cold.close()
    finally:
        release_cgroup_pool()  # no more jobs in this process: its cgroups go
        contain.work_root.remove()


def handoff_activities(zygotes: Zygotes) -> list[Callable]:
    """What a hand-off queue's Worker runs besides the kinds' own activities."""

    @activity.defn(name=DROP_HANDED_OVER)
    async def drop_handed_over(activity_type: str) -> bool:
        """Kills and frees the run a local attempt of `activity_type` handed over, when the
        job was cancelled before the activity that would have taken the run started."""
        info = activity.info()
        key = _handoff_key(info.workflow_id, info.workflow_run_id, activity_type)
        runs = zygotes.runs
        handed = runs.executions.claim(key, info.attempt) if runs is not None else None
        if handed is None or runs is None:
            return False
        runs.executions.release(key, info.attempt, handed)
        log.info("job %s was cancelled before its run was taken over: killed", info.workflow_id)
        await handed.close()
        return True

    return [drop_handed_over]


class _Execution:
    """One start of user code and what it holds until it is freed: its job dir, its uid lease
    and the task that supervises it (the cgroups are that task's). Shared by the attempts of
    one activity on this worker: the one that started it, then any that adopt it."""

    def __init__(self, zygotes: Zygotes, path: Path, lease: UidLease | None) -> None:
        self.zygotes, self.path, self.lease = zygotes, path, lease
        self.task: asyncio.Task[SandboxOutcome] | None = None
        self.give_back_slot: Callable[[], None] | None = None  # its `RunSlots` slot
        self.owner = 0  # the attempt that owns it (0: not in an activity)
        self.heartbeat: Callable[[Progress], None] | None = None  # the owner's, if any
        self.last_progress: Progress | None = None
        self.waiter: asyncio.Task | None = None  # the owner's activity task, while it waits
        self.closed = False

    def report(self, progress: Progress) -> None:
        self.last_progress = progress
        if self.heartbeat is not None:
            self.heartbeat(progress)

    def report_to(self, heartbeat: Callable[[Progress], None] | None) -> None:
        """Progress goes to `heartbeat` from now on, starting with the latest: a run taken
        over from a local attempt (which cannot heartbeat) shows where it is at once."""
        self.heartbeat = heartbeat
        if heartbeat is not None and self.last_progress is not None:
            heartbeat(self.last_progress)

    async def close(self) -> None:
        """Kills what still runs, waits for it, then frees the job dir, what the run left in
        the zygotes' private /tmp, and the uid. Once."""
        if self.closed:
            return
        self.closed = True
        self.heartbeat = None
        if self.task is not None:
            self.task.cancel()  # a no-op once it is done
            await asyncio.wait({self.task})
            if not self.task.cancelled():
                self.task.exception()  # seen: it was this run's, and it is over
        remove_run_dir(self.path)
        if self.give_back_slot is not None:
            self.give_back_slot()
        lease, self.lease = self.lease, None
        contain = self.zygotes.contain
        if lease is not None and contain is not None and contain.uids is not None:
            # What the run left in its /tmp and /dev/shm went with its own tmpfs.
            contain.uids.release(lease)


async def _nothing_to_free(_: object) -> None:
    return None


class Runs:
    """A worker's runs whose activity attempt Temporal lost while they went on (kept for the
    adoption window), and the results of finished runs (kept as long, in case Temporal never
    got them): a later attempt of the same activity on this worker takes either over."""

    def __init__(self, window_s: float) -> None:
        self.executions: Adoptions[_Execution] = Adoptions(window_s, _Execution.close)
        self.results: Adoptions[Any] = Adoptions(
            window_s, _nothing_to_free, max_detached=256, what=""
        )

    async def close(self) -> None:
        """The worker stops: kept runs are killed and freed (their jobs run again elsewhere)."""
        await self.executions.close()
        await self.results.close()


ActivityKey = tuple[str, str, str]  # workflow id, run id, activity id (or "handoff:" + type)


@dataclass(frozen=True)
class _Attempt:
    key: ActivityKey  # what its run is kept under
    attempt: int
    local: bool
    task_queue: str
    handoff_key: ActivityKey  # where a local attempt of the same job leaves its run


def _handoff_key(workflow_id: str | None, run_id: str | None, activity_type: str) -> ActivityKey:
    """Where a local attempt of a job's `activity_type` leaves its run (one per workflow run:
    the activity that takes it over has an id of its own)."""
    return (workflow_id or "", run_id or "", f"handoff:{activity_type}")


def _this_activity() -> _Attempt | None:
    try:
        info = activity.info()
    except RuntimeError:  # not in an activity: nothing to adopt
        return None
    handoff = _handoff_key(info.workflow_id, info.workflow_run_id, info.activity_type)
    own: ActivityKey = (info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
    return _Attempt(
        key=handoff if info.is_local else own,
        attempt=info.attempt,
        local=info.is_local,
        task_queue=info.task_queue,
        handoff_key=handoff,
    )


def _heartbeat_here() -> Callable[[Progress], None] | None:
    """Progress as heartbeats of the calling activity attempt, from whatever task reports it."""
    try:
        activity.info()
    except RuntimeError:
        return None
    context = contextvars.copy_context()
    return lambda progress: context.run(heartbeat_progress, progress)


def _collecting_heartbeat() -> Callable[[int, int], None] | None:
    """`collect_tree`'s progress as heartbeats of the calling activity (called on its event
    loop), sent from the thread that collects every PROGRESS_EVERY_S: storing thousands of
    files can take longer than the heartbeat timeout."""
    try:
        if activity.info().is_local:
            return None  # a local attempt cannot heartbeat
    except RuntimeError:
        return None
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            details = {"collecting": "out/", "stored": done, "of": total}
            # An async activity's heartbeat must be sent from its event loop.
            loop.call_soon_threadsafe(context.run, activity.heartbeat, details)

    return report


def _attempt_lost() -> bool:
    """This attempt was cancelled because Temporal gave up on it (heartbeat timeout, or it no
    longer knows the attempt: a server that was away), not on request nor because the worker
    stops: its run may go on, for a later attempt to adopt."""
    details = activity.cancellation_details()
    return (
        details is not None
        and not details.cancel_requested
        and not details.worker_shutdown
        and (details.timed_out or details.not_found)
    )


class UserCodeRun:
    """One run of user code in its own job dir; `async with` it, inside an activity.

    `path` is the job dir (the child's cwd and HOME), `out` the directory whose files become
    the job's artifacts; all of it is removed on exit, however the run ended. With an own
    uid, the dir is the run's (0700) and inputs written into it before `run` are handed over.

    A later attempt of an activity whose earlier attempt was lost on this worker gets the
    earlier run: `adopted` (its dir is prepared and its code started: `run` waits for it) or,
    when that run finished and its activity returned, `earlier_result` (return it as is).
    """

    def __init__(
        self,
        zygotes: Zygotes,
        artifacts: ArtifactStore,
        limits: Limits,
        user_env: Mapping[str, str] | None = None,
        *,
        network: str = "none",
    ) -> None:
        self.zygotes, self.artifacts = zygotes, artifacts
        self.user_env = dict(user_env or {})
        self.network = network
        self.contain = zygotes.contain
        if self.contain is not None:
            # The activity refused a job over the ceiling (`refuse_over_ceilings`); the cap
            # holds for any caller.
            disk = min(limits.disk_mb or self.contain.disk_mb, self.contain.max_disk_mb)
            limits = Limits(**{**limits.__dict__, "disk_mb": disk})
        self.limits = limits
        self.path = Path()
        self.adopted = False
        self.earlier_result: Any = None
        self._this = _this_activity()
        self._key = self._this.key if self._this is not None else None
        self._attempt = self._this.attempt if self._this is not None else 0
        self._local = self._this is not None and self._this.local
        self._runs = zygotes.runs if self._key is not None else None
        self._exec: _Execution | None = None
        self._held = False  # in `Runs`, where a later attempt may claim it
        self._detached = False  # left in `Runs` when this attempt was lost

    async def __aenter__(self) -> UserCodeRun:
        runs, key = self._runs, self._key
        if runs is not None and key is not None:
            earlier = runs.executions.claim(key, self._attempt)
            handed_over = False
            if earlier is None and self._this is not None and not self._local:
                earlier = self._take_handed_over(runs, self._this)
                handed_over = earlier is not None
            if earlier is not None:
                self._adopt(earlier, handed_over=handed_over)
                return self
            self.earlier_result = runs.results.claim(key, self._attempt)
            if self.earlier_result is not None:
                # Kept on, should this attempt's completion be lost too.
                runs.results.hold(key, self._kept_as, self.earlier_result, detached=True)
                log.warning(
                    "attempt %d of %s returns the result of an earlier attempt's run on this "
                    "worker (Temporal did not get it)",
                    self._attempt,
                    key,
                )
                return self
        if self._local and not self._can_hand_off():
            raise self._handed_off("the worker keeps no runs for adoption")
        give_back = await self._take_slot()
        try:
            self._exec = await self._new_execution()
        except BaseException:
            if give_back is not None:
                give_back()
            raise
        self._exec.give_back_slot = give_back
        self._exec.owner = self._attempt
        self.path = self._exec.path
        return self

    @property
    def _kept_as(self) -> int:
        """The attempt a kept result is owned by: a later attempt claims it. A local attempt's
        retry comes as attempt 1 again (its workflow task was lost): its results are 0's."""
        return 0 if self._local else self._attempt

    async def _take_slot(self) -> Callable[[], None] | None:
        slots, this = self.zygotes.slots, self._this
        if slots is None or this is None:
            return None
        # A local attempt cannot heartbeat; an activity says what it waits for.
        waiting = {"waiting": "for a free run slot on this worker"}
        return await slots.take(
            this.task_queue,
            while_waiting=(lambda: None) if this.local else lambda: activity.heartbeat(waiting),
        )

    def _can_hand_off(self) -> bool:
        runs = self._runs
        return runs is not None and runs.executions.enabled and self.zygotes.handoff_after_s > 0

    def _take_handed_over(self, runs: Runs, this: _Attempt) -> _Execution | None:
        """The run a local attempt of this job left going for this activity, now kept under
        this attempt's own key (where a later attempt finds it, should this one be lost)."""
        handed = runs.executions.claim(this.handoff_key, this.attempt)
        if handed is not None:
            runs.executions.release(this.handoff_key, this.attempt, handed)
            runs.executions.hold(this.key, this.attempt, handed)
        return handed

    def _handed_off(self, why: str) -> ApplicationError:
        """The local attempt ends here; the activity on this worker's own queue goes on."""
        assert self._this is not None
        queue = handoff_queue(self._this.task_queue)
        return ApplicationError(
            f"{why}: handed to {queue}",
            queue,
            type=HANDED_OFF,
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        )

    def _hand_off(self, ex: _Execution) -> ApplicationError:
        """Keeps the still-running `ex` for the activity on this worker's own queue (or a retry
        of this local attempt, should its workflow task be lost)."""
        assert self._runs is not None and self._key is not None
        ex.heartbeat = ex.waiter = None
        ex.owner = 0
        # Owned by "attempt 0": any attempt of the activity, or of this local one, claims it.
        self._runs.executions.hold(self._key, 0, ex, detached=True)
        self._detached = True
        return self._handed_off(f"still running after {self.zygotes.handoff_after_s:g}s")

    async def _new_execution(self) -> _Execution:
        contain = self.contain
        if contain is None:  # a resource made without containment (tests of old callers)
            import tempfile

            path = Path(tempfile.mkdtemp(prefix="shopfloor-run-"))
            (path / "out").mkdir()
            (path / "tmp").mkdir()
            return _Execution(self.zygotes, path, None)
        if self.network == "host" and not contain.network_opt_in:
            raise invalid_input(
                "network: host is not available on this worker: it cannot keep a run with "
                "network away from the Temporal frontend and the controller (no iptables)"
            )
        lease = contain.uids.acquire() if contain.uids is not None else None
        try:
            path = contain.work_root.new_run_dir(
                lease.uid if lease else None, lease.gid if lease else None
            )
        except BaseException:
            if lease is not None and contain.uids is not None:
                contain.uids.release(lease)
            raise
        return _Execution(self.zygotes, path, lease)

    def _adopt(self, earlier: _Execution, *, handed_over: bool = False) -> None:
        if handed_over:  # the normal course of a run longer than the local budget
            log.debug("attempt %d of %s takes over its local run", self._attempt, self._key)
        else:
            log.warning(
                "attempt %d of %s adopts the run an earlier attempt (%d) started on this worker",
                self._attempt,
                self._key,
                earlier.owner,
            )
        stale = earlier.waiter
        earlier.owner = self._attempt
        earlier.heartbeat = earlier.waiter = None
        if stale is not None and not stale.done():
            stale.cancel()  # the earlier attempt stops waiting: this one owns the run now
        self._exec, self.path = earlier, earlier.path
        self.adopted = self._held = True

    async def __aexit__(self, *_: object) -> None:
        ex = self._exec
        if ex is None or self._detached or ex.owner != self._attempt:
            return  # nothing of ours, kept for a later attempt, or adopted by one
        if self._held and self._runs is not None and self._key is not None:
            self._runs.executions.release(self._key, self._attempt, ex)
        await ex.close()

    @property
    def out(self) -> Path:
        return self.path / "out"

    def _owns(self) -> bool:
        return self._exec is not None and self._exec.owner == self._attempt

    def _superseded(self) -> ApplicationError:
        owner = self._exec.owner if self._exec is not None else 0
        return ApplicationError(
            f"attempt {self._attempt} was lost; attempt {owner} on this worker took its run over",
            type="AttemptSuperseded",
            category=ApplicationErrorCategory.BENIGN,
        )

    async def run(
        self,
        *,
        warm: Script | Call | None,
        cold: list[str],
        plain: Script | None = None,
        then: Then | None = None,
    ) -> SandboxOutcome:
        """Runs `warm` in a fork of the warm zygote when there is one and it is given; else
        `plain` in a fork of the cold zygote (a clean interpreter, nothing heavy imported:
        no interpreter start-up to pay); else the `cold` argv in a fresh interpreter
        (`cold_python` argv: RLIMIT_AS counted from a fresh interpreter's size; a `-m` runner
        applies the memory limit itself once its runtime is loaded, `limit_address_space`).
        An adopted run is not started again: this waits for it. A cancelled run returns only
        if the user asked for the cancel (else the activity fails and is retried); if Temporal
        lost this attempt, the run goes on, kept for a later attempt on this worker to adopt
        (`adoption_window_s`). `then`, when given, is awaited once the program has ended (its
        whole tree gone) with its outcome and the run's progress callback: what it returns is
        the run's outcome, and a hand-over, an adoption or a cancel covers it as it covers the
        program (a cancel may reach it between processes: it then returns an outcome killed
        for "cancelled")."""
        ex = self._exec
        if ex is None:
            raise RuntimeError("an earlier attempt's result is there: return it, run nothing")
        if not self.adopted:
            ex.task = asyncio.create_task(self._start(ex, warm, cold, plain, then))
            if self._runs is not None and self._key is not None:
                self._runs.executions.hold(self._key, self._attempt, ex)
                self._held = True
        # A local attempt cannot heartbeat; its run reports progress once handed over.
        ex.report_to(None if self._local else _heartbeat_here())
        ex.waiter = asyncio.current_task()
        assert ex.task is not None
        try:
            if self._local:
                await asyncio.wait({ex.task}, timeout=self.zygotes.handoff_after_s)
                if not ex.task.done():
                    raise self._hand_off(ex)
            outcome = await asyncio.shield(ex.task)
        except asyncio.CancelledError:
            if not self._owns():
                raise self._superseded() from None
            ex.heartbeat = ex.waiter = None
            runs, key = self._runs, self._key
            if (
                self._held
                and runs is not None
                and key is not None
                and _attempt_lost()
                and runs.executions.detach(key, self._attempt, ex)
            ):
                self._detached = True
                log.warning(
                    "Temporal lost attempt %d of %s: its run goes on, kept %gs for a later "
                    "attempt on this worker",
                    self._attempt,
                    key,
                    runs.executions.window_s,
                )
                raise
            # A cancel the user asked for, the worker stopping: the run's processes go.
            ex.task.cancel()
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome = await ex.task
        if not self._owns():
            raise self._superseded()
        ex.heartbeat = ex.waiter = None
        if outcome.killed_reason == "cancelled":
            ensure_cancel_was_requested()
        return outcome

    async def _start(
        self,
        ex: _Execution,
        warm: Script | Call | None,
        cold: list[str],
        plain: Script | None,
        then: Then | None = None,
    ) -> SandboxOutcome:
        # A span of its own in the job's trace (under RunActivity): the sandboxed run itself.
        with span(
            "sandbox.run",
            warm=self.ran_warm(warm),
            forked=self.ran_warm(warm) or plain is not None,
            network=str(self.network),
        ):
            outcome = await self._launch(ex, warm, cold, plain)
        return outcome if then is None else await then(outcome, ex.report)

    async def _launch(
        self, ex: _Execution, warm: Script | Call | None, cold: list[str], plain: Script | None
    ) -> SandboxOutcome:
        lease = ex.lease
        if lease is not None:
            give_to(self.path, lease.uid, lease.gid)
        identity = self.contain.identity(lease, self.network) if self.contain else None
        options = {
            "cwd": self.path,
            "env": job_environment(self.path, self.user_env),
            "limits": self.limits,
            "identity": identity,
            "watch_dir": self.path,
            "on_progress": ex.report,
            "progress_every": PROGRESS_EVERY_S,
        }
        if self.contain is not None:
            options["netns_fd"] = await self.contain.network_of(lease, self.network)
        if self.ran_warm(warm):
            assert self.zygotes.warm is not None and warm is not None
            if isinstance(warm, Script):
                return await self.zygotes.warm.run_script(Path(warm.path), warm.args, **options)
            return await self.zygotes.warm.run_call(warm.target, warm.arg, **options)
        if plain is not None:
            return await self.zygotes.cold.run_script(Path(plain.path), plain.args, **options)
        python = cold[:2] == [sys.executable, "-E"] and "-m" not in cold
        return await run_fresh(
            cold,
            cold=self.zygotes.cold,
            sets_own_memory_limit=not python,
            python=python,
            **options,
        )

    def keep(self, result: R) -> R:
        """`result`, also kept for the adoption window: should Temporal not get it (a server
        away as the activity completes, then the attempt timed out), the next attempt on this
        worker returns it (`earlier_result`) instead of running the code again."""
        if self._runs is not None and self._key is not None:
            self._runs.results.hold(self._key, self._kept_as, result, detached=True)
        return result

    def ran_warm(self, warm: Script | Call | None) -> bool:
        """Whether `run(warm=warm, ...)` forks the warm zygote."""
        return warm is not None and self.zygotes.warm is not None

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
        caps = {}
        if self.limits.disk_mb:
            caps["max_bytes"] = self.limits.disk_mb * MB
        if self.contain is not None:
            caps["max_files"] = self.contain.max_artifacts
        collected = self.artifacts.collect_tree(
            activity.info().workflow_id,
            out or self.out,
            run_dir=self.path,
            on_progress=on_progress,
            **caps,
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
        heartbeat = _collecting_heartbeat()
        return await asyncio.to_thread(
            lambda: self.collect_out(outcome, out=out, on_progress=heartbeat)
        )

    def store_out(self) -> dict[str, str]:
        """Every regular file under `out/` into the artifact store: relative name → URI."""
        return self.collect_out().uris


def uids_taken(base: int, count: int) -> list[int]:
    """Uids of the pool's range that /etc/passwd gives to someone (a clash to warn about)."""
    taken = []
    try:
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit() and base <= int(fields[2]) < base + count:
                taken.append(int(fields[2]))
    except OSError:
        pass
    return taken


def cold_python_argv(script: str, args: list[str]) -> list[str]:
    """`python script.py args` in a fresh, isolated interpreter; its RLIMIT_AS is a fresh
    interpreter's size (measured once by the cold zygote) + memory_mb."""
    return [sys.executable, "-E", "-s", "-u", script, *args]


def cold_module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` in a fresh, isolated interpreter (the module applies the memory
    limit itself: `shopfloor.sandbox.limit_address_space`)."""
    return [sys.executable, "-E", "-s", "-m", module, *args]
