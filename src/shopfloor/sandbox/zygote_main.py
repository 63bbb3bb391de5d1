"""The zygote process: imports its modules once, then forks a sandboxed child per request.

The warm zygote has imported heavy libraries and runs scripts and calls in its forks; the cold
one has imported nothing and execs fresh programs in them. Protocol over a SOCK_SEQPACKET
socket (fd given in argv), one JSON message per packet:
  parent → zygote: {"id"} with SCM_RIGHTS fds [stdout, stderr, progress, request, netns?],
                   the request a memfd holding the `LaunchRequest` (see _launch.py: id,
                   program tagged by mode exec | script | call, cwd, env, limits,
                   cgroup_procs, identity), netns the run's own network namespace if any
  zygote → parent: {"ready": true, "rss", "python_vm", "python_rss"} once; {"id", "pid"} when
                   forked; {"id", "returncode"} at exit.

The zygote never reads a request: only the child it forks for it does. So nothing of one job
(its arguments, environment, source) is ever in the zygote's memory for a later fork to find.

Each run's first process is the init of a pid namespace of its own (where the host allows):
it contains the run (`_limits.enter_run`), forks the run's program, reaps, and passes the
program's exit status back through a pipe when it ends; its end ends every process of the run.

argv: the socket's fd, a JSON object of options ({"mounts": {...}} for
`host.enter_private_mounts`, "pidns": true for a pid namespace per run, or {}), then the
modules to import.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import pkgutil  # noqa: F401 - runpy.run_path imports it: once here, not in every child
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import traceback
from typing import NoReturn, TypedDict

from shopfloor.sandbox._contain import CLONE_NEWPID, close_fds_except
from shopfloor.sandbox._launch import Call, Exec, LaunchRequest, Program, Script
from shopfloor.sandbox._limits import (
    MB,
    ContainmentFailed,
    RunRoot,
    address_space_bytes,
    enter_run,
    protect_from_same_user,
    resident_bytes,
    set_parent_death_signal,
)

MAX_MESSAGE = 4096  # a header: the request itself comes in a memfd
PROGRESS_FD = 3  # where a run finds its progress pipe (SHOPFLOOR_PROGRESS_FD)
_libc = ctypes.CDLL(None, use_errno=True)
_ROOT: list[RunRoot] = []  # the runs' own root, once built (with "mounts")
_OWN_PIDNS: list[int] = []  # an fd of our own pid namespace, when runs get their own
# A fresh interpreter's address space and resident size, measured once at start-up: what a
# cold Python job starts from (its RLIMIT_AS is that + memory_mb).
_FRESH_PYTHON = {"vm": 0, "rss": 0}
_INFO: dict[str, str] = {}  # what went wrong at start-up, for the worker to report
_LOADED: dict[str, int] = {}  # resident bytes once imported, before code pages were unmapped
_MEASURE = (
    "import os\nfd = os.open('/proc/self/statm', os.O_RDONLY)\nprint(os.read(fd, 64).decode())\n"
)


def _measure_fresh_python() -> None:
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-u", "-c", _MEASURE],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    vm, rss = (int(x) * os.sysconf("SC_PAGE_SIZE") for x in done.stdout.split()[:2])
    _FRESH_PYTHON.update(vm=vm, rss=rss)


def _address_space_limit(request: LaunchRequest) -> int | None:
    """RLIMIT_AS for the child: memory_mb on top of the runtime the job starts from."""
    program = request.program
    extra = request.limits.memory_mb * MB
    if isinstance(program, Exec):
        if program.sets_own_memory_limit:
            return None
        return _FRESH_PYTHON["vm"] + extra if program.python else extra
    # A warm fork starts from everything the zygote has mapped: the limit is what it adds.
    return address_space_bytes() + extra


def _child(fds: list[int], status_w: int) -> None:
    """Runs in the forked child; never returns. With a pid namespace of its own it is the
    run's init: it contains the run, forks the program and passes its exit status back."""
    code = 1
    request: LaunchRequest | None = None
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out, err, progress, request_fd, *netns = fds
        with os.fdopen(request_fd, "rb") as f:
            request = LaunchRequest.from_json(f.read())
        # Nothing of the zygote's (its socket, its epoll fd, its wake pipe) reaches the run.
        close_fds_except({out, err, progress, status_w, *netns})
        os.setsid()
        try:
            enter_run(
                request.limits,
                request.cgroup_procs,
                request.identity,
                address_space=_address_space_limit(request),
                run_root=_ROOT[0] if _ROOT else None,
                cwd=request.cwd,
                netns_fd=netns[0] if netns else None,
            )
        except (ContainmentFailed, OSError) as failed:
            os.write(err, f"shopfloor: the run could not be contained: {failed}\n".encode())
            os._exit(126)
        if _OWN_PIDNS:
            _be_init(status_w)  # returns in the program's process only
        else:
            os.close(status_w)
        set_parent_death_signal()
        os.dup2(out, 1)
        os.dup2(err, 2)
        if progress != PROGRESS_FD:
            os.dup2(progress, PROGRESS_FD)
        close_fds_except({PROGRESS_FD})
        program = request.program
        if isinstance(program, Exec):
            _exec(program, request)
        os.set_inheritable(PROGRESS_FD, False)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        os.environ["SHOPFLOOR_PROGRESS_FD"] = str(PROGRESS_FD)
        code = _run_warm(program, request.cwd)
    except SystemExit as exit_:
        code = _exit_code(exit_)
    except BaseException as err:  # the user's code failed: its traceback is the job's stderr
        _print_user_traceback(err, request.program if request else None)
        code = 1
    try:
        if request is not None and isinstance(request.program, Script):
            _exit_like_an_interpreter()
    except BaseException:  # noqa: BLE001 - a thread's join interrupted: exit all the same
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing useful to do while exiting
                pass
        os._exit(code)


