"""run_simulation: one simulation in sandboxed children (warm forks by default), heartbeating.

User geometry code never runs in the worker: bad geometry, a broken script, a crash or a
runaway run become a FAIL result with a reason. Only infrastructure failures raise (and are
retried).

The verdict is made where the scene cannot reach. A run is two processes, one after the other,
in one run of user code (`usercode.run_user_code`: so a hand-over, an adoption, a cancel and
the heartbeats cover both):

1. the scene's process, a fork of the warm zygote (build123d) under the run's uid, in the
   run's directory: it runs the scene's code (or reads its part files), tessellates, exports
   the STEP file and hands over exactly two files beside its input: the prepared parts
   (GEOMETRY_OUT, the geometry cache's format) and a `BuildReport` (BUILD_FILE: a FAIL
   reason, or its timings). A scene's code runs with cwd and HOME in `tmp/`, its scratch;
2. once it and its whole process tree are gone, the worker judges what it left: an exit
   before the hand-over (any code, `os._exit(0)` included), a crash, or a file left beside
   the hand-over files or in `out/` (a forged report.json, video, anything: none is ever
   read, and none is stored) is a FAIL that says so; the prepared parts are read once (never
   through a link, size-bounded) and checked in full (`meshes.load_prepared`);
3. the simulation's own process, a fork of the light zygote (no build123d; the warm one
   until it is up; a cold interpreter for another GL backend) that runs no user code, under
   a uid of its own from the pool, in a new directory inside the run's (a random name, made
   by the worker after step 2, the only thing its uid can reach there; the run's directory
   becomes root's, 0711): it gets a fresh run file and a copy of the checked parts, re-derives
   from the meshes what decides the verdict (`meshes.trusted_parts`), and writes the MJCF,
   the meshes, the STEP file, the video and its `SimulationReport`. Only that report is read
   and only that `out/` is stored; the result carries their URIs.

A cache hit runs step 3 alone, in the run's own directory (no scene code runs at all).

The geometry cache: variants of one scene (a sweep of seeds, jitter, physics options) share
its parts, and building them (running the scene's build123d code, tessellating, exporting the
STEP file) is most of a short run. The first run of a scene source on this worker also writes
what it prepared (`SimulationRun.save_geometry`); this activity reads that file once the run
has ended, checks all of it (`meshes.load_prepared`) and keeps it in this worker's memory,
keyed by the sha256 of the source, the options that shape the parts
(`meshes.GEOMETRY_OPTIONS`) and the run's memory limit. A later run with the same key gets a
copy in its own directory and loads it: its scene code does not run at all. What this means:

* a cached source is assumed deterministic (the same text builds the same parts); a scene
  that is not (random geometry, reads the clock or a file) sets `geometry_cache: false`,
  which neither reads nor stores an entry;
* a run can only ever write the entry of its own key, which the worker derives from the
  request, never from what the run says; so a scene can only affect later runs of the very
  same source text, which run that same code anyway. Entries live in the worker's memory,
  where no run can write, and only after the worker has checked them; a run given an entry
  gets a copy, so changing it changes nothing beyond that run;
* the cache is per worker process, bounded (GEOMETRY_CACHE_BYTES, least recently used go
  first) and forgotten when the worker stops. Runs of one source that arrive together wait
  (up to GEOMETRY_WAIT_S) for the first one's parts instead of all building them.

A run that loads cached parts needs no CAD kernel, and a fork of the warm zygote costs in
proportion to its size, most of which is build123d/OCCT (~37 ms of CPU a fork against ~16 ms
without it, more than such a run's own work). So once the cache holds an entry the worker
also starts a *light* zygote, the same runtime without build123d, under the same
containment; cached runs fork from it while it is up. It stops after LIGHT_IDLE_S unused (an
idle worker keeps only its usual zygotes), and is started again by the next entry or hit.

`metrics.geometry_cache` says what a source scene's run did: `hit`, `miss` (built it) or
`off`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from temporalio import activity

from shopfloor.artifacts import ArtifactError
from shopfloor.jobs import PROGRESS_EVERY_S, invalid_input
from shopfloor.kinds.simulation import gl, meshes
from shopfloor.kinds.simulation.kind import KIND
from shopfloor.kinds.simulation.models import (
    BuildReport,
    PartFile,
    SceneFiles,
    SceneGeometry,
    SceneSource,
    SceneUri,
    SimOptions,
    SimulationReport,
    SimulationRequest,
    SimulationResult,
    SimulationRun,
)
from shopfloor.kinds.simulation.runner import (
    BUILD,
    BUILD_FILE,
    CAD_MODULES,
    REPORT_FILE,
    RUN_FILE,
)
from shopfloor.kinds.simulation.stubs import RUN_SIMULATION
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.sandbox import (
    Call,
    LaunchOptions,
    Limits,
    Progress,
    SandboxOutcome,
    UidLease,
    Zygote,
    give_to,
    job_environment,
    run_fresh,
)
from shopfloor.settings import Settings
from shopfloor.usercode import (
    Launch,
    UserCode,
    UserCodeRun,
    Zygotes,
    cold_module_argv,
    kind_work,
    refuse_over_ceilings,
    run_user_code,
    zygotes,
)

log = logging.getLogger(__name__)
RUNNER = "shopfloor.kinds.simulation.runner"
SCENE_DIR = "scene"  # parts given as files, in the run's directory
# A scene file's format (`SceneUri.resolved_format`) → the format of a part file.
PART_FORMATS: dict[str, Literal["stl", "step"]] = {"stl": "stl", "step": "step"}
# Beside out/ (never stored as artifacts): checked parts for the simulation's process to load,
# and where the scene's process hands over what it prepared.
GEOMETRY_IN, GEOMETRY_OUT = "geometry.cached", "geometry.prepared"
# What the top of the run's directory may hold once the scene's process is gone: the worker's
# inputs, the scene's scratch dir, its two hand-over files (and their names while written).
SCENE_MAY_LEAVE = frozenset(
    {RUN_FILE, SCENE_DIR, "out", "tmp", GEOMETRY_OUT, BUILD_FILE}
    | {f"{name}.tmp" for name in (GEOMETRY_OUT, BUILD_FILE)}
)
VERDICT_DIR = "verdict-"  # + a random name: the simulation's own process's directory
MAX_BUILD_REPORT = 4 * 1024 * 1024
GEOMETRY_CACHE_BYTES = 256 * 1024 * 1024
GEOMETRY_WAIT_S = 5.0  # well within the activity's heartbeat timeout (10 s)
# Longer than any run forked from the light zygote can last (timeout_s <= 280 s), so no run
# still goes on when it stops.
LIGHT_IDLE_S = 600.0


def geometry_key(source: str, options: SimOptions, memory_mb: int) -> str:
    """What decides a source scene's prepared parts, hashed: the source text, the options
    `prepare_parts` reads, the memory limit the run built them under, the file format."""
    material = {
        "format": meshes.PREPARED_FORMAT,
        "source": source,
        "options": {name: getattr(options, name) for name in meshes.GEOMETRY_OPTIONS},
        "memory_mb": memory_mb,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class GeometryCache:
    """Checked prepared-geometry files by key, in this worker's memory: least recently used
    first out beyond `max_bytes`. One run builds a key at a time; others wait for it."""

    def __init__(self, max_bytes: int = GEOMETRY_CACHE_BYTES, wait_s: float = GEOMETRY_WAIT_S):
        self.max_bytes, self.wait_s = max_bytes, wait_s
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._building: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        """Keeps `data`, which the caller has checked (`meshes.load_prepared`)."""
        if len(data) > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        self._size += len(data) - (len(old) if old is not None else 0)
        self._entries[key] = data
        while self._size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted)

    async def claim(self, key: str) -> tuple[bytes | None, bool]:
        """(entry, False): a hit. (None, True): build it, then call `done(key)`, however the
        run ends. (None, False): another run is still building it after `wait_s`."""
        deadline = time.monotonic() + self.wait_s
        while True:
            data = self.get(key)
            if data is not None:
                return data, False
            building = self._building.get(key)
            if building is None:
                self._building[key] = asyncio.get_running_loop().create_future()
                return None, True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, False
            try:
                await asyncio.wait_for(asyncio.shield(building), remaining)
            except TimeoutError:
                return None, False

    def done(self, key: str) -> None:
        building = self._building.pop(key, None)
        if building is not None and not building.done():
            building.set_result(None)


class LightZygote:
    """The warm zygote's runtime without the CAD kernel, for runs that load cached parts:
    started in the background on first need, with the worker's containment options (its own
    mount namespace, cgroups), stopped after LIGHT_IDLE_S unused. Until it is up, such runs
    fork from the worker's warm zygote, as every run did before."""

    def __init__(self, base: Zygotes, settings: Settings) -> None:
        self.base, self.settings = base, settings
        self.modules = [m for m in KIND.warm_imports if m.split(".")[0] not in CAD_MODULES]
        self._zygotes: Zygotes | None = None  # `base` with the light zygote as its warm one
        self._task: asyncio.Task[None] | None = None  # starting it, then stopping it when idle
        self._in_use = 0
        self._last_used = 0.0
        self._failed_at = -float("inf")

    @property
    def up(self) -> bool:
        return self._zygotes is not None

    def start(self) -> None:
        """Starts it in the background unless it is up, starting, or failed lately."""
        if self._task is not None or self.base.contain is None or self.base.warm is None:
            return
        if time.monotonic() - self._failed_at < LIGHT_IDLE_S:
            return
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        starting = asyncio.create_task(self._start_zygote())
        try:
            zygote = await asyncio.shield(starting)
        except asyncio.CancelledError:  # the worker stops: let the start end, then close it
            zygote = await starting
            if zygote is not None:
                await zygote.close()
            raise
        if zygote is None:
            self._task = None
            return
        self._zygotes = dataclasses.replace(self.base, warm=zygote)
        self._last_used = time.monotonic()
        try:
            while self._in_use or time.monotonic() - self._last_used < LIGHT_IDLE_S:
                idle = time.monotonic() - self._last_used
                await asyncio.sleep(max(1.0, LIGHT_IDLE_S - idle))
        finally:
            self._zygotes = None
            self._task = None
            await asyncio.shield(zygote.close())

    async def _start_zygote(self) -> Zygote | None:
        assert self.base.contain is not None
        options = self.base.contain.zygote_options(self.settings)
        try:
            return await Zygote.start(
                self.modules, gl.warm_environment(), name="light", options=options
            )
        except Exception:
            log.warning("no light zygote: cached runs fork the warm zygote", exc_info=True)
            self._failed_at = time.monotonic()
            return None

    @asynccontextmanager
    async def use(self, wanted: bool) -> AsyncIterator[Zygotes]:
        """The zygotes a run forks from: with the light one when `wanted` and it is up."""
        light = self._zygotes if wanted else None
        if light is None:
            if wanted:
                self.start()
            yield self.base
            return
        self._in_use += 1
        try:
            yield light
        finally:
            self._in_use -= 1
            self._last_used = time.monotonic()

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    """The kind's worker-side lifespan: its activities, on the worker's shared zygotes."""
    activities = SimulationActivities(ctx, await ctx.shared(zygotes))
    try:
        yield await kind_work(ctx, KIND, [activities.run_simulation])
    finally:
        await activities.light.close()


