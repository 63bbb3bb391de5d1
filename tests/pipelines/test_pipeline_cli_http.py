"""Seed 004's triggers: `shopfloor pipeline start|status|list|stop` and /pipelines over HTTP,
with real worker and controller processes, on the demo pipeline of examples/pipelines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from shopfloor.kinds.pipeline.definition import load_definition
from tests.helpers import REPO, Stack
from tests.pipelines.support import alive

DEMO = REPO / "examples" / "pipelines" / "demo.yaml"


@pytest.fixture(scope="module")
def pipeline_stack(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("pipelines"),
        extra_env={
            "SHOPFLOOR_PIPELINE_DIRS": json.dumps([str(DEMO.parent)]),
            "SHOPFLOOR_PIPELINE_HOST": f"cli-{uuid.uuid4().hex[:8]}",
        },
    )
    s.start_worker("--kind", "pipeline")
    s.start_controller()
    yield s
    s.stop()


def test_demo_pipeline_from_the_cli_and_http(pipeline_stack: Stack) -> None:
    http = pipeline_stack.http
    started = pipeline_stack.cli("pipeline", "start", str(DEMO))
    assert started.returncode == 0, started.stdout + started.stderr
    assert "pipeline-demo" in started.stdout and "running" in started.stdout

    shown = pipeline_stack.cli("pipeline", "status", "demo", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["phase"] == "running" and view["task_queue"].endswith("demo-queue")
    assert [(s["name"], s["state"]) for s in view["services"]] == [
        ("store", "healthy"),
        ("collector", "healthy"),
        ("dashboard", "healthy"),
    ]
    pids = [s["pid"] for s in view["services"]]
    assert all(alive(pid) for pid in pids)
    # The services work: a line through the collector shows on the dashboard.
    httpx.post("http://127.0.0.1:18702/ingest", json={"line": "hello"}).raise_for_status()
    assert httpx.get("http://127.0.0.1:18703/").json()["records"] == 1

    # Starting a running pipeline is idempotent; the derived routes reach the same job.
    again = http.post("/pipelines/demo/start").json()
    assert again["job_id"] == "pipeline-demo"
    assert http.get("/pipelines/demo").json()["services"][0]["pid"] == pids[0]
    status = http.get("/jobs/pipeline-demo/queries/status").json()
    assert status["phase"] == "running"

    listed = json.loads(pipeline_stack.cli("pipeline", "list", "--json").stdout)
    phases = {p["name"]: p["phase"] for p in listed}
    assert phases["demo"] == "running" and phases["logs"] == "not started"

    stopped = pipeline_stack.cli("pipeline", "stop", "demo")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout
    assert not any(alive(pid) for pid in pids)
    assert http.get("/pipelines/demo").json()["phase"] == "stopped"


def test_bad_definitions_and_unknown_pipelines(pipeline_stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("interval_s: 0.2}", "interval_s: -1}", 1))
    shown = pipeline_stack.cli("pipeline", "start", str(bad))
    assert shown.returncode == 2 and "services[store].health.interval_s" in shown.stderr
    r = pipeline_stack.http.post("/pipelines/nope/start")
    assert r.status_code == 404 and "logs" in r.json()["detail"]
    body = {"definition": load_definition(DEMO).model_dump(mode="json")}
    r = pipeline_stack.http.post("/pipelines/other/start", json=body)
    assert r.status_code == 422 and "named 'demo'" in r.json()["detail"]
    assert pipeline_stack.http.post("/pipelines/never/stop").status_code == 404
