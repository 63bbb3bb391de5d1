"""Preparing parts: labels and roles, tessellation, and the mesh checks MuJoCo needs (closed,
consistently oriented, with volume), in millimetres.

Prepared parts also travel as one file (`dump_prepared` / `load_prepared`): the worker's
geometry cache (activities.py) keeps what a run of a scene source prepared, so later runs of
the same source skip CAD and tessellation. The format is a JSON header and raw little-endian
arrays, nothing that executes on load; `load_prepared` checks every byte of it before it is
trusted, since the run that wrote it had run the scene's own code first.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopfloor.kinds.simulation.models import LABEL_HELP, LABEL_RE, MAX_FACES, SimOptions
from shopfloor.kinds.simulation.scene import RawPart, SceneError

ZONE_PREFIXES = {"zone_goal_": "goal", "zone_forbid_": "forbid", "zone_start_": "start"}
# Every option `prepare_parts` reads: with the scene, they decide the prepared parts (the
# geometry cache's key; tests check that nothing else is read).
GEOMETRY_OPTIONS = ("fixed_labels", "mesh_tolerance_mm", "convexity_warn_ratio")


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

    faces, volume, com, flipped = _solid(name, verts, faces, size)
    if flipped:  # closed and consistent but inside-out (common in STL exports)
        warnings.append(f"part {name!r}: mesh was inside-out; flipped it")

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


def _solid(
    name: str, verts: np.ndarray, faces: np.ndarray, size: float
) -> tuple[np.ndarray, float, np.ndarray, bool]:
    """(faces wound outwards, volume, centre of mass, whether they were wound inwards) of a
    closed, consistently oriented mesh with volume; SceneError for anything else."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    tet = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    volume = float(tet.sum())
    if len(faces) < 4 or not abs(volume) > 1e-9 * max(size, 1e-9) ** 3:
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
    flipped = volume < 0
    if flipped:
        faces, volume, tet = faces[:, ::-1].copy(), -volume, -tet
    com = (tet[:, None] * (a + b + c)).sum(axis=0) / (4.0 * volume)
    return faces, volume, com, flipped


def trusted_parts(prepared: Prepared, options: SimOptions, fixed_labels: set[str]) -> list[Part]:
    """The parts of a loaded `Prepared` file once what decides a verdict is re-derived from
    the meshes themselves, in the process that judges the run: the scene's code wrote the
    file, and a body's centre of mass is where MuJoCo puts its frame, which the goal and speed
    checks follow (a centre placed inside the goal zone would pass for a box that never got
    there). So each solid must be closed, wound outwards and have volume, and each body's
    centre must be its meshes' own; the request's fixed labels (`options.fixed_labels` and
    the parts' own flags, `fixed_labels`) hold whatever the file says. An honest file passes
    unchanged. Raises SceneError."""
    fixed = set(options.fixed_labels) | fixed_labels
    labels = {p.label for p in prepared.parts}
    unknown = sorted(fixed - labels)
    if unknown:
        raise SceneError(
            f"fixed labels name no part: {', '.join(unknown)} (parts: {', '.join(sorted(labels))})"
        )
    for part in prepared.parts:
        if part.role != "body":
            continue
        size = float(np.max(part.hi - part.lo))
        volume, moment = 0.0, np.zeros(3)
        for i, (verts, faces) in enumerate(part.meshes):
            name = part.label if len(part.meshes) == 1 else f"{part.label} solid {i}"
            _, vol, com, flipped = _solid(name, verts, faces, size)
            if flipped:
                raise SceneError(f"part {name!r}: its faces are wound inwards")
            volume += vol
            moment += vol * com
        com = moment / volume
        # The same arithmetic as `_prepare`'s: equal but for rounding (kept as given, so a
        # run from the file is bit for bit the run that built it).
        if part.com is None or not np.allclose(part.com, com, rtol=0, atol=1e-9 * max(size, 1)):
            raise SceneError(f"part {part.label!r}: its centre of mass is not its meshes'")
        part.fixed = part.fixed or part.label in fixed
    return prepared.parts


