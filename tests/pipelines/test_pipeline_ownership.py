"""Pipelines own what they start (issue 22), through a real worker and controller, the
`shopfloor pipeline` CLI and the real `temporal` CLI:

- seed 004's sequence: start, `temporal workflow terminate` (its stop script), start again →
  the second start stops the first run's orphans (and says so), then exactly one live process
  per service carries the pipeline's marker, and status is truthful;
- `pipeline stop` after a terminate stops the orphans (found by marker), not fail and kill none;
- a port held by a stranger process: the start fails at once naming its pid and command (before:
  the stranger answered the health check and the start reported healthy);
- a service that crash-loops while a stranger answers its port never shows healthy.

Each attack runs beside an innocent pipeline, which keeps its processes, health and restarts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shopfloor.devserver import DevServer, temporal_binary
from shopfloor.kinds.pipeline.definition import validate_definition
from tests.helpers import Stack, free_port, wait_until
from tests.pipelines.support import alive, kill_marked, marked_by_prefix, service

SEED = f"seed{uuid.uuid4().hex[:6]}"
INNOCENT = f"innocent{uuid.uuid4().hex[:6]}"
ORDER = ["otel", "loki", "grafana"]  # seed 004's logs pipeline, as svc.py services
STARTED: set[str] = set()  # every pipeline the tests started: stopped (and swept) at the end


def _chain(name: str, *, supervise_every_s: float = 0.5) -> dict[str, Any]:
    return {
        "name": name,
        "supervise_every_s": supervise_every_s,
        "restart": {"backoff_initial_s": 0.5, "backoff_max_s": 2},
        "services": [
            service("otel"),
            service("loki", needs=("otel",)),
            service("grafana", needs=("loki",)),
        ],
    }


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Two known pipelines (SHOPFLOOR_PIPELINE_DIRS): the seed's and an innocent one."""
    return {SEED: _chain(SEED), INNOCENT: _chain(INNOCENT, supervise_every_s=1)}


