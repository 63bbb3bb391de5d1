"""Scene -> validated meshes -> MJCF.

Every problem a user can cause (bad script, bad geometry, bad labels) raises `SceneError`
with a sentence meant for that user; `local.simulate_local` turns it into a FAIL verdict.
build123d and MuJoCo are imported lazily: MuJoCo must not be imported before MUJOCO_GL is set
(see render.py) and build123d costs seconds to import.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from shopfloor.kinds.simulation.models import (
    LABEL_HELP,
    LABEL_RE,
    MAX_FACES,
    SceneGeometry,
    SceneInput,
    SceneSource,
    SimOptions,
)

log = logging.getLogger(__name__)
MM = 1e-3  # CAD millimetres -> MJCF metres
ZONE_PREFIXES = {"zone_goal_": "goal", "zone_forbid_": "forbid", "zone_start_": "start"}
ZONE_RGBA = {"goal": "0.2 0.8 0.3 0.3", "forbid": "0.9 0.2 0.2 0.3", "start": "0.3 0.5 0.9 0.2"}
FIXED_RGBA, TARGET_RGBA, MOVABLE_RGBA = "0.6 0.6 0.65 1", "0.95 0.55 0.1 1", "0.3 0.5 0.8 1"


class SceneError(Exception):
    """The scene cannot be simulated; the message is the FAIL reason shown to the user."""


def is_cancellation(e: BaseException) -> bool:
    """Temporal cancels a sync activity by raising CancelledError (an Exception) in its thread:
    that must propagate, not turn into a FAIL verdict."""
    return type(e).__name__ == "CancelledError"


@dataclass
class RawPart:
    label: str
    shape: Any = None  # build123d Shape (source / STEP input)
    mesh: tuple[np.ndarray, np.ndarray] | None = None  # (vertices mm, faces) from STL input
    fixed: bool = False


@dataclass
class Part:
    label: str
    role: str  # "body" | "goal" | "forbid" | "start"
    fixed: bool
    lo: np.ndarray  # axis-aligned bounds, mm
    hi: np.ndarray
    meshes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per solid, mm
    com: np.ndarray | None = None  # mm
    volume: float = 0.0  # mm^3
    shape: Any = None


@dataclass
class Zone:
    label: str
    lo: np.ndarray  # metres
    hi: np.ndarray


@dataclass
class BuiltScene:
    xml: str
    assets: dict[str, bytes]  # mesh file name -> STL bytes
    mesh_files: dict[str, str]  # artifact key "mesh:<label>" -> file name
    target: str
    goals: list[Zone]
    forbids: list[Zone]
    lo: np.ndarray  # scene bounds in metres (zones included, floor excluded)
    hi: np.ndarray
    fall_z: float  # below this the target has fallen off the world (m)
    world_radius: float  # farther than this from the scene centre: off the world (m)
    parts: list[Part]
    step_shape: Any = None  # what export_step writes
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- loading


def load_scene(scene: Any) -> tuple[list[RawPart], list[str], Any]:
    """-> (parts, labels the script declared fixed, shape to export as STEP)."""
    try:
        if isinstance(scene, str):
            scene = SceneSource(source=scene)
        elif isinstance(scene, dict):  # SceneInput as JSON
            scene = TypeAdapter(SceneInput).validate_python(scene)
    except ValidationError as e:
        raise SceneError(f"invalid scene: {e}") from None
    if isinstance(scene, SceneSource):
        result, fixed = _exec_source(scene.source)
        parts = _parts_of(result)
        return parts, fixed, result if hasattr(result, "wrapped") else _compound_of(parts)
    if isinstance(scene, SceneGeometry):
        parts = [_import_part(p.label, p.format, p.data(), p.fixed) for p in scene.parts]
        return parts, [], _compound_of([p for p in parts if p.shape is not None])
    if hasattr(scene, "wrapped"):  # a build123d shape handed over directly (debugging)
        return _parts_of(scene), [], scene
    raise SceneError(f"unsupported scene type {type(scene).__name__}")


def _exec_source(source: str) -> tuple[Any, list[str]]:
    try:
        code = compile(source, "<scene>", "exec")
    except SyntaxError as e:
        raise SceneError(f"syntax error in scene script at line {e.lineno}: {e.msg}") from None
    namespace: dict[str, Any] = {"__name__": "__scene__"}
    try:
        exec(code, namespace)
    except (Exception, SystemExit) as e:  # OCCT errors are plain exceptions, often with no text
        if is_cancellation(e):
            raise
        line = next(
            (
                f.lineno
                for f in reversed(traceback.extract_tb(e.__traceback__))
                if f.filename == "<scene>"
            ),
            None,
        )
        where = f" at line {line}" if line else ""
        detail = f": {e}" if str(e) else ""
        raise SceneError(f"scene script raised {type(e).__name__}{where}{detail}") from None
    if "result" not in namespace:
        raise SceneError("scene script did not assign `result` (a Compound of labelled parts)")
    fixed = namespace.get("fixed", [])
    if not isinstance(fixed, list | tuple | set) or not all(isinstance(x, str) for x in fixed):
        raise SceneError("`fixed` must be a list of part labels")
    return namespace["result"], list(fixed)


def _parts_of(result: Any) -> list[RawPart]:
    if isinstance(result, dict):
        items = list(result.items())
    elif isinstance(result, list | tuple):
        items = [(getattr(s, "label", ""), s) for s in result]
    elif getattr(result, "children", None):
        # Children keep their own location; the parent's applies on top (build123d assemblies).
        loc = result.location
        moved = loc is not None and not loc.wrapped.IsIdentity()
        items = [(c.label, c.moved(loc) if moved else c) for c in result.children]
    elif hasattr(result, "wrapped"):
        items = [(result.label, result)]
    else:
        raise SceneError(
            f"`result` must be a build123d Compound with labelled children, "
            f"got {type(result).__name__}"
        )
    parts = []
    for i, (label, shape) in enumerate(items):
        if not hasattr(shape, "wrapped"):
            raise SceneError(f"part {label or i!r} is a {type(shape).__name__}, not a shape")
        parts.append(RawPart(label=label or f"part_{i}", shape=shape))
    return parts


def _import_part(label: str, fmt: str, data: bytes, fixed: bool) -> RawPart:
    if fmt == "stl":
        return RawPart(label=label, mesh=_parse_stl(label, data), fixed=fixed)
    from build123d import import_step

    with tempfile.NamedTemporaryFile(suffix=".step") as f:
        f.write(data)
        f.flush()
        try:
            shape = import_step(f.name)
        except Exception as e:
            raise SceneError(f"part {label!r}: cannot read STEP: {e}") from None
    return RawPart(label=label, shape=shape, fixed=fixed)


def _parse_stl(label: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    if len(data) >= 84 and len(data) == 84 + 50 * struct.unpack_from("<I", data, 80)[0]:
        rec = np.frombuffer(
            data, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")], offset=84
        )
        tris = rec["v"].astype(np.float64)
    else:
        nums = re.findall(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)", data)
        try:
            tris = np.array(nums, dtype=np.float64).reshape(-1, 3, 3)
        except ValueError:
            raise SceneError(f"part {label!r}: not a valid STL file") from None
    if len(tris) == 0 or not np.isfinite(tris).all():
        raise SceneError(f"part {label!r}: STL has no triangles or non-finite coordinates")
    return tris.reshape(-1, 3), np.arange(3 * len(tris), dtype=np.int64).reshape(-1, 3)


def _compound_of(parts: list[RawPart]) -> Any:
    if not parts:
        return None
    from build123d import Compound, Shape

    children = []
    for p in parts:
        # A new wrapper of the same geometry: giving it a parent must not touch the user's
        # assembly tree (and build123d cannot export a shape that still has a parent).
        c = Shape.cast(p.shape.wrapped)
        c.label = p.label
        children.append(c)
    return Compound(children=children, label="scene")


# ---------------------------------------------------------------- validation, tessellation


def prepare_parts(
    raw: list[RawPart], script_fixed: list[str], options: SimOptions, warnings: list[str]
) -> list[Part]:
    labels = [p.label for p in raw]
    for label in labels:
        if not LABEL_RE.match(label):
            raise SceneError(f"invalid part label {label!r}: {LABEL_HELP}")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SceneError(f"duplicate part labels: {', '.join(dupes)}")
    fixed = set(script_fixed) | set(options.fixed_labels) | {p.label for p in raw if p.fixed}
    unknown = sorted(fixed - set(labels))
    if unknown:
        raise SceneError(
            f"fixed labels name no part: {', '.join(unknown)} (parts: {', '.join(labels)})"
        )
    return [_prepare(p, p.label in fixed, options, warnings) for p in raw]


def _role(label: str) -> str:
    for prefix, role in ZONE_PREFIXES.items():
        if label.startswith(prefix):
            return role
    if label.startswith("zone_"):
        raise SceneError(
            f"part {label!r}: zone labels start with zone_goal_, zone_forbid_ or zone_start_"
        )
    return "body"


def _prepare(raw: RawPart, fixed: bool, options: SimOptions, warnings: list[str]) -> Part:
    label, role = raw.label, _role(raw.label)
    if role != "body":  # zones only need their bounds
        lo, hi = _bounds(raw)
        if np.any(hi - lo <= 1e-6):
            raise SceneError(
                f"zone {label!r} is flat (size {_fmt(hi - lo)} mm): make it a "
                "solid box that the target's centre can be inside"
            )
        return Part(label=label, role=role, fixed=True, lo=lo, hi=hi, shape=raw.shape)

    if raw.mesh is not None:
        meshes = [raw.mesh]
    else:
        shape = raw.shape
        solids = shape.solids()
        if not solids:
            raise SceneError(
                f"part {label!r} has zero volume: it is a "
                f"{type(shape).__name__} with no solid in it"
            )
        if not shape.is_valid:
            raise SceneError(f"part {label!r} is not a valid solid (OCCT shape check failed)")
        meshes = [_tessellate(s, options) for s in solids]

    out, volume, moment = [], 0.0, np.zeros(3)
    for i, (verts, faces) in enumerate(meshes):
        name = label if len(meshes) == 1 else f"{label} solid {i}"
        verts, faces, vol, com = _check_mesh(name, verts, faces, options, warnings)
        out.append((verts, faces))
        volume += vol
        moment += vol * com
    lo = np.min([v.min(axis=0) for v, _ in out], axis=0)
    hi = np.max([v.max(axis=0) for v, _ in out], axis=0)
    return Part(
        label=label,
        role=role,
        fixed=fixed,
        lo=lo,
        hi=hi,
        meshes=out,
        com=moment / volume,
        volume=volume,
        shape=raw.shape,
    )


def _bounds(raw: RawPart) -> tuple[np.ndarray, np.ndarray]:
    if raw.mesh is not None:
        return raw.mesh[0].min(axis=0), raw.mesh[0].max(axis=0)
    bb = raw.shape.bounding_box()
    return np.array(tuple(bb.min)), np.array(tuple(bb.max))


def _tessellate(solid: Any, options: SimOptions) -> tuple[np.ndarray, np.ndarray]:
    bb = solid.bounding_box()
    tol = options.mesh_tolerance_mm or max(1e-3 * bb.diagonal, 0.01)
    verts, tris = solid.tessellate(tol, 0.25)
    v = np.array([(p.X, p.Y, p.Z) for p in verts], dtype=np.float64)
    return v, np.array(tris, dtype=np.int64).reshape(-1, 3)


def _check_mesh(
    name: str, verts: np.ndarray, faces: np.ndarray, options: SimOptions, warnings: list[str]
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Weld, then require a closed, consistently oriented mesh with volume."""
    if len(faces) > MAX_FACES:
        raise SceneError(
            f"part {name!r} has {len(faces)} triangles (limit {MAX_FACES}): "
            "simplify it or raise mesh_tolerance_mm"
        )
    # Tessellators emit a vertex per face corner; weld them so edges can be matched up.
    size = float(np.ptp(verts, axis=0).max()) if len(verts) else 0.0
    quantum = max(size * 1e-9, 1e-12)
    _, first, inverse = np.unique(
        np.round(verts / quantum).astype(np.int64), axis=0, return_index=True, return_inverse=True
    )
    verts, faces = verts[first], inverse.reshape(-1)[faces]
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    ]

    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    tet = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    volume = float(tet.sum())
    if len(faces) < 4 or abs(volume) <= 1e-9 * max(size, 1e-9) ** 3:
        raise SceneError(f"part {name!r} has zero volume (flat or degenerate geometry)")

    n = len(verts)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected[:, 0] * n + undirected[:, 1], return_counts=True)
    if not np.all(counts == 2):
        open_edges = int(np.sum(counts == 1))
        raise SceneError(
            f"part {name!r} is not a closed manifold solid ({open_edges} open "
            f"edges, {int(np.sum(counts > 2))} edges shared by >2 faces)"
        )
    if len(np.unique(directed[:, 0] * n + directed[:, 1])) != len(directed):
        raise SceneError(f"part {name!r} has inconsistently oriented faces")
    if volume < 0:  # closed and consistent but inside-out (common in STL exports)
        faces, volume, tet = faces[:, ::-1].copy(), -volume, -tet
        warnings.append(f"part {name!r}: mesh was inside-out; flipped it")
    com = (tet[:, None] * (a + b + c)).sum(axis=0) / (4.0 * volume)

    from scipy.spatial import ConvexHull

    try:
        ratio = volume / ConvexHull(verts).volume
    except Exception:  # qhull rejects flat point sets
        raise SceneError(f"part {name!r} has zero volume (flat or degenerate geometry)") from None
    if ratio < options.convexity_warn_ratio:
        warnings.append(
            f"part {name!r} is far from convex (volume is {ratio:.0%} of its convex "
            "hull); MuJoCo collides with the hull, so split it into convex solids"
        )
    return verts, faces, volume, com


