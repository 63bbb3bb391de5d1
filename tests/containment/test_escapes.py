"""The escape suite: each attack a script could try on a worker, through a real worker and
controller, with two innocent jobs running beside it. The attack fails or is killed with a
reason; the innocent jobs complete with correct results; the worker stays healthy (alive, its
zygotes never restarted).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shopfloor.devserver import DevServer
from shopfloor.sandbox.host import detect
from tests.helpers import Stack, wait_until

CAPS = detect()
pytestmark = pytest.mark.skipif(
    not (CAPS.root and CAPS.netns and CAPS.mountns and CAPS.pids_cgroup and CAPS.memory_cgroup),
    reason="the escape suite needs a root worker with namespaces and cgroups: " + CAPS.describe(),
)

INNOCENT = textwrap.dedent(
    """
    import os, sys, time
    print(os.getcwd(), flush=True)
    n = int(sys.argv[1])
    total = sum(i * i for i in range(n))
    time.sleep(2.5)
    with open(os.path.join(os.environ["SHOPFLOOR_OUT"], "answer.txt"), "w") as f:
        f.write(str(total))
    print("answer", total)
    """
)


@pytest.fixture(scope="module")
def stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("escapes"))
    s.start_worker("--kind", "script")
    s.start_controller()
    yield s
    s.stop()


def _zygote_starts(stack: Stack) -> int:
    # The worker's own zygotes; the simulation kind's light one comes and goes by design.
    log = stack.workers[0].log.read_text(errors="replace")
    return log.count("zygote cold ready") + log.count("zygote warm ready")


def run_with_innocents(stack: Stack, attack: dict, *, on_running=None) -> dict:
    """Submits two innocent jobs and the attack at once; checks the innocents' results and
    the worker's health; returns the attack's result."""
    zygotes_before = _zygote_starts(stack)
    numbers = [100_000 + int(time.time() * 1000) % 1000, 200_000]
    innocents = [
        stack.submit("script", {"source": INNOCENT, "args": [str(n)], "timeout_s": 60})
        for n in numbers
    ]
    if on_running is not None:
        attack = on_running(innocents, attack)
    attack_id = stack.submit("script", {"timeout_s": 60, **attack})
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(stack.result, [*innocents, attack_id]))
    for job_id, n, res in zip(innocents, numbers, results[:2], strict=True):
        out = res["result"]
        expected = sum(i * i for i in range(n))
        assert out["exit_code"] == 0 and out["killed_reason"] is None, out["stderr_tail"]
        assert out["stdout_tail"].endswith(f"answer {expected}\n"), out
        assert out["attempt"] == 1  # not retried: nothing failed under it
        url = f"/artifacts/{job_id}/answer.txt"
        assert stack.http.get(url).text == str(expected)
    assert stack.workers[0].alive(), "the worker died"
    assert _zygote_starts(stack) == zygotes_before, "a zygote died and was restarted"
    assert stack.http.get("/healthz").status_code == 200
    return results[2]["result"]


def test_kill_the_zygote(stack: Stack) -> None:
    """The zygote is out of sight: a run's parent is its own init (pid 1 of the run's pid
    namespace), which ignores what the run sends it; /proc holds the run's processes only."""
    attack = textwrap.dedent(
        """
        import os, signal
        parent = os.getppid()
        visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        tried = []
        for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
            try:
                os.kill(parent, sig)
                tried.append("sent")
            except (PermissionError, ProcessLookupError) as err:
                tried.append(type(err).__name__)
        print(parent, visible, tried)
        """
    )
    out = run_with_innocents(stack, {"source": attack})
    assert out["exit_code"] == 0, out["stderr_tail"]
    assert out["stdout_tail"] == "1 [1, 2] ['sent', 'sent', 'sent']\n"


