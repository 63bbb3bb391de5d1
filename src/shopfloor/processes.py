"""Small process and port helpers shared by `up`, the dev server, tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable


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


def listener_of(port: int) -> str | None:
    """Who listens on TCP `port` here: "pid 1234 (temporal server start-dev …)", "another
    user's process", or None when the port is free. Read from /proc, no tools needed."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115 - tiny files
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    if not inodes:
        return _bound_elsewhere(port)
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return f"pid {pid} ({_cmdline(int(pid))})"
            except OSError:
                continue
    return "another user's process"


def _bound_elsewhere(port: int) -> str | None:
    """Not in this namespace's tables, but maybe not bindable either."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return "a process this user cannot see"
    return None


def _cmdline(pid: int) -> str:
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()  # noqa: SIM115
    except OSError:
        return "?"
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return text if len(text) <= 120 else text[:117] + "..."


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `sig` when the process that started it dies, however it
    dies (SIGKILL included), so a stack never outlives `shopfloor up`."""

    def set_pdeathsig() -> None:
        import ctypes

        ctypes.CDLL(None).prctl(1, sig)  # PR_SET_PDEATHSIG

    return set_pdeathsig
