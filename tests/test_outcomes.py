"""The outcome matrix (docs/outcomes.md): every kind × passed, failed, cancelled (each way a
job is cancelled), timed out — on a real dev server, worker and controller. For each case the
Temporal status, the `ShopfloorOutcome` search attribute (by a visibility query), the
controller's JSON (status, result, list filtered by outcome), the CLI's exit code and the
dashboard's row agree, and match the docs' table.

Every job of the module starts at once (one stack), so the matrix costs about its slowest
case, not their sum."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from shopfloor.devserver import DevServer, temporal_binary
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.helpers import REPO, Stack, free_port, wait_until
from tests.pipelines.support import service

DOCS = REPO / "docs" / "outcomes.md"
SLOW_SCRIPT = "import time\nprint('started', flush=True)\ntime.sleep(120)"
RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()
SLEEPY_SCENE = "import time\ntime.sleep(60)"
# Bound, never listening, held for the module's life: a connection to it is refused (an HTTP
# step to it fails, and retries), and no one else can take the port meanwhile.
_CLOSED = socket.socket()
_CLOSED.bind(("127.0.0.1", 0))
CLOSED_PORT = _CLOSED.getsockname()[1]
QUICK_SIM = {"render": False, "duration_s": 2.0}


@dataclass
class Case:
    kind: str
    situation: str  # the docs' row
    status: str
    outcome: str
    # The input, or what makes it when the job starts (ports picked then, not at import).
    job: dict[str, Any] | Callable[[], dict[str, Any]]
    # How it is cancelled: http (shopfloor's POST /jobs/<id>/cancel), cli (`shopfloor cancel`),
    # dashboard (the Cancel button's form), temporal (a Temporal client's cancel request),
    # signal:<name> (`shopfloor signal`).
    end: str | None = None
    job_id: str = ""
    started: float = field(default_factory=time.monotonic)


def _http_step(port: int, attempts: int) -> dict[str, Any]:
    return {
        "id": "call",
        "type": "http",
        "url": f"http://127.0.0.1:{port}/",
        "retry": {"initial": "1s", "maximum": "1s", "backoff": 1.0, "attempts": attempts},
    }


def _phased(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"definition": {"name": "matrix", "steps": list(steps)}}


def _agent(**config: Any) -> dict[str, Any]:
    return {
        "goalId": "matrix",
        "specType": "hello",
        "agentType": "mock-agent",
        "maxIterations": 10,
        **config,
    }


def _pipeline(**svc: Any) -> dict[str, Any]:
    return {
        "definition": {
            "name": f"matrix{free_port()}",
            "supervise_every_s": 0.5,
            "services": [service("svc", **svc)],
        }
    }


SLOW_AGENT = {"agentConfig": {"delayMs": 10000}}
CASES: dict[str, Case] = {
    "script-passed": Case("script", "exits 0", "COMPLETED", "passed", {"source": "print(1)"}),
    "script-failed": Case(
        "script",
        "exits non-zero (or killed for memory, CPU, processes, disk)",
        "FAILED",
        "failed",
        {"source": "import sys\nprint('bad')\nsys.exit(3)"},
    ),
    "script-timed-out": Case(
        "script",
        "over its wall-clock `timeout_s`",
        "FAILED",
        "timed_out",
        {"source": SLOW_SCRIPT, "timeout_s": 2},
    ),
    "script-cancel-http": Case(
        "script", "cancelled", "CANCELED", "cancelled", {"source": SLOW_SCRIPT}, "http"
    ),
    "script-cancel-cli": Case(
        "script", "cancelled", "CANCELED", "cancelled", {"source": SLOW_SCRIPT}, "cli"
    ),
    "script-cancel-dashboard": Case(
        "script", "cancelled", "CANCELED", "cancelled", {"source": SLOW_SCRIPT}, "dashboard"
    ),
    "script-cancel-temporal": Case(
        "script", "cancelled", "CANCELED", "cancelled", {"source": SLOW_SCRIPT}, "temporal"
    ),
    "simulation-passed": Case(
        "simulation",
        "verdict SUCCESS, or COMPLETED (a scene without objectives)",
        "COMPLETED",
        "passed",
        {"scene": {"kind": "source", "source": RAMP_BOX}, "options": QUICK_SIM},
    ),
    "simulation-failed": Case(
        "simulation",
        "verdict FAIL (a broken scene, a crash, a goal missed)",
        "FAILED",
        "failed",
        {"scene": {"kind": "source", "source": "raise SystemExit(3)"}, "options": QUICK_SIM},
    ),
    "simulation-timed-out": Case(
        "simulation",
        "over its wall-clock `timeout_s`",
        "FAILED",
        "timed_out",
        {
            "scene": {"kind": "source", "source": SLEEPY_SCENE},
            "options": QUICK_SIM,
            "timeout_s": 3,
        },
    ),
    "simulation-cancel-temporal": Case(
        "simulation",
        "cancelled",
        "CANCELED",
        "cancelled",
        {
            "scene": {"kind": "source", "source": SLEEPY_SCENE},
            "options": QUICK_SIM,
        },
        "temporal",
    ),
    "agent-passed": Case("agent", "goal COMPLETED", "COMPLETED", "passed", _agent()),
    "agent-failed": Case(
        "agent",
        "goal FAILED, or a step given up (refused by the kill switch, provider errors)",
        "FAILED",
        "failed",
        _agent(agentConfig={"failures": [{"status": "FAIL", "message": "refused"}]}),
    ),
    "agent-timed-out": Case(
        "agent", "past its `deadlineS`", "FAILED", "timed_out", _agent(**SLOW_AGENT, deadlineS=1)
    ),
    "agent-cancel-signal": Case(
        "agent",
        "cancelled (the `cancel` signal, or a Temporal cancel)",
        "CANCELED",
        "cancelled",
        _agent(**SLOW_AGENT),
        "signal:cancel",
    ),
    "agent-cancel-temporal": Case(
        "agent",
        "cancelled (the `cancel` signal, or a Temporal cancel)",
        "CANCELED",
        "cancelled",
        _agent(**SLOW_AGENT),
        "temporal",
    ),
    "phased-passed": Case(
        "phased",
        "every step completed",
        "COMPLETED",
        "passed",
        _phased({"id": "wait", "type": "delay", "duration": 0.2}),
    ),
    "phased-failed": Case(
        "phased", "a step failed", "FAILED", "failed", _phased(_http_step(CLOSED_PORT, 1))
    ),
    "phased-cancel-delay": Case(
        "phased",
        "cancelled (during a delay, or while a step retries)",
        "CANCELED",
        "cancelled",
        _phased({"id": "wait", "type": "delay", "duration": 600}),
        "cli",
    ),
    "phased-cancel-retrying": Case(
        "phased",
        "cancelled (during a delay, or while a step retries)",
        "CANCELED",
        "cancelled",
        _phased(_http_step(CLOSED_PORT, 100)),
        "http",
    ),
    "pipeline-passed": Case(
        "pipeline",
        "every service started, then stopped by the `stop` signal",
        "COMPLETED",
        "passed",
        _pipeline,
        "signal:stop",
    ),
    "pipeline-failed": Case(
        "pipeline",
        "a service failed to start (rolled back)",
        "FAILED",
        "failed",
        lambda: _pipeline(never_healthy=True, start_timeout_s=2),
    ),
    "pipeline-cancel-temporal": Case(
        "pipeline",
        "cancelled (its services are stopped first)",
        "CANCELED",
        "cancelled",
        _pipeline,
        "temporal",
    ),
}


def docs_table() -> set[tuple[str, str, str, str]]:
    rows = set()
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2] in ("COMPLETED", "FAILED", "CANCELED"):
            rows.add((cells[0], cells[1], cells[2], cells[3]))
    return rows


def test_every_case_is_a_row_of_the_docs_table_and_every_row_is_tested() -> None:
    table = docs_table()
    tested = {(c.kind, c.situation, c.status, c.outcome) for c in CASES.values()}
    assert tested - table == set(), "cases not in docs/outcomes.md's table"
    assert table - tested == set(), "rows of docs/outcomes.md's table no case runs"


async def _client(address: str, prefix: str) -> Client:
    return await connect(Settings(temporal_address=address, task_queue_prefix=prefix))


@pytest.fixture(scope="module")
def matrix(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack; every case's job started at once, then each ended its way."""
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("outcomes"),
        # The closed port is allowed: its steps fail on the connection, not the egress policy.
        extra_env={"SHOPFLOOR_EGRESS_ALLOW": f"127.0.0.1:{CLOSED_PORT}"},
    )
    try:
        s.start_worker()
        s.start_controller()
        for case in CASES.values():
            case.job_id = s.submit(case.kind, case.job() if callable(case.job) else case.job)
        _end_cases(s, dev_server.address)
        yield s
    finally:
        s.stop()


