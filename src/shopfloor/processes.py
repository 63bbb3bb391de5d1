"""Small process and port helpers shared by `up`, the dev server, tests and benchmarks."""

from __future__ import annotations

import signal
import socket
import subprocess


def stop_process(proc: subprocess.Popen | None, *, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; waits for it either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_process(proc: subprocess.Popen | None) -> None:
    """SIGKILL, as a crash would (no shutdown code runs), and reap it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