def _be_init(status_w: int) -> None:
    """The run's init (pid 1 of its namespace): forks the program — which returns from here —
    then reaps whatever ends up its child and, when the program ends, writes its wait status
    to `status_w` and exits, which ends every other process of the run. Already contained:
    it runs as the run's uid, in its root, under its filter."""
    pid = os.fork()
    if pid == 0:
        os.close(status_w)
        return
    # A signal sent from inside the namespace to its init is dropped unless init handles it:
    # the program's processes cannot stop or interrupt this loop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    close_fds_except({status_w})
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if reaped == pid:
            os.write(status_w, struct.pack("i", status))
            os._exit(0)


def _exit_code(exit_: SystemExit) -> int:
    if isinstance(exit_.code, int):
        return exit_.code
    if exit_.code is not None:
        print(exit_.code, file=sys.stderr)
        return 1
    return 0


def _exit_like_an_interpreter() -> None:
    """What a Python process does when its main module ends, before the fork's `os._exit`:
    wait for the non-daemon threads the code started, then run its atexit handlers (which
    report their own exceptions, and leave the exit code alone, as Python does)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    import atexit

    atexit._run_exitfuncs()


def _print_user_traceback(err: BaseException, program: Program | None) -> None:
    """The traceback a fresh interpreter would print for a script: from the script's own
    frame on, without the zygote and runpy frames above it."""
    tb = err.__traceback__
    if isinstance(program, Script):
        script = os.path.abspath(program.path)
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
            tb = tb.tb_next
        tb = tb or err.__traceback__  # a SyntaxError has no frame of the script's own
    traceback.print_exception(type(err), err, tb)


def _exec(program: Exec, request: LaunchRequest) -> NoReturn:
    """Cold: become a fresh program. The worker never forks itself (a fork of a big, threaded
    worker is slow); this small process does it for it."""
    close_fds_except(set())
    os.chdir(request.cwd)
    argv = program.argv
    try:
        os.execve(argv[0], argv, request.env)
    except OSError as err:
        os.write(2, f"cannot execute {argv[0]}: {err}\n".encode())
        os._exit(127)


def _run_warm(program: Script | Call, cwd: str) -> int:
    if isinstance(program, Script):
        sys.argv = [program.path, *program.args]
        sys.path[0] = cwd
        # As `python script.py` does: argv as given, the code's file name absolute.
        runpy.run_path(os.path.abspath(program.path), run_name="__main__")
        return 0
    module_name, _, func_name = program.target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(program.arg) or 0)


def serve(sock: socket.socket) -> None:
    children: dict[int, tuple[str, int]] = {}  # pid → request id, the status pipe's read end
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "sigchld")
    ready = {
        "ready": True,
        "rss": _LOADED.get("rss") or resident_bytes(),
        "python_vm": _FRESH_PYTHON["vm"],
        "python_rss": _FRESH_PYTHON["rss"],
        **_INFO,
    }
    sock.send(json.dumps(ready).encode())
    while True:
        for key, _ in selector.select():
            if key.data == "sigchld":
                os.read(wake_r, 4096)
                _reap(children, sock)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 5)
            except ConnectionResetError:
                data = b""
            if not data:  # the worker is gone: so are we (and our children, by pdeathsig)
                return
            request_id = str(json.loads(data)["id"])
            status_r, status_w = os.pipe()
            pid = _fork_for_run()
            if pid == 0:
                _child(fds, status_w)
            for fd in (*fds, status_w):
                os.close(fd)
            children[pid] = (request_id, status_r)
            sock.send(json.dumps({"id": request_id, "pid": pid}).encode())
        _reap(children, sock)


def _fork_for_run() -> int:
    """fork(), the child the first process of a pid namespace of its own when runs get one;
    ours stays as it was for the next fork."""
    if not _OWN_PIDNS:
        return os.fork()
    if _libc.unshare(CLONE_NEWPID) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID)")
    try:
        return os.fork()
    finally:
        if os.getpid() != 1 and _libc.setns(_OWN_PIDNS[0], CLONE_NEWPID) != 0:
            raise OSError(ctypes.get_errno(), "setns back to our pid namespace")


def _reap(children: dict[int, tuple[str, int]], sock: socket.socket) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        entry = children.pop(pid, None)
        if entry is None:
            continue
        request_id, status_r = entry
        # The program's own status, from its init; the init's when it was killed first.
        os.set_blocking(status_r, False)
        try:
            relayed = os.read(status_r, 4)
        except BlockingIOError:
            relayed = b""
        os.close(status_r)
        if len(relayed) == 4:
            status = struct.unpack("i", relayed)[0]
        message = {"id": request_id, "returncode": os.waitstatus_to_exitcode(status)}
        sock.send(json.dumps(message).encode())


def _release_free_heap() -> None:
    """glibc keeps freed heap mapped; give it back, so that what each fork inherits (and a
    memory reading of this zygote) is what start-up really kept."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_MADV_DONTNEED = 4