def _running(s: Stack, job_id: str, *, pipeline: bool = False) -> bool:
    st = s.http.get(f"/jobs/{job_id}").json()
    if st["status"] != "RUNNING":
        return True  # ended already: the check below says whether that was right
    if pipeline:
        q = s.http.get(f"/jobs/{job_id}/queries/status")
        return q.status_code == 200 and q.json().get("phase") == "running"
    if st["status"] != "RUNNING":
        return True  # ended already: the check below says whether that was right
    progress = st.get("workflow_progress") or {}
    # Started doing something (an activity, a timer, an agent call).
    return (
        bool(st["progress"])
        or bool(progress.get("wake_at"))
        or "iteration 1" in str(progress.get("status"))
    )


def _end_cases(s: Stack, address: str) -> None:
    to_end = [c for c in CASES.values() if c.end]
    for case in to_end:
        wait_until(
            lambda c=case: _running(s, c.job_id, pipeline=c.kind == "pipeline"),
            timeout_s=90,
            what=f"{case.job_id} under way",
        )
        how = case.end or ""
        if how == "http":
            r = s.http.post(f"/jobs/{case.job_id}/cancel")
            assert r.status_code == 202, (case, r.text)
        elif how == "cli":
            done = s.cli("cancel", case.job_id)
            assert done.returncode == 0, done.stderr
        elif how == "dashboard":
            _dashboard_cancel(s, case.job_id)
        elif how == "temporal":
            asyncio.run(_temporal_cancel(address, case.job_id))
        elif how.startswith("signal:"):
            done = s.cli("signal", case.job_id, how.removeprefix("signal:"))
            assert done.returncode == 0, done.stderr