@pytest.fixture(scope="module")
def stack(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory, known: dict[str, Any]
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ownership")
    definitions = tmp / "definitions"
    definitions.mkdir()
    for name, raw in known.items():
        (definitions / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp,
        extra_env={
            "SHOPFLOOR_PIPELINE_DIRS": json.dumps([str(definitions)]),
            "SHOPFLOOR_PIPELINE_HOST": f"own-{uuid.uuid4().hex[:8]}",
        },
    )
    s.start_worker("--kind", "pipeline")
    s.start_controller()
    try:
        yield s
    finally:
        try:
            for name in sorted(STARTED | set(known)):
                s.http.post(f"/pipelines/{name}/stop", params={"wait": 60})
        finally:
            s.stop()
            for name in sorted(STARTED | set(known)):
                kill_marked(name)  # whatever a failed test left


@pytest.fixture
def innocent(stack: Stack) -> Iterator[dict[str, int]]:
    """The innocent pipeline, running beside the attack: its pids by service."""
    view = _start(stack, INNOCENT)
    assert view["phase"] == "running", view
    pids = _pids(view)
    yield pids
    after = _view(stack, INNOCENT)
    assert after["phase"] == "running", after
    for s in after["services"]:
        assert (s["state"], s["health"], s["restarts"]) == ("healthy", "ok", 0), s
        assert s["leftovers_stopped"] == [], s
    assert _pids(after) == pids  # the same processes, still alive, still its only ones
    assert all(alive(pid) for pid in pids.values())
    for name, pid in pids.items():
        assert [p.pid for p in _leaders(stack, INNOCENT, name)] == [pid], name


# -- helpers ------------------------------------------------------------------------------------


def _cli_json(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    done = stack.cli("pipeline", *args, "--json")
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}") from None


def _start(stack: Stack, what: str) -> dict[str, Any]:
    code, view = _cli_json(stack, "start", what, "--wait", "90")
    assert code in (0, 1), view
    return view


def _view(stack: Stack, name: str) -> dict[str, Any]:
    return stack.http.get(f"/pipelines/{name}").json()


def _pids(view: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["pid"] for s in view["services"]}


def _terminate(dev_server: DevServer, job_id: str) -> None:
    """Seed 004's stop script, from the `temporal` CLI."""
    done = subprocess.run(
        [temporal_binary(), "workflow", "terminate", "--address", dev_server.address]
        + ["--workflow-id", job_id, "--reason", "seed 004 stop.py"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _marked(stack: Stack, pipeline: str, name: str) -> list[tuple[int, int, int, str]]:
    """(pid, sid, ppid, marker) of every live process of the service of `pipeline` (any run)
    of this stack, straight from /proc."""
    return [(st.pid, st.sid, st.ppid, m) for st, m in marked_by_prefix(f"{pipeline}/{name}/")]


class _Leader:
    def __init__(self, pid: int, marker: str) -> None:
        self.pid, self.marker = pid, marker


def _leaders(stack: Stack, pipeline: str, name: str) -> list[_Leader]:
    """The service's own processes: each leads its session, its parent is not one of them."""
    procs = _marked(stack, pipeline, name)
    pids = {p[0] for p in procs}
    return [_Leader(p[0], p[3]) for p in procs if p[1] == p[0] and p[2] not in pids]


def _definition_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    STARTED.add(raw["name"])
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _stranger(tmp_path: Path, port: int) -> subprocess.Popen:
    """Someone else's server on `port` (the test's own process, not the pipeline's), answering
    200 on `/` as a service would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: (
            subprocess.run(
                [
                    "python3",
                    "-c",
                    f"import socket; socket.create_connection(('127.0.0.1', {port}))",
                ],
                capture_output=True,
            ).returncode
            == 0
        ),
        what="the stranger to listen",
    )
    return proc


def _own_port(raw_service: dict[str, Any]) -> int:
    return int(raw_service["health"]["http"].rsplit(":", 1)[1].split("/")[0])


# -- the seed-004 sequence ----------------------------------------------------------------------


def test_seed_004_start_terminate_start_again_owns_one_process_per_service(
    stack: Stack, dev_server: DevServer, innocent: dict[str, int]
) -> None:
    first = _start(stack, SEED)
    assert first["phase"] == "running", first
    old = _pids(first)
    _terminate(dev_server, f"pipeline-{SEED}")
    terminated = _view(stack, SEED)
    assert terminated["phase"] == "failed", terminated
    assert f"`shopfloor pipeline stop {SEED}` stops them" in terminated["error"], terminated
    # The seed's premise: a terminated workflow runs no more code, its services keep running.
    assert all(alive(pid) for pid in old.values())

    second = _start(stack, SEED)
    assert second["phase"] == "running", second
    new = _pids(second)
    # The start stopped the orphans first, each found by the pipeline's marker, and says so.
    assert not any(alive(pid) for pid in old.values()), old
    for s in second["services"]:
        assert (s["state"], s["health"], s["restarts"]) == ("healthy", "ok", 0), s
        [said] = s["leftovers_stopped"]
        assert f"pid {old[s['name']]}" in said and "earlier run" in said, said
        assert f"job pipeline-{SEED}" in said, said
    log = Path(stack.env["SHOPFLOOR_DATA_DIR"]) / "pipelines" / SEED
    for name in ORDER:
        text = (log / f"{name}.log").read_text()
        assert f"--- shopfloor: stopped what earlier runs of pipeline '{SEED}' left" in text
    assert "stopped what earlier runs" in (stack.tmp / "worker-0.log").read_text()

    # Exactly one live process per service in the process table, and it is the one status
    # shows; it stays so over several supervision ticks (no crash loop on a taken port).
    for _ in range(3):
        time.sleep(1)
        view = _view(stack, SEED)
        assert view["phase"] == "running" and _pids(view) == new, view
        for s in view["services"]:
            assert (s["state"], s["health"], s["restarts"]) == ("healthy", "ok", 0), s
        for name in ORDER:
            assert [p.pid for p in _leaders(stack, SEED, name)] == [new[name]], name
            assert len(_marked(stack, SEED, name)) == 1, _marked(stack, SEED, name)

    stopped = stack.cli("pipeline", "stop", SEED)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(_marked(stack, SEED, name) == [] for name in ORDER)


def test_pipeline_stop_after_a_terminate_stops_the_orphans(
    stack: Stack, dev_server: DevServer, innocent: dict[str, int], tmp_path: Path
) -> None:
    """Before: `pipeline stop` failed (the run was over) and killed none. The definition here
    is sent whole (`pipeline start FILE`): no worker knows it, the stop finds it in the
    terminated run's history."""
    raw = _chain(f"file{uuid.uuid4().hex[:6]}")
    name = raw["name"]
    view = _start(stack, str(_definition_file(tmp_path, raw)))
    assert view["phase"] == "running", view
    old = _pids(view)
    _terminate(dev_server, f"pipeline-{name}")
    assert all(alive(pid) for pid in old.values())

    code, stopped = _cli_json(stack, "stop", name)
    assert code == 0 and stopped["phase"] == "stopped", stopped
    assert not any(alive(pid) for pid in old.values()), old
    assert all(_marked(stack, name, s) == [] for s in ORDER)
    for s in stopped["services"]:
        assert s["state"] == "stopped", s
        [said] = s["leftovers_stopped"]
        assert f"pid {old[s['name']]}" in said, said
    # A stop of the stopped pipeline is just its view (no second run).
    code, again = _cli_json(stack, "stop", name)
    assert code == 0 and again["phase"] == "stopped", again


# -- a stranger on the port ---------------------------------------------------------------------


@pytest.mark.parametrize("binds", [True, False], ids=["service-binds-too", "service-never-binds"])
def test_a_port_held_by_a_stranger_fails_the_start_naming_it(
    stack: Stack, innocent: dict[str, int], tmp_path: Path, binds: bool
) -> None:
    """The stranger answers the check (200 on `/`). Before: the start reported healthy. Now
    the start fails at once, naming the stranger's pid and command, and rolls back."""
    port = free_port()
    svc = service("svc", start_timeout_s=60)
    svc["health"]["http"] = f"http://127.0.0.1:{port}/"
    if binds:  # it fails on "Address already in use" and exits
        svc["command"][svc["command"].index("--port") + 1] = str(port)
    else:  # alive, listening nowhere: waiting out its start timeout would not help
        svc["command"] = ["python3", "-c", "import time; time.sleep(600)"]
    raw = {"name": f"stranger{uuid.uuid4().hex[:6]}", "services": [svc]}
    validate_definition(raw)
    stranger = _stranger(tmp_path, port)
    try:
        began = time.monotonic()
        view = _start(stack, str(_definition_file(tmp_path, raw)))
        took = time.monotonic() - began
        assert view["phase"] == "failed", view
        error = view["error"]
        assert f"127.0.0.1:{port} is answered by pid {stranger.pid}" in error, error
        assert f"http.server --bind 127.0.0.1 {port}" in error, error
        assert "not by svc's own processes" in error, error
        assert took < 30, took  # at once, not after its 60 s start timeout
        assert stranger.poll() is None  # the stranger is not the pipeline's to stop
        assert _marked(stack, raw["name"], "svc") == []  # rolled back
    finally:
        stranger.kill()
        stranger.wait()


def test_a_crash_looping_service_never_shows_healthy_while_a_stranger_answers(
    stack: Stack, innocent: dict[str, int], tmp_path: Path
) -> None:
    """The issue's report: the orphans answered the health checks while the pipeline's own
    processes crash-looped on "Address already in use" (restarts 0→15, state "healthy")."""
    raw = _chain(f"loop{uuid.uuid4().hex[:6]}", supervise_every_s=0.3)
    name = raw["name"]
    port = _own_port(raw["services"][0])
    view = _start(stack, str(_definition_file(tmp_path, raw)))
    assert view["phase"] == "running", view
    otel = _pids(view)["otel"]
    # While the worker is stopped (so that no restart comes between), the service dies and a
    # stranger takes its port.
    worker = stack.workers[0].popen
    assert worker is not None
    worker.send_signal(signal.SIGSTOP)
    try:
        os.kill(otel, signal.SIGKILL)
        wait_until(lambda: not alive(otel), what="otel to die")
        stranger = _stranger(tmp_path, port)
    finally:
        worker.send_signal(signal.SIGCONT)
    try:

        def otel_status() -> dict[str, Any]:
            return next(s for s in _view(stack, name)["services"] if s["name"] == "otel")

        # From the first check that sees it dead (status is as of the last check), never again
        # healthy while the stranger holds its port, however often it is restarted.
        wait_until(lambda: otel_status()["restarts"] >= 1, what="the first restart")
        seen = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            st = otel_status()
            seen.append(st)
            assert st["state"] != "healthy", st
            time.sleep(0.1)
        last = seen[-1]
        assert last["restarts"] >= 2, last
        assert any(f"answered by pid {stranger.pid}" in s["health"] for s in seen), seen[-5:]
    finally:
        stranger.kill()
        stranger.wait()
    # The port is free again: the service comes back, its own process listening.
    wait_until(
        lambda: (
            next(s for s in _view(stack, name)["services"] if s["name"] == "otel")["state"]
            == "healthy"
        ),
        timeout_s=30,
        what="otel healthy again",
    )
    [st] = [s for s in _view(stack, name)["services"] if s["name"] == "otel"]
    assert [p.pid for p in _leaders(stack, name, "otel")] == [st["pid"]]
    stopped = stack.cli("pipeline", "stop", name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(_marked(stack, name, s) == [] for s in ORDER)
