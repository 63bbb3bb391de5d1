"""Loading a scene: build123d source, STL/STEP files or bytes, or a shape → raw parts.

Every problem a user can cause (bad script, bad file, bad labels) raises `SceneError` with a
sentence meant for that user; `local.simulate` turns it into a FAIL verdict. build123d is
imported lazily: it costs seconds to import.
"""

from __future__ import annotations

import re
import struct
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from shopfloor.kinds.simulation.models import (
    GeometryPart,
    PartFile,
    SceneFiles,
    SceneGeometry,
    SceneInput,
    SceneSource,
)


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
    if isinstance(scene, SceneGeometry | SceneFiles):
        parts = [_import_part(p.label, p.format, p, p.fixed) for p in scene.parts]
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


def _import_part(label: str, fmt: str, part: GeometryPart | PartFile, fixed: bool) -> RawPart:
    """A part given inline (base64 in the request) or as a file the worker put in the run's
    directory (uploads: no round trip through base64)."""
    if fmt == "stl":
        data = part.data() if isinstance(part, GeometryPart) else Path(part.path).read_bytes()
        return RawPart(label=label, mesh=_parse_stl(label, data), fixed=fixed)
    from build123d import import_step

    try:
        if isinstance(part, PartFile):
            shape = import_step(part.path)
        else:
            with tempfile.NamedTemporaryFile(suffix=".step") as f:
                f.write(part.data())
                f.flush()
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


def export_step(shape: Any, path: Path) -> bool:
    if shape is None:
        return False
    from build123d import export_step as _export

    return bool(_export(shape, str(path)))
