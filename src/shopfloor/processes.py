"""Small process and port helpers shared by `up`, the dev server, tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, *, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; waits for it either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL, as a crash would (no shutdown code runs), and reap it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]  # (host, port) for AF_INET
        return port


def listening_sockets() -> dict[int, int]:
    """Socket inode → port, of every TCP socket listening in this network namespace."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def open_files(pid: int) -> list[str]:
    """What the process's descriptors point at (paths, `socket:[inode]`…); [] when it is gone
    or not ours to read."""
    targets = []
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(fd.path))
            except OSError:
                continue
    except OSError:
        pass
    return targets


def _socket_inodes(pid: int) -> set[int]:
    return {int(t[8:-1]) for t in open_files(pid) if t.startswith("socket:[")}


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` here, if this user may see it."""
    inodes = {inode for inode, p in listening_sockets().items() if p == port}
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _socket_inodes(int(entry.name)) & inodes:
            return int(entry.name)
    return None


def listening_ports(pid: int) -> set[int]:
    """Every TCP port the process listens on. For the Temporal dev server that is its frontend,
    its HTTP API, UI and metrics (random unless given) and its internal services' ports."""
    listening = listening_sockets()
    return {listening[i] for i in _socket_inodes(pid) if i in listening}


def listener_of(port: int) -> str | None:
    """Who listens on TCP `port` here: "pid 1234 (temporal server start-dev …)", "another
    user's process", or None when the port is free. Read from /proc, no tools needed."""
    if not any(p == port for p in listening_sockets().values()):
        return _bound_elsewhere(port)
    pid = listening_pid(port)
    return f"pid {pid} ({_cmdline(pid)})" if pid is not None else "another user's process"


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
