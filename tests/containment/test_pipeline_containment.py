"""Issue 19's first two attacks, through a real worker and controller: whoever may start a
pipeline (everyone, without an API token) writes its services' commands and health-check
commands. Neither may run as root, see the worker's secrets, reach the control plane or read
the worker's files. Each attack runs beside two innocent script jobs, which must complete with
their exact output (`run_with_innocents` of the escape suite).

The stacks here have a Temporal dev server, data dir and checkout (the workers' cwd, with a
`.env`) of their own, in world-readable directories outside /tmp: what keeps a service from
them is its containment, not a 0700 directory of pytest's on the way.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.devserver import DevServer
from shopfloor.kinds.pipeline import _procfs
from tests.containment.test_escapes import CAPS, run_with_innocents
from tests.helpers import REPO, Stack, free_port, wait_until

pytestmark = pytest.mark.skipif(
    not (CAPS.root and CAPS.mountns and CAPS.pids_cgroup and CAPS.iptables),
    reason="pipeline containment needs a root worker with namespaces, cgroups and iptables: "
    + CAPS.describe(),
)

FAKE_KEY = "sk-ant-fake-worker-secret-19"
DOTENV_SECRET = "fake-dotenv-gateway-token-19"


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """World-readable (0755) and outside /tmp (services get a private /tmp)."""
    root = REPO / "tests" / "output" / f"pipeline-contain-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, mode=0o755)
    for p in (root, root.parent):
        p.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def temporal(place: Path) -> Iterator[DevServer]:
    """Its SQLite file is 0644 in 0755 directories, as under `shopfloor up`."""
    data = place / "temporal"
    data.mkdir(mode=0o755)
    server = DevServer(data_dir=data, port=free_port(), ui_port=free_port())
    server.start()
    yield server
    server.stop()


def _stack(temporal: DevServer, place: Path, name: str) -> Stack:
    """A worker (scripts and pipelines) and a controller; the worker runs in a checkout of its
    own holding a `.env`, with a fake API key in its environment."""
    checkout = place / f"checkout-{name}"
    checkout.mkdir(mode=0o755)
    (checkout / ".env").write_text(f"SHOPFLOOR_GATEWAY_TOKEN={DOTENV_SECRET}\n")
    (checkout / ".env").chmod(0o644)
    logs = place / f"stack-{name}"
    logs.mkdir()
    stack = Stack(
        temporal_address=temporal.address,
        tmp=logs,
        extra_env={
            "SHOPFLOOR_DATA_DIR": str(place / f"data-{name}"),
            "SHOPFLOOR_ANTHROPIC_API_KEY": FAKE_KEY,
        },
    )
    # The worker's cwd is the checkout (its `.env` is read from there).
    _in(checkout, lambda: stack.start_worker("--kind", "script", "--kind", "pipeline"))
    stack.start_controller()
    stack.checkout = checkout  # type: ignore[attr-defined]
    return stack


def _in(directory: Path, fn: Callable[[], Any]) -> Any:
    before = os.getcwd()
    os.chdir(directory)
    try:
        return fn()
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def stack(temporal: DevServer, place: Path) -> Iterator[Stack]:
    s = _stack(temporal, place, "a")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def other_stack(temporal: DevServer, place: Path) -> Iterator[Stack]:
    s = _stack(temporal, place, "b")
    yield s
    s.stop()


def beside_innocents(stack: Stack, attack: Callable[[], Any]) -> Any:
    """Runs `attack` (a pipeline) while two innocent script jobs run; they must complete with
    their exact output, and the worker stay healthy."""
    box: dict[str, Any] = {}

    def during(innocents: list[str], job: dict) -> dict:
        box["result"] = attack()
        return job

    out = run_with_innocents(stack, {"source": "print('done')"}, on_running=during)
    assert out["exit_code"] == 0, out
    return box["result"]


def _pipeline(name: str, *services: dict) -> dict:
    return {
        "definition": {
            "name": name,
            "supervise_every_s": 1,
            "restart": {"backoff_initial_s": 0.5, "backoff_max_s": 1},
            "services": list(services),
        }
    }


def _log(stack: Stack, pipeline: str, service: str) -> str:
    path = Path(stack.env["SHOPFLOOR_DATA_DIR"]) / "pipelines" / pipeline / f"{service}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _stop(stack: Stack, job_id: str) -> None:
    assert stack.http.post(f"/jobs/{job_id}/signals/stop").status_code == 202
    stack.result(job_id, wait_s=60)


def _listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (read here, not with the code under test)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def _pool(stack: Stack) -> range:
    """The stack's run uid pool (its settings; a session may move it off the default)."""
    base = int(stack.env.get("SHOPFLOOR_SANDBOX_UID_BASE", 200_000))
    return range(base, base + int(stack.env.get("SHOPFLOOR_SANDBOX_UID_COUNT", 1000)))


