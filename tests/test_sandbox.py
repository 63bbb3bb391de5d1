"""The sandbox on its own: limits, output capture and cleanup with real child processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.sandbox import LaunchOptions, Limits, Zygote, release_cgroup_pool, run_process
from shopfloor.usercode import cold_python_argv


@pytest.fixture(autouse=True, scope="module")
def _cgroups_released() -> Iterator[None]:
    """These tests run children without a worker: release the cgroups they pooled."""
    yield
    release_cgroup_pool()


async def run(tmp_path: Path, code: str, **limits) -> object:
    (tmp_path / "s.py").write_text(code)
    return await run_process(
        [sys.executable, "-u", "s.py"],
        LaunchOptions(
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            limits=Limits(**{"wall_timeout_s": 20, "memory_mb": 1024, **limits}),
            progress_every=0.2,
        ),
    )


async def test_output_and_exit_code(tmp_path: Path) -> None:
    out = await run(
        tmp_path, "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"
    )
    assert (out.exit_code, out.killed_reason, out.timed_out) == (4, None, False)
    assert out.stdout == "out\n" and out.stderr == "err\n"


async def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-should-not-leak")
    out = await run(tmp_path, "import os; print(sorted(os.environ))")
    assert "ANTHROPIC_API_KEY" not in out.stdout and "PATH" in out.stdout


async def test_wall_timeout_kills(tmp_path: Path) -> None:
    out = await run(tmp_path, "import time; time.sleep(60)", wall_timeout_s=1)
    assert out.timed_out and out.killed_reason == "timeout" and out.signal == "SIGKILL"
    assert out.duration_s < 10


async def test_memory_bomb(tmp_path: Path) -> None:
    out = await run(tmp_path, "x = bytearray(8 * 1024**3)", memory_mb=512)
    assert out.killed_reason == "memory" and "MemoryError" in out.stderr


async def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    out = await run(tmp_path, "import os\nwhile True:\n    os.fork()", max_processes=16)
    assert out.killed_reason == "processes"
    assert out.exit_code is not None and out.exit_code != 0


async def test_cpu_limit(tmp_path: Path) -> None:
    out = await run(tmp_path, "while True: pass", cpu_s=1)
    assert out.killed_reason == "cpu" and out.signal in ("SIGXCPU", "SIGKILL")


async def test_huge_output_keeps_tail_and_count(tmp_path: Path) -> None:
    code = (
        "import sys\nline = b'x' * 1023 + b'\\n'\n"
        "for _ in range(100 * 1024): sys.stdout.buffer.write(line)\n"
        "print('THE END')"
    )
    out = await run(tmp_path, code)
    assert out.exit_code == 0
    assert out.stdout_bytes == 100 * 1024 * 1024 + len("THE END\n")
    assert out.stdout.endswith("THE END\n") and len(out.stdout) <= 64 * 1024


async def test_os_exit(tmp_path: Path) -> None:
    out = await run(tmp_path, "import os; print('bye', flush=True); os._exit(3)")
    assert out.exit_code == 3 and out.stdout == "bye\n" and out.killed_reason is None


async def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, time\np = subprocess.Popen(['sleep', '300'])\n"
        "print(p.pid, flush=True)\ntime.sleep(300)"
    )
    task = asyncio.ensure_future(run(tmp_path, code))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if list(tmp_path.iterdir()):
            break
    await asyncio.sleep(1.0)
    task.cancel()
    out = await task
    assert out.killed_reason == "cancelled"
    grandchild = int(out.stdout.split()[0])
    await asyncio.sleep(0.2)
    assert not _running(grandchild)


async def test_background_children_do_not_outlive_the_job(tmp_path: Path) -> None:
    code = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(p.pid)"
    )
    out = await run(tmp_path, code)
    assert out.exit_code == 0 and out.duration_s < 10
    await asyncio.sleep(0.2)
    assert not _running(int(out.stdout.split()[0]))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for its parent to reap it


async def test_cold_python_limits_memory_on_top_of_its_runtime(tmp_path: Path) -> None:
    """A cold Python job runs as `python script.py` would, and may add memory_mb to what a
    fresh interpreter has mapped (measured once by the cold zygote, not per run), as a warm
    fork may add it to the zygote's."""
    (tmp_path / "s.py").write_text(
        "import sys, os\n"
        "print(__name__, __file__ == os.path.abspath('s.py'), sys.argv[1:], sys.path[0])\n"
        "x = bytearray(int(sys.argv[1]) * 1024**2)\n"
        "print('allocated')\n"
    )
    limits = Limits(wall_timeout_s=20, memory_mb=96)
    cold = await Zygote.start([])
    try:
        assert cold.info["python_vm"] > 5 * 2**20  # a fresh interpreter maps several MB

        async def alloc(mb: int):
            return await cold.run_exec(
                cold_python_argv("s.py", [str(mb)]),
                LaunchOptions(cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, limits=limits),
                python=True,
            )

        fits = await alloc(64)
        assert fits.exit_code == 0, fits.stderr
        assert fits.stdout == f"__main__ True ['64'] {tmp_path}\nallocated\n"
        too_big = await alloc(160)
        assert too_big.killed_reason == "memory" and "MemoryError" in too_big.stderr
    finally:
        await cold.close()


async def test_progress_needs_the_callers_interval(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("import time; print('x', flush=True); time.sleep(0.8)")
    reports: list = []
    out = await run_process(
        [sys.executable, "-u", "s.py"],
        LaunchOptions(
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            limits=Limits(wall_timeout_s=20),
            on_progress=reports.append,
            progress_every=0.2,
        ),
    )
    assert out.exit_code == 0 and reports and reports[-1].last_line == "x"
    with pytest.raises(ValueError, match="progress_every"):
        LaunchOptions(cwd=tmp_path, env={}, limits=Limits(), on_progress=reports.append)


def test_importing_the_sandbox_registers_no_atexit_handler() -> None:
    code = (
        "import atexit, logging, asyncio, subprocess\n"
        "n = atexit._ncallbacks()\n"
        "import shopfloor.sandbox\n"
        "print(atexit._ncallbacks() - n)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"


async def test_disk_cap_kills_the_run_with_the_reason(tmp_path: Path) -> None:
    code = (
        "import os\nchunk = b'x' * 2**20\ni = 0\n"
        "while True:\n"
        "    with open(f'f{i}', 'wb') as f:\n"
        "        for _ in range(8): f.write(chunk)\n"
        "    i += 1\n"
    )
    out = await run(tmp_path, code, disk_mb=64)
    assert out.killed_reason == "disk" and out.signal == "SIGKILL"
    written = sum(p.stat().st_size for p in tmp_path.glob("f*"))
    assert 64 * 2**20 < written < 1024 * 2**20  # stopped soon after the cap


async def test_many_files_count_against_the_disk_cap(tmp_path: Path) -> None:
    code = "import os, itertools\nos.mkdir('d')\nfor i in itertools.count(): open(f'd/{i}', 'w')"
    out = await run(tmp_path, code, disk_mb=1024)
    assert out.killed_reason == "disk"