def _dashboard_cancel(s: Stack, job_id: str) -> None:
    page = s.http.get(f"/ui/jobs/{job_id}", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    token = s.http.cookies.get("shopfloor_csrf")
    assert token
    r = s.http.post(
        f"/ui/jobs/{job_id}/cancel",
        content=f"csrf={token}",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": s.url},
        follow_redirects=False,
    )
    assert r.status_code in (200, 303), r.text


async def _temporal_cancel(address: str, job_id: str) -> None:
    client = await connect(Settings(temporal_address=address))
    await client.get_workflow_handle(job_id).cancel()


async def _visible(address: str, job_id: str, outcome: str, kind: str) -> int:
    client = await connect(Settings(temporal_address=address))
    query = (
        f"WorkflowId = '{job_id}' AND ShopfloorOutcome = '{outcome}' AND ShopfloorKind = '{kind}'"
    )
    return len([wf async for wf in client.list_workflows(query)])


@pytest.mark.parametrize("name", list(CASES))
def test_outcome_agrees_everywhere(name: str, matrix: Stack, dev_server: DevServer) -> None:
    case = CASES[name]
    s = matrix
    res = s.result(case.job_id, wait_s=180)
    # The controller's JSON.
    assert (res["status"], res["outcome"]) == (case.status, case.outcome), res
    if case.outcome in ("failed", "timed_out"):
        # The kind's whole result travels with the failure.
        assert isinstance(res["result"], dict) and res["result"], res
        assert res["error"], res
    if case.kind == "agent" and case.outcome == "cancelled":
        # The cancelled goal's result is kept (its artifacts stored first).
        assert res["result"]["status"] == "CANCELLED", res
        assert "final-state" in res["result"]["artifacts"], res
    status = s.http.get(f"/jobs/{case.job_id}").json()
    assert (status["status"], status["outcome"]) == (case.status, case.outcome), status
    # Nothing still in flight once it ended.
    assert status["progress"] == [], status
    # Temporal's own view: the search attribute, through a visibility query.
    wait_until(
        lambda: asyncio.run(_visible(dev_server.address, case.job_id, case.outcome, case.kind)),
        timeout_s=15,
        what=f"ShopfloorOutcome={case.outcome} visible for {case.job_id}",
    )
    listed = s.http.get("/jobs", params={"kind": case.kind, "outcome": case.outcome, "limit": 200})
    assert case.job_id in [j["job_id"] for j in listed.json()], listed.text
    # The CLI: exit 0 only for a pass.
    cli = s.cli("result", case.job_id)
    assert cli.returncode == (0 if case.outcome == "passed" else 1), (cli.stdout, cli.stderr)
    # The dashboard's row, filtered by outcome and coloured by it.
    page = s.http.get(
        "/", params={"kind": case.kind, "outcome": case.outcome}, headers={"accept": "text/html"}
    )
    row = re.search(rf'<tr data-job-id="{re.escape(case.job_id)}"[^>]*>', page.text)
    assert row, page.text[:2000]
    assert f'data-outcome="{case.outcome}"' in row.group(0)
    assert f"outcome-{case.outcome}" in row.group(0)


def test_cli_lists_by_outcome(matrix: Stack) -> None:
    failed = [c.job_id for c in CASES.values() if c.outcome == "failed"]
    for job_id in failed:
        matrix.result(job_id, wait_s=180)
    done = matrix.cli("list", "--outcome", "failed", "--limit", "200", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {j["outcome"] for j in listed} == {"failed"}
    assert set(failed) <= {j["job_id"] for j in listed}
    bad = matrix.http.get("/jobs", params={"outcome": "sideways"})
    assert bad.status_code == 400 and "passed" in bad.text


def test_the_temporal_cli_filters_by_outcome(matrix: Stack, dev_server: DevServer) -> None:
    """`temporal workflow list --query 'ShopfloorOutcome="failed"'`, as the docs give it."""
    failed = {c.job_id for c in CASES.values() if c.outcome == "failed"}
    for job_id in failed:
        matrix.result(job_id, wait_s=180)
    argv = [temporal_binary(), "workflow", "list", "--address", dev_server.address, "-o", "json"]
    done = subprocess.run(
        [*argv, "--query", 'ShopfloorOutcome="failed"'], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    listed = {wf["execution"]["workflowId"] for wf in json.loads(done.stdout or "[]")}
    assert failed <= listed
    assert not listed & {c.job_id for c in CASES.values() if c.outcome != "failed"}


def test_a_worker_without_the_search_attributes_stops_naming_the_command(
    tmp_path: Path,
) -> None:
    """A server started without them (a cluster nobody set up): the worker says what to run."""
    from tests.helpers import Proc

    port = free_port()
    server = DevServer(data_dir=tmp_path / "bare", port=port, ui_port=free_port())
    from shopfloor import devserver

    argv = devserver.dev_server_argv

    def bare(**kw: Any) -> list[str]:
        args = argv(**kw)
        while "--search-attribute" in args:
            i = args.index("--search-attribute")
            del args[i : i + 2]
        return args

    devserver.dev_server_argv = bare  # type: ignore[assignment]
    try:
        server.start()
    finally:
        devserver.dev_server_argv = argv  # type: ignore[assignment]
    try:
        s = Stack(temporal_address=server.address, tmp=tmp_path)
        log = tmp_path / "w.log"
        worker = Proc(["worker"], s.env, log).start()
        wait_until(lambda: not worker.alive(), timeout_s=60, what="worker to stop")
        text = log.read_text()
        assert "setup-search-attributes" in text and "ShopfloorOutcome" in text, text[-2000:]
        # The command it names registers them; a worker then starts.
        done = s.cli("setup-search-attributes")
        assert done.returncode == 0 and "created" in done.stdout, (done.stdout, done.stderr)
        done = s.cli("setup-search-attributes")
        assert "already registered" in done.stdout
        s.start_worker()
        s.stop()
    finally:
        server.stop()
