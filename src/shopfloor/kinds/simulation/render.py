"""Offscreen frames from MuJoCo, piped into an H.264 MP4 by imageio-ffmpeg's bundled ffmpeg.

MuJoCo picks its OpenGL backend once, when `mujoco` is first imported, from MUJOCO_GL.
So `gl.select` must run before anything imports mujoco, and every module of this package
imports mujoco inside functions only.

One GL context per process, made on first use and kept: a context's first frames compile its
shaders (llvmpipe JITs them: ~150 ms of CPU, and the on-disk shader cache is no help in a run
whose HOME is new). The warm zygote makes it and renders a few frames before it forks
(`warmup.warm_up`), so every simulation forked from it starts with a context whose shaders
are built.
That is only safe where the context has no threads (`gl.fork_safe_environment`).
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

CAMERA = "sf:overview"  # the camera mjcf.py writes into the MJCF
_CONTEXT: Any = None  # this process's GL context (inherited by forks of a warm zygote)


def _gl_context() -> Any:
    """This process's GL context, current; made on first use. None where the backend needs
    none (MuJoCo then renders with whatever is current)."""
    global _CONTEXT
    if _CONTEXT is None:
        from mujoco.rendering.classic import gl_context

        if gl_context.GLContext is None:
            return None
        # The default framebuffer is never drawn to (MuJoCo renders into its own offscreen
        # buffer, sized by the model): keep it tiny.
        _CONTEXT = gl_context.GLContext(16, 16)
        atexit.register(forget_context)  # freed before the interpreter tears GL down
    _CONTEXT.make_current()
    return _CONTEXT


class SceneRenderer:
    """RGB frames of one model from one camera, on this process's GL context."""

    def __init__(self, model: Any, *, width: int, height: int, camera: str = CAMERA) -> None:
        import mujoco

        self.model = model
        _gl_context()
        self._scene = mujoco.MjvScene(model, maxgeom=10000)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            raise ValueError(f"the model has no camera {camera!r}")
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._mjr: Any = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        self._flipped = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, data: Any, out: np.ndarray) -> None:
        """The camera's view of `data` into `out` (height × width × 3, uint8, top row first)."""
        import mujoco

        mujoco.mjv_updateScene(
            self.model,
            data,
            self._option,
            None,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        mujoco.mjr_readPixels(self._flipped, None, self._rect, self._mjr)
        out[:] = self._flipped[::-1]  # GL's first row is the bottom one

    def close(self) -> None:
        """Frees the model's GL resources; the context stays for the next model."""
        if self._mjr is not None:
            _gl_context()
            self._mjr.free()
            self._mjr = None


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def forget_context() -> None:
    global _CONTEXT
    context, _CONTEXT = _CONTEXT, None
    if context is not None:
        context.free()


class VideoRecorder:
    """Renders the scene camera into an MP4; frames stream to ffmpeg while physics runs."""

    def __init__(self, model: Any, path: Path, fps: int, width: int, height: int) -> None:
        import imageio_ffmpeg

        t0 = time.perf_counter()
        self.path, self.frames = path, 0
        self.error: str | None = None
        self._renderer = SceneRenderer(model, width=width, height=height)
        self.render_s, self.encode_s = time.perf_counter() - t0, 0.0
        self._frame = np.empty((height, width, 3), dtype=np.uint8)  # reused for every frame
        try:
            self._writer = imageio_ffmpeg.write_frames(
                str(path),
                (width, height),
                fps=fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                macro_block_size=2,
                quality=None,
                ffmpeg_log_level="error",
                # faststart puts the index first so browsers can play while downloading.
                output_params=["-preset", "veryfast", "-crf", "23", "-movflags", "+faststart"],
            )
            self._writer.send(None)  # starts ffmpeg
        except BaseException:
            self._renderer.close()
            raise

    def capture(self, data: Any) -> None:
        if self.error:
            return
        t0 = time.perf_counter()
        try:
            self._renderer.render(data, self._frame)
            t1 = time.perf_counter()
            self._writer.send(self._frame)
        except Exception as e:  # a broken renderer or ffmpeg must not cost the physics verdict
            self.error = f"video recording failed after {self.frames} frames: {e}"
            return
        self.render_s += t1 - t0
        self.encode_s += time.perf_counter() - t1
        self.frames += 1

    def close(self) -> bool:
        """Finish the file; False when no playable video came out."""
        t0 = time.perf_counter()
        try:
            self._writer.close()  # waits for ffmpeg to flush and exit
        except Exception as e:
            self.error = self.error or f"ffmpeg failed: {e}"
        finally:
            self._renderer.close()
        self.encode_s += time.perf_counter() - t0
        return self.error is None and self.frames > 0 and self.path.exists()
