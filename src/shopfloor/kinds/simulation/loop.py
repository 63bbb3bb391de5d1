"""Steps a MuJoCo model and judges it: goal reached, forbidden zone touched, or why not.

Before the first step, parts that overlap (MuJoCo contacts deeper than overlap_tolerance_mm)
fail the run: MuJoCo would push them apart violently. A scene without objectives (no goal and
no forbidden zone) gets no verdict: it runs to the end and is COMPLETED unless it breaks.

Stepping happens in C in chunks (`mj_step(..., nstep)`) up to the next frame or the next
check, so Python only runs every ~5 ms of simulated time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopfloor.kinds.simulation.mjcf import BuiltScene, Zone
from shopfloor.kinds.simulation.models import Outcome, SimOptions

CHECK_EVERY_S = 0.005  # simulated time between verdict checks
FLOOR_GEOM = "sf:floor"  # the floor geom mjcf.py writes
UNSTABLE = {  # MuJoCo resets the state when these fire, so NaN checks alone miss them
    "mjWARN_BADQACC": "NaN, Inf or huge acceleration",
    "mjWARN_BADQVEL": "NaN, Inf or huge velocity",
    "mjWARN_BADQPOS": "NaN, Inf or huge position",
}
DEGRADED = {
    "mjWARN_CONTACTFULL": "too many contacts: some were dropped",
    "mjWARN_CNSTRFULL": "too many constraints: some were dropped",
    "mjWARN_INERTIA": "a body has invalid inertia",
}


@dataclass
class _RunState:
    """What the loop has seen so far."""

    e0: float  # energy at the start (J)
    e_max: float
    max_speeds: np.ndarray  # per movable body (m/s)
    step: int = 0
    frames: int = 0
    last_frame_step: int = 0
    physics_s: float = 0.0  # wall time inside mj_step
    max_speed: float = 0.0
    max_pen: float = 0.0
    rest_since: float | None = None  # since when the target rests in a goal zone
    fail: tuple[str, float] | None = None  # (reason, t): the first found
    success: tuple[str, float] | None = None
    unstable: str | None = None


class SimulationLoop:
    def __init__(
        self,
        model: Any,
        data: Any,
        scene: BuiltScene,
        options: SimOptions,
        on_frame: Callable[[Any], None] | None = None,
        heartbeat: Callable[[dict[str, Any]], None] | None = None,
        heartbeat_every_s: float = math.inf,
    ) -> None:
        """`heartbeat` gets the physics progress every `heartbeat_every_s` of wall time."""
        import mujoco

        self.m, self.d, self.scene, self.o = model, data, scene, options
        self.on_frame, self.heartbeat = on_frame, heartbeat
        self.heartbeat_every_s = heartbeat_every_s

        def body_id(label: str) -> int:
            return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, label))

        bodies = [body_id(label) for label in scene.movable]
        self.body_ids = np.array(bodies, dtype=np.int64)
        self.lin_dofs = np.array(
            [model.jnt_dofadr[model.body_jntadr[b]] + i for b in bodies for i in range(3)],
            dtype=np.int64,
        )
        self.pos: np.ndarray | None = None
        self.vel: np.ndarray | None = None
        if scene.target is not None:
            body = body_id(scene.target)
            dof = model.jnt_dofadr[model.body_jntadr[body]]
            # Views into MjData's memory: mj_step updates them in place, no lookups per check.
            self.pos = data.xpos[body]
            self.vel = data.qvel[dof : dof + 3]
        # The collision geoms of every moving part, each with its part's label.
        self.moving_geoms = [
            (label, g)
            for label, b in zip(scene.movable, bodies, strict=True)
            for g in range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b])
        ]
        self.zone_geoms = {
            z.label: int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, z.label))
            for z in scene.forbids
        }
        self.warn_ids = {
            name: int(getattr(mujoco.mjtWarning, name)) for name in (*UNSTABLE, *DEGRADED)
        }
        self.centre = (scene.lo + scene.hi) / 2

    # ------------------------------------------------------------ geometry tests

    def _inside(self, zone: Zone) -> bool:
        p = self.pos
        return p is not None and bool(np.all(zone.lo <= p) and np.all(p <= zone.hi))

    def _touching(self, zone: Zone) -> str | None:
        """The label of a moving part whose collision shape (the convex hull of each solid,
        as MuJoCo collides it) touches the zone's box; None when none does."""
        import mujoco

        zone_geom = self.zone_geoms[zone.label]
        for label, g in self.moving_geoms:
            # World-axis bounds of the geom first: cheap, and most checks end here.
            rbound = self.m.geom_rbound[g]
            c = self.d.geom_xpos[g]
            if np.any(c + rbound < zone.lo) or np.any(c - rbound > zone.hi):
                continue
            if mujoco.mj_geomDistance(self.m, self.d, g, zone_geom, 1e-3, None) <= 0.0:
                return label
        return None

    def _overlap_at_start(self) -> str | None:
        """The deepest overlap between two parts (or a part and the floor) in the initial
        state, from MuJoCo's contacts; None when all are within the tolerance."""
        import mujoco

        d, tol = self.d, self.o.overlap_tolerance_mm * 1e-3
        deepest: tuple[float, int, int] | None = None
        for i in range(d.ncon):
            c = d.contact[i]
            if -c.dist > tol and (deepest is None or -c.dist > deepest[0]):
                deepest = (-float(c.dist), int(c.geom1), int(c.geom2))
        if deepest is None:
            return None
        depth, g1, g2 = deepest

        def part(g: int) -> str:
            name = mujoco.mj_id2name(self.m, mujoco.mjtObj.mjOBJ_GEOM, g) or f"geom {g}"
            return name.split("@", 1)[0]  # the solids of one part are named label@i

        a, b = part(g1), part(g2)
        if FLOOR_GEOM in (a, b):
            other = b if a == FLOOR_GEOM else a
            return (
                f"part {other!r} and the floor overlap at the start by {depth * 1e3:.1f} mm "
                "(parts keep their coordinates in mm and the floor's top is z=0: move the "
                "part up, or set floor=false)"
            )
        return (
            f"parts {a!r} and {b!r} overlap at the start by {depth * 1e3:.1f} mm (MuJoCo "
            "collides the convex hull of each solid: move them apart)"
        )

    def _unstable(self) -> str | None:
        w = self.d.warning
        for name, what in UNSTABLE.items():
            if w[self.warn_ids[name]].number:
                return f"MuJoCo reported {name} ({what}) and reset the simulation state"
        if not (
            np.isfinite(self.d.xpos[self.body_ids]).all()
            and np.isfinite(self.d.qvel[self.lin_dofs]).all()
        ):
            return "a part's position or velocity became NaN/Inf"
        return None

    # ------------------------------------------------------------ the loop

    def run(self) -> tuple[Outcome, str, dict[str, Any]]:
        dt = self.o.timestep_s
        n_steps = max(1, round(self.o.duration_s / dt))
        frame_step = self._frame_steps(n_steps)
        stride = max(1, round(CHECK_EVERY_S / dt))
        energy = float(self.d.energy.sum())
        st = _RunState(e0=energy, e_max=energy, max_speeds=np.zeros(len(self.body_ids)))
        wall0 = last_beat = time.monotonic()
        self._beat(0, n_steps, 0)
        overlap = self._overlap_at_start()
        if overlap:
            st.fail = (overlap, 0.0)
            if self.on_frame:
                self.on_frame(self.d)  # one frame that shows the overlap
                st.frames += 1
            n_steps = 0
        while st.step < n_steps:
            self._advance(st, min(st.step + stride, n_steps), frame_step)
            if self._check(st, st.step * dt):
                break
            now = time.monotonic()
            if self.heartbeat and now - last_beat >= self.heartbeat_every_s:
                last_beat = now
                self._beat(st.step, n_steps, st.frames)

        t = st.step * dt
        stopped_early = st.step < n_steps or overlap is not None
        if self.on_frame and stopped_early and st.last_frame_step < st.step and not st.unstable:
            self.on_frame(self.d)  # the final state of a run stopped between two frames
            st.frames += 1
        outcome, reason = self._verdict(t, st.unstable, st.fail, st.success)
        return outcome, reason, self._metrics(st, t, stopped_early, time.monotonic() - wall0)

    def _frame_steps(self, n_steps: int) -> list[int]:
        """The step after which each frame is taken. Frame j (1-based) shows the state at time
        j/fps: the video lasts exactly as long as the simulated run, whatever the ratio of fps
        to timestep."""
        if not self.on_frame:
            return []
        o, dt = self.o, self.o.timestep_s
        n_frames = round(n_steps * dt * o.fps)
        return [min(math.ceil(j / (o.fps * dt) - 1e-9), n_steps) for j in range(1, n_frames + 1)]

    def _advance(self, st: _RunState, until: int, frame_step: list[int]) -> None:
        """Steps in C up to `until` or the next frame, whichever comes first; takes the frame."""
        import mujoco

        if st.frames < len(frame_step):
            until = min(until, frame_step[st.frames])
        t0 = time.perf_counter()
        mujoco.mj_step(self.m, self.d, until - st.step)
        st.physics_s += time.perf_counter() - t0
        st.step = until
        while st.frames < len(frame_step) and frame_step[st.frames] <= until:
            assert self.on_frame is not None, "frame steps exist only with on_frame"
            self.on_frame(self.d)
            st.frames += 1
            st.last_frame_step = until

    def _check(self, st: _RunState, t: float) -> bool:
        """Updates the statistics and the verdict at time `t` (not d.time: MuJoCo resets it on
        instability); True when the run should stop here."""
        o, d = self.o, self.d
        unstable = self._unstable()
        if unstable:
            st.unstable = f"numerical instability at t={t:.3f} s: {unstable}"
            return True
        speeds = self._speeds()
        st.max_speeds = np.maximum(st.max_speeds, speeds)
        speed = math.sqrt(float(self.vel @ self.vel)) if self.vel is not None else 0.0
        st.max_speed = max(st.max_speed, speed)
        st.e_max = max(st.e_max, float(d.energy.sum()))
        if d.ncon:
            st.max_pen = max(st.max_pen, -float(d.contact.dist[: d.ncon].min()))
        if st.fail is None:
            st.fail = self._failure(t)
        if st.success is None and st.fail is None and t >= o.settle_s and self.scene.goals:
            st.success = self._success(st, t, speed)
        return bool(o.stop_on_verdict and (st.fail or st.success))

    def _success(self, st: _RunState, t: float, speed: float) -> tuple[str, float] | None:
        """At rest inside a goal zone for goal_dwell_s."""
        goal = next((z for z in self.scene.goals if self._inside(z)), None)
        if goal is None or speed >= self.o.rest_speed_m_s:
            st.rest_since = None
            return None
        st.rest_since = t if st.rest_since is None else st.rest_since
        if t - st.rest_since < self.o.goal_dwell_s - 1e-9:
            return None
        return (
            f"target {self.scene.target!r} came to rest inside goal zone "
            f"{goal.label!r} at t={t:.2f} s",
            t,
        )

    def _speeds(self) -> np.ndarray:
        """The linear speed of each movable body (m/s)."""
        v = self.d.qvel[self.lin_dofs].reshape(-1, 3)
        speeds: np.ndarray = np.sqrt((v * v).sum(axis=1))
        return speeds

    def _metrics(self, st: _RunState, t: float, stopped_early: bool, wall: float) -> dict[str, Any]:
        d = self.d
        speeds = self._speeds()
        target: dict[str, Any] = {}
        if self.pos is not None and self.vel is not None:
            target = {
                "max_target_speed_m_s": round(st.max_speed, 6),
                "final_target_position_m": [round(float(x), 6) for x in self.pos],
                "final_target_speed_m_s": round(math.sqrt(float(self.vel @ self.vel)), 6),
            }
        return {
            "target": self.scene.target,
            "sim_time_s": round(t, 6),
            "steps": st.step,
            "stopped_early": stopped_early,
            "wall_time_s": round(wall, 4),
            "physics_wall_s": round(st.physics_s, 4),
            "realtime_factor": round(t / wall, 2) if wall > 0 else None,
            **target,
            "parts": {
                label: {
                    "final_position_m": [round(float(x), 6) for x in d.xpos[b]],
                    "final_speed_m_s": round(float(speeds[i]), 6),
                    "max_speed_m_s": round(float(st.max_speeds[i]), 6),
                }
                for i, (label, b) in enumerate(zip(self.scene.movable, self.body_ids, strict=True))
            },
            "max_penetration_m": round(st.max_pen, 6),
            "energy_j": {"initial": st.e0, "final": float(d.energy.sum()), "max": st.e_max},
            "frames": st.frames,
            "fps": self.o.fps,
            "mujoco_warnings": {
                name: int(d.warning[i].number)
                for name, i in self.warn_ids.items()
                if d.warning[i].number
            },
        }

    def _failure(self, t: float) -> tuple[str, float] | None:
        s, p = self.scene, self.pos
        # Without objectives, leaving the world is just what happened (the metrics show it).
        if (
            s.has_objectives
            and p is not None
            and (p[2] < s.fall_z or np.linalg.norm(p - self.centre) > s.world_radius)
        ):
            return (
                f"target {s.target!r} fell off the world at t={t:.2f} s (position {_vec(p)} m)",
                t,
            )
        if t >= self.o.settle_s:
            for zone in s.forbids:
                part = self._touching(zone)
                if part is not None:
                    return (
                        f"part {part!r} touched forbidden zone {zone.label!r} at t={t:.2f} s",
                        t,
                    )
        return None

    def _verdict(
        self, t: float, unstable: str | None, fail: Any, success: Any
    ) -> tuple[Outcome, str]:
        s = self.scene
        if unstable:
            return "FAIL", (
                f"{unstable}; try a smaller timestep_s or check masses, forces and "
                "initial velocities"
            )
        if fail:
            return "FAIL", fail[0]
        if not s.has_objectives:
            return "COMPLETED", (
                f"simulated {t:.2f} s; the scene has no objectives (no zone_goal_* or "
                "zone_forbid_* part), so there is no verdict: see the metrics"
            )
        if not s.goals:
            return "SUCCESS", (
                f"no part touched a forbidden zone "
                f"({', '.join(repr(z.label) for z in s.forbids)}) in {t:.2f} s"
            )
        goal = next((z for z in s.goals if self._inside(z)), None)
        if success and (self.o.stop_on_verdict or goal is not None):
            return "SUCCESS", success[0]
        if goal is not None:
            return (
                "SUCCESS",
                f"target {s.target!r} ended inside goal zone {goal.label!r} at t={t:.2f} s",
            )
        pos = self.pos
        assert pos is not None, "a scene with goal zones has a target"
        dist, nearest = min((_distance(pos, z), z.label) for z in s.goals)
        return "FAIL", (
            f"time limit: target {s.target!r} did not reach a goal zone within "
            f"{t:.2f} s (ended at {_vec(self.pos)} m, {dist:.3f} m from {nearest!r})"
        )

    def _beat(self, step: int, n_steps: int, frames: int) -> None:
        if self.heartbeat:
            self.heartbeat(
                {
                    "stage": "physics",
                    "sim_time_s": round(step * self.o.timestep_s, 4),
                    "duration_s": self.o.duration_s,
                    "progress": round(step / n_steps, 4),
                    "frames": frames,
                }
            )


def _distance(p: np.ndarray, z: Zone) -> float:
    return float(np.linalg.norm(np.maximum(np.maximum(z.lo - p, 0), p - z.hi)))


def _vec(p: Any) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in p) + ")"