def test_kill_the_worker_and_everything_else(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import os, signal
        me = os.getpid()
        killed, refused = [], 0
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            if pid in (me, 1):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except PermissionError:
                refused += 1
            except ProcessLookupError:
                pass
        try:
            os.kill(-1, signal.SIGKILL)  # every process we may signal: only ourselves
        except (PermissionError, ProcessLookupError):  # none: alone in its pid namespace
            pass
        print("killed", killed, "refused", refused, flush=True)
        """
    )
    out = run_with_innocents(stack, {"source": attack})
    # kill(-1) kills what the caller may signal in its own pid namespace: nobody else.
    assert out["signal"] == "SIGKILL" or out["exit_code"] == 0, out
    assert "killed [] refused" in out["stdout_tail"]
    assert stack.workers[0].alive()


def test_reach_the_temporal_frontend_and_the_controller(
    stack: Stack, dev_server: DevServer
) -> None:
    attack = textwrap.dedent(
        """
        import socket, sys
        for port in sys.argv[1:]:
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
                print(port, "connected")
            except OSError as err:
                print(port, "blocked", type(err).__name__)
        """
    )
    ports = [str(dev_server.port), str(stack.port)]
    out = run_with_innocents(stack, {"source": attack, "args": ports})
    assert out["exit_code"] == 0, out["stderr_tail"]
    lines = out["stdout_tail"].splitlines()
    assert [line.split()[:2] for line in lines] == [[p, "blocked"] for p in ports]


def test_opt_in_network_still_cannot_reach_temporal_or_the_controller(
    stack: Stack, dev_server: DevServer
) -> None:
    attack = textwrap.dedent(
        """
        import socket, sys
        with open("/proc/net/dev") as f:
            interfaces = sorted(l.split(":")[0].strip() for l in f.readlines()[2:])
        print("interfaces", interfaces)
        for port in sys.argv[1:]:
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
                print(port, "connected")
            except OSError as err:
                print(port, "blocked", type(err).__name__)
        """
    )
    ports = [str(dev_server.port), str(stack.port)]
    job = {"source": attack, "args": ports, "network": "host"}
    if not CAPS.iptables:
        res = stack.run("script", job)
        assert res["status"] == "FAILED" and "network: host is not available" in json.dumps(res)
        return
    out = run_with_innocents(stack, job)
    assert out["exit_code"] == 0, out["stderr_tail"]
    first, *rest = out["stdout_tail"].splitlines()
    assert first != "interfaces ['lo']"  # the host's interfaces, not an empty namespace
    assert [line.split()[:3] for line in rest] == [
        [p, "blocked", "ConnectionRefusedError"] for p in ports
    ]


def _innocent_dirs(stack: Stack, innocents: list[str]) -> list[str]:
    def cwd_of(job_id: str) -> str | None:
        for p in stack.http.get(f"/jobs/{job_id}").json().get("progress", []):
            line = (p.get("details") or {}).get("last_line", "")
            if line.startswith("/"):
                return line
        return None

    return [
        str(wait_until(lambda j=j: cwd_of(j), timeout_s=20, what="innocent's cwd"))
        for j in innocents
    ]


def test_read_and_write_another_jobs_dirs(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import glob, os, sys
        for d in sys.argv[1:]:
            for how, fn in (
                ("list", lambda: os.listdir(d)),
                ("read", lambda: open(os.path.join(d, "script.py")).read()),
                ("write", lambda: open(os.path.join(d, "out", "planted.txt"), "w").write("x")),
                ("list-root", lambda: os.listdir(os.path.dirname(d))),
            ):
                try:
                    fn()
                    print(how, "ok")
                except OSError as err:
                    print(how, type(err).__name__)
        print("glob", glob.glob("/tmp/shopfloor-*/run-*"))
        """
    )

    def aim(innocents: list[str], job: dict) -> dict:
        return {**job, "args": _innocent_dirs(stack, innocents)}

    out = run_with_innocents(stack, {"source": attack}, on_running=aim)
    assert out["exit_code"] == 0, out["stderr_tail"]
    lines = out["stdout_tail"].splitlines()
    # Another job's directory is not in a run's root at all; its own work root is passed
    # through, never listed.
    assert (
        lines[:-1]
        == [
            "list FileNotFoundError",
            "read FileNotFoundError",
            "write FileNotFoundError",
            "list-root PermissionError",
        ]
        * 2
    )
    assert lines[-1] == "glob []"


def test_read_temporal_db_data_dir_and_artifact_store(stack: Stack, dev_server: DevServer) -> None:
    data = Path(stack.env["SHOPFLOOR_DATA_DIR"])
    targets = [
        str(dev_server.db_file),
        str(data / "artifacts"),
        str(data),
        "/etc/shadow",
        "/root",
    ]
    attack = textwrap.dedent(
        """
        import os, sys
        for t in sys.argv[1:]:
            try:
                if os.path.isdir(t):
                    print(t, "listed", os.listdir(t))
                else:
                    print(t, "read", len(open(t, "rb").read()))
            except OSError as err:
                print(t, type(err).__name__)
        """
    )
    out = run_with_innocents(stack, {"source": attack, "args": targets})
    assert out["exit_code"] == 0, out["stderr_tail"]
    for line in out["stdout_tail"].splitlines():
        target, what = line.split()[:2]
        if target == "/root":  # only the way to the interpreter: nothing else in it
            assert what in ("PermissionError", "listed") and "'.ssh'" not in line, line
        else:
            assert what in ("PermissionError", "FileNotFoundError"), line