def fmt(values: Any) -> str:
    """Numbers as MJCF and messages write them: space-separated, 6 significant digits."""
    return " ".join(f"{float(x):.6g}" for x in np.ravel(values))


# ------------------------------------------------------------------ prepared parts as a file

PREPARED_MAGIC = b"shopfloor-prepared-geometry\n"
PREPARED_FORMAT = 1
MAX_PREPARED_BYTES = 64 * 1024 * 1024  # a bigger scene is simply not cached
MAX_PARTS, MAX_SOLIDS = 256, 4096  # per scene
MAX_WARNINGS, MAX_WARNING_CHARS = 1000, 2000
_F8, _I8 = np.dtype("<f8"), np.dtype("<i8")


@dataclass
class Prepared:
    """What a scene prepares before the MJCF: its parts, the warnings preparing them gave, and
    its STEP export (None: the scene had nothing to export)."""

    parts: list[Part]
    warnings: list[str]
    step: bytes | None


def dump_prepared(prepared: Prepared, path: Path) -> None:
    """Writes `prepared` to `path` atomically (a half-written file is never there)."""
    header: dict[str, Any] = {
        "format": PREPARED_FORMAT,
        "parts": [
            {
                "label": p.label,
                "role": p.role,
                "fixed": p.fixed,
                "lo": p.lo.tolist(),
                "hi": p.hi.tolist(),
                "com": None if p.com is None else p.com.tolist(),
                "solids": [[len(v), len(f)] for v, f in p.meshes],
            }
            for p in prepared.parts
        ],
        "warnings": prepared.warnings,
        "step": None if prepared.step is None else len(prepared.step),
    }
    head = json.dumps(header, allow_nan=False).encode()
    chunks = [PREPARED_MAGIC, len(head).to_bytes(8, "little"), head]
    for p in prepared.parts:
        for verts, faces in p.meshes:
            chunks += [verts.astype(_F8).tobytes(), faces.astype(_I8).tobytes()]
    if prepared.step is not None:
        chunks.append(prepared.step)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(chunks))
    os.replace(tmp, path)


class BadPrepared(ValueError):
    """A prepared-geometry file that is not what `dump_prepared` writes for a valid scene."""