def release_clean_file_pages() -> int:
    """Unmaps the pages of read-only file mappings (shared libraries' code and constants) that
    hold nothing private to this process; returns how many bytes were mapped. Importing loaded
    hundreds of MB of them (OCP's initialisation code alone ~90 MB) that an idle zygote never
    touches again. They stay in the page cache: a fork faults in what it uses from there, as
    it would anyway (fork does not copy the page tables of such mappings). A mapping with
    private pages — relocated RELRO data, made read-only after it was written — is left as is:
    unmapping would lose what was written."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end, resident in _clean_file_mappings():
        if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += resident
    return released


class _Mapping(TypedDict):
    range: tuple[int, int]  # start, end
    Rss: int  # resident bytes
    private: int  # kB dirty, anonymous or swapped


def _clean_file_mappings() -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of this process's read-only file mappings with nothing
    private in them, from /proc/self/smaps."""
    found: list[tuple[int, int, int]] = []
    current: _Mapping | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                current = None
                path = fields[5] if len(fields) > 5 else ""
                if path.startswith("/") and "w" not in fields[1]:
                    low, high = (int(x, 16) for x in fields[0].split("-"))
                    current = {"range": (low, high), "Rss": 0, "private": 0}
                continue
            if current is None:
                continue
            key = fields[0].rstrip(":")
            if key == "Rss":
                current["Rss"] = int(fields[1]) * 1024
            elif key in ("Private_Dirty", "Shared_Dirty", "Anonymous", "Swap"):
                current["private"] += int(fields[1])
            elif key == "VmFlags":
                if current["private"] == 0 and current["Rss"] > 0:
                    found.append((*current["range"], current["Rss"]))
                current = None
    return found


def main() -> None:
    fd = int(sys.argv[1])
    options = json.loads(sys.argv[2])
    modules = sys.argv[3:]
    # Runs have other uids: they may not signal us; nor may anything of our own uid read our
    # memory (where runs share the worker's uid).
    protect_from_same_user()
    if options.get("mounts"):
        from shopfloor.sandbox.host import enter_private_mounts

        try:
            _ROOT.append(enter_private_mounts(**options["mounts"]))
        except OSError as err:  # the worker warns; runs then see the host's file system
            _INFO["mounts_error"] = str(err)
    if options.get("pidns"):
        _OWN_PIDNS.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    if not modules:  # the cold zygote: the runtime of its cold Python jobs
        _measure_fresh_python()
    # Thread pools started at import time (BLAS, OpenMP) do not survive fork well.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # Settings modules read at import time (MUJOCO_GL: the GL backend) came in our environment
    # from whoever started us (`Zygote.start(..., env=...)`).
    set_parent_death_signal()
    for name in modules:  # `module`, or `module:function` to call once it is imported
        module, _, function = name.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()
    # What we imported stays out of the garbage collector's sight: a collection in a child
    # would otherwise touch every object's page and copy the whole heap (~230 ms in a fork of
    # the warm zygote, against ~1 ms frozen).
    gc.collect()  # what start-up left behind is not frozen in, nor kept resident
    _release_free_heap()
    # A run's memory cgroup is sized from what the runtime had resident with its code mapped:
    # code pages a run faults back in can be charged to it (when the page cache lost them).
    _LOADED["rss"] = resident_bytes()
    release_clean_file_pages()
    gc.freeze()
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main()
