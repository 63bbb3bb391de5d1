"""Simulation jobs: build123d geometry → MJCF → MuJoCo → verdict, metrics and an MP4 video.

The descriptor lives in `kind.py`; `simulate_local` (in `local.py`) is the same pipeline
without Temporal. This file stays empty on purpose: Temporal's workflow sandbox imports the
package for every workflow run, so it must not pull in anything heavy.
"""
