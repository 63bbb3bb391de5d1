"""The worker's geometry cache: a run that loads a scene's prepared parts gives the result a
run that builds them gives; what a run writes is checked before it is kept, and can only
ever serve later runs of its own source; `geometry_cache: false` neither reads nor stores;
cached runs fork a zygote without the CAD kernel, under the same containment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from temporalio.testing import ActivityEnvironment

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before anything imports mujoco

from shopfloor.artifacts import LocalArtifactStore  # noqa: E402
from shopfloor.kinds.simulation import meshes, scene  # noqa: E402
from shopfloor.kinds.simulation.activities import (  # noqa: E402
    GeometryCache,
    SimulationActivities,
    geometry_key,
)
from shopfloor.kinds.simulation.local import simulate  # noqa: E402
from shopfloor.kinds.simulation.meshes import (  # noqa: E402
    PREPARED_MAGIC,
    BadPrepared,
    Part,
    Prepared,
    dump_prepared,
    load_prepared,
)
from shopfloor.kinds.simulation.models import (  # noqa: E402
    SceneSource,
    SceneUri,
    SimOptions,
    SimulationRequest,
    SimulationResult,
)
from shopfloor.registry import WorkerContext, kind_named  # noqa: E402
from shopfloor.settings import Settings  # noqa: E402
from shopfloor.usercode import zygotes  # noqa: E402

RAMP_BOX = (Path(__file__).parents[2] / "examples" / "ramp_box.py").read_text()
QUICK = {"render": False, "duration_s": 3.0}
# Not what the physics decides: wall-clock timings, and what the cache did.
UNCOMPARED = {"timings_s", "wall_time_s", "physics_wall_s", "realtime_factor", "geometry_cache"}
TROUGH = (  # a non-convex fixed part: preparing it gives a warning
    "\nwall = Pos(-100, 0, 0) * (Box(40, 200, 200) - Pos(0, 0, 20) * Box(20, 180, 200))\n"
    "wall.label = 'trough'\n"
    "result = Compound(children=[ramp, box, goal, wall])\n"
    "fixed = ['ramp', 'trough']\n"
)


BOX_FAR_FROM_GOAL = (  # a box at rest on the floor, its goal 1 m away: a FAIL
    "from build123d import Box, Compound, Pos\n"
    "box = Pos(0, 0, 20) * Box(40, 40, 40)\n"
    "box.label = 'box'\n"
    "goal = Pos(1000, 0, 40) * Box(200, 200, 80)\n"
    "goal.label = 'zone_goal_far'\n"
    "result = Compound(children=[box, goal])\n"
)


def source(tag: str, extra: str = "") -> str:
    """The reference scene as a source of its own (its own cache key)."""
    return f"{RAMP_BOX}{extra}\n# {tag}\n"


def physics(result: Any) -> dict:
    return {k: v for k, v in result.metrics.items() if k not in UNCOMPARED}


def same_result(a: Any, b: Any) -> None:
    assert (a.outcome, a.reason, a.warnings) == (b.outcome, b.reason, b.warnings)
    assert physics(a) == physics(b)


# ------------------------------------------------------------------ the pipeline, in-process


def test_loading_prepared_parts_gives_what_building_them_gives(tmp_path: Path) -> None:
    options = SimOptions(**QUICK, seed=4, spawn_jitter_mm=5)
    built = simulate(
        source("local", TROUGH),
        options,
        out=tmp_path / "built",
        heartbeat=None,
        heartbeat_every_s=1,
        save_geometry=tmp_path / "prepared",
    )
    assert any("far from convex" in w for w in built.warnings), built.warnings
    # The scene's code is not run: parts, warnings and the STEP file come from the file.
    loaded = simulate(
        "raise SystemExit('the scene must not run')",
        options,
        out=tmp_path / "loaded",
        heartbeat=None,
        heartbeat_every_s=1,
        geometry=tmp_path / "prepared",
    )
    same_result(loaded, built)
    assert loaded.artifacts == built.artifacts
    assert {"mjcf", "step", "mesh:box", "mesh:ramp", "mesh:trough"} <= set(built.artifacts)
    for name in built.artifacts.values():
        assert (tmp_path / "loaded" / name).read_bytes() == (tmp_path / "built" / name).read_bytes()
    assert {"cad", "tessellate"} <= set(built.metrics["timings_s"])
    assert "cad" not in loaded.metrics["timings_s"] and "geometry" in loaded.metrics["timings_s"]


def test_a_run_that_fails_before_the_export_writes_nothing(tmp_path: Path) -> None:
    report = simulate(
        source("fails"),
        SimOptions(**QUICK, target_label="nothing_by_that_name"),
        out=tmp_path / "out",
        heartbeat=None,
        heartbeat_every_s=1,
        save_geometry=tmp_path / "prepared",
    )
    assert report.outcome == "FAIL" and "target_label" in report.reason
    assert not (tmp_path / "prepared").exists()


def test_loading_prepared_parts_needs_no_cad_kernel(tmp_path: Path) -> None:
    simulate(
        source("no cad"),
        SimOptions(**QUICK),
        out=tmp_path / "built",
        heartbeat=None,
        heartbeat_every_s=1,
        save_geometry=tmp_path / "prepared",
    )
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from shopfloor.kinds.simulation.local import simulate\n"
        "r = simulate('raise SystemExit(3)', {'render': False, 'duration_s': 3.0}, "
        "out=Path(sys.argv[1]), heartbeat=None, heartbeat_every_s=1, geometry=Path(sys.argv[2]))\n"
        "print(r.outcome, 'build123d' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "loaded"), str(tmp_path / "prepared")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MUJOCO_GL": "osmesa"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SUCCESS", "False"]


class _Recording:
    """Options that note which of their fields are read."""

    def __init__(self, options: SimOptions) -> None:
        self._options, self.read = options, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._options, name)


def test_the_cache_key_names_every_option_that_shapes_the_parts() -> None:
    """`prepare_parts` reads no option outside GEOMETRY_OPTIONS (for every kind of part:
    bodies from CAD, a non-convex one, zones, an STL mesh)."""
    raw, fixed, _ = scene.load_scene(source("options", TROUGH))
    verts = np.array([[x, y, z] for x in (0, 9) for y in (0, 9) for z in (0, 9)], float) + 200
    faces = np.array(
        [[0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
         [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5]]
    )  # fmt: skip
    raw.append(scene.RawPart(label="cube", mesh=(verts, faces)))
    options = _Recording(SimOptions(fixed_labels=["cube"]))
    warnings: list[str] = []
    meshes.prepare_parts(raw, fixed, options, warnings)  # type: ignore[arg-type]
    assert warnings and options.read <= set(meshes.GEOMETRY_OPTIONS), options.read


def test_the_cache_key() -> None:
    base = SimOptions()
    key = geometry_key("src", base, 2048)
    assert len(key) == 64 and key == geometry_key("src", SimOptions(), 2048)
    # What changes the parts changes the key...
    assert geometry_key("src ", base, 2048) != key
    assert geometry_key("src", base, 1024) != key
    for change in (
        {"fixed_labels": ["ramp"]},
        {"mesh_tolerance_mm": 0.5},
        {"convexity_warn_ratio": 0.5},
    ):
        assert geometry_key("src", SimOptions(**change), 2048) != key, change
    # ...what only changes the run does not.
    for change in (
        {"seed": 3, "spawn_jitter_mm": 5},
        {"render": False},
        {"duration_s": 1.0},
        {"friction": 0.1},
        {"target_label": "box"},
        {"geometry_cache": False},
    ):
        assert geometry_key("src", SimOptions(**change), 2048) == key, change


# ------------------------------------------------------------------ the file: checked in full


@pytest.fixture(scope="module")
def prepared_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("prepared") / "prepared"
    simulate(
        source("file"),
        SimOptions(**QUICK),
        out=path.parent / "out",
        heartbeat=None,
        heartbeat_every_s=1,
        save_geometry=path,
    )
    return path.read_bytes()


def _split(data: bytes) -> tuple[dict, bytes]:
    pos = len(PREPARED_MAGIC)
    n = int.from_bytes(data[pos : pos + 8], "little")
    return json.loads(data[pos + 8 : pos + 8 + n]), data[pos + 8 + n :]


def _join(header: dict | str, payload: bytes) -> bytes:
    head = (header if isinstance(header, str) else json.dumps(header)).encode()
    return PREPARED_MAGIC + len(head).to_bytes(8, "little") + head + payload


def _edit(edit: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, payload = _split(data)
        edit(header)
        return _join(header, payload)

    return apply


def _payload(edit: Callable[[np.ndarray, np.ndarray], None]) -> Callable[[bytes], bytes]:
    """Edits the first body's first solid (the ramp: vertices, then faces)."""

    def apply(data: bytes) -> bytes:
        header, payload = _split(data)
        n_verts, n_faces = header["parts"][0]["solids"][0]
        verts = np.frombuffer(payload, "<f8", n_verts * 3).reshape(-1, 3).copy()
        faces = np.frombuffer(payload, "<i8", n_faces * 3, offset=verts.nbytes).reshape(-1, 3)
        faces = faces.copy()
        edit(verts, faces)
        rest = payload[verts.nbytes + faces.nbytes :]
        return _join(header, verts.tobytes() + faces.tobytes() + rest)

    return apply


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        *where, last = path.split(".")
        node: Any = header
        for key in where:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return edit


