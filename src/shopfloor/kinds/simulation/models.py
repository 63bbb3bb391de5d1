"""Inputs and results of simulation jobs: plain JSON, so any Temporal client can start one.

Units: lengths given by the scene (CAD) are millimetres; everything the simulation reports
(positions, speeds, camera) is SI: metres, seconds, kilograms.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from shopfloor.artifacts import safe_relpath
from shopfloor.inputs import StrictInput as _Strict

MAX_INLINE_SOURCE = 1024 * 1024
MAX_PART_BASE64 = 16 * 1024 * 1024  # ~12 MiB of STL, ~240k triangles; bigger scenes use URIs
MAX_FACES = 200_000  # per mesh: beyond this MuJoCo's hull and our validation get slow
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
LABEL_HELP = "labels are 1-64 chars: letters, digits, '_', '.', '-', starting with a letter or '_'"

Vec3 = tuple[float, float, float]


def _finite(vec: Vec3, limit: float, what: str) -> Vec3:
    if not all(math.isfinite(x) and abs(x) <= limit for x in vec):
        raise ValueError(f"{what} components must be finite and within ±{limit:g}: {vec}")
    return vec


def _check_label(label: str) -> str:
    if not LABEL_RE.match(label):
        raise ValueError(f"invalid label {label!r}: {LABEL_HELP}")
    return label


# Unknown fields are errors (a typo is not a default); NaN and Infinity are not numbers. (`_Strict`
# is an import alias: an assigned alias would hide the models' fields from mypy's pydantic plugin.)


class CameraOptions(_Strict):
    """A free camera, with the meaning MuJoCo's viewer gives these four numbers."""

    distance: float = Field(gt=0, le=1000, description="metres from lookat")
    azimuth: float = Field(60.0, ge=-360, le=360, description="degrees around +z")
    elevation: float = Field(-25.0, ge=-90, le=90, description="degrees; negative looks down")
    lookat: Vec3 = Field(description="metres, world frame")

    @field_validator("lookat")
    @classmethod
    def _lookat(cls, v: Vec3) -> Vec3:
        return _finite(v, 1e4, "lookat")


class SimOptions(_Strict):
    duration_s: float = Field(5.0, gt=0, le=120, description="simulated time limit")
    timestep_s: float = Field(0.002, ge=1e-4, le=0.02, description="physics step")
    render: bool = True
    fps: int = Field(30, ge=1, le=120)
    width: int = Field(320, ge=16, le=1920)
    height: int = Field(240, ge=16, le=1080)
    antialias: bool = Field(False, description="4x MSAA: ~3x slower rendering on CPU")
    camera: CameraOptions | None = Field(None, description="None: frame the whole scene")
    target_label: str | None = Field(None, description="None: the single movable part")
    fixed_labels: list[str] = Field(default_factory=list, max_length=1000)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds spawn_jitter_mm")
    spawn_jitter_mm: float = Field(0.0, ge=0, le=1000, description="random start offset of target")
    gl_backend: Literal["osmesa", "egl"] = "osmesa"
    stop_on_verdict: bool = True
    settle_s: float = Field(0.0, ge=0, le=60, description="zones are ignored before this time")
    goal_dwell_s: float = Field(0.25, ge=0, le=10, description="rest this long in a goal zone")
    rest_speed_m_s: float = Field(0.02, gt=0, le=10, description="'at rest' below this speed")
    gravity: Vec3 = (0.0, 0.0, -9.81)
    friction: float = Field(0.5, ge=0, le=10, description="sliding friction coefficient")
    density_kg_m3: float = Field(1000.0, gt=0, le=1e5)
    initial_velocity: dict[str, Vec3] = Field(
        default_factory=dict, description="label -> initial linear velocity in m/s"
    )
    floor: bool = Field(True, description="a floor box with its top at z=0")
    floor_margin_mm: float = Field(500.0, ge=0, le=1e5, description="floor beyond the scene")
    world_radius_m: float | None = Field(None, gt=0, le=1e4, description="None: automatic")
    mesh_tolerance_mm: float | None = Field(None, gt=0, le=100, description="None: 0.1% of size")
    convexity_warn_ratio: float = Field(0.8, ge=0, le=1, description="volume / hull volume")
    overlap_tolerance_mm: float = Field(
        0.5, ge=0, le=1000, description="parts overlapping deeper than this at t=0: FAIL"
    )
    geometry_cache: bool = Field(
        True,
        description="a worker reuses the parts an earlier run of the same scene source (and "
        "the same mesh options) prepared, skipping CAD and tessellation: the source must be "
        "deterministic; false builds the scene again (and stores nothing)",
    )

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"must be even (H.264 yuv420p video needs even sizes), got {v}")
        return v

    @field_validator("gravity")
    @classmethod
    def _gravity(cls, v: Vec3) -> Vec3:
        return _finite(v, 1e12, "gravity")

    @field_validator("initial_velocity")
    @classmethod
    def _velocity(cls, v: dict[str, Vec3]) -> dict[str, Vec3]:
        for label, vel in v.items():
            _check_label(label)
            _finite(vel, 1e12, f"initial_velocity[{label!r}]")
        return v

    @field_validator("fixed_labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        return [_check_label(x) for x in v]

    @field_validator("target_label")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return v if v is None else _check_label(v)

    @model_validator(mode="after")
    def _target_moves(self) -> SimOptions:
        if self.target_label is not None and self.target_label in self.fixed_labels:
            raise ValueError(f"target_label {self.target_label!r} is also in fixed_labels")
        return self


class SceneSource(_Strict):
    """build123d source that assigns `result` (a Compound whose children carry labels).

    It may also assign `fixed = ["label", ...]`. Direct children of `result` are the parts
    (a dict {label: shape} or a list of labelled shapes works too); the floor's top is z=0.
    Children labelled `zone_goal_*`, `zone_forbid_*`, `zone_start_*` are zones, not bodies,
    and act as their axis-aligned bounding boxes: the target is *in* a goal zone when its
    centre of mass is inside; a moving part *touches* a forbidden zone when its collision
    shape (the convex hull of each of its solids, as MuJoCo collides it) meets the zone's
    box; a start zone only checks (warning) that the target starts inside it. Other parts
    are rigid bodies, free unless fixed; each solid of a part collides as its convex hull.
    Parts that overlap at the start (deeper than `overlap_tolerance_mm`) fail the run.
    """

    kind: Literal["source"] = "source"
    source: str = Field(max_length=MAX_INLINE_SOURCE)


class GeometryPart(_Strict):
    label: str
    format: Literal["stl", "step"]
    data_base64: str = Field(max_length=MAX_PART_BASE64, description="file bytes, base64")
    fixed: bool = False

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return _check_label(v)

    @field_validator("data_base64")
    @classmethod
    def _base64(cls, v: str) -> str:
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"not valid base64: {e}") from None
        return v

    def data(self) -> bytes:
        return base64.b64decode(self.data_base64)


