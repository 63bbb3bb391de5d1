"""Writing the MJCF: prepared parts (millimetres) → a MuJoCo model in metres, with the
target, zones, floor, camera and initial velocities; and loading it into MuJoCo.

MuJoCo is imported lazily: it must not be imported before the GL backend is chosen (gl.py).
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopfloor.kinds.simulation.meshes import Part, fmt
from shopfloor.kinds.simulation.models import SimOptions
from shopfloor.kinds.simulation.scene import SceneError

log = logging.getLogger(__name__)
MM = 1e-3  # CAD millimetres -> MJCF metres
ZONE_RGBA = {"goal": "0.2 0.8 0.3 0.3", "forbid": "0.9 0.2 0.2 0.3", "start": "0.3 0.5 0.9 0.2"}
FIXED_RGBA, TARGET_RGBA, MOVABLE_RGBA = "0.6 0.6 0.65 1", "0.95 0.55 0.1 1", "0.3 0.5 0.8 1"


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
    target: str | None  # None: no goal zone and no single movable part to follow
    movable: list[str]  # labels of the free bodies
    goals: list[Zone]
    forbids: list[Zone]  # also box geoms named after the zone: detected, never colliding
    lo: np.ndarray  # scene bounds in metres (zones included, floor excluded)
    hi: np.ndarray
    fall_z: float  # below this the target has fallen off the world (m)
    world_radius: float  # farther than this from the scene centre: off the world (m)
    step_shape: Any = None  # what export_step writes

    @property
    def has_objectives(self) -> bool:
        """A goal zone or a forbidden zone: something to judge. Without one, a run that does
        not break ends COMPLETED, with its metrics and no verdict."""
        return bool(self.goals or self.forbids)


def build_mjcf(
    parts: list[Part], options: SimOptions, step_shape: Any, warnings: list[str]
) -> BuiltScene:
    bodies = [p for p in parts if p.role == "body"]
    movable = [p for p in bodies if not p.fixed]
    goals = [_zone(p) for p in parts if p.role == "goal"]
    target = _pick_target(parts, movable, options, required=bool(goals))
    for label in options.initial_velocity:
        if label not in {p.label for p in movable}:
            raise SceneError(f"initial_velocity names {label!r}, which is not a movable part")

    lo = np.min([p.lo for p in parts], axis=0) * MM
    hi = np.max([p.hi for p in parts], axis=0) * MM
    extent = float(np.linalg.norm(hi - lo))
    start = _target_start(target, options) if target is not None else None
    _warn_about_start(parts, movable, target, start, extent, options, warnings)

    assets: dict[str, bytes] = {}
    mesh_files: dict[str, str] = {}
    asset_xml: list[str] = []
    world_xml = [_camera_xml(options, lo, hi)]
    if options.floor:
        world_xml.append(_floor_xml(options, lo, hi))
    for p in bodies:
        geoms = _mesh_geoms(p, target, assets, mesh_files, asset_xml)
        if p.fixed:
            world_xml += geoms
            continue
        origin = start if p is target else p.com
        assert origin is not None, "a movable part has a centre of mass"
        world_xml.append(_free_body_xml(p, origin, geoms))
    world_xml += [_zone_xml(p) for p in parts if p.role != "body"]

    xml = _MJCF.format(
        dt=options.timestep_s,
        gravity=fmt(options.gravity),
        mu=options.friction,
        density=options.density_kg_m3,
        msaa=4 if options.antialias else 0,
        w=max(options.width, 640),
        h=max(options.height, 480),
        grid=1.0 / max(float(np.max(hi[:2] - lo[:2])) / 4, 0.02),  # checker cells per metre
        assets="\n    ".join(asset_xml),
        world="\n    ".join(world_xml),
        key=_keyframe_xml(movable, options),
    )
    return BuiltScene(
        xml=xml,
        assets=assets,
        mesh_files=mesh_files,
        target=target.label if target is not None else None,
        movable=[p.label for p in movable],
        goals=goals,
        forbids=[_zone(p) for p in parts if p.role == "forbid"],
        lo=lo,
        hi=hi,
        fall_z=min(float(lo[2]), 0.0) - max(1.0, extent),
        world_radius=options.world_radius_m or max(10.0, 10 * extent),
        step_shape=step_shape,
    )


def _target_start(target: Part, options: SimOptions) -> np.ndarray:
    """Where the target's centre of mass starts (mm): where it is, plus the spawn jitter."""
    assert target.com is not None, "the target is movable: it has a centre of mass"
    start = target.com.copy()
    if options.spawn_jitter_mm:
        rng = np.random.default_rng(options.seed)
        start[:2] += rng.uniform(-options.spawn_jitter_mm, options.spawn_jitter_mm, 2)
    return start


