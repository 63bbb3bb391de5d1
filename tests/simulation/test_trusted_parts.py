"""The simulation's own process trusts only the parts it is handed, and not even those: the
scene's process wrote them after running the scene's code. Whatever is wrong with them
(bad shapes, NaN, huge counts, a forged centre of mass, a fixed part set free) is a clear FAIL
from `simulate(geometry=...)`, the code that process runs, never a crash or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before anything imports mujoco

from shopfloor.kinds.simulation import local, meshes  # noqa: E402
from shopfloor.kinds.simulation.models import SimOptions, SimulationRun  # noqa: E402
from shopfloor.kinds.simulation.runner import REPORT_FILE, RUN_FILE  # noqa: E402

QUICK = SimOptions(render=False, duration_s=2.0)
BOX_FAR_FROM_GOAL = """
from build123d import Box, Compound, Pos
base = Pos(-300, 0, 10) * Box(100, 100, 20)
base.label = "base"
box = Pos(0, 0, 20) * Box(40, 40, 40)
box.label = "box"
goal = Pos(1000, 0, 40) * Box(200, 200, 80)
goal.label = "zone_goal_far"
result = Compound(children=[base, box, goal])
fixed = ["base"]
"""
pytestmark = pytest.mark.timeout(120)  # a hang is a failure too


@pytest.fixture(scope="module")
def handed_over(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What an honest scene's process hands over (parts: base, box, zone_goal_far)."""
    path = tmp_path_factory.mktemp("handover") / "geometry.prepared"
    built = local.build(BOX_FAR_FROM_GOAL, QUICK, handover=path, heartbeat=None)
    assert built.fail is None, built.fail
    return path.read_bytes()


def judge(tmp_path: Path, data: bytes, options: SimOptions = QUICK, **kwargs: object):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "parts").write_bytes(data)
    return local.simulate(
        None,
        options,
        out=tmp_path / "out",
        heartbeat=None,
        heartbeat_every_s=1,
        geometry=tmp_path / "parts",
        **kwargs,  # type: ignore[arg-type]
    )


def split(data: bytes) -> tuple[dict, bytes]:
    pos = len(meshes.PREPARED_MAGIC)
    n = int.from_bytes(data[pos : pos + 8], "little")
    return json.loads(data[pos + 8 : pos + 8 + n]), data[pos + 8 + n :]


