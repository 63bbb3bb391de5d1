"""`shopfloor up`: the whole embedded stack as a user runs it, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from tests.helpers import free_port, wait_until


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_up(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, str, dict[str, str]]:
    port = free_port()
    full_env = {
        **os.environ,
        "SHOPFLOOR_DATA_DIR": str(tmp_path / "data"),
        "SHOPFLOOR_CONTROLLER_PORT": str(port),
        "SHOPFLOOR_TASK_QUEUE_PREFIX": f"up-{port}-",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopfloor", "up"],
        env=full_env,
        stdout=open(tmp_path / "up.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout_s=90, what="shopfloor up healthy")
    # `up` prints "ready" once it has seen every part start; before that a death is fatal.
    wait_until(
        lambda: "Ctrl-C to stop" in (tmp_path / "up.log").read_text(), timeout_s=30, what="up ready"
    )
    return proc, url, full_env


def test_up_runs_a_job_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    proc, url, _ = _start_up(
        tmp_path,
        SHOPFLOOR_DEV_SERVER_PORT=str(free_port()),
        SHOPFLOOR_DEV_UI_PORT=str(free_port()),
    )
    try:
        parts = _descendants(proc.pid)
        cmdlines = " | ".join(_cmdline(p) for p in parts)
        assert "server start-dev" in cmdlines and "shopfloor worker" in cmdlines
        job = httpx.post(f"{url}/jobs/script", json={"source": "print('via up')"}).json()
        res = httpx.get(f"{url}/jobs/{job['job_id']}/result", params={"wait": 60}, timeout=90)
        assert res.json()["result"]["stdout_tail"] == "via up\n"
        assert (tmp_path / "data" / "temporal.db").exists()
        log = (tmp_path / "up.log").read_text()
        assert "Temporal UI" in log and url in log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    wait_until(lambda: not any(_cmdline(p) for p in parts), timeout_s=20, what="children gone")


def test_up_with_a_temporal_address_starts_no_dev_server(
    tmp_path: Path, dev_server: DevServer
) -> None:
    proc, url, _ = _start_up(tmp_path, SHOPFLOOR_TEMPORAL_ADDRESS=dev_server.address)
    try:
        cmdlines = " | ".join(_cmdline(p) for p in _descendants(proc.pid))
        assert "start-dev" not in cmdlines and "shopfloor controller" in cmdlines
        assert httpx.get(f"{url}/healthz").json()["temporal"] == dev_server.address
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_up_restarts_a_worker_that_dies(tmp_path: Path, dev_server: DevServer) -> None:
    proc, url, _ = _start_up(tmp_path, SHOPFLOOR_TEMPORAL_ADDRESS=dev_server.address)
    try:
        workers = [p for p in _descendants(proc.pid) if "shopfloor worker" in _cmdline(p)]
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        wait_until(
            lambda: [
                p
                for p in _descendants(proc.pid)
                if "shopfloor worker" in _cmdline(p) and p != workers[0]
            ],
            timeout_s=30,
            what="a new worker",
        )
        job = httpx.post(f"{url}/jobs/script", json={"source": "print('after restart')"}).json()
        res = httpx.get(f"{url}/jobs/{job['job_id']}/result", params={"wait": 60}, timeout=90)
        assert res.json()["result"]["stdout_tail"] == "after restart\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_up_names_the_process_holding_its_port(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shopfloor", "up"],
            env={
                **os.environ,
                "SHOPFLOOR_DATA_DIR": str(tmp_path / "data"),
                "SHOPFLOOR_CONTROLLER_PORT": str(port),
                "SHOPFLOOR_DEV_SERVER_PORT": str(free_port()),
                "SHOPFLOOR_DEV_UI_PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert proc.returncode == 1
    assert f"port {port} for the controller" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr  # this test process holds it
    assert not (tmp_path / "data" / "temporal.db").exists()  # nothing was started


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_up_stops_every_part_on_a_signal_and_restarts_a_dead_dev_server(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc, url, _ = _start_up(
        tmp_path,
        SHOPFLOOR_DEV_SERVER_PORT=str(free_port()),
        SHOPFLOOR_DEV_UI_PORT=str(free_port()),
    )
    try:
        parts = _descendants(proc.pid)
        if sig == signal.SIGTERM:  # once is enough: the dev server dies, `up` brings it back
            server = next(p for p in parts if "start-dev" in _cmdline(p))
            os.kill(server, signal.SIGKILL)
            wait_until(
                lambda: any(
                    "start-dev" in _cmdline(p) and p != server for p in _descendants(proc.pid)
                ),
                timeout_s=30,
                what="a new dev server",
            )
            wait_until(
                lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200,
                timeout_s=60,
                what="healthy again",
            )
            parts = _descendants(proc.pid)
    finally:
        proc.send_signal(sig)
        assert proc.wait(60) == 0
    wait_until(lambda: not any(_cmdline(p) for p in parts), timeout_s=20, what="children gone")


def test_up_detach_and_down(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SHOPFLOOR_DATA_DIR": str(tmp_path / "data"),
        "SHOPFLOOR_CONTROLLER_PORT": str(port),
        "SHOPFLOOR_DEV_SERVER_PORT": str(free_port()),
        "SHOPFLOOR_DEV_UI_PORT": str(free_port()),
        "SHOPFLOOR_TASK_QUEUE_PREFIX": f"detach-{port}-",
    }
    cli = [sys.executable, "-m", "shopfloor"]
    started = subprocess.run(
        [*cli, "up", "--detach"], env=env, capture_output=True, text=True, timeout=150
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "shopfloor down" in started.stdout
    pid = int((tmp_path / "data" / "up.pid").read_text())
    parts = _descendants(pid)
    # The shell that started it is gone; the stack still answers.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    again = subprocess.run(
        [*cli, "up", "--detach"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "already running" in again.stderr
    down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=90)
    assert down.returncode == 0 and "stopped" in down.stdout
    wait_until(lambda: not any(_cmdline(p) for p in parts | {pid}), timeout_s=20, what="all gone")