def _warn_about_start(
    parts: list[Part],
    movable: list[Part],
    target: Part | None,
    start: np.ndarray | None,
    extent: float,
    options: SimOptions,
    warnings: list[str],
) -> None:
    starts = [p for p in parts if p.role == "start"]
    if target is None or start is None:
        if starts:
            warnings.append("start zones are ignored: the scene has no target part")
    elif starts and not any(np.all((p.lo <= start) & (start <= p.hi)) for p in starts):
        warnings.append(f"target {target.label!r} does not start inside a zone_start_* zone")
    for p in movable:
        if options.floor and p.lo[2] < -1e-3 * max(extent / MM, 1.0):
            warnings.append(
                f"part {p.label!r} starts below the floor (lowest z = {p.lo[2]:.3g} mm)"
            )


def _mesh_geoms(
    p: Part,
    target: Part | None,
    assets: dict[str, bytes],
    mesh_files: dict[str, str],
    asset_xml: list[str],
) -> list[str]:
    """One mesh asset and geom per solid of a body. Movable parts' meshes are centred on their
    centre of mass, so the body position is the part's position and MuJoCo's free-joint
    velocity is the centre's velocity."""
    rgba = FIXED_RGBA if p.fixed else TARGET_RGBA if p is target else MOVABLE_RGBA
    geoms = []
    for i, (verts, faces) in enumerate(p.meshes):
        name = p.label if len(p.meshes) == 1 else f"{p.label}@{i}"
        assets[f"{name}.stl"] = _stl_bytes(verts - (p.com if not p.fixed else 0), faces)
        mesh_files[f"mesh:{name}"] = f"{name}.stl"
        asset_xml.append(f'<mesh name="{name}" file="{name}.stl" scale="{MM} {MM} {MM}"/>')
        geoms.append(f'<geom name="{name}" type="mesh" mesh="{name}" rgba="{rgba}"/>')
    return geoms


def _free_body_xml(p: Part, origin: np.ndarray, geoms: list[str]) -> str:
    return (
        f'<body name="{p.label}" pos="{fmt(origin * MM)}"><freejoint name="{p.label}"/>'
        + "".join(geoms)
        + "</body>"
    )


def _zone_xml(p: Part) -> str:
    """Goal and start zones are sites (only their box matters). A forbidden zone is also a
    box geom that collides with nothing (contype = conaffinity = 0): the loop measures the
    distance of each moving part's collision shape to it, so touching means touching."""
    z = _zone(p)
    where = f'type="box" pos="{fmt((z.lo + z.hi) / 2)}" size="{fmt((z.hi - z.lo) / 2)}"'
    if p.role == "forbid":
        return (
            f'<geom name="{p.label}" {where} contype="0" conaffinity="0" '
            f'rgba="{ZONE_RGBA[p.role]}"/>'
        )
    return f'<site name="{p.label}" {where} rgba="{ZONE_RGBA[p.role]}"/>'


def _floor_xml(options: SimOptions, lo: np.ndarray, hi: np.ndarray) -> str:
    margin = options.floor_margin_mm * MM
    half = (hi[:2] - lo[:2]) / 2 + margin
    centre = (hi[:2] + lo[:2]) / 2
    return (
        f'<geom name="sf:floor" type="box" size="{fmt(half)} 0.05" '
        f'pos="{fmt(centre)} -0.05" material="sf:floor"/>'
    )


def _keyframe_xml(movable: list[Part], options: SimOptions) -> str:
    """Initial velocities travel as the model's keyframe 0 (none: no keyframe)."""
    qvel = [options.initial_velocity.get(p.label) for p in movable]
    if all(v is None for v in qvel):
        return ""
    return (
        '<keyframe><key name="start" qvel="'
        + " ".join(f"{fmt(v or (0, 0, 0))} 0 0 0" for v in qvel)
        + '"/></keyframe>'
    )


def _pick_target(
    parts: list[Part], movable: list[Part], options: SimOptions, *, required: bool
) -> Part | None:
    """The part judged against goal zones. Without a goal zone a target is only followed
    for its metrics: the single movable part, or none when there are several (or none)."""
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
    if not required:
        return movable[0] if len(movable) == 1 else None
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
        f'<camera name="sf:overview" pos="{fmt(pos)}" xyaxes="{fmt(right)} {fmt(up)}" fovy="45"/>'
    )


def _stl_bytes(verts: np.ndarray, faces: np.ndarray) -> bytes:
    rec = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = verts[faces]
    return b"shopfloor".ljust(80, b" ") + struct.pack("<I", len(faces)) + rec.tobytes()


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
