"""Zygotes: forked children of a pre-imported (warm) or empty (cold) process, with the
sandbox's guarantees."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopfloor.artifacts import LocalArtifactStore
from shopfloor.registry import WorkerContext
from shopfloor.sandbox import (
    Call,
    Exec,
    LaunchOptions,
    Limits,
    RunIdentity,
    Script,
    Zygote,
    ZygoteDied,
)
from shopfloor.sandbox._launch import LaunchRequest
from shopfloor.sandbox._limits import PIDS_CGROUP_ROOT
from shopfloor.settings import Settings
from shopfloor.usercode import cold_python_argv, zygotes


@pytest.fixture(scope="module")
async def zygote() -> AsyncIterator[Zygote]:
    z = await Zygote.start(["build123d"])
    yield z
    await z.close()


async def run(zygote: Zygote, tmp_path: Path, code: str, **limits):
    (tmp_path / "s.py").write_text(code)
    return await zygote.run_script(
        tmp_path / "s.py",
        ["arg1"],
        LaunchOptions(
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "JOB_X": "1"},
            limits=Limits(**{"wall_timeout_s": 20, "memory_mb": 1024, **limits}),
        ),
    )


async def test_build123d_script_runs_warm(zygote: Zygote, tmp_path: Path) -> None:
    code = (
        "import sys, os\nfrom build123d import Box\n"
        "print(round(Box(10, 20, 30).volume), sys.argv[1:], os.environ['JOB_X'])"
    )
    out = await run(zygote, tmp_path, code)
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "6000 ['arg1'] 1\n"


def _file_pages_mapped(pid: int) -> tuple[int, int]:
    """(bytes of read-only file mappings resident in `pid` with nothing private in them,
    bytes of read-only file mappings with private pages), from its smaps."""
    clean = private = 0
    current: dict | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            path = fields[5] if len(fields) > 5 else ""
            current = (
                {"rss": 0, "private": 0} if path.startswith("/") and "w" not in fields[1] else None
            )
        elif current is not None and fields[0] == "Rss:":
            current["rss"] = int(fields[1]) * 1024
        elif current is not None and fields[0] in ("Private_Dirty:", "Anonymous:"):
            current["private"] += int(fields[1])
        elif current is not None and fields[0] == "VmFlags:":
            if current["private"]:
                private += current["rss"]
            else:
                clean += current["rss"]
    return clean, private


async def test_an_idle_zygote_keeps_no_clean_code_pages_mapped(
    zygote: Zygote, tmp_path: Path
) -> None:
    """Its libraries' code pages go back to the page cache once it has imported them (tens of
    MB for build123d); relocated read-only data stays; its forks still run that code."""
    assert zygote.pid is not None
    clean, private = _file_pages_mapped(zygote.pid)
    assert clean < 8 * 1024 * 1024, clean  # what serving requests touched since
    assert private > 0  # RELRO pages: written at load, then made read-only; kept
    out = await run(
        zygote, tmp_path, "from build123d import Box\nprint(round(Box(1, 2, 3).volume))"
    )
    assert out.exit_code == 0 and out.stdout == "6\n", out.stderr
    # The zygote's cgroup sizing still counts its code as it was when imported.
    assert zygote.info["rss"] > 200 * 1024 * 1024


async def test_child_crashes_are_contained(zygote: Zygote, tmp_path: Path) -> None:
    segv = await run(zygote, tmp_path, "import ctypes; ctypes.string_at(0)")
    assert segv.signal == "SIGSEGV" and segv.exit_code is None
    exited = await run(zygote, tmp_path, "import os; os._exit(3)")
    assert exited.exit_code == 3
    failing = await run(zygote, tmp_path, "raise RuntimeError('boom')")
    assert failing.exit_code == 1 and "RuntimeError: boom" in failing.stderr
    # The zygote lives on.
    assert (await run(zygote, tmp_path, "print('alive')")).stdout == "alive\n"


async def test_limits_apply_to_warm_children(zygote: Zygote, tmp_path: Path) -> None:
    mem = await run(zygote, tmp_path, "x = bytearray(8 * 1024**3)", memory_mb=256)
    assert mem.killed_reason == "memory"
    slow = await run(zygote, tmp_path, "import time; time.sleep(60)", wall_timeout_s=1)
    assert slow.killed_reason == "timeout" and slow.timed_out
    bomb = await run(zygote, tmp_path, "import os\nwhile True:\n    os.fork()", max_processes=16)
    assert bomb.killed_reason == "processes"


async def test_env_is_only_what_the_job_gets(zygote: Zygote, tmp_path: Path) -> None:
    os.environ["SHOPFLOOR_FAKE_SECRET"] = "x"
    try:
        out = await run(zygote, tmp_path, "import os; print(sorted(os.environ))")
    finally:
        del os.environ["SHOPFLOOR_FAKE_SECRET"]
    assert "SHOPFLOOR_FAKE_SECRET" not in out.stdout and "JOB_X" in out.stdout


async def test_zygote_death_is_reported_and_it_restarts(tmp_path: Path) -> None:
    z = await Zygote.start(["json"])
    try:
        (tmp_path / "s.py").write_text("import time; time.sleep(30)")
        import asyncio

        job = asyncio.ensure_future(
            z.run_script(
                tmp_path / "s.py", [], LaunchOptions(cwd=tmp_path, env={}, limits=Limits())
            )
        )
        await asyncio.sleep(0.5)
        assert z._proc is not None
        os.kill(z._proc.pid, signal.SIGKILL)
        with pytest.raises(ZygoteDied):
            await job
        (tmp_path / "t.py").write_text("print('again')")
        out = await z.run_script(
            tmp_path / "t.py", [], LaunchOptions(cwd=tmp_path, env={}, limits=Limits())
        )
        assert out.stdout == "again\n"
    finally:
        await z.close()


def test_launch_requests_round_trip_with_their_mode() -> None:
    limits = Limits(wall_timeout_s=5, memory_mb=300)
    for program in (
        Exec(["/bin/true"], sets_own_memory_limit=True),
        Exec(["/usr/bin/python3", "s.py"], python=True),
        Script(path="/w/s.py", args=["a"]),
        Call("pkg.mod:fn", {"big": "x" * 10}),
    ):
        request = LaunchRequest(
            id="7",
            program=program,
            cwd="/w",
            env={"A": "1"},
            limits=limits,
            cgroup_procs=["/sys/fs/cgroup/pids/x/cgroup.procs"],
            identity=RunIdentity(uid=200001, gid=200001, network="none"),
        )
        wire = json.loads(request.to_json())
        assert wire["program"]["mode"] == program.mode
        assert LaunchRequest.from_json(request.to_json()) == request
        assert request.warm == (program.mode != "exec")


@pytest.mark.skipif(
    not (PIDS_CGROUP_ROOT / "cgroup.procs").exists(), reason="no pids cgroup on this machine"
)
async def test_the_zygotes_lifespan_releases_the_cgroup_pool(tmp_path: Path) -> None:
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path), artifacts=LocalArtifactStore(tmp_path)
    )
    ours = PIDS_CGROUP_ROOT / "shopfloor" / str(os.getpid())
    async with zygotes(ctx) as both:
        assert both.warm is None  # no served kind has heavy imports
        assert both.contain is not None
        work_root = both.contain.work_root.path
        run_dir = both.contain.work_root.new_run_dir(None, None)  # in the runs' view of /tmp
        out = await both.cold.run_exec(
            ["/bin/sh", "-c", "cat /proc/self/cgroup"],
            LaunchOptions(cwd=run_dir, env={}, limits=Limits()),
        )
        assert out.exit_code == 0, out.stderr
        assert f"pids:/shopfloor/{os.getpid()}/" in out.stdout  # the run had a cgroup of ours
        if both.contain.caps.memory_cgroup:
            assert f"memory:/shopfloor/{os.getpid()}/" in out.stdout
        assert ours.is_dir()  # ... now pooled for the next run
    assert not ours.exists()
    assert not work_root.exists()  # the worker's run directories go with it


async def test_a_large_launch_request_travels_in_a_memfd(zygote: Zygote, tmp_path: Path) -> None:
    """A launch request far over a socket packet's size (long args): no "Message too long"."""
    (tmp_path / "s.py").write_text("import sys; print(sum(len(a) for a in sys.argv[1:]))")
    args = ["x" * 100_000 for _ in range(10)]
    options = LaunchOptions(cwd=tmp_path, env={}, limits=Limits())
    out = await zygote.run_script(tmp_path / "s.py", args, options)
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "1000000\n"