def _status(stack: Stack, job_id: str) -> dict:
    r = stack.http.get(f"/jobs/{job_id}/queries/status")
    assert r.status_code == 200, r.text
    return r.json()


def _running(stack: Stack, job_id: str) -> dict:
    """The pipeline's status once it has left `starting`."""
    return wait_until(  # type: ignore[return-value]
        lambda: (lambda st: st if st["phase"] != "starting" else None)(_status(stack, job_id)),
        timeout_s=60,
        what="the pipeline started",
    )


CHECK_ATTACK = textwrap.dedent(
    """
    import json, os, subprocess, sys
    found = {"uid": os.getuid()}
    try:
        found["worker_environ"] = len(open(f"/proc/{sys.argv[1]}/environ", "rb").read())
    except OSError as err:
        found["worker_environ"] = type(err).__name__
    env = subprocess.run(["env"], capture_output=True, text=True).stdout
    found["id"] = subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
    # The worker's settings (its keys), the job environment's own SHOPFLOOR_OUT aside; counted:
    # the error keeps 200 characters of the line.
    found["secrets"] = sum(l.startswith("SHOPFLOOR_") and not l.startswith("SHOPFLOOR_OUT=")
                           for l in env.splitlines())
    found["fake_key_seen"] = sys.argv[2] in env
    try:
        open("/etc/shopfloor-pwned-by-a-check", "w").write("root")
        found["root_write"] = "written"
    except OSError as err:
        found["root_write"] = type(err).__name__
    print(json.dumps(found, separators=(",", ":")))
    sys.exit(1)
    """
)


def test_a_health_check_command_is_not_root_and_sees_no_secret(stack: Stack) -> None:
    """Fails before issue 19's fix: the check ran as root (uid 0) in the worker's namespaces,
    could read the worker's /proc/<pid>/environ and write /etc."""
    worker_pid = stack.workers[0].pid
    name = f"chk{uuid.uuid4().hex[:8]}"
    argv = ["python3", "-c", CHECK_ATTACK]
    service = {
        "name": "svc",
        "command": ["python3", "-c", "import time; time.sleep(600)"],
        "health": {
            "command": [*argv, str(worker_pid), FAKE_KEY],
            "interval_s": 0.2,
            "timeout_s": 10,
            "start_timeout_s": 2,
        },
        "stop_timeout_s": 2,
    }

    def attack() -> dict:
        return stack.run("pipeline", _pipeline(name, service), wait_s=120)

    res = beside_innocents(stack, attack)
    assert res["status"] == "FAILED", res
    text = json.dumps(res)
    assert FAKE_KEY not in text
    # The check's output comes back as its last line only, in the pipeline's error.
    line = text[text.index('{\\"uid\\"') :].split("}", 1)[0] + "}"
    found = json.loads(line.replace('\\"', '"'))
    assert found["uid"] != 0 and found["uid"] != _procfs.uid_of(worker_pid), found
    assert found["uid"] in _pool(stack) and found["id"] == str(found["uid"]), found
    # Refused, or (in a pid namespace of its own) not even in sight.
    assert found["worker_environ"] in ("PermissionError", "FileNotFoundError"), found
    assert found["secrets"] == 0 and found["fake_key_seen"] is False, found
    assert found["root_write"] in ("PermissionError", "OSError", "FileNotFoundError"), found
    assert not Path("/etc/shopfloor-pwned-by-a-check").exists()


