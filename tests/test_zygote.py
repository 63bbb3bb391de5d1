"""The warm launcher: forked children of a pre-imported process, with the sandbox's guarantees."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopfloor.sandbox import Limits, Zygote, ZygoteDied


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
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "JOB_X": "1"},
        limits=Limits(**{"wall_timeout_s": 20, "memory_mb": 1024, **limits}),
    )


async def test_build123d_script_runs_warm(zygote: Zygote, tmp_path: Path) -> None:
    code = (
        "import sys, os\nfrom build123d import Box\n"
        "print(round(Box(10, 20, 30).volume), sys.argv[1:], os.environ['JOB_X'])"
    )
    out = await run(zygote, tmp_path, code)
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "6000 ['arg1'] 1\n"


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
            z.run_script(tmp_path / "s.py", [], cwd=tmp_path, env={}, limits=Limits())
        )
        await asyncio.sleep(0.5)
        assert z._proc is not None
        os.kill(z._proc.pid, signal.SIGKILL)
        with pytest.raises(ZygoteDied):
            await job
        (tmp_path / "t.py").write_text("print('again')")
        out = await z.run_script(tmp_path / "t.py", [], cwd=tmp_path, env={}, limits=Limits())
        assert out.stdout == "again\n"
    finally:
        await z.close()