TAMPERED = {
    "truncated": lambda d: d[:-1],
    "a byte too many": lambda d: d + b"\0",
    "not the format": lambda d: b"x" + d[1:],
    "empty": lambda d: b"",
    "header longer than the file": lambda d: (
        d[: len(PREPARED_MAGIC)] + (2**62).to_bytes(8, "little")
    ),
    "header not JSON": lambda d: _join("{nope", _split(d)[1]),
    "NaN in the header": lambda d: _join(
        json.dumps(_split(d)[0]).replace("0.0", "NaN", 1), _split(d)[1]
    ),
    "unknown field": _edit(_set("extra", 1)),
    "other format version": _edit(_set("format", 2)),
    "bad label": _edit(_set("parts.0.label", "no spaces allowed")),
    "zone label of no zone kind": _edit(_set("parts.2.label", "zone_bogus")),
    "role not the label's": _edit(_set("parts.1.role", "goal")),
    "duplicate labels": _edit(_set("parts.1.label", "ramp")),
    "fixed not a bool": _edit(_set("parts.0.fixed", 1)),
    "bounds not the vertices'": _edit(lambda h: h["parts"][0]["lo"].__setitem__(0, -1e6)),
    "non-finite bounds": _edit(_set("parts.2.hi", [1e400, 1, 1])),
    "zone with solids": _edit(_set("parts.2.solids", [[8, 12]])),
    "body without solids": _edit(_set("parts.0.solids", [])),
    "body without centre": _edit(_set("parts.1.com", None)),
    "too many faces": _edit(_set("parts.0.solids", [[8, meshes.MAX_FACES + 1]])),
    "more arrays than bytes": _edit(_set("parts.0.solids", [[100_000, 150_000]])),
    "negative count": _edit(_set("parts.0.solids", [[-3, 12]])),
    "STEP longer than the file": _edit(_set("step", 10**9)),
    "warnings not text": _edit(_set("warnings", [{"a": 1}])),
    "face indexing no vertex": _payload(lambda v, f: f.__setitem__((0, 0), len(v))),
    "negative face index": _payload(lambda v, f: f.__setitem__((0, 1), -1)),
    "NaN vertex": _payload(lambda v, f: v.__setitem__((0, 0), np.nan)),
    "vertex outside the bounds": _payload(lambda v, f: v.__setitem__((0, 0), 1e9)),
}