# ---------------------------------------------------------------- MJCF


def build_mjcf(
    parts: list[Part], options: SimOptions, step_shape: Any, warnings: list[str]
) -> BuiltScene:
    bodies = [p for p in parts if p.role == "body"]
    movable = [p for p in bodies if not p.fixed]
    target = _pick_target(parts, movable, options)
    goals = [_zone(p) for p in parts if p.role == "goal"]
    if not goals:
        raise SceneError("the scene has no goal zone: label a part zone_goal_<name>")
    for label in options.initial_velocity:
        if label not in {p.label for p in movable}:
            raise SceneError(f"initial_velocity names {label!r}, which is not a movable part")

    lo = np.min([p.lo for p in parts], axis=0) * MM
    hi = np.max([p.hi for p in parts], axis=0) * MM
    extent = float(np.linalg.norm(hi - lo))
    start = target.com.copy()
    if options.spawn_jitter_mm:
        rng = np.random.default_rng(options.seed)
        start[:2] += rng.uniform(-options.spawn_jitter_mm, options.spawn_jitter_mm, 2)
    starts = [p for p in parts if p.role == "start"]
    if starts and not any(np.all((p.lo <= start) & (start <= p.hi)) for p in starts):
        warnings.append(f"target {target.label!r} does not start inside a zone_start_* zone")
    for p in movable:
        if options.floor and p.lo[2] < -1e-3 * max(extent / MM, 1.0):
            warnings.append(
                f"part {p.label!r} starts below the floor (lowest z = {p.lo[2]:.3g} mm)"
            )

    assets: dict[str, bytes] = {}
    mesh_files: dict[str, str] = {}
    asset_xml, world_xml = [], []
    for p in bodies:
        # Movable parts live in a body frame at their centre of mass, so the body position
        # is the part's position and MuJoCo's free-joint velocity is the centre's velocity.
        origin = (start if p is target else p.com) if not p.fixed else np.zeros(3)
        rgba = FIXED_RGBA if p.fixed else TARGET_RGBA if p is target else MOVABLE_RGBA
        geoms = []
        for i, (verts, faces) in enumerate(p.meshes):
            name = p.label if len(p.meshes) == 1 else f"{p.label}@{i}"
            assets[f"{name}.stl"] = _stl_bytes(verts - (p.com if not p.fixed else 0), faces)
            mesh_files[f"mesh:{name}"] = f"{name}.stl"
            asset_xml.append(f'<mesh name="{name}" file="{name}.stl" scale="{MM} {MM} {MM}"/>')
            geoms.append(f'<geom name="{name}" type="mesh" mesh="{name}" rgba="{rgba}"/>')
        if p.fixed:
            world_xml += geoms
        else:
            world_xml.append(
                f'<body name="{p.label}" pos="{_fmt(origin * MM)}"><freejoint name="{p.label}"/>'
                + "".join(geoms)
                + "</body>"
            )
    for p in parts:
        if p.role != "body":
            z = _zone(p)
            world_xml.append(
                f'<site name="{p.label}" type="box" pos="{_fmt((z.lo + z.hi) / 2)}" '
                f'size="{_fmt((z.hi - z.lo) / 2)}" rgba="{ZONE_RGBA[p.role]}"/>'
            )
    if options.floor:
        margin = options.floor_margin_mm * MM
        half = (hi[:2] - lo[:2]) / 2 + margin
        centre = (hi[:2] + lo[:2]) / 2
        world_xml.insert(
            0,
            f'<geom name="sf:floor" type="box" size="{_fmt(half)} 0.05" '
            f'pos="{_fmt(centre)} -0.05" material="sf:floor"/>',
        )
    world_xml.insert(0, _camera_xml(options, lo, hi))

    qvel = [options.initial_velocity.get(p.label) for p in movable]
    key = ""
    if any(v is not None for v in qvel):  # initial velocities travel as the model's keyframe 0
        key = (
            '<keyframe><key name="start" qvel="'
            + " ".join(f"{_fmt(v or (0, 0, 0))} 0 0 0" for v in qvel)
            + '"/></keyframe>'
        )
    xml = _MJCF.format(
        dt=options.timestep_s,
        gravity=_fmt(options.gravity),
        mu=options.friction,
        density=options.density_kg_m3,
        msaa=4 if options.antialias else 0,
        w=max(options.width, 640),
        h=max(options.height, 480),
        grid=1.0 / max(float(np.max(hi[:2] - lo[:2])) / 4, 0.02),  # checker cells per metre
        assets="\n    ".join(asset_xml),
        world="\n    ".join(world_xml),
        key=key,
    )
    return BuiltScene(
        xml=xml,
        assets=assets,
        mesh_files=mesh_files,
        target=target.label,
        goals=goals,
        forbids=[_zone(p) for p in parts if p.role == "forbid"],
        lo=lo,
        hi=hi,
        fall_z=min(float(lo[2]), 0.0) - max(1.0, extent),
        world_radius=options.world_radius_m or max(10.0, 10 * extent),
        parts=parts,
        step_shape=step_shape,
        warnings=warnings,
    )