class SceneGeometry(_Strict):
    """Ready-made parts (millimetres), one file per part."""

    kind: Literal["geometry"] = "geometry"
    parts: list[GeometryPart] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _unique(self) -> SceneGeometry:
        labels = [p.label for p in self.parts]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate part labels: {dupes}")
        return self


class PartFile(_Strict):
    """A part as a file in the run's directory, put there by the worker (an upload, or a part
    sent inline): not part of a job's input, which never names worker paths."""

    label: str  # checked with the other labels when the scene is prepared: a FAIL, not an error
    format: Literal["stl", "step"]
    path: str = Field(description="relative to the run's directory")
    fixed: bool = False

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return safe_relpath(v, inside="the run's directory")


class SceneFiles(_Strict):
    """Ready-made parts (millimetres) as files in the run's directory."""

    kind: Literal["files"] = "files"
    parts: list[PartFile] = Field(min_length=1, max_length=256)


SceneInput = Annotated[SceneSource | SceneGeometry | SceneFiles, Field(discriminator="kind")]


Outcome = Literal["SUCCESS", "FAIL", "COMPLETED"]


class SimulationResult(BaseModel):
    """What a simulation job produced.

    A scene has *objectives* when it has a goal zone (`zone_goal_*`) or a forbidden zone
    (`zone_forbid_*`); an option alone (`target_label`) is not one. With objectives the
    outcome is a verdict: `SUCCESS` (the target came to rest in a goal zone; with forbidden
    zones only, no moving part touched one for the whole run) or `FAIL` with its reason.
    Without objectives the run just runs: `COMPLETED` with its metrics, no verdict. Either
    way, a broken run is `FAIL`: a bad script or bad geometry, parts overlapping at the start,
    numerical instability, a crash, the time or memory limit of the job.

    For a source scene, `metrics.geometry_cache` says whether the worker's geometry cache gave
    the run its prepared parts (`hit`: no scene code ran; timings show no `cad` and
    `tessellate` stages), the run built them (`miss`), or the option was `off`. Either way
    the simulation's own process loads the prepared parts (its `geometry` stage).
    """

    outcome: Outcome
    reason: str
    video_url: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifact_urls: dict[str, str] = Field(
        default_factory=dict, description="keys: mjcf, video, step, mesh:<label>"
    )
    warnings: list[str] = Field(default_factory=list)