def test_an_untouched_file_loads(prepared_file: bytes) -> None:
    prepared = load_prepared(prepared_file)
    assert [(p.label, p.role, p.fixed) for p in prepared.parts] == [
        ("ramp", "body", True),
        ("box", "body", False),
        ("zone_goal_landing", "goal", True),
    ]
    assert prepared.step and prepared.step.startswith(b"ISO-10303-21")
    assert all(
        v.flags.writeable and v.dtype == np.float64 for p in prepared.parts for v, _ in p.meshes
    )


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_file_is_refused(prepared_file: bytes, tamper: Callable) -> None:
    with pytest.raises(BadPrepared):
        load_prepared(tamper(prepared_file))


def test_sizes_are_bounded_before_anything_is_read() -> None:
    with pytest.raises(BadPrepared, match="limit"):
        load_prepared(b"\0" * (meshes.MAX_PREPARED_BYTES + 1))


def test_dump_then_load_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    verts = rng.normal(size=(8, 3)) * 1e3
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    body = Part("b", "body", False, verts.min(0), verts.max(0), [(verts, faces)], verts.mean(0))
    zone = Part("zone_start_s", "start", True, np.zeros(3), np.ones(3) / 3)
    dump_prepared(Prepared([body, zone], ["a warning"], b"STEP"), tmp_path / "p")
    back = load_prepared((tmp_path / "p").read_bytes())
    assert back.warnings == ["a warning"] and back.step == b"STEP"
    for a, b in zip([body, zone], back.parts, strict=True):
        assert (a.label, a.role, a.fixed) == (b.label, b.role, b.fixed)
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)
        assert all(
            np.array_equal(x, y)
            for m, n in zip(a.meshes, b.meshes, strict=True)
            for x, y in zip(m, n, strict=True)
        )