def _pick_target(parts: list[Part], movable: list[Part], options: SimOptions) -> Part:
    if options.target_label is not None:
        found = [p for p in parts if p.label == options.target_label]
        if not found:
            raise SceneError(
                f"target_label {options.target_label!r} names no part (parts: "
                f"{', '.join(p.label for p in parts)})"
            )
        if found[0] not in movable:
            raise SceneError(f"target {options.target_label!r} is a zone or fixed, not movable")
        return found[0]
    if not movable:
        raise SceneError("the scene has no movable part (all parts are fixed or zones)")
    if len(movable) > 1:
        raise SceneError(
            f"several movable parts ({', '.join(p.label for p in movable)}): "
            "set options.target_label"
        )
    return movable[0]


def _zone(p: Part) -> Zone:
    return Zone(label=p.label, lo=p.lo * MM, hi=p.hi * MM)


def _camera_xml(options: SimOptions, lo: np.ndarray, hi: np.ndarray) -> str:
    """A fixed camera in the MJCF, so the saved model shows the same view as the video."""
    cam = options.camera
    if cam is not None:
        lookat, dist, az, el = np.array(cam.lookat), cam.distance, cam.azimuth, cam.elevation
    else:
        lookat, az, el = (lo + hi) / 2, 60.0, -25.0
        radius = max(float(np.linalg.norm(hi - lo)) / 2, 0.05)
        dist = 0.95 * radius / math.sin(math.radians(45.0 / 2))  # ~fits in the 45° fovy
    az, el = math.radians(az), math.radians(el)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else np.array([1, 0, 0])
    up = np.cross(right, forward)
    pos = lookat - dist * forward
    return (
        f'<camera name="sf:overview" pos="{_fmt(pos)}" '
        f'xyaxes="{_fmt(right)} {_fmt(up)}" fovy="45"/>'
    )