def join(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return meshes.PREPARED_MAGIC + len(head).to_bytes(8, "little") + head + payload


def edit_header(change: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, payload = split(data)
        change(header)
        return join(header, payload)

    return apply


def edit_box(change: Callable[[np.ndarray, np.ndarray], tuple]) -> Callable[[bytes], bytes]:
    """Replaces the box's mesh (the second part's only solid) by `change(verts, faces)`,
    with the header's counts and bounds made to match (so only the mesh itself is wrong)."""

    def apply(data: bytes) -> bytes:
        header, payload = split(data)
        (nv0, nf0), (nv1, nf1) = header["parts"][0]["solids"][0], header["parts"][1]["solids"][0]
        start = (nv0 + nf0) * 24
        verts = np.frombuffer(payload, "<f8", nv1 * 3, offset=start).reshape(-1, 3).copy()
        faces = np.frombuffer(payload, "<i8", nf1 * 3, offset=start + nv1 * 24).reshape(-1, 3)
        verts, faces = change(verts, faces.copy())
        box = header["parts"][1]
        box["solids"] = [[len(verts), len(faces)]]
        if np.isfinite(verts).all():
            box["lo"], box["hi"] = verts.min(0).tolist(), verts.max(0).tolist()
        end = start + (nv1 + nf1) * 24
        mesh = verts.astype("<f8").tobytes() + faces.astype("<i8").tobytes()
        return join(header, payload[:start] + mesh + payload[end:])

    return apply


def set_box(field: str, value: object) -> Callable[[bytes], bytes]:
    return edit_header(lambda h: h["parts"][1].__setitem__(field, value))


MALFORMED = {
    "not parts at all": (lambda d: b"not parts at all", "not a prepared-geometry file"),
    "truncated": (lambda d: d[: len(d) // 2], "refused: "),
    "header length beyond the file": (
        lambda d: meshes.PREPARED_MAGIC + (2**62).to_bytes(8, "little"),
        "truncated header",
    ),
    "NaN vertex": (edit_box(lambda v, f: (np.where(v == v.max(), np.nan, v), f)), "non-finite"),
    "faces not triples": (
        edit_header(lambda h: h["parts"][1].__setitem__("solids", [[8, 12, 3]])),
        "bad solid list",
    ),
    "a billion faces": (set_box("solids", [[3 * 10**9, 10**9]]), "bad mesh size"),
    "a hundred thousand parts": (
        edit_header(lambda h: h.__setitem__("parts", h["parts"] * 34_000)),
        "bad part list",
    ),
    "more than the size limit": (
        lambda d: d + b"\0" * meshes.MAX_PREPARED_BYTES,
        f"limit {meshes.MAX_PREPARED_BYTES}",
    ),
    "face indexing no vertex": (edit_box(lambda v, f: (v, np.where(f == 0, 99, f))), "index"),
    "open mesh": (edit_box(lambda v, f: (v, f[1:])), "not a closed manifold solid"),
    "faces wound inwards": (edit_box(lambda v, f: (v, f[:, ::-1])), "wound inwards"),
    "flat mesh": (
        edit_box(lambda v, f: (v * np.array([1.0, 1.0, 0.0]) + [0, 0, 20], f)),
        "zero volume",
    ),
    "centre of mass not the meshes'": (
        set_box("com", [1000.0, 0.0, 20.0]),
        "its centre of mass is not its meshes'",
    ),
}


@pytest.mark.parametrize(("malform", "needle"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_parts_are_a_clear_fail(
    handed_over: bytes, malform: Callable, needle: str, tmp_path: Path
) -> None:
    report = judge(tmp_path, malform(handed_over))
    assert report.outcome == "FAIL"
    assert needle in report.reason, report.reason
    assert report.artifacts == {}  # nothing of a refused scene is written


def test_honest_parts_pass_unchanged(handed_over: bytes, tmp_path: Path) -> None:
    prepared = meshes.load_prepared(handed_over)
    before = [(p.label, p.fixed, None if p.com is None else p.com.copy()) for p in prepared.parts]
    parts = meshes.trusted_parts(prepared, QUICK, set())
    after = [(p.label, p.fixed, p.com) for p in parts]
    assert [(label, fixed) for label, fixed, _ in before] == [(a, b) for a, b, _ in after]
    for (_, _, com), (_, _, kept) in zip(before, after, strict=True):
        assert (com is None and kept is None) or np.array_equal(com, kept)
    report = judge(tmp_path, handed_over)
    assert report.outcome == "FAIL" and report.reason.startswith("time limit"), report.reason


def test_a_forged_centre_of_mass_would_have_passed(
    handed_over: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the centre is checked: without the check, the box that never moved passes."""
    forged = set_box("com", [1000.0, 0.0, 20.0])(handed_over)
    monkeypatch.setattr(meshes, "trusted_parts", lambda prepared, options, fixed: prepared.parts)
    report = judge(tmp_path, forged)
    assert report.outcome == "SUCCESS", report.reason


def test_the_requests_fixed_parts_stay_fixed(handed_over: bytes, tmp_path: Path) -> None:
    freed = edit_header(lambda h: h["parts"][0].__setitem__("fixed", False))(handed_over)
    # Freed by the file: without the request's word both parts move (and need a target).
    loose = judge(tmp_path / "loose", freed, QUICK.model_copy(update={"target_label": "box"}))
    assert set(loose.metrics["parts"]) == {"base", "box"}
    held = judge(tmp_path / "held", freed, QUICK.model_copy(update={"fixed_labels": ["base"]}))
    assert set(held.metrics["parts"]) == {"box"}, held.reason
    by_part = judge(tmp_path / "by part", freed, fixed_parts=["base"])
    assert set(by_part.metrics["parts"]) == {"box"}, by_part.reason
    unknown = judge(tmp_path / "unknown", handed_over, fixed_parts=["nothing"])
    assert unknown.outcome == "FAIL" and "fixed labels name no part: nothing" in unknown.reason


def test_the_simulation_process_reports_a_fail_and_exits_normally(
    handed_over: bytes, tmp_path: Path
) -> None:
    """The runner as the worker starts it cold, on parts with a billion faces."""
    (tmp_path / "out").mkdir()
    (tmp_path / "geometry.cached").write_bytes(set_box("solids", [[3 * 10**9, 10**9]])(handed_over))
    run = SimulationRun(
        scene=None, options=QUICK, memory_mb=512, progress_every_s=1, geometry="geometry.cached"
    )
    (tmp_path / RUN_FILE).write_text(run.model_dump_json())
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor.kinds.simulation.runner", RUN_FILE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["outcome"] == "FAIL" and "bad mesh size" in report["reason"]
