"""run_simulation: one simulation in a sandboxed child (warm fork by default), heartbeating.

User geometry code never runs in the worker: bad geometry, a broken script, a crash or a
runaway run become a FAIL result with a reason. Only infrastructure failures raise (and are
retried). Data goes one way: the request becomes one `SimulationRun` file in the run's
directory (uploaded and inline parts as files beside it), the child writes its artifacts to
`out/` and reports them by name, and `out/` goes to the store; the result carries their URIs.

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
import hashlib
import json
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import ValidationError
from temporalio import activity

from shopfloor.artifacts import ArtifactError
from shopfloor.jobs import PROGRESS_EVERY_S, invalid_input
from shopfloor.kinds.simulation import gl, meshes
from shopfloor.kinds.simulation.kind import KIND
from shopfloor.kinds.simulation.models import (
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
from shopfloor.kinds.simulation.runner import CAD_MODULES, REPORT_FILE, RUN_FILE
from shopfloor.registry import ActivitiesIterator, WorkerContext
from shopfloor.sandbox import Call, Limits, SandboxOutcome, Zygote
from shopfloor.settings import Settings
from shopfloor.usercode import (
    UserCodeRun,
    Zygotes,
    cold_module_argv,
    refuse_over_ceilings,
    warm_environment,
    zygote_options,
    zygotes,
)

log = logging.getLogger(__name__)
RUNNER = "shopfloor.kinds.simulation.runner"
SCENE_DIR = "scene"  # parts given as files, in the run's directory
# In the run's directory, beside out/ (never stored as artifacts): a cached entry for the run
# to load, and where a run that builds its scene writes what it prepared.
GEOMETRY_IN, GEOMETRY_OUT = "geometry.cached", "geometry.prepared"
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
        self._task: asyncio.Task | None = None  # starting it, then stopping it when idle
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
        options = zygote_options(self.base.contain, self.settings)
        try:
            return await Zygote.start(
                self.modules, warm_environment(self.modules), name="light", **options
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
        yield [activities.run_simulation]
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
        fmt = scene.resolved_format
        if fmt not in ("stl", "step"):
            raise invalid_input(f"cannot tell the scene format of {scene.uri}: give `format`")
        path = f"{SCENE_DIR}/part0.{fmt}"
        try:
            # A copy: the store stays out of the child's reach.
            self.ctx.artifacts.copy_to(scene.uri, run_dir / path)
        except ArtifactError as err:
            raise invalid_input(str(err)) from err
        label = scene.label or Path(scene.uri).stem
        part = PartFile(label=label, format=fmt, path=path, fixed=scene.fixed)  # type: ignore[arg-type]
        return SceneFiles(parts=[part])

    @activity.defn(name="run_simulation")
    async def run_simulation(self, request: SimulationRequest) -> SimulationResult:
        refuse_over_ceilings(request, self.ctx.settings)
        limits = Limits(wall_timeout_s=request.timeout_s, memory_mb=request.memory_mb)
        source = (
            request.scene
            if isinstance(request.scene, SceneSource)
            # Reads the store (S3: network): off the event loop.
            else await asyncio.to_thread(self._source_of, request.scene)
        )
        cache = key = entry = None
        builds = False  # this run builds the key's entry: others wait for it
        if source is not None:
            cache = "off"
            if request.options.geometry_cache:
                key = geometry_key(source.source, request.options, request.memory_mb)
                entry, builds = await self.geometry.claim(key)
                cache = "hit" if entry is not None else "miss"
        try:
            async with (
                self.light.use(entry is not None) as zygotes,
                UserCodeRun(zygotes, self.ctx.artifacts, limits) as run,
            ):
                if run.earlier_result is not None:  # its run finished here; Temporal lost it
                    return run.earlier_result
                if run.adopted:
                    # Its dir is prepared, its scene running. A run handed over from a local
                    # attempt that builds its parts still saves them (`builds`, below).
                    cache = None
                else:
                    sim_run = SimulationRun(
                        scene=source
                        if source is not None
                        else await asyncio.to_thread(
                            self._parts_for_run,
                            request.scene,  # type: ignore[arg-type]
                            run.path,
                        ),
                        options=request.options,
                        out_dir="out",
                        memory_mb=request.memory_mb,
                        progress_every_s=PROGRESS_EVERY_S,
                        geometry=GEOMETRY_IN if entry is not None else None,
                        save_geometry=GEOMETRY_OUT if builds else None,
                    )
                    await asyncio.to_thread(_write_inputs, run.path, sim_run, entry)
                result = await self._run(request, run)
                if builds:
                    # Checked off the event loop; kept on it (the cache is the loop's alone).
                    checked = await asyncio.to_thread(_checked_geometry, run.path / GEOMETRY_OUT)
                    if checked is not None:
                        self.geometry.put(key, checked)  # type: ignore[arg-type]
                        self.light.start()  # for the hits to come
                if cache is not None:
                    result.metrics["geometry_cache"] = cache
                return run.keep(result)
        finally:
            if builds:
                self.geometry.done(key)  # type: ignore[arg-type]

    async def _run(self, request: SimulationRequest, run: UserCodeRun) -> SimulationResult:
        # The warm zygote bound its GL backend when it imported mujoco; another backend
        # needs a fresh interpreter.
        warm = request.options.gl_backend == gl.worker_backend()
        outcome = await run.run(
            warm=Call(f"{RUNNER}:run_in_child", RUN_FILE) if warm else None,
            cold=cold_module_argv(RUNNER, RUN_FILE),
        )
        report = _read_report(run.path / REPORT_FILE) if outcome.killed_reason != "disk" else None
        if report is None:
            return _crashed(outcome, request)
        collected = await run.collect(outcome)
        if collected.over_cap is not None:  # out/ over its caps: stored nothing, a FAIL
            return _crashed(outcome, request)
        result = report.result(collected.uris.get)
        if collected.refused:
            refused = "; ".join(collected.refused_list())
            result.warnings.append(f"artifacts not stored: {refused}")
        return result


def _checked_geometry(path: Path) -> bytes | None:
    """What a run wrote at `path`, if all of it checks out. The run had run the scene's code,
    so the file is untrusted input: read once (never through a link) and checked; the
    checked bytes are what the caller keeps."""
    data = _read_regular(path, meshes.MAX_PREPARED_BYTES)
    if data is None:
        return None  # the run failed before it prepared its parts, or they are too big
    try:
        meshes.load_prepared(data)
    except meshes.BadPrepared as err:
        log.warning("prepared geometry of a run refused, not cached: %s", err)
        return None
    return data


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