def load_prepared(data: bytes) -> Prepared:
    """The parts of a `dump_prepared` file, every field checked: sizes and counts bounded,
    arrays exactly as long as the header says, numbers finite, faces indexing their own
    vertices, labels valid and unique, roles those of the labels, bounds those of the
    vertices. Raises BadPrepared for anything else; never executes or unpickles anything."""
    if len(data) > MAX_PREPARED_BYTES:
        raise BadPrepared(f"{len(data)} bytes (limit {MAX_PREPARED_BYTES})")
    if not data.startswith(PREPARED_MAGIC) or len(data) < len(PREPARED_MAGIC) + 8:
        raise BadPrepared("not a prepared-geometry file")
    pos = len(PREPARED_MAGIC)
    head_len = int.from_bytes(data[pos : pos + 8], "little")
    pos += 8
    if head_len > len(data) - pos:
        raise BadPrepared("truncated header")
    try:
        header = json.loads(data[pos : pos + head_len], parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise BadPrepared(f"bad header: {e}") from None
    pos += head_len
    if not isinstance(header, dict) or header.get("format") != PREPARED_FORMAT:
        raise BadPrepared("unknown format")
    if set(header) != {"format", "parts", "warnings", "step"}:
        raise BadPrepared(f"unexpected header fields {sorted(header)}")
    warnings = header["warnings"]
    if not (
        isinstance(warnings, list)
        and len(warnings) <= MAX_WARNINGS
        and all(isinstance(w, str) and len(w) <= MAX_WARNING_CHARS for w in warnings)
    ):
        raise BadPrepared("bad warnings")
    entries = header["parts"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_PARTS:
        raise BadPrepared("bad part list")
    parts, labels, n_solids = [], set(), 0
    for entry in entries:
        part, pos = _load_part(entry, data, pos)
        if part.label in labels:
            raise BadPrepared(f"duplicate label {part.label!r}")
        labels.add(part.label)
        n_solids += len(part.meshes)
        if n_solids > MAX_SOLIDS:
            raise BadPrepared("too many solids")
        parts.append(part)
    step_len = header["step"]
    if step_len is None:
        step = None
    elif _is_int(step_len) and 0 <= step_len <= len(data) - pos:
        step, pos = data[pos : pos + step_len], pos + step_len
    else:
        raise BadPrepared("bad STEP length")
    if pos != len(data):
        raise BadPrepared(f"{len(data) - pos} bytes after the last array")
    return Prepared(parts=parts, warnings=list(warnings), step=step)


def _load_part(entry: Any, data: bytes, pos: int) -> tuple[Part, int]:
    keys = {"label", "role", "fixed", "lo", "hi", "com", "solids"}
    if not isinstance(entry, dict) or set(entry) != keys:
        raise BadPrepared("bad part entry")
    label = entry["label"]
    if not isinstance(label, str) or not LABEL_RE.match(label):
        raise BadPrepared(f"bad label {label!r}")
    try:
        role = _role(label)
    except SceneError:
        raise BadPrepared(f"bad zone label {label!r}") from None
    if entry["role"] != role or not isinstance(entry["fixed"], bool):
        raise BadPrepared(f"part {label!r}: bad role or fixed flag")
    lo, hi = _vec3(entry["lo"], label), _vec3(entry["hi"], label)
    solids = entry["solids"]
    if not isinstance(solids, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(_is_int(n) and n >= 0 for n in s)
        for s in solids
    ):
        raise BadPrepared(f"part {label!r}: bad solid list")
    if role != "body":  # a zone: its box only
        if solids or entry["com"] is not None or not entry["fixed"] or np.any(hi <= lo):
            raise BadPrepared(f"zone {label!r}: bad zone")
        return Part(label=label, role=role, fixed=True, lo=lo, hi=hi), pos
    if not solids or entry["com"] is None:
        raise BadPrepared(f"part {label!r}: a body needs solids and a centre of mass")
    meshes = []
    for n_verts, n_faces in solids:
        if not (4 <= n_faces <= MAX_FACES and 4 <= n_verts <= 3 * n_faces):
            raise BadPrepared(f"part {label!r}: bad mesh size")
        verts, pos = _array(data, pos, _F8, n_verts, label)
        faces, pos = _array(data, pos, _I8, n_faces, label)
        if not np.isfinite(verts).all():
            raise BadPrepared(f"part {label!r}: non-finite vertices")
        if faces.min() < 0 or faces.max() >= n_verts:
            raise BadPrepared(f"part {label!r}: faces index no vertex")
        meshes.append((verts, faces))
    if not (
        np.array_equal(lo, np.min([v.min(axis=0) for v, _ in meshes], axis=0))
        and np.array_equal(hi, np.max([v.max(axis=0) for v, _ in meshes], axis=0))
    ):
        raise BadPrepared(f"part {label!r}: bounds are not those of its vertices")
    com = _vec3(entry["com"], label)
    return Part(
        label=label, role=role, fixed=entry["fixed"], lo=lo, hi=hi, meshes=meshes, com=com
    ), pos


def _array(data: bytes, pos: int, dtype: np.dtype, rows: int, label: str) -> tuple[Any, int]:
    size = rows * 3 * dtype.itemsize
    if size > len(data) - pos:
        raise BadPrepared(f"part {label!r}: truncated arrays")
    # A copy: writable, and independent of the file's bytes.
    arr = np.frombuffer(data, dtype=dtype, count=rows * 3, offset=pos).reshape(rows, 3).copy()
    return arr.astype(dtype.newbyteorder("="), copy=False), pos + size


def _vec3(value: Any, label: str) -> np.ndarray:
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        and all(math.isfinite(x) for x in value)
    ):
        raise BadPrepared(f"part {label!r}: bad vector {value!r}")
    return np.array(value, dtype=np.float64)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")
