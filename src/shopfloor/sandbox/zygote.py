"""Zygotes: small helper processes that fork (and exec) user code for the worker.

Warm: a zygote that has already imported heavy libraries forks a child that runs the user's
code directly — `import build123d` costs 2–4 s and ~440 MB; a fork of a process that already
paid it starts in milliseconds. Cold: a zygote with nothing imported forks and execs a fresh
interpreter, so the big, multi-threaded worker never forks itself (a fork of it costs far
more CPU than the script). Either way the child gets the limits, process group, cgroup and
output capture of `run_process`, and its crash (`os._exit`, a segfault) is only its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shopfloor.sandbox._launch import Call, Exec, LaunchRequest, Program, Script
from shopfloor.sandbox._limits import MB, Limits
from shopfloor.sandbox._process import Child, LaunchOptions, SandboxOutcome, run_process, supervise

log = logging.getLogger("shopfloor.zygote")
START_TIMEOUT_S = 120.0
# Memory cgroup of a run: memory_mb on top of what its runtime has resident, plus this slack
# (kernel stacks, page tables); a runner that imports its libraries itself gets RUNNER_MB.
CGROUP_SLACK_MB = 32
RUNNER_MB = 1024


class ZygoteDied(RuntimeError):
    """The zygote went away mid-job: an infrastructure failure, so the job is retried."""


@dataclass(frozen=True, kw_only=True)
class ZygoteOptions:
    """How a zygote contains its runs: every zygote a worker starts for runs gets the same."""

    mounts: dict[str, Any] | None = None  # `host.enter_private_mounts` options, or None
    memory_cgroups: bool = False  # each run in a memory cgroup of its own
    pidns: bool = False  # each run the init of a pid namespace of its own


class Zygote:
    """A zygote process that has imported `modules` (warm) or nothing (cold), started with
    our small environment plus `env` (settings its modules read at import time)."""

    def __init__(
        self,
        modules: list[str],
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        options: ZygoteOptions = ZygoteOptions(),
    ) -> None:
        self.modules = modules
        self.name = name or ("warm" if modules else "cold")  # in logs and metrics
        self.env = dict(env or {})
        self.mounts = options.mounts
        self.memory_cgroups = options.memory_cgroups
        self.pidns = options.pidns
        # From its ready message: rss, python_vm, python_rss (and mounts_error, if any).
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        # Per request: its child's pid, then its exit status ("pid", "returncode").
        self._pending: dict[str, dict[str, asyncio.Future[int]]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        modules: list[str],
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        options: ZygoteOptions = ZygoteOptions(),
    ) -> Zygote:
        zygote = cls(modules, env, name=name, options=options)
        await zygote._ensure_running()
        return zygote

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def _ensure_running(self) -> socket.socket:
        async with self._lock:
            if self._sock is not None and self._proc is not None and self._proc.poll() is None:
                return self._sock
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shopfloor.sandbox.zygote_main",
                    str(theirs.fileno()),
                    json.dumps(self._options()),
                    *self.modules,
                ],
                pass_fds=[theirs.fileno()],
                env={**_zygote_environment(), **self.env},
                stdin=subprocess.DEVNULL,
                # Not the worker's private umask (shopfloor.filemodes): the zygote makes the
                # way to the interpreter that its runs' uids walk; runs set 077 themselves.
                umask=0o022,
            )
            theirs.close()
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            ours.setblocking(False)
            loop.add_reader(ours.fileno(), self._on_message, ours, ready)
            try:
                await asyncio.wait_for(ready, START_TIMEOUT_S)
            except (TimeoutError, ZygoteDied):
                if ours.fileno() >= 0:  # a zygote that died closed it already
                    loop.remove_reader(ours.fileno())
                self._proc.kill()
                raise ZygoteDied(f"zygote failed to import {self.modules}") from None
            self._sock = ours
            log.info("zygote %s ready (pid %s) with %s", self.name, self._proc.pid, self.modules)
            if "mounts_error" in self.info:
                log.warning(
                    "zygote %s has no private view of the file system: %s",
                    self._proc.pid,
                    self.info["mounts_error"],
                )
            return ours

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"mounts": self.mounts} if self.mounts else {}
        if self.pidns:
            options["pidns"] = True
        return options

    def _on_message(self, sock: socket.socket, ready: asyncio.Future[None]) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            self._fail_all(sock, ready)
            return
        message = json.loads(data)
        if message.get("ready"):
            self.info = {k: v for k, v in message.items() if k != "ready"}
            ready.set_result(None)
            return
        waiters = self._pending.get(message["id"])
        if waiters is None:
            return
        key = "pid" if "pid" in message else "returncode"
        if not waiters[key].done():
            waiters[key].set_result(message[key])

    def _fail_all(self, sock: socket.socket, ready: asyncio.Future[None]) -> None:
        if not ready.done():
            ready.set_exception(ZygoteDied("zygote exited during start-up"))
        if self._sock is sock:
            self._sock = None
        sock.close()
        for waiters in self._pending.values():
            for fut in waiters.values():
                if not fut.done():
                    fut.set_exception(ZygoteDied("zygote died; the job will be retried"))

    async def _launch(self, program: Program, options: LaunchOptions) -> SandboxOutcome:
        """Closes `options.netns_fd` once it is passed to the zygote (or the launch failed)."""
        sock = await self._ensure_running()
        request_id = str(next(self._ids))
        loop = asyncio.get_running_loop()
        waiters: dict[str, asyncio.Future[int]] = {
            "pid": loop.create_future(),
            "returncode": loop.create_future(),
        }
        self._pending[request_id] = waiters
        limits = options.limits
        memory = self._memory_cgroup_bytes(program, limits) if self.memory_cgroups else None
        netns_fd = options.netns_fd
        with Child(
            limits, options.tail_bytes, memory_bytes=memory, watch_dir=options.watch_dir
        ) as child:
            try:
                pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, progress
                request = LaunchRequest(
                    id=request_id,
                    program=program,
                    cwd=str(options.cwd),
                    env=options.env,
                    limits=limits,
                    cgroup_procs=child.cgroup_procs,
                    identity=options.identity,
                )
                # The request travels in a memfd that only the run's own child reads: the
                # zygote sees its id, never its contents (nothing of it stays in the memory
                # later forks inherit); and no request is too long for a packet.
                fds = [w for _, w in pipes] + [_memfd_with(request.to_json())]
                if netns_fd is not None:
                    fds.append(netns_fd)
                    netns_fd = None  # closed with the others once sent
                try:
                    socket.send_fds(sock, [json.dumps({"id": request_id}).encode()], fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                readers = [
                    asyncio.create_task(tail.drain(await _stream(r)))
                    for tail, (r, _) in zip((child.stdout, child.stderr), pipes, strict=False)
                ]
                stage = _read_stage(child, await _stream(pipes[2][0]))
                readers.append(asyncio.create_task(stage))
                return await supervise(
                    child,
                    pgid=await waiters["pid"],
                    wait=waiters["returncode"],
                    readers=readers,
                    options=options,
                )
            finally:
                self._pending.pop(request_id, None)
                if netns_fd is not None:
                    os.close(netns_fd)

    def _memory_cgroup_bytes(self, program: Program, limits: Limits) -> int:
        """All of a run's processes together: memory_mb on top of its runtime's resident
        size (a warm fork's copy-on-write pages are charged to it as it touches them)."""
        if isinstance(program, Exec):
            base = (
                RUNNER_MB * MB
                if program.sets_own_memory_limit
                else self.info.get("python_rss", 0)
                if program.python
                else 0
            )
        else:
            base = self.info.get("rss", 0)
        return base + (limits.memory_mb + CGROUP_SLACK_MB) * MB

    # The three ways to run something, each with the run's `LaunchOptions`.

    async def run_script(
        self, script: Path, args: list[str], options: LaunchOptions
    ) -> SandboxOutcome:
        """Runs a Python script in a child of this zygote (its imports already done)."""
        return await self._launch(Script(path=str(script), args=args), options)

    async def run_exec(
        self,
        argv: list[str],
        options: LaunchOptions,
        *,
        sets_own_memory_limit: bool = False,
        python: bool = False,
    ) -> SandboxOutcome:
        """Runs a fresh program (fork + exec done by the zygote, not by the worker). `python`:
        argv starts a Python interpreter, whose RLIMIT_AS is a fresh interpreter's size (the
        zygote measured it once) + memory_mb."""
        return await self._launch(Exec(argv, sets_own_memory_limit, python), options)

    async def run_call(self, target: str, arg: Any, options: LaunchOptions) -> SandboxOutcome:
        """Calls `module:function(arg)` in a child of this zygote; its return value is the exit
        code and it reports progress with `shopfloor.sandbox.report_progress`."""
        return await self._launch(Call(target, arg), options)

    async def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def _memfd_with(data: bytes) -> int:
    fd = os.memfd_create("shopfloor-launch", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _zygote_environment() -> dict[str, str]:
    """The zygote gets none of the worker's secrets: its children are untrusted code."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep}


async def _stream(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


async def _read_stage(child: Child, reader: asyncio.StreamReader) -> None:
    while line := await reader.readline():
        try:
            child.stage = json.loads(line)
        except ValueError:
            pass


def report_progress(details: dict[str, Any]) -> None:
    """Called by code running in a child of a zygote: the details reach the job's heartbeat."""
    fd = os.environ.get("SHOPFLOOR_PROGRESS_FD")
    if fd is None:
        return
    try:
        os.write(int(fd), (json.dumps(details) + "\n").encode())
    except OSError:
        pass


async def run_fresh(
    argv: list[str],
    options: LaunchOptions,
    *,
    cold: Zygote | None,
    sets_own_memory_limit: bool = False,
    python: bool = False,
) -> SandboxOutcome:
    """A fresh program for `argv`: forked by the cold zygote when the worker has one (cheap),
    else by this process (`run_process`, which caps the size of its cwd: the watched dir)."""
    if cold is not None:
        return await cold.run_exec(
            argv, options, sets_own_memory_limit=sets_own_memory_limit, python=python
        )
    if options.watch_dir is not None:
        options = replace(options, cwd=options.watch_dir)
    # RLIMIT_AS from the exec: this process measured no fresh interpreter to add.
    return await run_process(
        argv, options, sets_own_memory_limit=sets_own_memory_limit and not python
    )