def _stl_bytes(verts: np.ndarray, faces: np.ndarray) -> bytes:
    rec = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = verts[faces]
    return b"shopfloor".ljust(80, b" ") + struct.pack("<I", len(faces)) + rec.tobytes()


def _fmt(values: Any) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.ravel(values))


def export_step(shape: Any, path: Path) -> bool:
    if shape is None:
        return False
    from build123d import export_step as _export

    return bool(_export(shape, str(path)))


def load_model(built: BuiltScene) -> tuple[Any, Any]:
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        # By default MuJoCo prints warnings and appends them to ./MUJOCO_LOG.TXT in whatever
        # directory the worker runs in; the loop reads the warning counters instead.
        mujoco.set_mju_user_warning(lambda msg: log.debug("MuJoCo: %s", msg.strip()))
    try:
        model = mujoco.MjModel.from_xml_string(built.xml, built.assets)
    except ValueError as e:  # MuJoCo's compiler errors: degenerate meshes, tiny inertia...
        msg = " ".join(str(e).split())
        raise SceneError(f"MuJoCo rejected the scene: {msg}") from None
    data = mujoco.MjData(model)
    if model.nkey:
        mujoco.mj_resetDataKeyframe(model, data, 0)
    mujoco.mj_forward(model, data)
    return model, data


_MJCF = """<mujoco model="shopfloor">
  <option timestep="{dt}" gravity="{gravity}" integrator="implicitfast">
    <flag energy="enable"/>
  </option>
  <visual>
    <global offwidth="{w}" offheight="{h}"/>
    <quality shadowsize="0" offsamples="{msaa}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <default>
    <mesh inertia="exact"/>  <!-- our meshes are closed: exact volume even when not convex -->
    <geom friction="{mu} 0.005 0.0001" density="{density}"/>
  </default>
  <asset>
    <texture name="sf:grid" type="2d" builtin="checker" rgb1="0.82 0.82 0.82"
             rgb2="0.7 0.7 0.72" width="64" height="64"/>
    <material name="sf:floor" texture="sf:grid" texrepeat="{grid} {grid}" texuniform="true"/>
    {assets}
  </asset>
  <worldbody>
    <light name="sf:sun" pos="0 0 10" dir="0.3 0.2 -1" directional="true" castshadow="false"/>
    {world}
  </worldbody>
  {key}
</mujoco>
"""
