"""Preparing parts: labels and roles, tessellation, and the mesh checks MuJoCo needs (closed,
consistently oriented, with volume), in millimetres."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopfloor.kinds.simulation.models import LABEL_HELP, LABEL_RE, MAX_FACES, SimOptions
from shopfloor.kinds.simulation.scene import RawPart, SceneError

ZONE_PREFIXES = {"zone_goal_": "goal", "zone_forbid_": "forbid", "zone_start_": "start"}


@dataclass
class Part:
    label: str
    role: str  # "body" | "goal" | "forbid" | "start"
    fixed: bool
    lo: np.ndarray  # axis-aligned bounds, mm
    hi: np.ndarray
    meshes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per solid, mm
    com: np.ndarray | None = None  # mm


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
                f"zone {label!r} is flat (size {fmt(hi - lo)} mm): make it a "
                "solid box that the target's centre can be inside"
            )
        return Part(label=label, role=role, fixed=True, lo=lo, hi=hi)

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


def fmt(values: Any) -> str:
    """Numbers as MJCF and messages write them: space-separated, 6 significant digits."""
    return " ".join(f"{float(x):.6g}" for x in np.ravel(values))
