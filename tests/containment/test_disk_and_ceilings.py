"""Issue 19, the execution side: what a run may leave in out/, what a job may ask for, and who
may read what the stack writes. Through a real worker, controller and Temporal server; the
attacks run beside two innocent jobs (`run_with_innocents`), which must complete exactly.

Each test fails on the code before these checks (commit ed7f4e1): the docstrings say how.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from shopfloor.settings import Settings
from tests.containment.test_escapes import pytestmark as needs_containment
from tests.containment.test_escapes import run_with_innocents
from tests.helpers import Proc, Stack, free_port, wait_until
from tests.test_any_client import temporal

CEILINGS = Settings()  # the defaults the stack's processes run with


@pytest.fixture(scope="module")
def stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("disk"))
    s.start_worker("--kind", "script", "--kind", "simulation")
    s.start_controller()
    yield s
    s.stop()


def _stored(stack: Stack) -> dict[str, list[str]]:
    """Every job's files in the stack's local artifact store."""
    root = Path(stack.env["SHOPFLOOR_DATA_DIR"]) / "artifacts"
    if not root.is_dir():
        return {}
    return {
        job.name: sorted(str(p.relative_to(job)) for p in job.rglob("*") if p.is_file())
        for job in root.iterdir()
        if job.name != "uploads"
    }


def _attack_stores_nothing(stack: Stack, attack: dict) -> dict:
    """`run_with_innocents`, and the store afterwards holds the innocents' answers and nothing
    of the attack (whose job id only the store's new entries could tell)."""
    before = _stored(stack)
    out = run_with_innocents(stack, attack)
    new = {job: files for job, files in _stored(stack).items() if job not in before}
    assert sorted(new.values()) == [["answer.txt"], ["answer.txt"]], new
    return out


@needs_containment
def test_sparse_files_in_out_count_by_their_apparent_size(stack: Stack) -> None:
    """30 sparse 10 MB files under disk_mb=10 hold almost no blocks. Before: the watch counted
    blocks, the run ended fine, and 300 MB were stored dense; now: reason disk, nothing stored,
    and the result names the cap and what was found."""
    attack = textwrap.dedent(
        """
        import os
        out = os.environ["SHOPFLOOR_OUT"]
        for i in range(30):
            with open(os.path.join(out, f"sparse{i}.bin"), "wb") as f:
                f.truncate(10 * 1024 * 1024)
        print("made 30 sparse files")
        """
    )
    out = _attack_stores_nothing(stack, {"source": attack, "disk_mb": 10})
    assert out["killed_reason"] == "disk", out
    assert out["artifacts"] == {}
    assert out["refused_artifacts"] == ["out/: the run exceeded its disk cap"]
    found = " ".join(out["warnings"])
    assert "MB (files by apparent size), over its cap of 10 MB (disk_mb)" in found, found


@needs_containment
def test_forty_thousand_files_in_out_fail_with_reason_disk(stack: Stack) -> None:
    """40 000 one-byte files in out/. Before: every one was stored (and where storing them
    outlived the heartbeat timeout, which collecting did not heartbeat through, the job failed
    after 5 attempts, each storing them again); now: one attempt, reason disk, the cap on
    artifacts named, nothing stored."""
    attack = textwrap.dedent(
        """
        import os
        out = os.environ["SHOPFLOOR_OUT"]
        for i in range(40_000):
            with open(os.path.join(out, f"f{i:05}.txt"), "w") as f:
                f.write("x")
        print("made 40000 files")
        """
    )
    out = _attack_stores_nothing(stack, {"source": attack})
    assert out["killed_reason"] == "disk" and out["attempt"] == 1, out
    assert out["stdout_tail"] == "made 40000 files\n"
    assert out["artifacts"] == {}
    cap = CEILINGS.max_artifacts
    assert out["refused_artifacts"] == [
        f"out/: more than {cap} files, over the cap on artifacts (SHOPFLOOR_MAX_ARTIFACTS): "
        "nothing of it was stored"
    ]


OVER_CEILINGS = [
    ("script", {"memory_mb": 64 * 1024}, "memory_mb", CEILINGS.max_job_memory_mb),
    ("script", {"max_processes": 4096}, "max_processes", CEILINGS.max_job_processes),
    ("script", {"timeout_s": 24 * 3600}, "timeout_s", CEILINGS.max_job_timeout_s),
    ("script", {"disk_mb": 100 * 1024}, "disk_mb", CEILINGS.max_job_disk_mb),
    ("simulation", {"memory_mb": 64 * 1024}, "memory_mb", CEILINGS.max_job_memory_mb),
]
SCENE = {"kind": "source", "source": "x = 1"}


def _job(kind: str, over: dict) -> dict:
    base = {"source": "print(1)"} if kind == "script" else {"scene": SCENE}
    return {**base, **over}


def _names_the_ceiling(message: str, field: str, ceiling: float) -> bool:
    return f"{field}: " in message and f"ceiling of {ceiling:g} (SHOPFLOOR_MAX_JOB_" in message


@pytest.mark.parametrize(("kind", "over", "field", "ceiling"), OVER_CEILINGS)
def test_a_job_over_a_ceiling_is_a_422(
    stack: Stack, kind: str, over: dict, field: str, ceiling: float
) -> None:
    """Before: 201, and the job ran (memory_mb up to 64 GB, 4096 processes, 24 h passed).
    A job asking for the ceiling itself runs."""
    r = stack.http.post(f"/jobs/{kind}", json=_job(kind, over))
    assert r.status_code == 422, r.text
    assert _names_the_ceiling(r.json()["detail"], field, ceiling), r.text
    at = stack.run(kind, _job(kind, {field: ceiling}))
    # It ran: it has the kind's result (the test scene has no parts, so the simulation's
    # verdict fails it: that is its outcome, not a refusal), and no ceiling was named.
    assert at["status"] == "COMPLETED" or kind == "simulation", at
    assert isinstance(at["result"], dict) and at["result"], at
    assert "ceiling" not in str(at.get("error") or ""), at


@pytest.mark.parametrize(("kind", "over", "field", "ceiling"), OVER_CEILINGS)
def test_a_job_over_a_ceiling_from_the_temporal_cli_fails_at_once(
    stack: Stack, dev_server: DevServer, kind: str, over: dict, field: str, ceiling: float
) -> None:
    """The worker holds to its own ceilings whoever started the job. Before: COMPLETED."""
    workflow = "ScriptExecutionWorkflow" if kind == "script" else "SimulationWorkflow"
    queue = stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"] + "simulation-task-queue"
    job_id = f"over-{uuid.uuid4().hex[:8]}"
    started = temporal(
        dev_server,
        *("start", "--type", workflow, "--task-queue", queue, "--workflow-id", job_id),
        *("--input", json.dumps(_job(kind, over))),
    )
    assert started.returncode == 0, started.stderr
    began = time.monotonic()
    shown = stack.http.get(f"/jobs/{job_id}/result", params={"wait": 30}).json()
    print(f"{workflow} {over} ended {shown['status']} after {time.monotonic() - began:.2f}s")
    assert shown["status"] == "FAILED", shown
    assert _names_the_ceiling(shown["error"], field, ceiling), shown["error"]
    described = json.loads(
        temporal(dev_server, "describe", "--workflow-id", job_id, "-o", "json").stdout
    )
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_shopfloor_up_writes_is_private(tmp_path: Path) -> None:
    """`shopfloor up` from a shell whose umask is 022, then one job with an artifact. Before:
    the data dir 0755, temporal.db and its log 0644, the store's directories 0755."""
    data = tmp_path / "data"
    port = free_port()
    env = {
        **os.environ,
        "SHOPFLOOR_DATA_DIR": str(data),
        "SHOPFLOOR_CONTROLLER_PORT": str(port),
        "SHOPFLOOR_DEV_SERVER_PORT": str(free_port()),
        "SHOPFLOOR_DEV_UI_PORT": str(free_port()),
        "SHOPFLOOR_TASK_QUEUE_PREFIX": f"modes-{port}-",
        "SHOPFLOOR_WORKER_KINDS": '["script"]',
    }
    old = os.umask(0o022)
    try:
        up = Proc(["up"], env, tmp_path / "up.log").start()
    finally:
        os.umask(old)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: "ready; Ctrl-C" in (tmp_path / "up.log").read_text(), timeout_s=90, what="up"
        )
        write = "import os\nopen(os.environ['SHOPFLOOR_OUT'] + '/a.txt', 'w').write('a')"
        job = httpx.post(f"{url}/jobs/script", json={"source": write}).json()["job_id"]
        res = httpx.get(f"{url}/jobs/{job}/result", params={"wait": 60}, timeout=90).json()
        assert res["result"]["artifacts"], res
        files = [
            data / name
            for name in ("temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.log")
            if (data / name).exists()
        ]
        files += [data / "up.pid", data / "artifacts" / job / "a.txt"]
        dirs = [data, data / "artifacts", data / "artifacts" / job]
        modes = {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in [*dirs, *files]}
        assert modes == {
            **{str(p.relative_to(tmp_path)): "0o700" for p in dirs},
            **{str(p.relative_to(tmp_path)): "0o600" for p in files},
        }
    finally:
        up.stop()


def test_a_dot_env_others_can_read_is_warned_about(tmp_path: Path) -> None:
    """Before: read without a word, whatever its mode."""
    env_file = tmp_path / ".env"
    env_file.write_text("SHOPFLOOR_API_TOKEN=not-for-others\n")
    code = "from shopfloor.filemodes import make_private\nfrom shopfloor.settings import Settings\n"
    code += "make_private(Settings())"
    for mode, warned in ((0o644, True), (0o600, False)):
        os.chmod(env_file, mode)
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert ("is open to other users (mode 0644)" in done.stderr) is warned, done.stderr