class SimulationActivities:
    def __init__(self, ctx: WorkerContext, zygotes: Zygotes) -> None:
        self.ctx = ctx
        self.zygotes = zygotes
        self.geometry = GeometryCache()
        self.light = LightZygote(zygotes, ctx.settings)

    def _source_of(self, scene: SceneSource | SceneGeometry | SceneUri) -> SceneSource | None:
        """The scene's source text, when it is one (an uploaded .py is read here, in the
        worker, so the child needs no store access); None for parts."""
        if isinstance(scene, SceneSource):
            return scene
        if isinstance(scene, SceneUri) and scene.resolved_format == "py":
            try:
                data = self.ctx.artifacts.read_bytes(scene.uri)
            except ArtifactError as err:
                raise invalid_input(str(err)) from err
            return SceneSource(source=data.decode(errors="replace"))
        return None

    def _parts_for_run(self, scene: SceneGeometry | SceneUri, run_dir: Path) -> SceneFiles:
        """Parts as files in the run's directory, read by the child. Artifact URIs are
        copied here, in the worker, so the child needs no store access."""
        (run_dir / SCENE_DIR).mkdir()
        if isinstance(scene, SceneGeometry):
            files = []
            for i, part in enumerate(scene.parts):
                path = f"{SCENE_DIR}/part{i}.{part.format}"
                (run_dir / path).write_bytes(part.data())
                files.append(
                    PartFile(label=part.label, format=part.format, path=path, fixed=part.fixed)
                )
            return SceneFiles(parts=files)
        fmt = PART_FORMATS.get(scene.resolved_format)
        if fmt is None:
            raise invalid_input(f"cannot tell the scene format of {scene.uri}: give `format`")
        path = f"{SCENE_DIR}/part0.{fmt}"
        try:
            # A copy: the store stays out of the child's reach.
            self.ctx.artifacts.copy_to(scene.uri, run_dir / path)
        except ArtifactError as err:
            raise invalid_input(str(err)) from err
        label = _uri_label(scene)
        return SceneFiles(parts=[PartFile(label=label, format=fmt, path=path, fixed=scene.fixed)])

    @activity.defn(name=RUN_SIMULATION.name)
    async def run_simulation(self, request: SimulationRequest) -> SimulationResult:
        refuse_over_ceilings(request, self.ctx.settings)
        limits = Limits(wall_timeout_s=request.timeout_s, memory_mb=request.memory_mb)
        source = (
            request.scene
            if isinstance(request.scene, SceneSource)
            # Reads the store (S3: network): off the event loop.
            else await asyncio.to_thread(self._source_of, request.scene)
        )
        cache: str | None = None
        entry: bytes | None = None
        builds: str | None = None  # the key whose entry this run builds: others wait for it
        if source is not None:
            cache = "off"
            if request.options.geometry_cache:
                key = geometry_key(source.source, request.options, request.memory_mb)
                entry, building = await self.geometry.claim(key)
                builds = key if building else None
                cache = "hit" if entry is not None else "miss"
        # A run this attempt took over was prepared by an earlier one: its dir is ready, its
        # scene running. (A run handed over from a local attempt that builds its parts still
        # saves them: `builds`.)
        prepared = False

        async def prepare(run: UserCodeRun) -> None:
            nonlocal prepared
            prepared = True
            await self._prepare(request, source, entry, run.path)

        async def collect(run: UserCodeRun, outcome: SandboxOutcome) -> SimulationResult:
            result, checked = await self._collect(request, run, outcome)
            if builds is not None and checked is not None:  # on the event loop: the cache's own
                self.geometry.put(builds, checked)
                self.light.start()  # for the hits to come
            if cache is not None and prepared:
                result.metrics["geometry_cache"] = cache
            return result

        code = UserCode(
            limits=limits,
            prepare=prepare,
            launch=functools.partial(self._launch, request, build=entry is None),
            collect=collect,
        )
        try:
            async with self.light.use(entry is not None) as zygotes:
                return await run_user_code(zygotes, self.ctx.artifacts, code)
        finally:
            if builds is not None:
                self.geometry.done(builds)

    async def _prepare(
        self,
        request: SimulationRequest,
        source: SceneSource | None,
        entry: bytes | None,
        run_dir: Path,
    ) -> None:
        """The run's inputs: with cached parts, the simulation's process alone runs (no scene
        code); else the scene's source or parts, for the scene's process."""
        if entry is not None:
            sim_run = _judge_run(request, GEOMETRY_IN)
            await asyncio.to_thread(_write_inputs, run_dir, sim_run, entry)
            return
        scene: SceneSource | SceneFiles | None = source
        if scene is None:
            parts = request.scene
            assert not isinstance(parts, SceneSource), "a scene's source is in `source`"
            scene = await asyncio.to_thread(self._parts_for_run, parts, run_dir)
        sim_run = SimulationRun(
            scene=scene,
            options=request.options,
            out_dir="out",
            memory_mb=request.memory_mb,
            progress_every_s=PROGRESS_EVERY_S,
            save_geometry=GEOMETRY_OUT,
        )
        await asyncio.to_thread(_write_inputs, run_dir, sim_run, None)

    def _launch(self, request: SimulationRequest, run: UserCodeRun, *, build: bool) -> Launch:
        """`build`: the scene's process runs first, then the simulation's own (`_judge`)."""
        if build:
            return Launch(
                warm=Call(f"{RUNNER}:build_in_child", RUN_FILE),
                cold=cold_module_argv(RUNNER, BUILD, RUN_FILE),
                then=functools.partial(self._judge, request, run),
            )
        # The warm zygote bound its GL backend when it imported mujoco; another backend
        # needs a fresh interpreter (for the simulation's process: building needs no GL).
        warm = request.options.gl_backend == gl.worker_backend()
        return Launch(
            warm=Call(f"{RUNNER}:run_in_child", RUN_FILE) if warm else None,
            cold=cold_module_argv(RUNNER, RUN_FILE),
        )

    async def _collect(
        self, request: SimulationRequest, run: UserCodeRun, outcome: SandboxOutcome
    ) -> tuple[SimulationResult, bytes | None]:
        """The result from the simulation's own report and out/ alone; with the checked parts
        of a run that built them (for the cache)."""
        built = outcome if isinstance(outcome, _Built) else None
        if built is not None and built.result is not None:
            return built.result, None
        where = built.verdict if built is not None and built.verdict else run.path
        report = _read_report(where / REPORT_FILE) if outcome.killed_reason != "disk" else None
        if report is None:
            return _crashed(outcome, request), None
        collected = await run.collect(outcome, out=where / "out")
        if collected.over_cap is not None:  # out/ over its caps: stored nothing, a FAIL
            return _crashed(outcome, request), None
        result = report.result(collected.uris.get)
        if collected.refused:
            refused = "; ".join(collected.refused_list())
            result.warnings.append(f"artifacts not stored: {refused}")
        if built is None or built.build is None:
            return result, None
        timings = dict(built.build.timings_s)  # the scene's stages first, as they ran
        for stage, seconds in result.metrics.get("timings_s", {}).items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
        result.metrics["timings_s"] = timings
        result.warnings += built.build.warnings
        # Its own warnings (a failed STEP export) are not in the parts: an entry would lose them.
        return result, None if built.build.warnings else built.prepared

    async def _judge(
        self,
        request: SimulationRequest,
        run: UserCodeRun,
        scene: SandboxOutcome,
        report: Callable[[Progress], None],
    ) -> SandboxOutcome:
        """Steps 2 and 3 (module docstring), inside the run (`usercode.Launch.then`),
        once the scene's process and its whole tree are gone (`scene`: how it ended)."""
        contain, lease, verdict = run.contain, None, None
        try:
            found = await asyncio.to_thread(_handed_over, run.path, scene, request)
            remaining = request.timeout_s - scene.duration_s
            if found.fail is None and remaining <= 0:
                found.fail = _crashed(dataclasses.replace(scene, killed_reason="timeout"), request)
            if found.fail is not None:
                return _Built.of(scene, result=found.fail)
            lease = contain.lease_uid() if contain is not None else None
            judge_run = _judge_run(request, GEOMETRY_IN)
            verdict = await asyncio.to_thread(
                _verdict_dir, run.path, lease, judge_run, found.prepared
            )
            options = LaunchOptions(
                cwd=verdict,
                env=job_environment(verdict, {}),
                limits=dataclasses.replace(run.limits, wall_timeout_s=remaining),
                identity=contain.identity(lease, "none") if contain is not None else None,
                watch_dir=verdict,
                on_progress=report,
                progress_every=PROGRESS_EVERY_S,
            )
            async with self.light.use(True) as zygotes:
                if request.options.gl_backend == gl.worker_backend() and zygotes.warm:
                    judged = await zygotes.warm.run_call(
                        f"{RUNNER}:run_in_child", RUN_FILE, options
                    )
                else:
                    judged = await run_fresh(
                        cold_module_argv(RUNNER, RUN_FILE),
                        options,
                        cold=zygotes.cold,
                        sets_own_memory_limit=True,
                    )
            return _Built.of(judged, verdict=verdict, build=found.build, prepared=found.prepared)
        except asyncio.CancelledError:  # between the processes: as if one had been killed for it
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            cancelled = dataclasses.replace(scene, killed_reason="cancelled")
            return _Built.of(cancelled, result=_crashed(cancelled, request))
        finally:
            if lease is not None and contain is not None:
                if verdict is not None:
                    # Root's again before its uid goes to another run, which could otherwise
                    # reach the report and out/ before they are read.
                    os.chown(verdict, os.getuid(), os.getgid())
                contain.release_uid(lease)