SERVICE_ATTACK = textwrap.dedent(
    """
    import json, os, socket, sys, time
    targets = json.loads(sys.argv[1])
    found = {"uid": os.getuid()}
    for port in targets["ports"]:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            found[f"port {port}"] = "connected"
        except OSError as err:
            found[f"port {port}"] = type(err).__name__
    for path in targets["paths"]:
        try:
            if os.path.isdir(path):
                found[path] = f"listed {len(os.listdir(path))}"
            else:
                data = open(path, "rb").read()
                found[path] = f"read {len(data)}" + (" SECRET" if b"fake-" in data else "")
        except OSError as err:
            found[path] = type(err).__name__
    found["environ"] = sorted(k for k in os.environ if k.startswith("SHOPFLOOR_"))
    found["root"] = sorted(os.listdir("/"))
    found["others"] = sorted(
        int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
    )
    print("FOUND", json.dumps(found), flush=True)
    time.sleep(600)
    """
)


def test_a_service_cannot_reach_the_control_plane_nor_the_workers_files(
    stack: Stack, temporal: DevServer
) -> None:
    """Fails before issue 19's fix: services ran as uids outside the filtered range (they
    reached the Temporal frontend and the controller) and saw the host's file system (the
    SQLite history is 0644, the checkout's `.env` and the data dir world-readable here)."""
    name = f"svc{uuid.uuid4().hex[:8]}"
    peer_port = free_port()
    assert temporal.proc is not None
    temporal_ports = _listening_ports(temporal.proc.pid)
    assert temporal.port in temporal_ports and len(temporal_ports) > 2  # HTTP API, UI, …
    data = Path(stack.env["SHOPFLOOR_DATA_DIR"])
    checkout: Path = stack.checkout  # type: ignore[attr-defined]
    targets = {
        "ports": [temporal.port, stack.port, *sorted(temporal_ports - {temporal.port})],
        "paths": [
            str(temporal.db_file),
            f"{temporal.db_file}-wal",  # WAL mode: the latest history is here
            str(data),
            str(data / "artifacts"),
            str(data / "pipelines"),
            str(checkout),
            str(checkout / ".env"),
            "/root",
        ],
    }
    # Its own pipeline's services it reaches on loopback; the peer's command check too.
    connect = f"import socket; socket.create_connection(('127.0.0.1', {peer_port}), 2)"
    reach_peer = ["python3", "-c", connect]
    peer = {
        "name": "peer",
        "command": ["python3", "-m", "http.server", "--bind", "127.0.0.1", str(peer_port)],
        "health": {"command": reach_peer, "interval_s": 0.3, "timeout_s": 5},
        "stop_timeout_s": 2,
    }
    aims = {**targets, "ports": [*targets["ports"], peer_port]}
    attacker = {
        "name": "attacker",
        "command": ["python3", "-c", SERVICE_ATTACK, json.dumps(aims)],
        "depends_on": ["peer"],
        "stop_timeout_s": 2,
    }

    def attack() -> tuple[dict, dict]:
        job_id = stack.submit("pipeline", _pipeline(name, peer, attacker))
        line = wait_until(
            lambda: next(
                (x for x in _log(stack, name, "attacker").splitlines() if x.startswith("FOUND")),
                None,
            ),
            timeout_s=90,
            what="the attacker's findings",
        )
        status = _running(stack, job_id)
        _stop(stack, job_id)
        return json.loads(str(line).removeprefix("FOUND ")), status

    found, status = beside_innocents(stack, attack)
    assert status["phase"] == "running", status
    for port in targets["ports"]:
        assert found[f"port {port}"] == "ConnectionRefusedError", (port, found)
    assert found[f"port {peer_port}"] == "connected", found
    for path in targets["paths"]:
        # Hidden (an empty root-only tmpfs: refused), gone, or a file reading as empty.
        assert found[path] in ("PermissionError", "FileNotFoundError", "read 0"), (path, found)
    assert found["environ"] == ["SHOPFLOOR_PIPELINE_SERVICE"], found
    assert found["uid"] in _pool(stack), found
    # A minimal root (no /home, /var, /run/lock, /work of the host's), and no process of the
    # host's in sight: only what the service itself forks (none here).
    assert "var" not in found["root"] and "home" not in found["root"], found["root"]
    assert found["others"] == [], found["others"]


