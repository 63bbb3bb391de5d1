"""The zygote process: imports heavy modules once, then forks a sandboxed child per request.

Protocol over a SOCK_SEQPACKET socket (fd given in argv), one JSON message per packet:
  parent → zygote: {"id", "cwd", "env", "limits", "cgroup_procs", "memory_is_extra", and
                    "script": path, "args": [...] | "call": "module:function", "arg": … |
                    "exec": argv}
                   with SCM_RIGHTS fds [stdout, stderr, progress]
  zygote → parent: {"ready": true} once; {"id", "pid"} when forked; {"id", "returncode"} at exit.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path

from shopfloor.sandbox._limits import Limits, apply_in_child

MAX_MESSAGE = 1024 * 1024
_WAKE_FDS: tuple[int, int] = (-1, -1)


def _address_space_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(request: dict, fds: list[int], sock: socket.socket) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in _WAKE_FDS:
            os.close(fd)
        os.setsid()
        limits = Limits(**request["limits"])
        if request.get("memory_is_extra"):
            # The warm libraries are already mapped: the limit is what the job may add.
            extra = _address_space_bytes() // (1024 * 1024)
            limits = Limits(**{**request["limits"], "memory_mb": limits.memory_mb + extra})
        cgroup = request.get("cgroup_procs")
        apply_in_child(limits, Path(cgroup) if cgroup else None)
        out, err, progress = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        if "exec" in request:
            _exec(request, progress)
        os.set_inheritable(progress, False)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["SHOPFLOOR_PROGRESS_FD"] = str(progress)
        code = _run(request)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # the user's code failed: its traceback is the job's stderr
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing useful to do while exiting
                pass
        os._exit(code)


def _exec(request: dict, progress_fd: int) -> None:
    """Cold mode: become a fresh program. The worker never forks itself (a fork of a big,
    threaded worker is slow); this small process does it for it."""
    os.close(progress_fd)
    os.closerange(3, 65536)
    os.chdir(request["cwd"])
    argv = request["exec"]
    try:
        os.execve(argv[0], argv, request["env"])
    except OSError as err:
        os.write(2, f"cannot execute {argv[0]}: {err}\n".encode())
        os._exit(127)


def _run(request: dict) -> int:
    if "script" in request:
        sys.argv = [request["script"], *request.get("args", [])]
        sys.path[0] = request["cwd"]
        runpy.run_path(request["script"], run_name="__main__")
        return 0
    module_name, _, func_name = request["call"].partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(request.get("arg")) or 0)


def serve(sock: socket.socket) -> None:
    children: dict[int, str] = {}  # pid → request id
    global _WAKE_FDS
    wake_r, wake_w = os.pipe()
    _WAKE_FDS = (wake_r, wake_w)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "sigchld")
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        for key, _ in selector.select():
            if key.data == "sigchld":
                os.read(wake_r, 4096)
                _reap(children, sock)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
            except ConnectionResetError:
                data = b""
            if not data:  # the worker is gone: so are we (and our children, by pdeathsig)
                return
            request = json.loads(data)
            pid = os.fork()
            if pid == 0:
                _child(request, fds, sock)
            for fd in fds:
                os.close(fd)
            children[pid] = request["id"]
            sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
        _reap(children, sock)


def _reap(children: dict[int, str], sock: socket.socket) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request_id = children.pop(pid, None)
        if request_id is not None:
            message = {"id": request_id, "returncode": os.waitstatus_to_exitcode(status)}
            sock.send(json.dumps(message).encode())


def main() -> None:
    fd = int(sys.argv[1])
    modules = sys.argv[2:]
    # Thread pools started at import time (BLAS, OpenMP) do not survive fork well.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MUJOCO_GL", "osmesa")  # must precede `import mujoco`
    from shopfloor.sandbox._limits import set_parent_death_signal

    set_parent_death_signal()
    for module in modules:
        importlib.import_module(module)
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main()
