"""Offscreen frames from MuJoCo, piped into an H.264 MP4 by imageio-ffmpeg's bundled ffmpeg.

MuJoCo picks its OpenGL backend once, when `mujoco` is first imported, from MUJOCO_GL.
So `gl.select` must run before anything imports mujoco, and every module of this package
imports mujoco inside functions only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

CAMERA = "sf:overview"  # the camera mjcf.py writes into the MJCF


class VideoRecorder:
    """Renders the scene camera into an MP4; frames stream to ffmpeg while physics runs."""

    def __init__(self, model: Any, path: Path, fps: int, width: int, height: int) -> None:
        import imageio_ffmpeg
        import mujoco

        t0 = time.perf_counter()
        self.path, self.frames = path, 0
        self.error: str | None = None
        self._renderer = mujoco.Renderer(model, height=height, width=width)  # ~0.1 s: GL setup
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
            self._renderer.update_scene(data, camera=CAMERA)
            self._renderer.render(out=self._frame)
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
            self._renderer.close()  # frees the GL context now, not at interpreter exit
        self.encode_s += time.perf_counter() - t0
        return self.error is None and self.frames > 0 and self.path.exists()