class SimulationReport(BaseModel):
    """What one run produced, as its process reports it: artifacts are files in its out dir,
    named relative to it (key → name). `result` turns the names into URIs."""

    outcome: Outcome
    reason: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="keys: mjcf, video, step, mesh:<label>"
    )
    warnings: list[str] = Field(default_factory=list)

    def result(self, uri_of: Callable[[str], str | None]) -> SimulationResult:
        """The result, with each artifact's name replaced by `uri_of(name)` (None: left out)."""
        urls = {key: uri for key, name in self.artifacts.items() if (uri := uri_of(name))}
        return SimulationResult(
            outcome=self.outcome,
            reason=self.reason,
            video_url=urls.get("video"),
            metrics=self.metrics,
            artifact_urls=urls,
            warnings=self.warnings,
        )


class SceneUri(_Strict):
    """A scene uploaded to the artifact store: build123d source (.py) or one STL/STEP part."""

    kind: Literal["uri"] = "uri"
    uri: str = Field(pattern=r"^artifact://", description="from PUT /uploads/<name>")
    format: Literal["py", "stl", "step"] | None = Field(None, description="None: from the name")
    label: str | None = Field(None, description="part label for STL/STEP (default: file stem)")
    fixed: bool = False

    @property
    def resolved_format(self) -> str:
        if self.format:
            return self.format
        suffix = self.uri.rsplit(".", 1)[-1].lower()
        return {"py": "py", "stl": "stl", "step": "step", "stp": "step"}.get(suffix, "")


class SimulationRequest(_Strict):
    """The input of a simulation job."""

    scene: Annotated[SceneSource | SceneGeometry | SceneUri, Field(discriminator="kind")]
    options: SimOptions = Field(default_factory=SimOptions)
    memory_mb: int = Field(
        2048,
        ge=256,
        le=64 * 1024,
        description="address space (MB) the run may add on top of the runtime it starts from: "
        "the interpreter plus build123d and MuJoCo, which the runner pre-imports",
    )
    timeout_s: float = Field(240, gt=0, le=280, description="wall-clock limit for the whole run")


class SimulationRun(_Strict):
    """One run as the worker hands it to one of the run's processes (a warm fork or a cold
    interpreter, alike): written once as JSON into the process's cwd. The scene's process gets
    the scene and writes its parts to `save_geometry`; the simulation's own process gets no
    scene at all, only the checked parts (`geometry`)."""

    scene: Annotated[SceneSource | SceneFiles, Field(discriminator="kind")] | None = Field(
        description="None: the simulation's own process, which runs no scene code"
    )
    options: SimOptions
    fixed_parts: list[str] = Field(
        default_factory=list,
        description="labels the request holds fixed besides `options.fixed_labels` (parts' own "
        "`fixed` flags): held fixed whatever the prepared parts say",
    )
    out_dir: str = Field("out", description="artifacts go here; relative to the run's directory")
    memory_mb: int = Field(description="a cold run applies it itself, after its pre-imports")
    progress_every_s: float = Field(gt=0, description="how often the physics loop reports")
    geometry: str | None = Field(
        None,
        description="prepared parts from the worker's geometry cache (a file in the run's "
        "directory): loaded instead of running the scene",
    )
    save_geometry: str | None = Field(
        None,
        description="where the run writes the parts it prepared, for the worker to check and "
        "cache (relative to the run's directory, outside out_dir)",
    )

    @field_validator("geometry", "save_geometry")
    @classmethod
    def _in_run_dir(cls, v: str | None) -> str | None:
        return v if v is None else safe_relpath(v, inside="the run's directory")

    @model_validator(mode="after")
    def _scene_or_parts(self) -> SimulationRun:
        if self.scene is None and self.geometry is None:
            raise ValueError("a run without a scene loads prepared parts: give `geometry`")
        return self


BuildStage = Literal["cad", "tessellate", "export"]


class BuildReport(_Strict):
    """What the scene's process says about building its parts (`runner.BUILD_FILE`). That
    process ran the scene's code, so this is untrusted input, bounded and checked: it can fail
    the run (`fail`) or add timings and warnings to its result, never pass it. The parts
    themselves travel in the hand-over file, which the simulation's own process checks."""

    fail: str | None = Field(None, max_length=20_000, description="the FAIL reason, if any")
    timings_s: dict[BuildStage, Annotated[float, Field(ge=0, le=1e6)]] = Field(default_factory=dict)
    warnings: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list,
        max_length=1000,
        description="warnings the hand-over file does not carry (all of them on a FAIL)",
    )