# A plain script forked from the cold zygote must end as it would in a fresh interpreter.
ENDINGS = {
    "threads_then_atexit": (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def late():\n    time.sleep(0.2)\n    print('thread done')\n"
        "threading.Thread(target=late).start()\nprint('main done')\n"
    ),
    "exit_with_message": "import sys\nsys.exit('bye')\n",
    "exit_code": "import sys\nsys.exit(3)\n",
    "atexit_exits": "import atexit, sys\natexit.register(lambda: sys.exit(5))\nprint('x')\n",
    "traceback": "def f():\n    1 / 0\n\nf()\n",
}


@pytest.fixture(scope="module")
async def cold_zygote() -> AsyncIterator[Zygote]:
    z = await Zygote.start([])
    yield z
    await z.close()


@pytest.mark.parametrize("name", sorted(ENDINGS))
async def test_a_forked_plain_script_ends_as_a_fresh_interpreter_would(
    cold_zygote: Zygote, tmp_path: Path, name: str
) -> None:
    (tmp_path / "s.py").write_text(ENDINGS[name])
    options = LaunchOptions(
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        limits=Limits(wall_timeout_s=20, memory_mb=512),
    )
    forked = await cold_zygote.run_script(Path("s.py"), [], options)
    fresh = await cold_zygote.run_exec(cold_python_argv("s.py", []), options, python=True)
    assert (forked.exit_code, forked.stdout) == (fresh.exit_code, fresh.stdout), forked.stderr
    if name == "traceback":
        for out in (forked, fresh):  # from the script's own frames on, nothing of ours
            assert out.stderr.startswith("Traceback (most recent call last):\n  File ")
            assert "line 4, in <module>" in out.stderr and "line 2, in f" in out.stderr
            assert out.stderr.endswith("ZeroDivisionError: division by zero\n")
        assert "zygote_main" not in forked.stderr and "runpy" not in forked.stderr
    else:  # the same words, whatever the addresses of the objects they name
        assert re.sub("0x[0-9a-f]+", "0x", forked.stderr) == re.sub(
            "0x[0-9a-f]+", "0x", fresh.stderr
        )