def test_pipelines_never_share_a_uid_and_take_theirs_from_the_pool(
    stack: Stack, other_stack: Stack
) -> None:
    """Fails before issue 19's fix: a service's uid was a hash of pipeline and service name
    (201000 + …), outside the run pool, and the same for a pipeline of that name in any stack."""
    name = f"same{uuid.uuid4().hex[:6]}"
    sleeper = {"command": ["python3", "-c", "import time; time.sleep(600)"], "stop_timeout_s": 2}
    services = [{"name": "one", **sleeper}, {"name": "two", **sleeper}]

    def attack() -> list[int]:
        jobs = [(s, s.submit("pipeline", _pipeline(name, *services))) for s in (stack, other_stack)]
        uids = []
        for s, job_id in jobs:
            st = _running(s, job_id)
            assert st["phase"] == "running", st
            uids += [_procfs.uid_of(svc["pid"]) for svc in st["services"]]
        for s, job_id in jobs:
            _stop(s, job_id)
        return uids

    uids = beside_innocents(stack, attack)
    assert len(uids) == 4 and len(set(uids)) == 4, uids
    assert all(u in _pool(stack) for u in uids), uids


def test_http_and_tcp_checks_cannot_reach_the_control_plane(stack: Stack) -> None:
    """A check's address is the definition's, as untrusted as its command. Before: the worker
    itself made HTTP and TCP checks, so a check pointed at the controller's `/healthz` (or a
    GET to Temporal's HTTP API) was answered, and the pipeline reported healthy. Now the probe
    runs contained, as a pool uid filtered away from the control plane: refused, the start
    fails naming it, while a check of the pipeline's own service passes."""
    port = free_port()
    own = {
        "name": "own",
        "command": ["python3", "-m", "http.server", "-b", "127.0.0.1", str(port)],
        "health": {
            "http": f"http://127.0.0.1:{port}/",
            "interval_s": 0.2,
            "timeout_s": 2,
            "start_timeout_s": 20,
        },
        "stop_timeout_s": 2,
    }
    good = f"own{uuid.uuid4().hex[:6]}"
    started = stack.submit("pipeline", _pipeline(good, own))
    wait_until(
        lambda: stack.http.get(f"/jobs/{started}/queries/status").json().get("phase") == "running",
        timeout_s=60,
        what="the pipeline with its own service to be running",
    )
    _stop(stack, started)
    for target in (
        {"http": f"http://127.0.0.1:{stack.port}/healthz"},
        {"tcp": f"127.0.0.1:{stack.port}"},
    ):
        probe = {
            "name": "svc",
            "command": ["python3", "-c", "import time; time.sleep(600)"],
            "health": {**target, "interval_s": 0.2, "timeout_s": 2, "start_timeout_s": 3},
            "stop_timeout_s": 2,
        }
        name = f"cp{uuid.uuid4().hex[:6]}"
        res = beside_innocents(
            stack, lambda p=probe, n=name: stack.run("pipeline", _pipeline(n, p))
        )
        assert res["status"] == "FAILED", res
        assert "Connection refused" in json.dumps(res), res