@dataclasses.dataclass
class _Built(SandboxOutcome):
    """How a run that built its scene ended: the outcome of its last process, and what the
    worker needs beyond it (in memory, never from the run's files)."""

    result: SimulationResult | None = None  # a FAIL decided before any simulation ran
    verdict: Path | None = None  # the simulation's own process's directory
    build: BuildReport | None = None
    prepared: bytes | None = None  # the checked parts the scene handed over

    @classmethod
    def of(
        cls,
        outcome: SandboxOutcome,
        *,
        result: SimulationResult | None = None,
        verdict: Path | None = None,
        build: BuildReport | None = None,
        prepared: bytes | None = None,
    ) -> _Built:
        fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(SandboxOutcome)}
        return cls(**fields, result=result, verdict=verdict, build=build, prepared=prepared)


@dataclasses.dataclass
class _Handover:
    fail: SimulationResult | None = None
    build: BuildReport | None = None
    prepared: bytes | None = None


def _judge_run(request: SimulationRequest, geometry: str) -> SimulationRun:
    """The simulation's own process's run file: the request's options and checked parts,
    no scene at all."""
    scene = request.scene
    if isinstance(scene, SceneGeometry):
        fixed = [p.label for p in scene.parts if p.fixed]
    elif isinstance(scene, SceneUri) and scene.fixed:
        fixed = [_uri_label(scene)]
    else:
        fixed = []
    return SimulationRun(
        scene=None,
        options=request.options,
        fixed_parts=fixed,
        out_dir="out",
        memory_mb=request.memory_mb,
        progress_every_s=PROGRESS_EVERY_S,
        geometry=geometry,
    )