def test_symlink_and_hard_link_in_out(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import errno, os
        out = os.environ["SHOPFLOOR_OUT"]
        os.symlink("/etc/shadow", os.path.join(out, "shadow"))
        os.symlink("/etc", os.path.join(out, "etc"))
        try:
            os.link("/etc/passwd", os.path.join(out, "passwd"))
            print("linked passwd")
        except OSError as err:
            print("link passwd", errno.errorcode[err.errno])
        open("mine.txt", "w").write("mine")
        os.link("mine.txt", os.path.join(out, "mine.txt"))  # a hard link inside the run
        os.mkfifo(os.path.join(out, "fifo"))
        open(os.path.join(out, "ok.txt"), "w").write("fine")
        """
    )
    out = run_with_innocents(stack, {"source": attack})
    assert out["exit_code"] == 0, out["stderr_tail"]
    # Refused by the kernel: protected_hardlinks (EPERM), or the run's dir is another mount
    # (EXDEV). collect_tree refuses such a link anyway (tests/containment/test_collect.py).
    assert out["stdout_tail"].split()[:2] == ["link", "passwd"], out["stdout_tail"]
    assert out["stdout_tail"].split()[2] in ("EPERM", "EXDEV"), out["stdout_tail"]
    assert sorted(out["artifacts"]) == ["mine.txt", "ok.txt"]
    refused = out["refused_artifacts"]
    assert any(r.startswith("shadow: a symlink") for r in refused), refused
    assert any(r.startswith("etc: a symlink") for r in refused), refused
    assert any(r.startswith("fifo: not a regular file") for r in refused), refused


def test_memory_across_five_processes(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import os, time
        pids = []
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                block = bytearray(300 * 1024 * 1024)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(30)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        print("all five held their memory")
        """
    )
    out = run_with_innocents(stack, {"source": attack, "memory_mb": 512})
    assert out["killed_reason"] == "memory", out
    assert "all five held their memory" not in out["stdout_tail"]
    assert out["duration_s"] < 20


def test_disk_fill(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import os
        out = os.environ["SHOPFLOOR_OUT"]
        chunk = b"x" * (1024 * 1024)
        i = 0
        while True:
            with open(os.path.join(out, f"fill{i}.bin"), "wb") as f:
                for _ in range(20):
                    f.write(chunk)
            i += 1
        """
    )
    out = run_with_innocents(stack, {"source": attack, "disk_mb": 100})
    assert out["killed_reason"] == "disk", out
    assert out["artifacts"] == {}
    assert out["refused_artifacts"] == ["out/: the run exceeded its disk cap"]


def test_disk_fill_outside_the_work_dir_stays_in_memory(stack: Stack) -> None:
    attack = textwrap.dedent(
        """
        import os
        chunk = b"x" * (1024 * 1024)
        print("/var/tmp", os.path.exists("/var/tmp"))  # no host directory to fill
        for where in ("/tmp", "/dev/shm"):
            written = 0
            try:
                with open(os.path.join(where, "fill.bin"), "wb") as f:
                    while True:
                        f.write(chunk)
                        f.flush()
                        written += 1
            except OSError as err:
                print(where, type(err).__name__, written)
            os.unlink(os.path.join(where, "fill.bin"))
        """
    )
    out = run_with_innocents(stack, {"source": attack, "memory_mb": 1024})
    assert out["exit_code"] == 0, out["stderr_tail"]
    absent, *filled = out["stdout_tail"].splitlines()
    assert absent == "/var/tmp False"
    for line in filled:
        where, err, mb = line.split()
        assert err == "OSError" and int(mb) <= 64, line  # ENOSPC at the private tmpfs' size


def test_fork_bomb(stack: Stack) -> None:
    attack = "import os\nwhile True:\n    os.fork()"
    out = run_with_innocents(stack, {"source": attack, "max_processes": 32})
    assert out["killed_reason"] == "processes", out


def test_a_killed_workers_directories_are_removed_by_the_next(
    dev_server: DevServer, tmp_path: Path
) -> None:
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path)
    try:
        first = s.start_worker("--kind", "script")
        roots = wait_until(
            lambda: list(Path("/tmp").glob(f"shopfloor-w{first.pid}-*")), what="work root"
        )
        first.sigkill()
        assert all(r.exists() for r in roots)  # a SIGKILL runs no clean-up
        s.start_worker("--kind", "script")
        assert not any(r.exists() for r in roots)
    finally:
        s.stop()
    assert not list(Path("/tmp").glob(f"shopfloor-w{s.workers[1].pid}-*"))


def test_the_worker_logs_what_contains_runs(stack: Stack) -> None:
    log = stack.workers[0].log.read_text(errors="replace")
    assert "sandbox levers: root, netns, mountns, pidns, pids_cgroup, memory_cgroup" in log
    assert os.geteuid() == 0


def test_what_a_run_leaves_in_tmp_is_gone_before_its_uid_is_reused(stack: Stack) -> None:
    plant = (
        "import os\n"
        "for d in ('/tmp', '/dev/shm'):\n"
        "    open(os.path.join(d, 'left-by-a-run'), 'w').write('secret')\n"
        "    os.makedirs(os.path.join(d, 'left-dir'), exist_ok=True)\n"
        "print(oct(os.stat('/tmp/left-by-a-run').st_mode & 0o777))\n"
    )
    planted = stack.run("script", {"source": plant})["result"]
    assert planted["stdout_tail"] == "0o600\n", planted  # umask 077: not for other uids
    look = "import os\nprint([os.listdir(d) for d in ('/tmp', '/dev/shm')])"
    seen = stack.run("script", {"source": look})["result"]
    assert "left" not in seen["stdout_tail"], seen
