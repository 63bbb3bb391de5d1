"""The one place that decides MuJoCo's OpenGL backend.

MuJoCo (and PyOpenGL) bind their GL platform once, when first imported, from MUJOCO_GL (and
PYOPENGL_PLATFORM). A worker's warm zygote imports mujoco once, with `worker_backend()`; a run
that asks for another backend needs a fresh interpreter, which calls `select` before it
imports mujoco. Light on purpose: imported by the worker, which never imports mujoco.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

DEFAULT = "osmesa"  # software rendering: works on any headless machine (libosmesa6)


def worker_backend(environ: Mapping[str, str] = os.environ) -> str:
    """The backend this worker's warm processes bind: MUJOCO_GL of its environment, else
    osmesa."""
    return environ.get("MUJOCO_GL") or DEFAULT


def environment(backend: str) -> dict[str, str]:
    """The variables that make a process that has not imported mujoco bind `backend`."""
    return {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}


def fork_safe_environment(backend: str) -> dict[str, str]:
    """What makes `backend`'s GL context safe to inherit through fork: llvmpipe (osmesa)
    renders in the calling thread instead of a pool of threads that a fork would not copy. At
    320x240 that costs nothing (measured: 150 frames in ~150 ms either way). Mesa's on-disk
    shader cache is off too: it writes from a thread of its own, which a fork would wait for
    forever (and a run's new HOME would never reuse it)."""
    if backend != "osmesa":
        return {}
    return {"LP_NUM_THREADS": "0", "MESA_SHADER_CACHE_DISABLE": "true"}


def fork_safe(environ: Mapping[str, str]) -> bool:
    """Whether a GL context made under `environ` may be inherited by forks."""
    backend = worker_backend(environ)
    wanted = fork_safe_environment(backend)
    return bool(wanted) and all(environ.get(k) == v for k, v in wanted.items())


def warm_environment() -> dict[str, str]:
    """What a warm zygote starts with (`JobKind.warm_environment`): the worker's backend,
    made safe to inherit through fork."""
    backend = worker_backend()
    return {**environment(backend), **fork_safe_environment(backend)}


def select(backend: str) -> str | None:
    """Selects `backend` for this process; returns a warning when mujoco was imported before
    (bound to another backend, which then renders instead)."""
    if "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = backend
        if "OpenGL" not in sys.modules:  # PyOpenGL also binds its platform at import
            os.environ["PYOPENGL_PLATFORM"] = backend
        return None
    try:
        from mujoco.rendering.classic import gl_context

        active = getattr(gl_context, "_MUJOCO_GL", "") or "glfw"
    except ImportError:
        active = os.environ.get("MUJOCO_GL") or "glfw"
    if active != backend:
        return (
            f"mujoco was imported before MUJOCO_GL={backend} could be set; it is bound to "
            f"the {active!r} backend, which renders instead (set MUJOCO_GL={backend} in the "
            "environment of the process to fix this)"
        )
    return None