def _uri_label(scene: SceneUri) -> str:
    return scene.label or Path(scene.uri).stem


def _handed_over(run_dir: Path, scene: SandboxOutcome, request: SimulationRequest) -> _Handover:
    """Step 2 (module docstring): what the scene's process left, judged; a FAIL names what
    the scene did."""
    if scene.killed_reason is not None:  # a limit, or a cancel: as any run killed for it
        return _Handover(fail=_crashed(scene, request))
    build = _read_build_report(run_dir / BUILD_FILE)
    handed = "" if isinstance(build, BuildReport) else " before handing over its geometry"
    if scene.signal:
        reason = f"crash: the scene's process died with {scene.signal}{handed}"
    elif scene.exit_code:
        last = (scene.stderr.strip().splitlines() or [""])[-1]
        reason = f"crash: the scene's process exited with code {scene.exit_code}{handed}: {last}"
    elif build is None:
        reason = f"the scene exited (code {scene.exit_code}){handed}"
    elif isinstance(build, str):
        reason = f"the scene left a bad {BUILD_FILE} ({build}): ignored"
    else:
        reason = build.fail or ""
    forged = _left_by_scene(run_dir)
    if forged:
        wrote = f"the scene wrote {forged}: ignored"
        reason = (
            f"{reason}; {wrote}"
            if reason
            else f"{wrote} (a scene hands over only its geometry: the verdict and the "
            "artifacts come from the simulation's own process)"
        )
    good = build if isinstance(build, BuildReport) else None
    prepared = None
    if not reason:
        prepared, reason = _checked_geometry(run_dir / GEOMETRY_OUT)
    if not reason:
        return _Handover(build=good, prepared=prepared)
    metrics: dict[str, Any] = {"wall_time_s": scene.duration_s}
    if good is not None:
        metrics["timings_s"] = good.timings_s
    warnings = [*(good.warnings if good is not None else []), *scene.warnings]
    return _Handover(
        fail=SimulationResult(outcome="FAIL", reason=reason, metrics=metrics, warnings=warnings)
    )