# ------------------------------------------------------------------ the worker's cache


def test_the_cache_keeps_the_most_recently_used_within_its_bound() -> None:
    cache = GeometryCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recently used
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("big", b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("big") is None and len(cache) == 2


async def test_runs_of_one_key_wait_for_the_one_that_builds_it() -> None:
    cache = GeometryCache(wait_s=5)
    assert await cache.claim("k") == (None, True)
    waiter = asyncio.create_task(cache.claim("k"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    cache.put("k", b"entry")
    cache.done("k")
    assert await waiter == (b"entry", False)
    # A builder that ends without an entry hands the build to the next one.
    assert await cache.claim("j") == (None, True)
    waiter = asyncio.create_task(cache.claim("j"))
    await asyncio.sleep(0.05)
    cache.done("j")
    assert await waiter == (None, True)
    # Nobody waits longer than wait_s.
    impatient = GeometryCache(wait_s=0.1)
    assert await impatient.claim("k") == (None, True)
    assert await impatient.claim("k") == (None, False)


# ------------------------------------------------------------------ through the activity


@pytest.fixture(scope="module")
async def activities(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator:
    root = tmp_path_factory.mktemp("sim-cache-artifacts")
    served = [kind_named("simulation")]
    async with WorkerContext(
        settings=Settings(data_dir=root), artifacts=LocalArtifactStore(root), served=served
    ) as ctx:
        acts = SimulationActivities(ctx, await ctx.shared(zygotes))
        try:
            yield acts, root
        finally:
            await acts.light.close()


def request(src: str, **options: object) -> SimulationRequest:
    return SimulationRequest(scene=SceneSource(source=src), options=SimOptions(**options))


async def run(acts: SimulationActivities, req: SimulationRequest) -> SimulationResult:
    return await ActivityEnvironment().run(acts.run_simulation, req)


def artifact(root: Path, result: SimulationResult, key: str) -> bytes:
    return LocalArtifactStore(root).path_for(result.artifact_urls[key]).read_bytes()


async def test_hit_miss_and_off_give_the_same_result(activities) -> None:
    acts, root = activities
    src = source("hit miss off", TROUGH)
    options = {**QUICK, "seed": 11, "spawn_jitter_mm": 5}
    miss = await run(acts, request(src, **options))
    hit = await run(acts, request(src, **options))
    off = await run(acts, request(src, **options, geometry_cache=False))
    assert [r.metrics["geometry_cache"] for r in (miss, hit, off)] == ["miss", "hit", "off"]
    assert "cad" in miss.metrics["timings_s"] and "cad" in off.metrics["timings_s"]
    assert "cad" not in hit.metrics["timings_s"]
    assert any("far from convex" in w for w in miss.warnings)
    for other in (hit, off):
        same_result(other, miss)
        assert set(other.artifact_urls) == set(miss.artifact_urls)
        for key in miss.artifact_urls:
            if key != "step":  # a fresh STEP export has a new timestamp in its header
                assert artifact(root, other, key) == artifact(root, miss, key), key
    assert artifact(root, hit, "step") == artifact(root, miss, "step")


async def test_variants_of_one_source_share_its_entry(activities) -> None:
    acts, _ = activities
    src = source("variants")
    first = await run(acts, request(src, **QUICK, seed=1, spawn_jitter_mm=5))
    second = await run(acts, request(src, **QUICK, seed=2, spawn_jitter_mm=5, friction=0.6))
    assert (first.metrics["geometry_cache"], second.metrics["geometry_cache"]) == ("miss", "hit")
    fresh = await run(
        acts, request(src, **QUICK, seed=2, spawn_jitter_mm=5, friction=0.6, geometry_cache=False)
    )
    same_result(second, fresh)
    assert physics(first) != physics(second)
    # A different mesh option is a different entry.
    coarse = await run(acts, request(src, **QUICK, mesh_tolerance_mm=2.0))
    assert coarse.metrics["geometry_cache"] == "miss"


async def test_an_uploaded_source_shares_the_entry_of_the_same_text(activities) -> None:
    acts, _ = activities
    src = source("uploaded")
    inline = await run(acts, request(src, **QUICK))
    uri = acts.ctx.artifacts.put_upload("scene.py", src.encode())
    uploaded = await run(
        acts, SimulationRequest(scene=SceneUri(uri=uri), options=SimOptions(**QUICK))
    )
    assert uploaded.metrics["geometry_cache"] == "hit"
    same_result(uploaded, inline)


async def test_a_run_that_tampers_with_what_it_prepared_fails_and_is_not_cached(
    activities,
) -> None:
    """What the scene's process prepared is all the simulation gets: garbage is a FAIL."""
    acts, _ = activities
    src = source(
        "tampers",
        "\nimport shopfloor.kinds.simulation.meshes as m\n"
        "m.dump_prepared = lambda prepared, path: path.write_bytes(b'not parts at all')\n",
    )
    before = len(acts.geometry)
    first = await run(acts, request(src, **QUICK))
    assert first.outcome == "FAIL", first.reason
    assert first.reason == (
        "the scene's prepared geometry was refused: not a prepared-geometry file"
    )
    assert len(acts.geometry) == before
    second = await run(acts, request(src, **QUICK))
    assert second.metrics["geometry_cache"] == "miss"  # nothing was kept: built again


async def test_a_scene_that_moves_its_centre_of_mass_into_the_goal_fails(activities) -> None:
    """A body's frame sits at its centre of mass, which the goal and rest checks follow: a box
    at rest far from the goal, handed over with its centre inside the goal zone and its meshes
    where they were, would pass (checked in test_trusted_parts.py); the simulation's own
    process refuses it."""
    acts, _ = activities
    forged = (
        "import numpy as _np\n"
        "import shopfloor.kinds.simulation.meshes as m\n"
        "_dump = m.dump_prepared\n"
        "def _into_the_goal(prepared, path):\n"
        "    prepared.parts[0].com = _np.array([1000.0, 0.0, 20.0])\n"
        "    _dump(prepared, path)\n"
        "m.dump_prepared = _into_the_goal\n" + BOX_FAR_FROM_GOAL
    )
    honest = await run(acts, request(BOX_FAR_FROM_GOAL, **QUICK))
    assert honest.outcome == "FAIL" and honest.reason.startswith("time limit"), honest.reason
    result = await run(acts, request(forged, **QUICK))
    assert result.outcome == "FAIL"
    assert result.reason == "part 'box': its centre of mass is not its meshes'"


async def test_a_poisoned_entry_only_ever_serves_its_own_source(activities) -> None:
    """A scene may write whatever valid parts it likes for its own key (which only runs of
    its very text use), never for another: the key is the worker's, from the request."""
    acts, _ = activities
    poison = source(
        "poison",
        "\nimport shopfloor.kinds.simulation.meshes as m\n"
        "_dump = m.dump_prepared\n"
        "def _shifted(prepared, path):\n"
        "    for p in prepared.parts:\n"
        "        for v, _ in p.meshes:\n"
        "            v += 1000.0\n"
        "        p.lo, p.hi = p.lo + 1000.0, p.hi + 1000.0\n"
        "        if p.com is not None:\n"
        "            p.com = p.com + 1000.0\n"
        "    _dump(prepared, path)\n"
        "m.dump_prepared = _shifted\n",
    )
    await run(acts, request(poison, **QUICK))
    clean = source("poison")  # what a victim might run: another text, so another key
    victim = await run(acts, request(clean, **QUICK))
    assert victim.metrics["geometry_cache"] == "miss"
    fresh = await run(acts, request(clean, **QUICK, geometry_cache=False))
    same_result(victim, fresh)


async def test_opting_out_neither_reads_nor_stores(activities) -> None:
    acts, _ = activities
    # The scene writes valid parts where a building run would: with the cache off the worker
    # does not even look at them.
    src = source(
        "opt out",
        "\nfrom pathlib import Path as _P\n"
        "from shopfloor.kinds.simulation import meshes as _m, scene as _s\n"
        "from shopfloor.kinds.simulation.models import SimOptions as _O\n"
        "_parts = _m.prepare_parts(_s._parts_of(result), fixed, _O(), [])\n"
        "_m.dump_prepared(_m.Prepared(_parts, ['planted'], None), _P('geometry.prepared'))\n",
    )
    before = len(acts.geometry)
    off = await run(acts, request(src, **QUICK, geometry_cache=False))
    assert off.metrics["geometry_cache"] == "off" and len(acts.geometry) == before
    on = await run(acts, request(src, **QUICK))
    assert on.metrics["geometry_cache"] == "miss"
    hit = await run(acts, request(src, **QUICK))  # what the pipeline wrote, not the scene
    assert hit.metrics["geometry_cache"] == "hit" and "planted" not in hit.warnings
    same_result(hit, on)
    # An entry exists now; opting out still builds the scene.
    again = await run(acts, request(src, **QUICK, geometry_cache=False))
    assert again.metrics["geometry_cache"] == "off" and "cad" in again.metrics["timings_s"]
    same_result(again, on)


async def test_parts_are_not_cached(activities) -> None:
    acts, _ = activities
    from shopfloor.kinds.simulation.warmup import warm_up_scene

    result = await run(acts, SimulationRequest(scene=warm_up_scene(), options=SimOptions(**QUICK)))
    assert "geometry_cache" not in result.metrics


async def test_hits_fork_a_zygote_without_cad_under_the_same_containment(activities) -> None:
    acts, root = activities
    src = source("light zygote")
    miss = await run(acts, request(src, **QUICK))
    for _ in range(600):
        if acts.light.up:
            break
        await asyncio.sleep(0.1)
    assert acts.light.up
    light = acts.light._zygotes.warm  # type: ignore[union-attr]
    heavy = acts.zygotes.warm
    assert "build123d" in heavy.modules and "build123d" not in light.modules
    assert (light.mounts, light.memory_cgroups) == (heavy.mounts, heavy.memory_cgroups)
    forked: list[str] = []
    run_call = light.run_call

    async def counting(target: str, *args: Any, **kwargs: Any) -> Any:
        forked.append(target)
        return await run_call(target, *args, **kwargs)

    light.run_call = counting  # type: ignore[method-assign]
    try:
        hit = await run(acts, request(src, **QUICK))
        video = await run(acts, request(src, duration_s=1.0, width=160, height=120))
    finally:
        del light.run_call
    assert len(forked) == 2
    assert hit.metrics["geometry_cache"] == "hit"
    same_result(hit, miss)
    assert video.outcome == "SUCCESS" and video.video_url, video
    assert LocalArtifactStore(root).path_for(video.video_url).stat().st_size > 1000
    # A run with another GL backend runs cold: it loads the parts too, without build123d.
    cold = await run(acts, request(src, **QUICK, gl_backend="egl"))
    assert cold.metrics["geometry_cache"] == "hit"
    same_result(cold, miss)