def _left_by_scene(run_dir: Path, most: int = 5) -> str:
    """What the scene's process left outside its scratch dir besides its hand-over, named
    (at most `most` names); '' when nothing. None of it is ever read."""
    left = []
    with os.scandir(run_dir) as entries:
        for entry in entries:
            if entry.name not in SCENE_MAY_LEAVE:
                left.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    try:  # out/ itself, never through a link the scene put in its place
        fd = os.open(run_dir / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        left.append("out")
    else:
        try:
            left += [f"out/{name}" for name in os.listdir(fd)]
        finally:
            os.close(fd)
    left.sort()
    more = f" and {len(left) - most} more" if len(left) > most else ""
    return ", ".join(left[:most]) + more


def _verdict_dir(
    run_dir: Path, lease: UidLease | None, sim_run: SimulationRun, prepared: bytes | None
) -> Path:
    """The simulation's own process's directory, inside the run's, with its inputs."""
    # A random name, made exclusively: the scene, gone before this, cannot have put anything
    # in its place.
    verdict = run_dir / f"{VERDICT_DIR}{secrets.token_hex(8)}"
    verdict.mkdir(mode=0o700)
    for sub in ("out", "tmp"):
        (verdict / sub).mkdir(mode=0o700)
    _write_inputs(verdict, sim_run, prepared)
    if lease is not None:
        # The run's dir becomes root's and traversable only (nothing of its uid runs any
        # more): the simulation's uid reaches its own dir in it, nothing else.
        os.chown(run_dir, os.getuid(), os.getgid())
        os.chmod(run_dir, 0o711)
        os.chown(verdict, lease.uid, lease.gid)
        give_to(verdict, lease.uid, lease.gid)
    return verdict


def _checked_geometry(path: Path) -> tuple[bytes | None, str]:
    """What the scene's process handed over at `path` if all of it checks out, else why not.
    That process had run the scene's code, so the file is untrusted input: read once (never
    through a link) and checked; the checked bytes are what the caller keeps."""
    data = _read_regular(path, meshes.MAX_PREPARED_BYTES)
    if data is None:
        return None, (
            "the scene handed over no geometry (or more than "
            f"{meshes.MAX_PREPARED_BYTES // 2**20} MB of it)"
        )
    try:
        meshes.load_prepared(data)
    except meshes.BadPrepared as err:
        return None, f"the scene's prepared geometry was refused: {err}"
    return data, ""


def _read_build_report(path: Path) -> BuildReport | str | None:
    """The scene's process's `BuildReport`; None when there is none; why, when it is bad."""
    data = _read_regular(path, MAX_BUILD_REPORT)
    if data is None:
        return "not a regular file, or too big" if os.path.lexists(path) else None
    try:
        return BuildReport.model_validate_json(data)
    except ValidationError as err:
        return f"{err.error_count()} errors"


def _write_inputs(run_dir: Path, sim_run: SimulationRun, entry: bytes | None) -> None:
    if entry is not None:  # a copy: the run may do what it likes with it
        (run_dir / GEOMETRY_IN).write_bytes(entry)
    (run_dir / RUN_FILE).write_text(sim_run.model_dump_json())


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file a run wrote (never followed as a link); None when there is
    none, or it is larger than `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def _read_report(path: Path) -> SimulationReport | None:
    """The child's verdict, if it wrote one: a regular file (never followed as a link) that
    parses; anything else is no verdict (the run's own code may have tampered with it)."""
    data = _read_regular(path, 16 * 1024 * 1024)
    if data is None:
        return None
    try:
        return SimulationReport.model_validate_json(data)
    except ValidationError:
        return None


def _crashed(outcome: SandboxOutcome, request: SimulationRequest) -> SimulationResult:
    """The child ended without a verdict: say why, in the words a user can act on."""
    if outcome.killed_reason == "timeout":
        reason = f"timeout: the run exceeded its {request.timeout_s:g}s wall-clock limit"
    elif outcome.killed_reason == "memory":
        reason = f"memory: the run exceeded its {request.memory_mb} MB limit"
    elif outcome.killed_reason == "disk":
        reason = "disk: the run exceeded its disk cap; nothing of it was kept"
    elif outcome.killed_reason == "processes":
        reason = "processes: the run exceeded its process limit"
    elif outcome.killed_reason == "cancelled":
        reason = "cancelled"
    elif outcome.signal:
        reason = f"crash: the simulation process died with {outcome.signal}"
    else:
        last = (outcome.stderr.strip().splitlines() or [""])[-1]
        reason = f"crash: the simulation process exited with code {outcome.exit_code}: {last}"
    return SimulationResult(
        outcome="FAIL",
        reason=reason,
        metrics={"wall_time_s": outcome.duration_s},
        warnings=outcome.warnings,
    )
